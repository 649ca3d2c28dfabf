"""Webhooks out through real processes: the API, a Celery worker on ``WEBHOOK_QUEUE``,
``celery beat``'s sweep, and a receiver on loopback that verifies every signature with
the ``standardwebhooks`` library. The receiver's host is allow-listed
(``WEBHOOK_ALLOWED_HOSTS``); the refusals are in ``tests/core/test_webhook_targets.py``.

Events come from the real lifecycle hook: a job submitted while no generation worker
runs, then canceled, appends ``job.canceled`` in the API process.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from tests.conftest import RedisServer, Stack, Worker, sqlite_apex, stack_env
from tests.test_reconcile_beat import Beat

ADMIN = "tfgen-admins"


class Receiver:
    """An HTTP server on 127.0.0.1 that records POSTs; ``plan`` says how to answer."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.plan: Callable[[int, dict[str, str]], tuple[int, float]] = lambda n, h: (204, 0)
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with receiver.lock:
                    n = len(receiver.calls)
                    receiver.calls.append({"headers": headers, "body": body.decode(),
                                           "path": self.path, "at": time.time()})
                status, delay = receiver.plan(n, headers)
                time.sleep(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the client gave up (timeout)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/ords/tfgen/hooks"

    def ids(self) -> list[str]:
        return [c["headers"]["webhook-id"] for c in self.calls]

    def wait(self, until: Callable[[], bool], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not until():
            if time.monotonic() > deadline:
                raise AssertionError(f"receiver got {self.ids()}")
            time.sleep(0.05)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def webhook_env(base: Path, name: str, redis_url: str | None = None) -> dict[str, str]:
    env = {**stack_env(base, sqlite_apex(base / "apex.sqlite"), name),
           "WEBHOOK_ALLOWED_HOSTS": "127.0.0.1", "WEBHOOK_BACKOFF_BASE": "0.2",
           "WEBHOOK_BACKOFF_MAX": "0.5", "WEBHOOK_MAX_ATTEMPTS": "4",
           "WEBHOOK_SWEEP_INTERVAL": "1", "RECONCILE_INTERVAL": "0",
           "WEBHOOK_SECRET_KEY": "Sx2c8cTi9Fq6xk6mJgFvOe1pYkN0t3vKq1yq1mXv2dU="}
    env["WEBHOOK_QUEUE"] = env["JOB_QUEUE"] + "-webhooks"
    if redis_url:
        env.update(CELERY_BROKER_URL=redis_url, CELERY_RESULT_BACKEND=redis_url,
                   JOB_STORE_URL=redis_url)
    return env


def webhook_worker(env: dict[str, str], concurrency: int = 2) -> Worker:
    return Worker(env, concurrency=concurrency, queues=env["WEBHOOK_QUEUE"]).start()


def subscribe(stack: Stack, url: str, events: list[str] | None = None) -> dict[str, Any]:
    r = stack.client.post("/api/v1/webhooks", json={"url": url, "events": events or ["job.*"],
                                                    "description": "APEX"},
                          headers=stack.auth("root", ADMIN))
    assert r.status_code == 201, r.json
    return dict(r.json)


def canceled_event(stack: Stack, request_id: int = 42) -> str:
    """Append one ``job.canceled`` for ``aws/rds/<request_id>``; return the job uuid."""
    r = stack.submit({"cloud_id": "aws", "resource_type": "rds", "request_id": request_id})
    assert r.status_code == 202, r.json
    uuid = r.json["uuid"]
    assert stack.delete(uuid).json["status"] == "REVOKED"
    return str(uuid)


def deliveries(stack: Stack, sub_id: str) -> list[dict[str, Any]]:
    r = stack.client.get(f"/api/v1/webhooks/{sub_id}/deliveries",
                         headers=stack.auth("root", ADMIN))
    assert r.status_code == 200, r.json
    return list(r.json)


def verify(secret: str, call: dict[str, Any]) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(call["body"], call["headers"])
    return payload


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


@pytest.fixture
def hooked(tmp_path: Path, redis_client: redis.Redis) -> Iterator[Stack]:
    env = webhook_env(tmp_path, "wh")
    stack = Stack(env)
    stack.worker = webhook_worker(env)
    yield stack
    stack.close()


def test_an_event_arrives_signed_and_the_library_verifies_it(
        hooked: Stack, receiver: Receiver) -> None:
    sub = subscribe(hooked, receiver.url)
    job = canceled_event(hooked)
    receiver.wait(lambda: len(receiver.calls) >= 1)
    payload = verify(sub["secret"], receiver.calls[0])
    assert payload["type"] == "job.canceled" and payload["job_uuid"] == job
    assert receiver.calls[0]["headers"]["webhook-id"] == payload["id"]
    with pytest.raises(WebhookVerificationError):
        verify("whsec_" + "A" * 44, receiver.calls[0])
    log = deliveries(hooked, sub["id"])
    assert [(d["event_id"], d["status"], d["attempts"], d["last_status"]) for d in log] == [
        (payload["id"], "delivered", 1, 204)]


def test_500s_and_a_timeout_are_retried_with_the_same_id(
        hooked: Stack, receiver: Receiver) -> None:
    # 500, then longer than the 10 s timeout, then 500, then 200.
    answers = [(500, 0.0), (200, 11.0), (500, 0.0)]
    receiver.plan = lambda n, h: answers[n] if n < len(answers) else (200, 0)
    sub = subscribe(hooked, receiver.url)
    canceled_event(hooked)
    receiver.wait(lambda: len(receiver.calls) >= 4, timeout=90)
    assert len(set(receiver.ids())) == 1
    for call in receiver.calls:
        verify(sub["secret"], call)
    [d] = deliveries(hooked, sub["id"])
    assert (d["status"], d["attempts"], d["last_status"]) == ("delivered", 4, 200)


def test_after_max_attempts_failed_then_redelivered(
        hooked: Stack, receiver: Receiver) -> None:
    receiver.plan = lambda n, h: (503, 0) if n < 4 else (200, 0)
    sub = subscribe(hooked, receiver.url)
    canceled_event(hooked)
    receiver.wait(lambda: len(receiver.calls) >= 4)
    deadline = time.monotonic() + 30
    while deliveries(hooked, sub["id"])[0]["status"] != "failed":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    [d] = deliveries(hooked, sub["id"])
    assert (d["attempts"], d["last_status"], d["next_attempt"]) == (4, 503, None)
    r = hooked.client.post(f"/api/v1/webhooks/{sub['id']}/deliveries/{d['event_id']}/redeliver",
                           headers=hooked.auth("root", ADMIN))
    assert r.status_code == 202, r.json
    receiver.wait(lambda: len(receiver.calls) >= 5)
    assert set(receiver.ids()) == {d["event_id"]}
    deadline = time.monotonic() + 30
    while deliveries(hooked, sub["id"])[0]["status"] != "delivered":
        assert time.monotonic() < deadline
        time.sleep(0.1)


def test_events_of_one_request_arrive_in_order_while_the_first_is_retried(
        hooked: Stack, receiver: Receiver) -> None:
    first: list[str] = []

    def plan(n: int, headers: dict[str, str]) -> tuple[int, float]:
        if not first:
            first.append(headers["webhook-id"])
        fails = sum(1 for c in receiver.calls if c["headers"]["webhook-id"] == first[0])
        return (500, 0) if headers["webhook-id"] == first[0] and fails <= 2 else (200, 0)

    receiver.plan = plan
    subscribe(hooked, receiver.url)
    for _ in range(4):
        canceled_event(hooked, 43)
    receiver.wait(lambda: len(set(receiver.ids())) >= 4)
    receiver.wait(lambda: len(receiver.calls) >= 6)
    seen: list[str] = []
    for event_id in receiver.ids():
        if event_id not in seen:
            seen.append(event_id)
    assert seen == sorted(seen, key=lambda c: tuple(int(p) for p in c.split("-")))
    assert receiver.ids()[:3] == [first[0]] * 3


def test_a_slow_receiver_does_not_hold_back_another(
        hooked: Stack, receiver: Receiver) -> None:
    other = Receiver()
    try:
        receiver.plan = lambda n, h: (200, 8.0)
        subscribe(hooked, receiver.url)
        subscribe(hooked, other.url)
        canceled_event(hooked)
        other.wait(lambda: len(other.calls) >= 1, timeout=20)
        receiver.wait(lambda: len(receiver.calls) >= 1, timeout=20)
        assert other.calls[0]["at"] < receiver.calls[0]["at"] + 8.0
    finally:
        other.close()


def test_rotation_signs_with_both_secrets_during_the_grace(
        hooked: Stack, receiver: Receiver) -> None:
    sub = subscribe(hooked, receiver.url)
    url, admin = f"/api/v1/webhooks/{sub['id']}/rotate", hooked.auth("root", ADMIN)
    for grace in (600.0, 600.5, -1, 7 * 86400 + 1, "600"):
        refused = hooked.client.post(url, json={"grace_seconds": grace}, headers=admin)
        assert refused.status_code == 400, (grace, refused.json)
        assert "grace_seconds" in refused.json["errors"], refused.json
    r = hooked.client.post(url, json={"grace_seconds": 600}, headers=admin)
    assert r.status_code == 200, r.json
    new = r.json["secret"]
    assert new != sub["secret"] and r.json["previous_secret_until"]
    canceled_event(hooked)
    receiver.wait(lambda: len(receiver.calls) >= 1)
    verify(sub["secret"], receiver.calls[0])
    verify(new, receiver.calls[0])
    assert len(receiver.calls[0]["headers"]["webhook-signature"].split(" ")) == 2


def test_secrets_are_shown_once_and_sealed_at_rest(
        hooked: Stack, receiver: Receiver, redis_client: redis.Redis) -> None:
    sub = subscribe(hooked, receiver.url)
    headers = hooked.auth("root", ADMIN)
    listed = hooked.client.get("/api/v1/webhooks", headers=headers).json
    one = hooked.client.get(f"/api/v1/webhooks/{sub['id']}", headers=headers).json
    assert sub["secret"].startswith("whsec_")
    canceled_event(hooked)
    receiver.wait(lambda: len(receiver.calls) >= 1)
    secret_body = sub["secret"].removeprefix("whsec_")
    assert secret_body not in json.dumps([listed, one, deliveries(hooked, sub["id"])])
    prefix = hooked.env["JOB_KEY_PREFIX"]
    dump = b"".join(redis_client.dump(k) or b"" for k in redis_client.scan_iter(f"{prefix}:*"))
    assert secret_body.encode() not in dump
    assert secret_body not in "".join(hooked.worker.lines if hooked.worker else [])


def test_admins_only_and_refused_targets(hooked: Stack) -> None:
    body = {"url": "https://apex.example.com/hook", "events": ["job.*"]}
    assert hooked.client.post("/api/v1/webhooks", json=body,
                              headers=hooked.auth()).status_code == 403
    assert hooked.client.get("/api/v1/webhooks", headers=hooked.auth()).status_code == 403
    r = hooked.client.post("/api/v1/webhooks", headers=hooked.auth("root", ADMIN),
                           json={"url": "http://169.254.169.254/latest/", "events": ["job.*"]})
    assert (r.status_code, r.json["code"]) == (400, "WEBHOOK_TARGET_REFUSED")
    assert "secret" not in r.json["message"]
    r = hooked.client.get("/api/v1/webhooks/nope", headers=hooked.auth("root", ADMIN))
    assert r.status_code == 404


# --- faults as processes ------------------------------------------------------------------

def test_a_worker_killed_mid_delivery_still_delivers(
        tmp_path: Path, redis_client: redis.Redis, receiver: Receiver) -> None:
    env = webhook_env(tmp_path, "whkill")
    stack = Stack(env)
    worker = stack.worker = webhook_worker(env, concurrency=1)
    beat = Beat(env, tmp_path / "beat.log")
    try:
        receiver.plan = lambda n, h: (200, 3.0) if n == 0 else (200, 0)
        sub = subscribe(stack, receiver.url)
        canceled_event(stack)
        receiver.wait(lambda: len(receiver.calls) >= 1)
        for pid in worker.children():
            os.kill(pid, signal.SIGKILL)
        receiver.wait(lambda: len(receiver.calls) >= 2, timeout=60)
        assert len(set(receiver.ids())) == 1
        deadline = time.monotonic() + 30
        while deliveries(stack, sub["id"])[0]["status"] != "delivered":
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        beat.stop()
        stack.close()


def test_a_redis_restart_between_event_and_delivery_loses_nothing(
        tmp_path: Path, own_redis: RedisServer, receiver: Receiver) -> None:
    env = webhook_env(tmp_path, "whaof", redis_url=own_redis.url)
    stack = Stack(env)
    try:
        sub = subscribe(stack, receiver.url)
        job = canceled_event(stack)  # no webhook worker yet: the event waits
        own_redis.restart()
        stack.worker = webhook_worker(env)
        beat = Beat(env, tmp_path / "beat.log")
        try:
            receiver.wait(lambda: len(receiver.calls) >= 1, timeout=60)
        finally:
            beat.stop()
        assert verify(sub["secret"], receiver.calls[0])["job_uuid"] == job
        assert len(set(receiver.ids())) == 1
    finally:
        stack.close()
