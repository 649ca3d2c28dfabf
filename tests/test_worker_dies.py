"""A job whose worker dies on every delivery still ends, once, FAILURE INTERNAL, after at
most JOB_MAX_DELIVERIES deliveries; output that crashes the HCL parser does not even
take the worker down."""

from __future__ import annotations

import os
import signal
import time

import sqlalchemy as sa

from tests.conftest import Stack, Worker


def test_a_job_whose_worker_child_is_killed_on_every_delivery_ends_internal(
        idle_stack: Stack) -> None:
    worker = idle_stack.worker = Worker(idle_stack.env, concurrency=1).start()
    job_uuid = idle_stack.submit(
        {"cloud_id": "aws", "resource_type": "slowdb", "request_id": 7}).json["uuid"]
    kills = 0
    for delivery in (1, 2, 3):  # JOB_MAX_DELIVERIES defaults to 3
        idle_stack.wait(job_uuid, timeout=60, until=lambda d, n=delivery: (
            d["attempts"] == n and d["stage"] == "fetch") or d["status"] == "FAILURE")
        (child,) = worker.children()
        os.kill(child, signal.SIGKILL)
        kills += 1

    doc = idle_stack.wait(job_uuid, timeout=60)
    assert doc["status"] == "FAILURE", doc
    assert doc["error"]["code"] == "INTERNAL"
    assert "worker process died running this job, 3 time(s)" in doc["error"]["message"]
    assert doc["attempts"] == kills == 3
    # Its message was redelivered once more and only concluded: no fourth run.
    time.sleep(2)
    after = idle_stack.get(job_uuid).json
    assert after["attempts"] == 3 and after["status"] == "FAILURE"
    assert after["finished_at"] == doc["finished_at"]  # ended once
    # The deadline counts from the first start, not from each redelivery.
    record = idle_stack.app.extensions["tfgen"].jobs.get(job_uuid)
    assert record is not None and record.attempt_started_at == record.started_at
    assert record.deliveries == 3


def test_a_template_whose_output_crashes_the_parser_fails_internal_once(
        idle_stack: Stack) -> None:
    # ~100,000 levels of brackets: HashiCorp's parser overflows Go's stack and aborts
    # its process (SIGABRT; tests/core/test_validate.py shows it). The job must end.
    deep = ("x = {% for i in range(100000) %}[{% endfor %}"
            "{% for i in range(100000) %}]{% endfor %}\n")
    engine = sa.create_engine(idle_stack.env["DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO tf_template (cloud_id, resource_type, module_version, jinja_template)"
            " VALUES ('aws', 'slowdb', '6.6.6', :text) ON CONFLICT DO NOTHING"), {"text": deep})
        conn.execute(sa.text(
            "INSERT INTO apex_aws_slowdb_request (id, name, module_version, gitlab_project_id,"
            " delay_seconds) VALUES (106, 'deep-106', '6.6.6', 'platform/infra-live', 0)"
            " ON CONFLICT (id) DO NOTHING"))
    engine.dispose()
    worker = idle_stack.worker = Worker(idle_stack.env, concurrency=1).start()
    (child,) = worker.children()

    doc = idle_stack.wait(idle_stack.submit(
        {"cloud_id": "aws", "resource_type": "slowdb", "request_id": 106}).json["uuid"],
        timeout=120)
    assert doc["status"] == "FAILURE", doc
    assert doc["error"]["code"] == "INTERNAL"
    assert "HCL parser crashed (SIGABRT)" in doc["error"]["message"]
    assert doc["stage"] == "validate"
    assert doc["attempts"] == 1
    assert worker.children() == [child]  # the worker child lived through it
