"""Every job ends SUCCESS, FAILURE or REVOKED within its time limits, whatever it runs."""

from __future__ import annotations

import uuid
from pathlib import Path

import redis
import sqlalchemy as sa

from app.core.store.schema import ResourceType
from app.demo import RESOURCE_TYPES, create_demo_database
from tests.conftest import SLOW, Stack, Worker, stack_env


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


def test_a_template_that_runs_past_the_soft_limit_ends_as_timeout(idle_stack: Stack) -> None:
    # The renderer reports what breaks a template as RENDER_ERROR; a time limit that
    # lands in it is still a TIMEOUT.
    engine = sa.create_engine(idle_stack.env["DATABASE_URL"])
    with engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO tf_template (cloud_id, resource_type, module_version, jinja_template)"
            " VALUES ('aws', 'slowdb', '9.9.9', :text) ON CONFLICT DO NOTHING"),
            {"text": "{% for i in range(100000) %}{% for j in range(100000) %}"
                     "{% endfor %}{% endfor %}"})
        conn.execute(sa.text(
            "INSERT INTO apex_aws_slowdb_request (id, name, module_version, gitlab_project_id,"
            " delay_seconds) VALUES (103, 'slow-103', '9.9.9', 'platform/infra-live', 0)"
            " ON CONFLICT (id) DO NOTHING"))
    engine.dispose()
    env = {**idle_stack.env, "JOB_SOFT_TIME_LIMIT": "1", "JOB_TIME_LIMIT": "6"}
    idle_stack.worker = Worker(env, concurrency=1).start()
    doc = idle_stack.wait(idle_stack.submit(
        {"cloud_id": "aws", "resource_type": "slowdb", "request_id": 103}).json["uuid"])
    assert doc["stage"] == "render"
    assert doc["status"] == "FAILURE"
    assert doc["error"]["code"] == "TIMEOUT", doc["error"]


def stuck_database(base: Path) -> str:
    """A SQLite APEX store whose ``aws/stuck`` request view never answers (a C loop)."""
    stuck = ResourceType("aws", "stuck", columns=SLOW.columns, rows=SLOW.rows[:1],
                         templates=SLOW.templates)
    url = f"sqlite:///{base / 'apex.sqlite'}"
    create_demo_database(url, (*RESOURCE_TYPES, stuck))
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP VIEW v_aws_stuck_requests"))
        conn.execute(sa.text(
            "CREATE VIEW v_aws_stuck_requests AS SELECT r.* FROM apex_aws_stuck_request r"
            " WHERE (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c"
            " WHERE x < 2000000000) SELECT max(x) FROM c) > 0"))
    engine.dispose()
    return url


def test_job_that_cannot_hear_its_soft_limit_ends_at_the_hard_limit(
        tmp_path: Path, redis_client: redis.Redis) -> None:
    # SQLite runs a query in C without returning to Python, so the soft limit's signal
    # waits; at the hard limit the pool kills the child, and the job must still end.
    url = stuck_database(tmp_path)
    env = {**stack_env(tmp_path, url, f"stuck-{uuid.uuid4().hex[:6]}"),
           "JOB_SOFT_TIME_LIMIT": "1", "JOB_TIME_LIMIT": "3"}
    stack = Stack(env)
    stack.worker = Worker(env, concurrency=1).start()
    try:
        doc = stack.wait(stack.submit(
            {"cloud_id": "aws", "resource_type": "stuck", "request_id": 1}).json["uuid"],
            timeout=30)
    finally:
        stack.close()
    assert doc["status"] == "FAILURE"
    assert doc["error"]["code"] == "TIMEOUT"
    assert "hard time limit" in doc["error"]["message"]
