"""``JobLifecycle``: every ending through one ``finish``, its hook called once per ending;
cancel as a core function (the HTTP layer only maps its answer)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

import pytest

from app.core.jobs import (
    JobLifecycle,
    JobRecord,
    JobStore,
    error_document,
    expire_overdue,
    sweep_overdue,
)
from app.errors import BadRequest, Canceled, PolicyDenied, RenderError
from tests.core.jobs.conftest import record

CONFIG = {"JOB_TIME_LIMIT": 10, "JOB_QUEUE_EXPIRES": 10, "JOB_RETRY_BACKOFF_MAX": 10,
          "CELERY": {"broker_transport_options": {"visibility_timeout": 10}}}


class Hook:
    """Notes each ending it is told of."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def __call__(self, ended: JobRecord, context: Mapping[str, Any]) -> None:
        self.calls.append((ended.uuid, ended.status, dict(context)))


def test_finish_ends_once_and_tells_the_hook_once(store: JobStore) -> None:
    hook = Hook()
    jobs = JobLifecycle(store, hook)
    job = store.create(record())
    ended = jobs.finish(job.uuid, "FAILURE", RenderError("boom", details={"line": 3}))
    assert ended is not None and ended.final and ended.finished_at
    assert ended.error == {"code": "RENDER_ERROR", "message": "boom", "retryable": False,
                           "details": {"line": 3}}
    # Every later ending loses: nothing written, nobody told.
    assert jobs.finish(job.uuid, "SUCCESS", changes={"result": {}}) is None
    assert jobs.finish(job.uuid, "REVOKED", Canceled("late")) is None
    assert hook.calls == [(job.uuid, "FAILURE", {})]
    assert store.get(job.uuid) == ended


def test_the_error_document_is_built_in_one_place() -> None:
    denied = PolicyDenied("denied", details={"violations": [{"rule": "r", "msg": "m"}]})
    assert error_document(denied)["violations"] == [{"rule": "r", "msg": "m"}]
    # A code outside the design's fixed list never reaches a job document.
    assert error_document(BadRequest("odd")) == {"code": "INTERNAL", "message": "odd",
                                                 "retryable": False}


def test_finish_refuses_an_error_that_does_not_fit_the_status(store: JobStore) -> None:
    jobs = JobLifecycle(store)
    job = store.create(record())
    for status, error in [("SUCCESS", RenderError("x")), ("FAILURE", None),
                          ("STARTED", None)]:
        with pytest.raises(ValueError):
            jobs.finish(job.uuid, status, error)
    assert store.get(job.uuid) == job


def test_a_hook_that_fails_does_not_undo_the_ending(store: JobStore) -> None:
    def broken(ended: JobRecord, context: Mapping[str, Any]) -> None:
        raise RuntimeError("metrics away")

    job = store.create(record())
    ended = JobLifecycle(store, broken).finish(job.uuid, "SUCCESS", changes={"result": {}})
    assert ended is not None and ended.status == "SUCCESS"


def test_cancel_ends_a_queued_job_and_asks_a_running_one(store: JobStore) -> None:
    hook, revoked = Hook(), []
    jobs = JobLifecycle(store, hook)
    queued = store.create(record())
    canceled = jobs.cancel(queued.uuid, revoke=revoked.append, canceled_by="bob")
    assert canceled is not None and canceled.status == "REVOKED"
    assert canceled.cancel_requested and canceled.error is not None
    assert canceled.error["code"] == "CANCELED"
    assert revoked == [queued.uuid]
    assert hook.calls == [(queued.uuid, "REVOKED", {"canceled_by": "bob"})]

    running = store.create(record())
    store.transition(running.uuid, {"PENDING"}, {"status": "STARTED"})
    asked = jobs.cancel(running.uuid, revoke=revoked.append)
    assert asked is not None and asked.status == "STARTED" and asked.cancel_requested
    assert len(hook.calls) == 1 and revoked == [queued.uuid]  # the worker ends it

    assert jobs.cancel(queued.uuid, revoke=revoked.append) is None  # already ended


def test_cancel_survives_a_failed_revoke_broadcast(store: JobStore) -> None:
    def unreachable(uuid: str) -> None:
        raise OSError("broker away")

    job = store.create(record())
    canceled = JobLifecycle(store).cancel(job.uuid, revoke=unreachable)
    assert canceled is not None and canceled.status == "REVOKED"


def test_overdue_jobs_end_through_finish_on_read_and_by_the_sweep(store: JobStore) -> None:
    hook = Hook()
    jobs = JobLifecycle(store, hook)
    old = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    on_read, swept = record(), record()
    for job in (on_read, swept):
        job.submitted_at = old
        store.create(job)
    expired = expire_overdue(jobs, on_read, CONFIG)
    assert expired.status == "FAILURE" and expired.error is not None
    assert expired.error["code"] == "TIMEOUT" and expired.error["retryable"] is True
    assert expire_overdue(jobs, on_read, CONFIG) == expired  # read again: nothing new
    assert [r.uuid for r in sweep_overdue(jobs, CONFIG)] == [swept.uuid]
    assert sweep_overdue(jobs, CONFIG) == []
    assert hook.calls == [(on_read.uuid, "FAILURE", {}), (swept.uuid, "FAILURE", {})]
