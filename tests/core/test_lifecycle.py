"""A job's status change and its event are one write, on the job store the services build.

The event log is made to refuse the write (a stream key of the wrong type on Redis, a
missing table on SQLite) while a job changes status: the change must fail and leave the
record as it was, and land with its event once the log is back; never one without the
other. (Before, the change landed and its event was lost: ``lifecycle.hook_failed``.)
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from app.core.events import RedisEventLog, SqlEventLog
from app.core.jobs import JobRecord
from app.errors import TfgenError
from app.services import Services
from tests.conftest import REDIS_URL, RUN_ID


@pytest.fixture(params=["redis", "sqlite"])
def services(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Services]:
    url = REDIS_URL if request.param == "redis" else f"sqlite:///{tmp_path / 'jobs.sqlite'}"
    yield Services({"JOB_STORE_URL": url, "JOB_RESULT_TTL": 3600,
                    "JOB_KEY_PREFIX": f"tfgen-test-{RUN_ID}-atomic-{uuid.uuid4().hex[:6]}",
                    "EVENT_MAX_LEN": 1000, "EVENT_MAX_AGE": 86400,
                    "GITLAB_TARGET_BRANCH": "main", "GITLAB_URL": None})


def break_event_log(svc: Services) -> None:
    """Make every append to the event log fail, as an unwritable log would."""
    events = svc.events
    if isinstance(events, RedisEventLog):
        client: redis.Redis = events.client
        client.delete(events.key)
        client.set(events.key, "not a stream")  # XADD: WRONGTYPE
    else:
        assert isinstance(events, SqlEventLog)
        with events.engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {events.table.name} RENAME TO broken_events"))


def mend_event_log(svc: Services) -> None:
    events = svc.events
    if isinstance(events, RedisEventLog):
        events.client.delete(events.key)
    else:
        assert isinstance(events, SqlEventLog)
        with events.engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE broken_events RENAME TO {events.table.name}"))


def job_events(svc: Services, job_uuid: str) -> list[tuple[str, Any]]:
    return [(e["type"], e["data"]["status"]) for e in svc.events.scan(None, 1000)
            if e["job_uuid"] == job_uuid]


@pytest.mark.parametrize("status", ["STARTED", "FAILURE"])
def test_a_status_change_and_its_event_land_together_or_not_at_all(
        services: Services, status: str) -> None:
    jobs = services.jobs
    job = jobs.create(JobRecord(uuid=str(uuid.uuid4()), owner="alice", request={
        "cloud_id": "aws", "resource_type": "rds", "request_id": 42, "dry_run": True}))
    changes = {"status": status, "error": {"code": "INTERNAL", "message": "x",
                                           "retryable": False} if status == "FAILURE" else None}

    break_event_log(services)
    try:
        with pytest.raises(TfgenError):
            jobs.transition(job.uuid, {"PENDING"}, changes)
        after = jobs.get(job.uuid)
        assert after is not None and after.status == "PENDING", "changed without its event"
    finally:
        mend_event_log(services)
    assert job_events(services, job.uuid) == []

    # The log is back: the same change (a caller retrying) lands, with one event.
    changed = jobs.transition(job.uuid, {"PENDING"}, changes)
    assert changed is not None and changed.status == status
    kind = {"STARTED": "job.started", "FAILURE": "job.failed"}[status]
    assert job_events(services, job.uuid) == [(kind, status)]
    stored = jobs.get(job.uuid)
    assert stored is not None and stored.status == status


def test_the_event_written_with_the_change_is_the_feeds_and_carries_its_cursor(
        services: Services) -> None:
    cursors: list[str] = []
    services.lifecycle.on_append = cursors.append
    jobs = services.jobs
    job = jobs.create(JobRecord(uuid=str(uuid.uuid4()), owner="alice", request={
        "cloud_id": "aws", "resource_type": "rds", "request_id": 42, "dry_run": True}))
    jobs.transition(job.uuid, {"PENDING"}, {"status": "STARTED"})
    jobs.transition(job.uuid, {"STARTED"}, {"status": "PROGRESS", "stage": "fetch"})  # none
    jobs.transition(job.uuid, {"PROGRESS"}, {"status": "SUCCESS", "stage": "done"})
    feed = [e for e in services.events.scan(None, 1000) if e["job_uuid"] == job.uuid]
    assert [e["type"] for e in feed] == ["job.started", "job.succeeded"]
    assert cursors == [e["id"] for e in feed]
    assert feed[1]["data"]["stage"] == "done" and feed[1]["owner"] == "alice"


def break_request_store(svc: Services, key: str) -> None:
    """Make the request record ``key`` unreadable, as an unreachable request store."""
    requests: Any = svc.requests
    if hasattr(requests, "client"):
        requests.client.rpush(requests._key(key), "not a record")  # GET: WRONGTYPE
    else:
        with requests.engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE {requests.table.name} RENAME TO broken_requests"))


def mend_request_store(svc: Services, key: str) -> None:
    requests: Any = svc.requests
    if hasattr(requests, "client"):
        requests.client.delete(requests._key(key))
    else:
        with requests.engine.begin() as conn:
            conn.execute(sa.text(f"ALTER TABLE broken_requests RENAME TO {requests.table.name}"))


def test_a_request_step_lost_after_the_change_is_caught_up_once(services: Services) -> None:
    jobs, request_id = services.jobs, int(uuid.uuid4().int % 10**6)
    key = f"aws/rds/{request_id}"
    job = jobs.create(JobRecord(uuid=str(uuid.uuid4()), owner="alice", request={
        "cloud_id": "aws", "resource_type": "rds", "request_id": request_id, "dry_run": False}))

    break_request_store(services, key)
    try:
        started = jobs.transition(job.uuid, {"PENDING"}, {"status": "STARTED",
                                                          "started_at": "2026-01-01T00:00:00Z"})
    finally:
        mend_request_store(services, key)
    assert started is not None and started.status == "STARTED"  # the job goes on
    assert services.requests.get(key) is None  # its request step was lost...
    assert jobs.followups(0) == (job.uuid,)  # ...and the job is marked for the sweep

    assert services.lifecycle.catch_up(jobs, older_than=0) == 1
    record = services.requests.get(key)
    assert record is not None and record.state == "generating"
    assert services.lifecycle.catch_up(jobs, older_than=0) == 0  # settled: once only
    feed = [e["type"] for e in services.events.scan(None, 1000)
            if e["request_id"] == request_id]
    assert feed == ["job.started", "request.generating"]

    # A step that went through leaves no mark behind.
    jobs.transition(job.uuid, {"STARTED"}, {"status": "FAILURE", "error": {
        "code": "INTERNAL", "message": "x", "retryable": False}})
    assert jobs.followups(0) == ()
    record = services.requests.get(key)
    assert record is not None and record.state == "failed"
