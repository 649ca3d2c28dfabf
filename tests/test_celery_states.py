"""Celery's state, and Flower (which learns it from task events), tell what the job
record tells: FAILURE for a failed job, REVOKED for a canceled one, SUCCESS only for
success; and Celery never retries a failed job on its own."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ROOT, Stack, Worker, free_port, stop_server

AUTH = "ops:flower-test"


class Flower:
    """A real ``celery -A tasks flower`` on the stack's broker, API behind basic auth."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", "flower", f"--port={self.port}",
             "--address=127.0.0.1", f"--basic-auth={AUTH}", "--persistent=False"],
            cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.api("/api/workers?refresh=1")
                return
            except (urllib.error.URLError, ConnectionError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"flower did not start: {self.stop()}") from None
                time.sleep(0.2)

    def api(self, path: str) -> Any:
        """GET a Flower API path as JSON."""
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers={
            "Authorization": "Basic " + base64.b64encode(AUTH.encode()).decode()})
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)

    def tasks(self, state: str) -> dict[str, Any]:
        """Flower's ``/api/tasks?state=...``: task id -> task info."""
        found: dict[str, Any] = self.api(f"/api/tasks?state={state}")
        return found

    def stop(self) -> str:
        """Stop Flower and return what it printed."""
        return stop_server(self.proc)


@pytest.fixture
def flower(idle_stack: Stack) -> Iterator[Flower]:
    server = Flower(idle_stack.env)
    yield server
    server.stop()


def wait_for(check: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.2)


@pytest.mark.slow
def test_flower_and_celery_show_failure_and_revoked_as_the_record_does(
        idle_stack: Stack, flower: Flower) -> None:
    idle_stack.worker = Worker(idle_stack.env, concurrency=2).start()
    celery = idle_stack.app.extensions["celery"]
    ok = idle_stack.submit({"cloud_id": "aws", "resource_type": "rds", "request_id": 42})
    failed = idle_stack.submit({"cloud_id": "aws", "resource_type": "rds", "request_id": 987654})
    slow = idle_stack.submit({"cloud_id": "aws", "resource_type": "slowdb", "request_id": 5})
    idle_stack.wait(slow.json["uuid"], until=lambda d: d["stage"] == "fetch")
    assert idle_stack.delete(slow.json["uuid"]).status_code == 202

    docs = {name: idle_stack.wait(r.json["uuid"])
            for name, r in (("ok", ok), ("failed", failed), ("canceled", slow))}
    assert docs["ok"]["status"] == "SUCCESS"
    assert docs["failed"]["status"] == "FAILURE"
    assert docs["failed"]["error"]["code"] == "REQUEST_NOT_FOUND"
    assert docs["canceled"]["status"] == "REVOKED"

    # Celery's own state (the result backend)
    states = {name: celery.AsyncResult(doc["uuid"]).state for name, doc in docs.items()}
    assert states == {"ok": "SUCCESS", "failed": "FAILURE", "canceled": "REVOKED"}

    # Flower, from the real task events
    failures = wait_for(lambda: flower.tasks("FAILURE").get(docs["failed"]["uuid"]))
    assert failures, flower.tasks("SUCCESS")
    assert "REQUEST_NOT_FOUND" in failures["exception"]
    assert failures["retries"] == 0
    revoked = wait_for(lambda: flower.tasks("REVOKED").get(docs["canceled"]["uuid"]))
    assert revoked, flower.api("/api/tasks")
    succeeded = wait_for(lambda: flower.tasks("SUCCESS").get(docs["ok"]["uuid"]))
    assert succeeded
    assert docs["failed"]["uuid"] not in flower.tasks("SUCCESS")
    assert docs["canceled"]["uuid"] not in flower.tasks("SUCCESS")
    # No retry by Celery: one attempt, no RETRY event, no second delivery.
    assert docs["failed"]["attempts"] == 1
    assert docs["failed"]["uuid"] not in flower.tasks("RETRY")
