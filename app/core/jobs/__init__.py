"""Job records: tfgen's own truth about a job, keyed by its UUID.

Celery reads an unknown task id as PENDING forever, so the API never asks Celery: it
writes a record before answering 202 and reads it back on every poll. Records outlive
Celery's result expiry and are kept ``JOB_RESULT_TTL`` seconds.

Two stores share one interface: Redis (production and tests, beside the broker) and SQL
(the embedded SQLite default). State changes go through ``transition``, an atomic
compare-and-set on the status, so a cancel and a worker racing on one job cannot both win.

Modules: ``record`` (the record, statuses, the store interface), ``redis_store`` and
``sql_store`` (the two stores), ``lifecycle`` (``JobLifecycle``: every ending through one
``finish``, and cancel), ``overdue`` (deadlines, expiry on read, the sweep).
"""

from __future__ import annotations

import redis

from app.core.events import EventLog, RedisEventLog, SqlEventLog
from app.core.jobs.lifecycle import (
    CANCELABLE,
    QUEUED,
    RUNNING,
    JobLifecycle,
    OnFinished,
    error_document,
)
from app.core.jobs.overdue import deadline, expire_overdue, sweep_overdue
from app.core.jobs.record import ACTIVE, FINAL, STATUSES, JobRecord, JobStore, parse_time, utcnow
from app.core.jobs.redis_store import RedisJobStore
from app.core.jobs.sql_store import SqlJobStore

__all__ = [
    "ACTIVE",
    "CANCELABLE",
    "FINAL",
    "QUEUED",
    "RUNNING",
    "STATUSES",
    "JobLifecycle",
    "JobRecord",
    "JobStore",
    "OnFinished",
    "RedisJobStore",
    "SqlJobStore",
    "deadline",
    "error_document",
    "expire_overdue",
    "job_store_from_url",
    "parse_time",
    "sweep_overdue",
    "utcnow",
]


def job_store_from_url(url: str, *, prefix: str = "tfgen", ttl: int = 604800,
                       events: EventLog | None = None) -> JobStore:
    """Open the job store a URL names: ``redis://`` or any SQLAlchemy URL.

    Args:
        url: Where the records live.
        prefix: Of every Redis key.
        ttl: Seconds a record is kept.
        events: The event log each status change's event is written to with the change,
            in one atomic step; it must live in the same Redis or database.

    Raises:
        ValueError: ``events`` lives elsewhere, or is of the other kind.
    """
    if url.startswith(("redis://", "rediss://", "unix://")):
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5,
                                      health_check_interval=30)
        if events is not None and not isinstance(events, RedisEventLog):
            raise ValueError("a Redis job store writes events to a Redis event log")
        return RedisJobStore(client, prefix=prefix, ttl=ttl, events=events)
    if events is not None and not isinstance(events, SqlEventLog):
        raise ValueError("a SQL job store writes events to a SQL event log")
    return SqlJobStore(url, ttl=ttl, events=events)
