"""Every job ends SUCCESS, FAILURE or REVOKED within its time limits, whatever it runs."""

from __future__ import annotations

import sqlalchemy as sa

from tests.conftest import Stack, Worker


def slow_request(stack: Stack, request_id: int, delay: float) -> None:
    """An aws/slowdb request whose fetch takes ``delay`` seconds in PostgreSQL."""
    engine = sa.create_engine(stack.env["DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO apex_aws_slowdb_request (id, name, module_version, gitlab_project_id,"
            " delay_seconds) VALUES (:id, :name, '1.0.0', 'platform/infra-live', :delay)"
            " ON CONFLICT (id) DO NOTHING"),
            {"id": request_id, "name": f"slow-{request_id}", "delay": delay})
    engine.dispose()


def test_job_past_its_soft_limit_ends_as_timeout_without_retries(idle_stack: Stack) -> None:
    slow_request(idle_stack, 101, 3.0)
    env = {**idle_stack.env, "JOB_SOFT_TIME_LIMIT": "1", "JOB_TIME_LIMIT": "6"}
    idle_stack.worker = Worker(env, concurrency=1).start()
    job_uuid = idle_stack.submit(
        {"cloud_id": "aws", "resource_type": "slowdb", "request_id": 101}).json["uuid"]
    doc = idle_stack.wait(job_uuid, timeout=60)
    assert doc["status"] == "FAILURE"
    assert doc["error"]["code"] == "TIMEOUT", doc["error"]
    assert doc["attempts"] == 1


def test_a_timed_out_fetch_leaves_no_broken_connection_behind(idle_stack: Stack) -> None:
    # The soft limit lands while PostgreSQL still runs the statement; the next job in
    # the same worker process must get a sound connection, not that one.
    slow_request(idle_stack, 102, 3.0)
    env = {**idle_stack.env, "JOB_SOFT_TIME_LIMIT": "1", "JOB_TIME_LIMIT": "6"}
    idle_stack.worker = Worker(env, concurrency=1).start()
    timed_out = idle_stack.wait(idle_stack.submit(
        {"cloud_id": "aws", "resource_type": "slowdb", "request_id": 102}).json["uuid"])
    after = idle_stack.wait(idle_stack.submit(
        {"cloud_id": "aws", "resource_type": "rds", "request_id": 42}).json["uuid"])

    assert timed_out["error"]["code"] == "TIMEOUT"
    assert after["status"] == "SUCCESS", after["error"]
    assert after["attempts"] == 1
