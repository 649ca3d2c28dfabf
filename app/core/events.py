"""The event log: one ordered, durable record of every job and request change.

Each event is ``{"id", "type", "at", "owner", "cloud_id", "resource_type", "request_id",
"job_uuid", "data"}``; ``id`` is its cursor. Two stores share one interface:

- ``RedisEventLog``: a Redis Stream. The entry ID is the cursor, ``XADD ... MAXLEN ~``
  and ``XTRIM MINID ~`` cap it in length and age, ``XREAD BLOCK`` is the long poll.
  Entry IDs only grow, and an entry is visible whole or not at all, so a reader paging
  by cursor never misses or repeats one, however many writers append at once.
- ``SqlEventLog``: one table with an increasing integer key (the embedded SQLite
  default). SQLite runs one writer at a time, so keys commit in order; on PostgreSQL the
  append takes a table lock for the same guarantee. The long poll polls.

Only ``Lifecycle`` (``app/core/lifecycle.py``) appends; readers call ``read_events``. A
job's status change and its event are one write: the job store the services hand out
writes the event in the transition's own atomic step (``RedisEventLog.entry`` inside the
job store's MULTI/EXEC, ``SqlEventLog.insert`` inside its SQL transaction), so the
event log's being unreachable fails the transition rather than losing the event.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import threading
import time
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any, Protocol

import redis
import sqlalchemy as sa

from app.core.boundary import SQL_UNAVAILABLE, RedisCalls, sql_tables, translating
from app.errors import BadRequest, DatabaseUnavailable

__all__ = [
    "CURSOR",
    "BadCursor",
    "EventLog",
    "RedisEventLog",
    "SqlEventLog",
    "entry_cursor",
    "event_log_from_url",
    "read_events",
]

#: Every cursor, on either store: ``<n>-<n>`` (a Redis Stream entry ID; the SQL store
#: writes its key as ``<key>-0``), so that one pattern documents the feed.
CURSOR = r"^[0-9]{1,19}-[0-9]{1,19}$"
_CURSOR = re.compile(CURSOR)


class BadCursor(BadRequest):
    """``after`` is not a cursor of this feed."""

    code = "VALIDATION_ERROR"

    def __init__(self) -> None:
        super().__init__("after is not a cursor of this feed",
                         details={"errors": {"after": "not a cursor of this feed"}})


# One read looks at no more than this many entries a caller may not see before it
# answers (with an advanced cursor): a foreign-heavy log cannot hold a request forever.
SCAN_BUDGET = 5000


class EventLog(Protocol):
    """Where events live, in order."""

    zero: str  # the cursor before the first event

    def append(self, event: Mapping[str, Any]) -> str:
        """Append ``event`` (without ``id``); return its cursor."""

    def scan(self, after: str | None, count: int) -> list[dict[str, Any]]:
        """Up to ``count`` events after the cursor ``after`` (oldest kept when None)."""

    def wait(self, after: str, timeout: float) -> None:
        """Return once an event after ``after`` exists, or ``timeout`` seconds passed."""

    def check_cursor(self, cursor: str) -> str:
        """Return ``cursor`` when well formed; raise ``BadRequest`` otherwise."""


def read_events(
    log: EventLog,
    *,
    after: str | None,
    limit: int,
    wait: float,
    visible: Callable[[Mapping[str, Any]], bool],
) -> tuple[list[dict[str, Any]], str]:
    """Return the events after ``after`` that ``visible`` accepts, and the next cursor.

    Args:
        log: The event log.
        after: The cursor of the last event seen; None starts at the oldest kept.
        limit: At most this many events.
        wait: When none is there yet, hold on up to this many seconds for one.
        visible: The caller's filter (the job visibility rules).

    Returns:
        ``(events, next)``: pass ``next`` as ``after`` to continue. It moves past events
        the caller may not see too, so they are never scanned twice.
    """
    cursor = log.check_cursor(after) if after else None
    deadline = time.monotonic() + wait
    scanned = 0
    out: list[dict[str, Any]] = []
    while True:
        batch = log.scan(cursor, max(limit, 100))
        for event in batch:
            cursor = event["id"]
            scanned += 1
            if visible(event):
                out.append(event)
                if len(out) >= limit:
                    return out, cursor
        if out or scanned >= SCAN_BUDGET:
            return out, cursor or log.zero
        if batch:
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            return out, cursor or log.zero
        log.wait(cursor or log.zero, left)



def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- Redis Streams -----------------------------------------------------------------------

class RedisEventLog:
    """The event log as one Redis Stream, capped by ``max_len`` entries and ``max_age`` s."""

    zero = "0-0"

    def __init__(self, client: redis.Redis, *, prefix: str = "tfgen", max_len: int = 100000,
                 max_age: int = 30 * 86400) -> None:
        self.client = client
        self.key = f"{prefix}:events"
        self.max_len = max_len
        self.max_age = max_age
        self._call = RedisCalls(client, "event log", DatabaseUnavailable)

    def append(self, event: Mapping[str, Any]) -> str:
        """XADD with an approximate length cap, then trim what is older than ``max_age``."""
        document, max_len, min_id = self.entry(event)
        pipe = self.client.pipeline(transaction=False)
        pipe.xadd(self.key, {"e": document}, maxlen=max_len, approximate=True)
        pipe.xtrim(self.key, minid=min_id, approximate=False)
        return entry_cursor(self._call(pipe.execute)[0])

    def entry(self, event: Mapping[str, Any]) -> tuple[str, int, str]:
        """What an XADD of ``event`` writes, for a writer that appends in its own step.

        Returns:
            The entry's ``e`` field, the ``MAXLEN ~`` cap and the ``MINID`` to trim to.
        """
        oldest = int((_now().timestamp() - self.max_age) * 1000)
        return json.dumps(dict(event), separators=(",", ":")), self.max_len, f"{oldest}-0"

    def same_server(self, client: redis.Redis) -> bool:
        """True when ``client`` talks to this log's Redis (one MULTI can write both)."""
        def where(c: redis.Redis) -> tuple[Any, ...]:
            kw = c.connection_pool.connection_kwargs
            return kw.get("host"), kw.get("port"), kw.get("path"), kw.get("db", 0)
        return where(client) == where(self.client)

    def scan(self, after: str | None, count: int) -> list[dict[str, Any]]:
        """XRANGE from just after ``after`` (exclusive range, Redis 6.2+)."""
        start = f"({after}" if after else "-"
        entries = self._call(self.client.xrange, self.key, min=start, max="+", count=count)
        return [self._event(entry_id, fields) for entry_id, fields in entries]

    def wait(self, after: str, timeout: float) -> None:
        """XREAD BLOCK until an entry after ``after`` arrives or ``timeout`` passes."""
        block = max(1, int(timeout * 1000))
        # The socket must outlast the block: use a connection without the read timeout.
        self._call(self.client.xread, {self.key: after}, count=1, block=block)

    def check_cursor(self, cursor: str) -> str:
        """A Redis Stream entry ID, ``<ms>-<seq>``."""
        if not _CURSOR.match(cursor):
            raise BadCursor()
        return cursor

    @staticmethod
    def _event(entry_id: bytes | str, fields: Mapping[Any, Any]) -> dict[str, Any]:
        raw = fields.get(b"e", fields.get("e"))
        event: dict[str, Any] = json.loads(raw)
        event["id"] = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
        return event


