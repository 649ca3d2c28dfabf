"""Whole jobs through a real worker: values as Oracle holds them, a catalog pair that
disappears while a job waits, and a git remote whose URL carries a token.

The publisher-level rules are in ``tests/core/publish/test_git.py`` and the filters'
in ``tests/core/render/test_terraform_filters.py``; here the API, Redis, a prefork worker, the
SQLite APEX schema and a real ``git push`` run together.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator
from pathlib import Path

import pygohcl
import pytest
import redis
import sqlalchemy as sa

from app.errors import JOB_FAILURE_CODES
from tests.conftest import RUN_ID, Stack, Worker, git, make_git_remote, sqlite_apex, stack_env
from tests.core.publish.test_git import CREDENTIALED, SECRET, SHOWN, not_found_server

__all__ = ["not_found_server"]  # a fixture, used below


def stored_in_redis(client: redis.Redis, prefix: str) -> bytes:
    """Every value of this stack's keys, Celery's results and unacked messages, and the keys."""
    keys = list(itertools.chain(client.scan_iter(f"*{prefix}*"),
                                client.scan_iter("celery-task-meta-*"),
                                client.scan_iter("unacked*")))
    return b"".join(keys) + b"".join(client.dump(k) or b"" for k in keys)


@pytest.fixture
def credentialed_stack(tmp_path: Path, redis_client: redis.Redis) -> Iterator[Stack]:
    """A stack whose GIT_REMOTE is ``CREDENTIALED``; git maps that URL to a local bare repo."""
    env = stack_env(tmp_path, sqlite_apex(tmp_path / "apex.sqlite"), f"cred-{RUN_ID}")
    bare = make_git_remote(tmp_path / "credentialed.git")
    env.update(GIT_REMOTE=CREDENTIALED, GIT_CONFIG_COUNT="1",
               GIT_CONFIG_KEY_0=f"url.{bare}.insteadOf", GIT_CONFIG_VALUE_0=CREDENTIALED)
    stack = Stack(env)
    stack.remote = bare
    yield stack
    stack.close()


def test_a_pair_removed_while_its_job_waits_ends_template_not_found_and_the_demo_commits_types(
        credentialed_stack: Stack, redis_client: redis.Redis,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    stack = credentialed_stack
    orphan = stack.submit({"cloud_id": "azure", "resource_type": "vm", "request_id": 101},
                          user="carol")
    rds = stack.submit({"cloud_id": "aws", "resource_type": "rds", "request_id": 42})
    assert orphan.status_code == rds.status_code == 202
    engine = sa.create_engine(stack.env["DATABASE_URL"])
    with engine.begin() as conn:  # the admins drop azure/vm before a worker takes the job
        conn.execute(sa.text("DELETE FROM tf_template WHERE cloud_id = 'azure' "
                             "AND resource_type = 'vm'"))
    engine.dispose()
    stack.worker = Worker(stack.env, concurrency=1).start()

    failed = stack.wait(orphan.json["uuid"], user="carol")
    assert failed["status"] == "FAILURE"
    assert failed["error"]["code"] == "TEMPLATE_NOT_FOUND", failed
    assert failed["error"]["code"] in JOB_FAILURE_CODES
    assert failed["error"]["retryable"] is False

    done = stack.wait(rds.json["uuid"])
    assert done["status"] == "SUCCESS", done
    # The token of GIT_REMOTE is in no answer, no log line, nothing kept in Redis.
    assert done["result"]["remote"] == SHOWN
    logs = caplog.text + "".join(stack.worker.lines)
    assert done["uuid"] in logs
    assert SECRET not in logs
    assert SECRET not in str(done) + str(failed)
    assert SECRET.encode() not in stored_in_redis(redis_client, stack.env["JOB_KEY_PREFIX"])
    # The demo's NUMBER(1)-like flag and VARCHAR2 list reach Terraform as a bool and a list.
    path = done["result"]["files"][0]["path"]
    text = git(stack.remote, "show", f"{done['result']['commit']['sha']}:{path}")
    assert "multi_az          = true" in text
    module = pygohcl.loads(text)["module"]["rds_42"]
    assert module["multi_az"] is True
    assert module["subnet_ids"] == ["subnet-0a1b", "subnet-0c2d"]


def test_a_failing_credentialed_remote_fails_the_job_without_showing_the_token(
        tmp_path: Path, not_found_server: str, redis_client: redis.Redis,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    env = stack_env(tmp_path, sqlite_apex(tmp_path / "apex.sqlite"), f"cred404-{RUN_ID}")
    env["GIT_REMOTE"] = not_found_server
    stack = Stack(env)
    try:
        stack.worker = Worker(env, concurrency=1).start()
        doc = stack.wait(stack.submit({"cloud_id": "aws", "resource_type": "rds",
                                       "request_id": 42}).json["uuid"])
        logs = caplog.text + "".join(stack.worker.lines)
    finally:
        stack.close()
    assert doc["status"] == "FAILURE"
    assert doc["error"]["code"] == "INTERNAL", doc  # a missing remote: a setting to fix
    assert "http://***@127.0.0.1:" in doc["error"]["message"]
    assert SECRET not in str(doc)
    assert doc["uuid"] in logs
    assert SECRET not in logs
    assert SECRET.encode() not in stored_in_redis(redis_client, env["JOB_KEY_PREFIX"])
