"""Error translation at a store's boundary, written once for every store.

A driver's outage (Redis refusing or dropping the connection, a SQL server that does
not answer) becomes the store's own retryable ``TfgenError`` at the store's edge, never
further in (python-gitlab's ``on_http_error`` decorator is the model):

- ``translating``: a decorator for a store's public methods (or the one private method
  every query goes through);
- ``sql_tables``: a SQL store's engine and its own tables, created when missing;
- ``RedisCalls``: a Redis store's calls and optimistic transactions (redis-py's own
  ``Redis.transaction``: WATCH, run, MULTI/EXEC, run again when a watched key moved).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar, cast

import redis
import sqlalchemy as sa
from redis.client import Pipeline
from sqlalchemy import exc as sa_exc

from app.errors import TfgenError

__all__ = [
    "SQL_UNAVAILABLE", "RedisCalls", "sql_engine", "sql_tables", "translating", "unavailable",
]

P = ParamSpec("P")
T = TypeVar("T")

#: What a SQL driver raises when the database is not answering (not refused SQL).
SQL_UNAVAILABLE: tuple[type[Exception], ...] = (
    sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


def sql_engine(url: str) -> sa.Engine:
    """An engine for tfgen's own SQL stores (jobs, requests, events, waivers). On SQLite,
    several processes (gunicorn workers, Celery children) write one file: wait up to 30 s
    for its lock instead of 5."""
    connect_args = {"timeout": 30} if url.startswith("sqlite") else {}
    return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)


def sql_tables(url: str, define: Callable[[sa.MetaData], T], *,
               raised: type[TfgenError], what: str) -> tuple[sa.Engine, T]:
    """Open a SQL store: its engine (``sql_engine``) and its tables, created when missing.

    Args:
        url: The store's SQLAlchemy URL.
        define: Declares the store's tables on the ``MetaData`` it is given and returns
            them (a table, or a tuple of them).
        raised: The store's error, raised when the database does not answer.
        what: The store's name in the message (``"request store"``).

    Returns:
        The engine and what ``define`` returned.

    Raises:
        TfgenError: ``raised``, when creating the tables meets a database that does
            not answer.
    """
    engine = sql_engine(url)
    meta = sa.MetaData()
    tables = define(meta)
    translating(SQL_UNAVAILABLE, raised, what)(meta.create_all)(engine)
    return engine, tables


def translating(
    caught: type[BaseException] | tuple[type[BaseException], ...],
    raised: type[TfgenError], what: str,
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorate a store method so that ``caught`` leaves it as ``raised``.

    Args:
        caught: The driver's outage exceptions.
        raised: The store's error (``JobStoreUnavailable``, ``DatabaseUnavailable``).
        what: The store's name in the message (``"job store"``).
    """
    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(fn)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> T:
            try:
                return fn(*args, **kwargs)
            except caught as e:
                raise unavailable(raised, what, e) from e
        return wrapped
    return decorate


def unavailable(raised: type[TfgenError], what: str, cause: BaseException) -> TfgenError:
    """The store's error for an outage: ``"<what> unavailable: <cause>"``."""
    return raised(f"{what} unavailable: {cause}")


class RedisCalls:
    """A Redis store's calls: every ``RedisError`` becomes the store's error.

    Args:
        client: The store's client.
        what: The store's name in the message.
        raised: The store's error class.
    """

    def __init__(self, client: redis.Redis, what: str, raised: type[TfgenError]) -> None:
        self.client = client
        self._raised = raised
        self._what = what

    def __call__(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one client call (or a pipeline's ``execute``)."""
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as e:  # not a decorator built per call: every command
            raise unavailable(self._raised, self._what, e) from e

    def transaction(self, attempt: Callable[[Pipeline], T], *watched: str) -> T:
        """Run ``attempt`` under WATCH of ``watched`` until its MULTI/EXEC wins.

        ``attempt`` reads through the pipe, then either calls ``pipe.multi()`` and
        queues its writes, or returns without writing (after ``pipe.reset()``, no
        EXEC is sent). A lost race runs it again; nothing is written twice.

        Returns:
            What ``attempt`` returned on the run that counted.
        """
        return cast(T, self(self.client.transaction, attempt, *watched,
                            value_from_callable=True))
