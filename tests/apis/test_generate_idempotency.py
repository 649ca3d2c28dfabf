"""Idempotency-Key under concurrency: one key, one job, whatever the timing."""

from __future__ import annotations

import hashlib
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import redis

from tests.conftest import Stack

BODY = {"cloud_id": "aws", "resource_type": "rds", "request_id": 42}


def test_parallel_submits_with_one_key_make_one_job(idle_stack: Stack) -> None:
    key = {"Idempotency-Key": f"apex-{uuid.uuid4()}"}
    headers = {**idle_stack.auth("alice"), **key}
    start = threading.Barrier(16)

    def submit(_: int) -> tuple[int, str]:
        client = idle_stack.app.test_client()
        start.wait()
        r = client.post("/api/v1/terraform/generate", json=BODY, headers=headers)
        return r.status_code, r.json["uuid"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(submit, range(16)))
    assert {status for status, _ in answers} == {202}
    assert len({job for _, job in answers}) == 1
    listed = idle_stack.client.get("/api/v1/jobs", headers=idle_stack.auth("alice")).json
    assert [j["uuid"] for j in listed] == [answers[0][1]]


def test_a_pre_claimed_key_without_a_record_still_gives_one_job(
        idle_stack: Stack, redis_client: redis.Redis) -> None:
    # The key is bound (an earlier API process claimed it and died before writing the
    # record); every submit with it must still land on one and the same job.
    key = f"apex-{uuid.uuid4()}"
    digest = hashlib.sha256(f"alice\0{key}".encode()).hexdigest()
    redis_client.set(f"{idle_stack.env['JOB_KEY_PREFIX']}:idem:{digest}", str(uuid.uuid4()),
                     ex=600)

    first = idle_stack.submit(BODY, headers={"Idempotency-Key": key})
    again = idle_stack.submit(BODY, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 202
    assert again.json["uuid"] == first.json["uuid"]
    assert idle_stack.get(first.json["uuid"]).status_code == 200
