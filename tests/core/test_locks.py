"""Publish locks after a fault: a dead holder's lock frees its branch within one lease,
a live holder keeps it however long it works, and both publishers make a lock timeout
a retryable failure."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.core.locks import LockTimeout, RedisLocks
from app.core.model import Change, RenderedFile
from app.core.publish.git import GitPublisher
from app.errors import GitLabUnavailable
from tests.conftest import REDIS_URL, ROOT, RUN_ID, make_git_remote


@pytest.fixture
def prefix(redis_client: redis.Redis) -> Iterator[str]:
    name = f"tfgen-test-{RUN_ID}:{uuid.uuid4().hex[:8]}:lock:"
    yield name
    for key in redis_client.scan_iter(f"{name}*"):
        redis_client.delete(key)


def test_a_lock_whose_holder_died_frees_its_key_within_one_lease(
        redis_client: redis.Redis, prefix: str) -> None:
    # A worker process takes the branch's lock and is killed before it can release it
    # (as when Redis was away at release time): nobody will ever DEL that key.
    holder = textwrap.dedent(f"""
        import os, signal, redis
        from app.core.locks import RedisLocks
        locks = RedisLocks(redis.Redis.from_url({REDIS_URL!r}), prefix={prefix!r},
                           timeout=300, lease=2)
        with locks("branch", "job-dead"):
            print("held", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    done = subprocess.run([sys.executable, "-c", holder], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == -9 and "held" in done.stdout, done.stderr
    assert redis_client.exists(f"{prefix}branch")  # left behind

    # The old lock lived for its whole 300 s timeout; now it is gone within its lease.
    waiter = RedisLocks(redis_client, prefix=prefix, timeout=300, blocking_timeout=8)
    with waiter("branch", "job-next"):
        assert redis_client.get(f"{prefix}branch") == b"job-next"


def test_a_live_holder_keeps_its_lock_past_many_leases(
        redis_client: redis.Redis, prefix: str) -> None:
    locks = RedisLocks(redis_client, prefix=prefix, timeout=60, lease=0.6,
                       blocking_timeout=0.1)
    entered, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with locks("branch", "job-a"):
            entered.set()
            leave.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert entered.wait(10)
        for _ in range(4):  # 4 x 0.5 s: well past the 0.6 s lease, still held
            leave.wait(0.5)
            with pytest.raises(LockTimeout), locks("branch", "job-b"):
                pass
    finally:
        leave.set()
        thread.join()
    with locks("branch", "job-b"):
        pass


def test_git_publisher_makes_a_lock_timeout_a_retryable_gitlab_unavailable(
        tmp_path: Path, redis_client: redis.Redis, prefix: str) -> None:
    remote = make_git_remote(tmp_path / "remote.git")
    locks = RedisLocks(redis_client, prefix=prefix, timeout=60, blocking_timeout=0.2)
    publisher = GitPublisher(str(remote), lock_factory=locks)
    change = Change(project_id=None, branch="feature/aws-rds-x", target_branch="main",
                    files=(RenderedFile("aws/rds/x.tf", "locals {}\n"),),
                    commit_message="x\n\nTfgen-Job: job-b\n", title="x", description="x",
                    job_uuid="job-b", token=None)
    with locks(f"git:{remote}:{change.branch}", "job-a"), \
            pytest.raises(GitLabUnavailable) as raised:
        publisher.publish(change)
    assert raised.value.retryable
    assert raised.value.to_dict()["code"] == "GITLAB_UNAVAILABLE"
