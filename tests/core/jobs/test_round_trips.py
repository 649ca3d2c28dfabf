"""Round trips to Redis of one job's bookkeeping, pinned so they cannot creep back.

A worker's job makes, through the services' job store: the task's first read, STARTED,
one PROGRESS per stage (the stage transition also tells of a cancel request: no read of
its own) and SUCCESS. Counted at the connection (one packed send = one round trip).
Before (WATCH, HGETALL, MULTI/EXEC per transition, a cancel read per stage boundary):
read 1, STARTED 8, 5 PROGRESS 15, 4 cancel reads 4, SUCCESS 8 = 36.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis.connection

from app.core.jobs import RUNNING, JobRecord
from app.core.pipeline import STAGES
from app.services import Services
from tests.conftest import REDIS_URL, RUN_ID

WORK_STAGES = [s for s in STAGES if s not in {"queued", "done"}]


@pytest.fixture
def services() -> Iterator[Services]:
    yield Services({"JOB_STORE_URL": REDIS_URL, "JOB_RESULT_TTL": 3600,
                    "JOB_KEY_PREFIX": f"tfgen-test-{RUN_ID}-trips-{uuid.uuid4().hex[:6]}",
                    "EVENT_MAX_LEN": 1000, "EVENT_MAX_AGE": 86400,
                    "GITLAB_TARGET_BRANCH": "main", "GITLAB_URL": None})


@pytest.fixture
def sends(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Packed sends to any Redis (the library's connection, not tfgen's code)."""
    count = {"n": 0}
    original = redis.connection.AbstractConnection.send_packed_command

    def counting(self: Any, *args: Any, **kwargs: Any) -> Any:
        count["n"] += 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counting)
    return count


def run_job(svc: Services, sends: dict[str, int]) -> dict[str, int]:
    """One job's bookkeeping as ``tasks.generate`` does it; round trips per step."""
    jobs = svc.jobs
    job = jobs.create(JobRecord(uuid=str(uuid.uuid4()), owner="alice", request={
        "cloud_id": "aws", "resource_type": "rds", "request_id": 4242, "dry_run": False}))
    trips: dict[str, int] = {}

    def step(name: str, fn: Any) -> Any:
        before = sends["n"]
        value = fn()
        trips[name] = trips.get(name, 0) + sends["n"] - before
        return value

    step("read", lambda: jobs.get(job.uuid))
    step("STARTED", lambda: jobs.transition(job.uuid, {"PENDING"}, {
        "status": "STARTED", "started_at": "2026-01-01T00:00:00Z", "attempts": 1}))
    for stage in WORK_STAGES:
        entered = step("PROGRESS", lambda stage=stage: jobs.transition(job.uuid, RUNNING, {
            "status": "PROGRESS", "stage": stage,
            "stages": [{"stage": stage, "at": "2026-01-01T00:00:01Z", "attempt": 1}]}))
        assert entered is not None and not entered.cancel_requested
    step("SUCCESS", lambda: svc.job_lifecycle.finish(job.uuid, "SUCCESS", changes={
        "stage": "done", "result": {"branch": "b", "commit": {"sha": "x"}, "remote": "/r"}}))
    ended = jobs.get(job.uuid)
    assert ended is not None and ended.status == "SUCCESS"
    assert [s["stage"] for s in ended.stages] == WORK_STAGES
    return trips


def test_a_jobs_bookkeeping_round_trips_are_pinned(services: Services,
                                                    sends: dict[str, int]) -> None:
    run_job(services, sends)  # warm up: connections, script loads
    trips = run_job(services, sends)
    # read 1; STARTED and SUCCESS: the compare-and-set with its event (1), the request
    # step (4), the follow-up mark's clear (1); each PROGRESS: the compare-and-set alone.
    assert trips == {"read": 1, "STARTED": 6, "PROGRESS": len(WORK_STAGES), "SUCCESS": 6}
    assert sum(trips.values()) == 18  # 36 before


def test_a_stage_transition_tells_of_a_cancel_asked_for_by_another_process(
        services: Services) -> None:
    worker = services.jobs
    api = Services(dict(services.config)).jobs  # another process's store, same Redis
    job = worker.create(JobRecord(uuid=str(uuid.uuid4()), owner="alice", request={
        "cloud_id": "aws", "resource_type": "rds", "request_id": 4242, "dry_run": False}))
    worker.transition(job.uuid, {"PENDING"}, {"status": "STARTED"})
    fetch = worker.transition(job.uuid, RUNNING, {"status": "PROGRESS", "stage": "fetch"})
    assert fetch is not None and not fetch.cancel_requested

    asked = api.transition(job.uuid, RUNNING, {"cancel_requested": True})
    assert asked is not None and asked.cancel_requested
    # The worker's store last wrote the record without the request: its compare-and-set
    # must see the change, not overwrite it.
    render = worker.transition(job.uuid, RUNNING, {"status": "PROGRESS", "stage": "render"})
    assert render is not None and render.cancel_requested and render.stage == "render"
    stored = api.get(job.uuid)
    assert stored is not None and stored.cancel_requested