# --- SQL (embedded) ----------------------------------------------------------------------


# The SQL event log's boundary: a database that does not answer is DatabaseUnavailable.
_sql = translating(SQL_UNAVAILABLE, DatabaseUnavailable, "event log")


def _define(table: str, meta: sa.MetaData) -> sa.Table:
    return sa.Table(
        table, meta,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.Float, nullable=False, index=True),
        sa.Column("document", sa.Text, nullable=False),
        sqlite_autoincrement=True,  # never reuse the key of a trimmed event
    )


class SqlEventLog:
    """The event log in one SQL table with an increasing key: the embedded default."""

    zero = "0-0"

    def __init__(self, url: str, *, table: str = "tfgen_event", max_len: int = 100000,
                 max_age: int = 30 * 86400, poll_interval: float = 0.1) -> None:
        self.engine, self.table = sql_tables(url, partial(_define, table),
                                             raised=DatabaseUnavailable, what="event log")
        self.max_len = max_len
        self.max_age = max_age
        self.poll_interval = poll_interval
        self._appends = 0
        self._lock = threading.Lock()

    @_sql
    def append(self, event: Mapping[str, Any]) -> str:
        """INSERT in a transaction of its own; see ``insert``."""
        with self._lock, self.engine.begin() as conn:
            return self.insert(conn, event)

    def insert(self, conn: sa.Connection, event: Mapping[str, Any]) -> str:
        """INSERT ``event`` in the caller's transaction on this log's database; its cursor.

        Every hundredth insert of this process trims by length and age.
        """
        t = self.table
        document = json.dumps(dict(event), separators=(",", ":"))
        if conn.dialect.name == "postgresql":
            # Keys from a sequence may commit out of order; one writer at a time.
            conn.execute(sa.text(f"LOCK TABLE {t.name} IN EXCLUSIVE MODE"))
        inserted = conn.execute(
            t.insert().values(at=_now().timestamp(), document=document)).inserted_primary_key
        assert inserted is not None
        new_id = int(inserted[0])
        self._appends += 1
        if self._appends % 100 == 0:
            conn.execute(t.delete().where(
                sa.or_(t.c.id <= new_id - self.max_len,
                       t.c.at < _now().timestamp() - self.max_age)))
        return f"{new_id}-0"

    @_sql
    def scan(self, after: str | None, count: int) -> list[dict[str, Any]]:
        """Rows with a key above ``after``, in key order."""
        t = self.table
        query = sa.select(t.c.id, t.c.document).order_by(t.c.id).limit(count)
        if after:
            query = query.where(t.c.id > int(after.split("-", 1)[0]))
        with self.engine.connect() as conn:
            rows = conn.execute(query).all()
        out = []
        for row_id, document in rows:
            event: dict[str, Any] = json.loads(document)
            event["id"] = f"{row_id}-0"
            out.append(event)
        return out

    def wait(self, after: str, timeout: float) -> None:
        """Poll for a row above ``after`` every ``poll_interval`` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.scan(after, 1):
                return
            time.sleep(min(self.poll_interval, max(0.0, deadline - time.monotonic())))

    def check_cursor(self, cursor: str) -> str:
        """``<key>-<n>``, as this store writes them (``<key>-0``)."""
        if not _CURSOR.match(cursor) or int(cursor.split("-", 1)[0]) >= 2**63:
            raise BadCursor()
        return cursor


def entry_cursor(entry_id: bytes | str) -> str:
    """A Redis Stream entry ID as a cursor."""
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


def event_log_from_url(url: str, *, prefix: str = "tfgen", max_len: int = 100000,
                       max_age: int = 30 * 86400) -> EventLog:
    """Open the event log a URL names: ``redis://`` (a Stream) or any SQLAlchemy URL."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        # No socket timeout: XREAD BLOCK holds the connection up to the poll's ``wait``.
        client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=30,
                                      health_check_interval=30)
        return RedisEventLog(client, prefix=prefix, max_len=max_len, max_age=max_age)
    return SqlEventLog(url, max_len=max_len, max_age=max_age)
