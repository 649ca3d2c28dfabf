"""``celery -A tasks beat`` drives ``tfgen.reconcile``: with the git publisher (no
webhooks at all), a branch merged into its target in the remote becomes ``merged``."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.conftest import ROOT, Stack, Worker, git, sqlite_apex, stack_env


class Beat:
    """A real ``celery -A tasks beat`` process."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.out = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", "beat", "-l", "INFO",
             "-s", str(log.parent / "beat-schedule")],
            cwd=ROOT, env={**os.environ, **env}, stdout=self.out, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.out.close()


@pytest.fixture
def beat_stack(tmp_path: Path, redis_client: redis.Redis) -> Iterator[tuple[Stack, Beat]]:
    env = {**stack_env(tmp_path, sqlite_apex(tmp_path / "apex.sqlite"), "beat"),
           "RECONCILE_INTERVAL": "1", "RECONCILE_BATCH": "10"}
    stack = Stack(env)
    stack.worker = Worker(env, concurrency=1).start()
    beat = Beat(env, tmp_path / "beat.log")
    yield stack, beat
    beat.stop()
    stack.close()


def test_beat_reconciles_a_git_branch_merged_in_the_remote(
        beat_stack: tuple[Stack, Beat]) -> None:
    stack, beat = beat_stack
    doc = stack.wait(stack.submit({"cloud_id": "aws", "resource_type": "rds",
                                   "request_id": 42}).json["uuid"])
    assert doc["status"] == "SUCCESS", doc
    branch = doc["result"]["branch"]
    time.sleep(2.5)  # a few beats pass: an unmerged branch stays published
    record = stack.client.get("/api/v1/requests/aws/rds/42", headers=stack.auth()).json
    assert record["state"] == "published" and record["branch"]["name"] == branch

    # Someone merges the branch (a fast-forward of main in the remote).
    git(stack.remote, "update-ref", "refs/heads/main", f"refs/heads/{branch}")
    deadline = time.monotonic() + 30
    while record["state"] != "merged":
        assert time.monotonic() < deadline, (record, beat.log.read_text()[-2000:])
        time.sleep(0.2)
        record = stack.client.get("/api/v1/requests/aws/rds/42", headers=stack.auth()).json
    assert record["history"][-1]["source"] == "reconcile"
    assert record["branch"]["merged_into"] == git(stack.remote, "rev-parse", "main")
    assert "tfgen.reconcile" in beat.log.read_text()
