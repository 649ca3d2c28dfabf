"""Overdue jobs: when an unfinished job must end as TIMEOUT, on read and by the beat sweep."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from app.core.jobs.lifecycle import JobLifecycle
from app.core.jobs.record import JobRecord, parse_time
from app.errors import JobTimeout

__all__ = ["deadline", "expire_overdue", "sweep_overdue"]


def deadline(record: JobRecord, config: Mapping[str, Any]) -> dt.datetime | None:
    """When an unfinished job is overdue and must be ended as ``TIMEOUT``.

    Queued: it should have run or expired (``JOB_QUEUE_EXPIRES``). Running: the hard time
    limit, plus the broker's visibility timeout so that a message of a worker that died
    whole is redelivered and re-run before the job is declared lost. Counted from the
    first start of the current message (``attempt_started_at`` is not moved by a
    redelivery), so a job whose worker keeps dying cannot push its deadline on.
    """
    if record.final:
        return None
    grace = 30
    hard = int(config["JOB_TIME_LIMIT"])
    visibility = int(config["CELERY"]["broker_transport_options"].get("visibility_timeout", 0))
    queue = int(config["JOB_QUEUE_EXPIRES"])
    if record.status == "PENDING":
        base, allowance = record.submitted_at, queue + grace
    elif record.status == "RETRY":
        base = record.stages[-1]["at"] if record.stages else record.submitted_at
        allowance = int(config["JOB_RETRY_BACKOFF_MAX"]) + queue + grace
    else:
        base = record.attempt_started_at or record.submitted_at
        allowance = hard + visibility + grace
    return parse_time(base) + dt.timedelta(seconds=allowance)


def expire_overdue(jobs: JobLifecycle, record: JobRecord, config: Mapping[str, Any]
                   ) -> JobRecord:
    """End ``record`` as FAILURE/TIMEOUT when past its deadline; return the current record."""
    return _expire(jobs, record, config)[0]


def _expire(jobs: JobLifecycle, record: JobRecord, config: Mapping[str, Any]
            ) -> tuple[JobRecord, bool]:
    due = deadline(record, config)
    if due is None or dt.datetime.now(dt.UTC) < due:
        return record, False
    error = JobTimeout(f"job did not finish in time (was {record.status} at {record.stage})",
                       retryable=True)
    ended = jobs.finish(record.uuid, "FAILURE", error, allowed={record.status})
    return (ended or jobs.store.get(record.uuid) or record), ended is not None


def sweep_overdue(jobs: JobLifecycle, config: Mapping[str, Any], limit: int = 500
                  ) -> list[JobRecord]:
    """End every unfinished job past its deadline; return the ones this call ended.

    Run periodically (``tfgen.sweep`` under ``celery beat``), so a job whose message was
    lost ends as ``TIMEOUT`` without waiting for someone to read it.
    """
    ended = []
    for record in jobs.store.unfinished(limit):
        current, changed = _expire(jobs, record, config)
        if changed:
            ended.append(current)
    return ended
