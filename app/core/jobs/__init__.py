"""Job records: tfgen's own truth about a job, keyed by its UUID.

Celery reads an unknown task id as PENDING forever, so the API never asks Celery: it
writes a record before answering 202 and reads it back on every poll. Records outlive
Celery's result expiry and are kept ``JOB_RESULT_TTL`` seconds.

Two stores share one interface: Redis (production and tests, beside the broker) and SQL
(the embedded SQLite default). State changes go through ``transition``, an atomic
compare-and-set on the status, so a cancel and a worker racing on one job cannot both win.

Modules: ``record`` (the record, statuses, the store interface), ``redis_store`` and
``sql_store`` (the two stores), ``overdue`` (deadlines, expiry on read, the sweep).
"""

from __future__ import annotations

import redis

from app.core.jobs.overdue import deadline, expire_overdue, sweep_overdue
from app.core.jobs.record import ACTIVE, FINAL, JobRecord, JobStore, parse_time, utcnow
from app.core.jobs.redis_store import RedisJobStore
from app.core.jobs.sql_store import SqlJobStore

__all__ = [
    "ACTIVE",
    "FINAL",
    "JobRecord",
    "JobStore",
    "RedisJobStore",
    "SqlJobStore",
    "deadline",
    "expire_overdue",
    "job_store_from_url",
    "parse_time",
    "sweep_overdue",
    "utcnow",
]


def job_store_from_url(url: str, *, prefix: str = "tfgen", ttl: int = 604800) -> JobStore:
    """Open the job store a URL names: ``redis://`` or any SQLAlchemy URL."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5,
                                      health_check_interval=30)
        return RedisJobStore(client, prefix=prefix, ttl=ttl)
    return SqlJobStore(url, ttl=ttl)
