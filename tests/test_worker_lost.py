"""A worker child killed mid-job: the job runs again and ends SUCCESS, one commit."""

from __future__ import annotations

import os
import signal

from tests.conftest import Stack, Worker, git


def test_job_whose_worker_was_killed_is_run_again(idle_stack: Stack) -> None:
    worker = idle_stack.worker = Worker(idle_stack.env, concurrency=1).start()
    job_uuid = idle_stack.submit(
        {"cloud_id": "aws", "resource_type": "slowdb", "request_id": 3}).json["uuid"]
    idle_stack.wait(job_uuid, until=lambda d: d["stage"] == "fetch")
    (child,) = worker.children()
    os.kill(child, signal.SIGKILL)

    doc = idle_stack.wait(job_uuid, timeout=120)
    assert doc["status"] == "SUCCESS", doc
    assert doc["attempts"] == 2
    assert [s["attempt"] for s in doc["stages"] if s["stage"] == "fetch"] == [1, 2]
    branch = doc["result"]["branch"]
    assert git(idle_stack.remote, "rev-list", "--count", f"main..{branch}") == "1"
    assert any("WorkerLostError" in line or "SIGKILL" in line for line in worker.lines)
