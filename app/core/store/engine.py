"""The store's engine and its boundary: pool, driver errors translated once.

The settings are the typed ``StoreSettings`` part of ``config.settings`` (re-exported).

Engine creation is the one place that knows each driver's connect-timeout option.
``unavailable`` tells an outage (refused, lost or timed-out connections, a full pool),
which ``ApexStore.connect`` turns into ``DatabaseUnavailable``, from refused SQL;
``interruption`` finds an exception that broke into a statement from outside (a Celery
time limit), which goes through as itself while the half-used connection is dropped.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Engine

from app.errors import TfgenError
from config.settings.parts import StoreSettings

__all__ = ["StoreSettings", "create_engine", "describe", "interruption", "unavailable"]


def _connect_args(url: sa.engine.URL, timeout: float) -> dict[str, Any]:
    # The one place that knows drivers: each names its connect timeout differently.
    backend = url.get_backend_name()
    if backend == "sqlite":
        return {"timeout": timeout}  # waiting for a lock, there is no network
    if backend == "postgresql":
        return {"connect_timeout": max(1, round(timeout))}
    if backend == "oracle":
        return {"tcp_connect_timeout": timeout}
    return {}


def create_engine(settings: StoreSettings) -> Engine:
    """Create an engine and pool, sized and timed out by ``settings``.

    Autocommit with no reset on return: tfgen only reads, each statement sees its own
    read-committed snapshot anyway, and so no ``BEGIN`` or ``ROLLBACK`` costs a round
    trip. Oracle is reached in python-oracledb's thin mode (SQLAlchemy's default), which
    needs no Instant Client.
    """
    url = sa.make_url(settings.url)
    kwargs: dict[str, Any] = {
        "isolation_level": "AUTOCOMMIT",
        "pool_reset_on_return": None,
        "pool_pre_ping": settings.pool_pre_ping,
        "connect_args": _connect_args(url, settings.connect_timeout),
    }
    if settings.pool_size == 0:
        kwargs["poolclass"] = sa.pool.NullPool  # a new connection per use (DRCP, PgBouncer)
    elif not (url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")):
        kwargs.update(pool_size=settings.pool_size, max_overflow=settings.max_overflow,
                      pool_timeout=settings.pool_timeout, pool_recycle=settings.pool_recycle)
    return sa.create_engine(url, **kwargs)


def unavailable(e: BaseException) -> bool:
    """True when ``e`` means the database is not answering, rather than refusing SQL."""
    if isinstance(e, sa_exc.TimeoutError):  # no free pooled connection in time
        return True
    if isinstance(e, sa_exc.DBAPIError):
        return e.connection_invalidated or isinstance(
            e, sa_exc.OperationalError | sa_exc.InterfaceError)
    return False


def describe(e: BaseException) -> str:
    # Class names only: driver messages can carry host names and user names.
    orig = getattr(e, "orig", None)
    return type(orig or e).__name__


def interruption(e: BaseException, driver_error: type[BaseException]) -> BaseException | None:
    """The exception that broke into a statement from outside, if ``e`` is or hides one.

    A Celery time limit raises its exception in whatever code runs when the signal
    lands, often inside the driver's wait for an answer; the driver or SQLAlchemy may
    then fail on the half-used connection and raise a database error in its place.
    Neither is an outage: the connection's state is unknown (drop it) and the original
    exception must reach the caller.
    """
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, TfgenError):
            return None
        if not isinstance(seen, sa_exc.SQLAlchemyError | driver_error):
            return seen
        seen = seen.__context__
    return None
