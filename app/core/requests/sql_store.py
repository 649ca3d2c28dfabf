"""Request records, aliases and delivery claims in SQL tables: the embedded default.
A database that does not answer leaves as ``DatabaseUnavailable`` at ``_do``, the one
place every query goes through."""

from __future__ import annotations

import builtins
import datetime as dt
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from app.core.boundary import SQL_UNAVAILABLE, sql_tables, translating
from app.core.requests.record import RECONCILE_STATES, RequestRecord, Step
from app.errors import DatabaseUnavailable

__all__ = ["SqlRequestStore"]

_sql = translating(SQL_UNAVAILABLE, DatabaseUnavailable, "request store")


def _define(table: str, meta: sa.MetaData) -> tuple[sa.Table, sa.Table, sa.Table]:
    """The records, their aliases (branches, merge commits) and GitLab delivery claims."""
    return (
        sa.Table(
            table, meta,
            sa.Column("key", sa.String(128), primary_key=True),
            sa.Column("state", sa.String(16), nullable=False, index=True),
            sa.Column("cloud_id", sa.String(30), nullable=False),
            sa.Column("resource_type", sa.String(30), nullable=False),
            sa.Column("updated_at", sa.String(32), nullable=False, index=True),
            sa.Column("checked_at", sa.Float, nullable=False, default=0.0),
            sa.Column("document", sa.Text, nullable=False),
        ),
        sa.Table(
            f"{table}_alias", meta,
            sa.Column("alias", sa.String(400), primary_key=True),
            sa.Column("key", sa.String(128), nullable=False),
        ),
        sa.Table(
            f"{table}_delivery", meta,
            sa.Column("delivery", sa.String(128), primary_key=True),
            sa.Column("at", sa.Float, nullable=False),
        ),
    )


class SqlRequestStore:
    """Records, aliases and delivery claims in SQL tables: the embedded default."""

    def __init__(self, url: str, *, table: str = "tfgen_request") -> None:
        self.engine, (self.table, self.aliases, self.deliveries) = sql_tables(
            url, partial(_define, table), raised=DatabaseUnavailable, what="request store")
        self._lock = threading.Lock()

    @_sql
    def _do(self, fn: Callable[[sa.Connection], Any]) -> Any:
        with self.engine.begin() as conn:
            return fn(conn)

    def get(self, key: str) -> RequestRecord | None:
        """SELECT the record."""
        t = self.table
        raw = self._do(lambda c: c.execute(sa.select(t.c.document).where(t.c.key == key))
                       .scalar_one_or_none())
        return RequestRecord.from_json(raw) if raw else None

    def update(self, key: str, step: Step) -> tuple[RequestRecord | None, bool]:
        """Run the step; write guarded on the document read (again on a race)."""
        t = self.table
        with self._lock:
            while True:
                current = self.get(key)
                outcome = step(RequestRecord.from_json(current.to_json()) if current else None)
                if outcome is None:
                    return current, False
                record, changed = outcome
                row = {"state": record.state, "cloud_id": record.cloud_id,
                       "resource_type": record.resource_type, "updated_at": record.updated_at,
                       "document": record.to_json()}
                statement: sa.Insert | sa.Update
                if current is None:
                    statement = t.insert().values(key=key, checked_at=0.0, **row)
                else:
                    statement = t.update().where(
                        t.c.key == key, t.c.document == current.to_json()).values(**row)
                try:
                    done = self._do(partial(_rowcount, statement))
                except sa_exc.IntegrityError:
                    continue  # inserted by someone else meanwhile: step on theirs
                if done:
                    return record, changed

    def list(self, *, state: str | None = None, cloud_id: str | None = None,
             resource_type: str | None = None, limit: int = 100) -> builtins.list[RequestRecord]:
        """SELECT, newest change first."""
        t = self.table
        query = sa.select(t.c.document).order_by(t.c.updated_at.desc()).limit(limit)
        for column, value in ((t.c.state, state), (t.c.cloud_id, cloud_id),
                              (t.c.resource_type, resource_type)):
            if value:
                query = query.where(column == value)
        docs = self._do(lambda c: c.execute(query).scalars().all())
        return [RequestRecord.from_json(d) for d in docs]

    def due(self, limit: int) -> builtins.list[RequestRecord]:
        """The least recently checked first; each gets checked-at now."""
        t = self.table
        query = (sa.select(t.c.key, t.c.document).where(t.c.state.in_(RECONCILE_STATES))
                 .order_by(t.c.checked_at).limit(limit))

        def pick(conn: sa.Connection) -> builtins.list[RequestRecord]:
            rows = conn.execute(query).all()
            now = dt.datetime.now(dt.UTC).timestamp()
            if rows:
                conn.execute(t.update().where(t.c.key.in_([r[0] for r in rows]))
                             .values(checked_at=now))
            return [RequestRecord.from_json(r[1]) for r in rows]

        records: builtins.list[RequestRecord] = self._do(pick)
        return records

    def link(self, alias: str, key: str) -> None:
        """Upsert the alias."""
        a = self.aliases

        def write(conn: sa.Connection) -> None:
            conn.execute(a.delete().where(a.c.alias == alias))
            conn.execute(a.insert().values(alias=alias, key=key))

        self._do(write)

    def resolve(self, alias: str) -> str | None:
        """SELECT the alias."""
        a = self.aliases
        key = self._do(lambda c: c.execute(sa.select(a.c.key).where(a.c.alias == alias))
                       .scalar_one_or_none())
        return str(key) if key else None

    def claim_delivery(self, delivery: str, ttl: int) -> bool:
        """INSERT unless present and younger than ``ttl``."""
        d = self.deliveries
        now = dt.datetime.now(dt.UTC).timestamp()
        try:
            self._do(lambda c: c.execute(d.delete().where(d.c.delivery == delivery,
                                                          d.c.at < now - ttl)))
            self._do(lambda c: c.execute(d.insert().values(delivery=delivery, at=now)))
        except sa_exc.IntegrityError:
            return False
        return True

    def release_delivery(self, delivery: str) -> None:
        """DELETE the claim."""
        d = self.deliveries
        self._do(lambda c: c.execute(d.delete().where(d.c.delivery == delivery)))


def _rowcount(statement: Any, conn: sa.Connection) -> int:
    return int(conn.execute(statement).rowcount)

