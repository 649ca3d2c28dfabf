"""Policy waivers: an admin lets one denied rule pass for one request, until a date.

Stored where job records are (``JOB_STORE_URL``): Redis hashes beside the jobs, or a SQL
table beside the job table. A waiver applies while ``expires_at`` is in the future; an
expired one stays listed (``active: false``) as a record of who allowed what.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any, Protocol

import redis
import sqlalchemy as sa

from app.core.boundary import SQL_UNAVAILABLE, RedisCalls, sql_tables, translating
from app.core.jobs import parse_time, utcnow
from app.core.requests.record import request_key
from app.errors import DatabaseUnavailable

__all__ = ["RedisWaiverStore", "SqlWaiverStore", "Waiver", "WaiverStore",
           "waiver_store_from_url"]


@dataclass(frozen=True)
class Waiver:
    """One rule allowed for one request, by an admin, until ``expires_at`` (UTC ISO)."""

    id: str
    cloud_id: str
    resource_type: str
    request_id: int
    rule: str
    reason: str
    expires_at: str
    granted_by: str
    created_at: str

    @classmethod
    def new(cls, *, cloud_id: str, resource_type: str, request_id: int, rule: str,
            reason: str, expires_at: dt.datetime, granted_by: str) -> Waiver:
        """A new waiver with a fresh id."""
        expires = expires_at.astimezone(dt.UTC).isoformat(timespec="seconds")
        return cls(id=uuid.uuid4().hex, cloud_id=cloud_id, resource_type=resource_type,
                   request_id=int(request_id), rule=rule, reason=reason,
                   expires_at=expires.replace("+00:00", "Z"), granted_by=granted_by,
                   created_at=utcnow())

    @property
    def request_key(self) -> str:
        """``<cloud>/<type>/<request_id>``."""
        return request_key(self.cloud_id, self.resource_type, self.request_id)

    def active(self, now: dt.datetime | None = None) -> bool:
        """True until ``expires_at``."""
        return parse_time(self.expires_at) > (now or dt.datetime.now(dt.UTC))

    def to_dict(self) -> dict[str, Any]:
        """The API's and the policy report's view of the waiver."""
        return {**asdict(self), "active": self.active()}

    @classmethod
    def from_json(cls, text: str | bytes) -> Waiver:
        """Rebuild from ``json.dumps(asdict(waiver))``."""
        return cls(**json.loads(text))


class WaiverStore(Protocol):
    """Where waivers live."""

    def add(self, waiver: Waiver) -> None:
        """Store a waiver."""

    def get(self, waiver_id: str) -> Waiver | None:
        """One waiver, or None."""

    def delete(self, waiver_id: str) -> bool:
        """Remove a waiver; False when there was none."""

    def all(self) -> list[Waiver]:
        """Every waiver, newest first."""

    def for_request(self, cloud_id: str, resource_type: str, request_id: int) -> list[Waiver]:
        """The waivers of one request (active or not)."""


class RedisWaiverStore:
    """Waivers as JSON in one hash, with a set of ids per request."""

    def __init__(self, client: redis.Redis, *, prefix: str = "tfgen") -> None:
        self.client = client
        self.all_key = f"{prefix}:waivers"
        self.prefix = prefix
        self._call = RedisCalls(client, "waiver store", DatabaseUnavailable)

    def _request_set(self, key: str) -> str:
        return f"{self.prefix}:waivers:{key}"

    def add(self, waiver: Waiver) -> None:
        """HSET the waiver and index it by request, in one transaction."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.all_key, waiver.id, json.dumps(asdict(waiver)))
        pipe.sadd(self._request_set(waiver.request_key), waiver.id)
        self._call(pipe.execute)

    def get(self, waiver_id: str) -> Waiver | None:
        """HGET one waiver."""
        text = self._call(self.client.hget, self.all_key, waiver_id)
        return Waiver.from_json(text) if text else None

    def delete(self, waiver_id: str) -> bool:
        """Remove the waiver and its index entry."""
        waiver = self.get(waiver_id)
        if waiver is None:
            return False
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(self.all_key, waiver_id)
        pipe.srem(self._request_set(waiver.request_key), waiver_id)
        self._call(pipe.execute)
        return True

    def all(self) -> list[Waiver]:
        """Every waiver, newest first."""
        values = self._call(self.client.hvals, self.all_key)
        return sorted((Waiver.from_json(v) for v in values), key=lambda w: w.created_at,
                      reverse=True)

    def for_request(self, cloud_id: str, resource_type: str, request_id: int) -> list[Waiver]:
        """The waivers indexed under the request."""
        ids = self._call(self.client.smembers,
                         self._request_set(request_key(cloud_id, resource_type, request_id)))
        if not ids:
            return []
        values = self._call(self.client.hmget, self.all_key, sorted(ids))
        return [Waiver.from_json(v) for v in values if v]


# The SQL waiver store's boundary: ``_run``, the one place its queries go through.
_sql = translating(SQL_UNAVAILABLE, DatabaseUnavailable, "waiver store")


def _define(table: str, meta: sa.MetaData) -> sa.Table:
    return sa.Table(
        table, meta,
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("request_key", sa.String(200), nullable=False, index=True),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("document", sa.Text, nullable=False),
    )


class SqlWaiverStore:
    """Waivers in one SQL table beside the job table (the embedded SQLite default)."""

    def __init__(self, url: str, *, table: str = "tfgen_waiver") -> None:
        self.engine, self.table = sql_tables(url, partial(_define, table),
                                             raised=DatabaseUnavailable, what="waiver store")

    @_sql
    def _run(self, statement: Any, write: bool = False) -> Any:
        if write:
            with self.engine.begin() as conn:
                return conn.execute(statement).rowcount
        with self.engine.connect() as conn:
            return conn.execute(statement).scalars().all()

    def add(self, waiver: Waiver) -> None:
        """Insert the waiver."""
        self._run(self.table.insert().values(
            id=waiver.id, request_key=waiver.request_key, created_at=waiver.created_at,
            document=json.dumps(asdict(waiver))), write=True)

    def get(self, waiver_id: str) -> Waiver | None:
        """Select one waiver."""
        docs = self._run(sa.select(self.table.c.document).where(self.table.c.id == waiver_id))
        return Waiver.from_json(docs[0]) if docs else None

    def delete(self, waiver_id: str) -> bool:
        """Delete one waiver."""
        return bool(self._run(self.table.delete().where(self.table.c.id == waiver_id),
                              write=True))

    def all(self) -> list[Waiver]:
        """Every waiver, newest first."""
        docs = self._run(sa.select(self.table.c.document)
                         .order_by(self.table.c.created_at.desc()))
        return [Waiver.from_json(d) for d in docs]

    def for_request(self, cloud_id: str, resource_type: str, request_id: int) -> list[Waiver]:
        """The waivers of one request."""
        key = request_key(cloud_id, resource_type, request_id)
        docs = self._run(sa.select(self.table.c.document).where(self.table.c.request_key == key))
        return [Waiver.from_json(d) for d in docs]


def waiver_store_from_url(url: str, *, prefix: str = "tfgen") -> WaiverStore:
    """Open the waiver store beside the job store that ``url`` names."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=5)
        return RedisWaiverStore(client, prefix=prefix)
    return SqlWaiverStore(url)

