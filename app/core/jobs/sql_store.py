"""Job records in one SQL table (the embedded SQLite default, or any SQLAlchemy URL)."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Collection, Mapping
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from app.core.backoff import full_jitter
from app.core.boundary import SQL_UNAVAILABLE, sql_tables, translating
from app.core.events import SqlEventLog
from app.core.jobs.record import ACTIVE, EventFor, JobRecord, apply_changes, parse_time
from app.errors import JobStoreUnavailable

__all__ = ["SQL_TRANSITION_ATTEMPTS", "SqlJobStore"]

# --- SQL (embedded) ----------------------------------------------------------------------


# The SQL job store's boundary: a database that does not answer is JobStoreUnavailable,
# as with Redis.
_sql = translating(SQL_UNAVAILABLE, JobStoreUnavailable, "job store")

#: Lost compare-and-set races after which a SQL transition gives up (retryable). Each
#: lost race means another writer's transition went through, and the loser waits a
#: jittered backoff (at most 50 ms) before it reads again.
SQL_TRANSITION_ATTEMPTS = 100


def _define(table: str, meta: sa.MetaData) -> tuple[sa.Table, sa.Table, sa.Table]:
    """The records, their idempotency keys, and the jobs whose last event is written
    and whose follow-up is not yet done."""
    return (
        sa.Table(
            table, meta,
            sa.Column("uuid", sa.String(36), primary_key=True),
            sa.Column("owner", sa.String(128), nullable=False, index=True),
            sa.Column("status", sa.String(16), nullable=False),
            sa.Column("submitted_at", sa.String(32), nullable=False, index=True),
            sa.Column("document", sa.Text, nullable=False),
        ),
        sa.Table(
            f"{table}_idempotency", meta,
            sa.Column("key", sa.String(64), primary_key=True),
            sa.Column("uuid", sa.String(36), nullable=False),
        ),
        sa.Table(
            f"{table}_followup", meta,
            sa.Column("uuid", sa.String(36), primary_key=True),
            sa.Column("at", sa.Float, nullable=False, index=True),
        ),
    )


class SqlJobStore:
    """Job records in one SQL table: the embedded default (SQLite), no server needed.

    Args:
        url: The database.
        ttl: Seconds a record is kept.
        table: The table's name (its idempotency keys: ``<table>_idempotency``).
        events: The event log status changes write their events to, in the same
            transaction (it must live in the same database).
    """

    def __init__(self, url: str, *, ttl: int = 604800, table: str = "tfgen_job",
                 events: SqlEventLog | None = None) -> None:
        self.ttl = ttl
        if events is not None and events.engine.url != sa.make_url(url):
            raise ValueError("the event log must live in the job store's database: a "
                             "status change and its event are one transaction")
        self.events = events
        self.engine, (self.table, self.idempotency, self.followup) = sql_tables(
            url, partial(_define, table), raised=JobStoreUnavailable, what="job store")
        self._lock = threading.Lock()

    def _row(self, record: JobRecord) -> dict[str, Any]:
        return {"uuid": record.uuid, "owner": record.owner, "status": record.status,
                "submitted_at": record.submitted_at,
                "document": json.dumps(record.to_fields())}

    def _expired(self, record: JobRecord) -> bool:
        age = dt.datetime.now(dt.UTC) - parse_time(record.finished_at or record.submitted_at)
        return age.total_seconds() > self.ttl

    @_sql
    def create(self, record: JobRecord, idempotency_key: str | None = None) -> JobRecord:
        """Insert the record, and its idempotency key in the same transaction.

        The key's primary key decides between concurrent duplicates: the loser's
        transaction (record included) rolls back, and it returns the winner's record.
        """
        t = self.idempotency
        for _ in range(3):
            try:
                with self.engine.begin() as conn:
                    conn.execute(self.table.insert().values(**self._row(record)))
                    if idempotency_key:
                        conn.execute(t.insert().values(key=idempotency_key, uuid=record.uuid))
                return record
            except sa_exc.IntegrityError:
                if not idempotency_key:
                    raise
            with self.engine.begin() as conn:
                bound = conn.execute(sa.select(t.c.uuid)
                                     .where(t.c.key == idempotency_key)).scalar()
                earlier = self.get(str(bound)) if bound else None
                if earlier is not None:
                    return earlier
                # Bound to a job that has no record: take the key over.
                conn.execute(t.delete().where(t.c.key == idempotency_key, t.c.uuid == bound))
        raise JobStoreUnavailable("job store: idempotency key kept changing hands")

    @_sql
    def get(self, uuid: str) -> JobRecord | None:
        """Return the record unless unknown or past its TTL."""
        with self.engine.connect() as conn:
            doc = conn.execute(sa.select(self.table.c.document)
                               .where(self.table.c.uuid == uuid)).scalar_one_or_none()
        if doc is None:
            return None
        record = JobRecord.from_fields(json.loads(doc))
        return None if self._expired(record) else record

    @_sql
    def delete(self, uuid: str) -> None:
        """Delete the record."""
        with self.engine.begin() as conn:
            conn.execute(self.table.delete().where(self.table.c.uuid == uuid))

    @_sql
    def transition(
        self, uuid: str, allowed: Collection[str], changes: Mapping[str, Any],
        event: EventFor | None = None,
    ) -> JobRecord | None:
        """Apply ``changes`` when the status is allowed: UPDATE guarded on the old status.

        With ``event`` (and an event log bound), the event row is inserted in the same
        transaction as the UPDATE: both commit, or both roll back.

        Returns:
            The record as written, or None when there is none or its status is not in
            ``allowed``. A lost race (another process wrote in between) is run again.

        Raises:
            JobStoreUnavailable: The database did not answer, or the record kept
                changing under ``SQL_TRANSITION_ATTEMPTS`` attempts (retryable; never
                answered None as if the transition were refused).
        """
        with self._lock:
            for attempt in range(SQL_TRANSITION_ATTEMPTS):
                current = self.get(uuid)
                if current is None or current.status not in allowed:
                    return None
                updated = apply_changes(JobRecord.from_fields(current.to_fields()), changes)
                if self._write(current, updated, event):
                    return updated
                time.sleep(full_jitter(attempt, 0.001, 0.05))
        raise JobStoreUnavailable(f"job store: job {uuid} kept changing during a transition")

    def _write(self, current: JobRecord, updated: JobRecord, event: EventFor | None) -> bool:
        """One guarded UPDATE, with its event row; False when another writer came first."""
        t = self.table
        doc = event(updated) if event is not None and self.events is not None else None
        with self.engine.begin() as conn:
            done = conn.execute(
                t.update()
                .where(t.c.uuid == current.uuid,
                       t.c.document == json.dumps(current.to_fields()))
                .values(status=updated.status, document=json.dumps(updated.to_fields()))
            ).rowcount
            if done and doc is not None:
                assert self.events is not None
                try:
                    doc["id"] = self.events.insert(conn, doc)
                except sa_exc.SQLAlchemyError as e:  # rolls the UPDATE back with it
                    raise JobStoreUnavailable(f"job store: event log refused: {e}") from e
                f = self.followup
                conn.execute(f.delete().where(f.c.uuid == current.uuid))
                conn.execute(f.insert().values(uuid=current.uuid, at=time.time()))
        return bool(done)

    @_sql
    def followups(self, older_than: float, limit: int = 500) -> tuple[str, ...]:
        """Jobs whose last event was written ``older_than`` seconds ago or more and whose
        follow-up (``followup_done``) has not been done, oldest first."""
        f = self.followup
        query = (sa.select(f.c.uuid).where(f.c.at <= time.time() - older_than)
                 .order_by(f.c.at).limit(limit))
        with self.engine.connect() as conn:
            return tuple(str(u) for u in conn.execute(query).scalars().all())

    @_sql
    def followup_done(self, uuid: str) -> None:
        """What comes after job ``uuid``'s event has been done."""
        with self.engine.begin() as conn:
            conn.execute(self.followup.delete().where(self.followup.c.uuid == uuid))

    @_sql
    def list(self, owner: str | None, limit: int = 50) -> list[JobRecord]:
        """Recent records, newest first."""
        t = self.table
        query = sa.select(t.c.document).order_by(t.c.submitted_at.desc()).limit(limit)
        if owner:
            query = query.where(t.c.owner == owner)
        with self.engine.connect() as conn:
            docs = conn.execute(query).scalars().all()
        records = (JobRecord.from_fields(json.loads(d)) for d in docs)
        return [r for r in records if not self._expired(r)]

    @_sql
    def unfinished(self, limit: int = 500) -> tuple[JobRecord, ...]:
        """Records not yet final, oldest first."""
        t = self.table
        query = (sa.select(t.c.document).where(t.c.status.in_(sorted(ACTIVE)))
                 .order_by(t.c.submitted_at).limit(limit))
        with self.engine.connect() as conn:
            docs = conn.execute(query).scalars().all()
        return tuple(JobRecord.from_fields(json.loads(d)) for d in docs)

    @_sql
    def release_idempotency(self, key: str) -> None:
        """Delete the key."""
        with self.engine.begin() as conn:
            conn.execute(self.idempotency.delete().where(self.idempotency.c.key == key))

    @_sql
    def ping(self) -> None:
        """Run a trivial query."""
        with self.engine.connect() as conn:
            conn.execute(sa.select(sa.literal(1)))
