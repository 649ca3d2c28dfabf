"""The APEX schema through SQLAlchemy Core: catalog, request rows, templates, tokens.

One set of queries for every database: Oracle (``oracle+oracledb``, thin mode) in
production, SQLite embedded, PostgreSQL in tests. Domain code never branches on the
dialect; only engine creation knows driver-specific connect options.

Round trips per job: one query loads the request row joined with its template for the
row's ``module_version``, one loads its security-group rules (skipped when the optional
view does not exist); the user's GitLab token costs one more at publish time.

View names are built only from catalog pairs matching ``IDENTIFIER``; every value is a
bound parameter, so nothing from a request reaches SQL text.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
import time
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine

from app.core.model import JobRequest, ResourceRequest, Secret, Template
from app.errors import DatabaseUnavailable, NotFound, RequestNotFound, TemplateNotFound

__all__ = ["IDENTIFIER", "ApexStore", "StoreSettings", "plain_value"]

IDENTIFIER = re.compile(r"^[a-z][a-z0-9_]{0,29}$")

# Errors that mean "the database is not answering" (retry later), as opposed to a
# statement the database refused (our bug or a schema mismatch).
_UNAVAILABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError)


def plain_value(value: Any) -> Any:
    """Turn a driver value into what a template author expects.

    LOBs and bytes become text, dates ISO strings, integral decimals ``int``
    (Oracle returns every NUMBER as a number type), other decimals stay ``Decimal``.
    """
    if value is None or isinstance(value, bool | int | str | float):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8")
    read = getattr(value, "read", None)  # oracledb LOB when not auto-converted
    if callable(read):
        return plain_value(read())
    return value


def _plain_row(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {str(key).lower(): plain_value(val) for key, val in mapping.items()}


class StoreSettings:
    """Connection and naming settings of the APEX store."""

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 5,
        pool_timeout: int = 10,
        connect_timeout: int = 5,
        catalog_ttl: float = 30.0,
        template_table: str = "tf_template",
        users_table: str = "users",
        request_view: str = "v_{cloud_id}_{resource_type}_requests",
    ) -> None:
        self.url = url
        self.pool_size = pool_size
        self.pool_timeout = pool_timeout
        self.connect_timeout = connect_timeout
        self.catalog_ttl = catalog_ttl
        self.template_table = template_table
        self.users_table = users_table
        self.request_view = request_view

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> StoreSettings:
        """Build from the application configuration mapping."""
        return cls(
            config["DATABASE_URL"],
            pool_size=int(config.get("DB_POOL_SIZE", 5)),
            pool_timeout=int(config.get("DB_POOL_TIMEOUT", 10)),
            connect_timeout=int(config.get("DB_CONNECT_TIMEOUT", 5)),
            catalog_ttl=float(config.get("CATALOG_TTL", 30)),
            template_table=config.get("APEX_TEMPLATE_TABLE", "tf_template"),
            users_table=config.get("APEX_USERS_TABLE", "users"),
            request_view=config.get("APEX_REQUEST_VIEW", "v_{cloud_id}_{resource_type}_requests"),
        )


def _connect_args(url: sa.engine.URL, timeout: int) -> dict[str, Any]:
    backend = url.get_backend_name()
    if backend == "sqlite":
        return {"timeout": timeout}
    if backend == "postgresql":
        return {"connect_timeout": timeout}
    if backend == "oracle":
        return {"tcp_connect_timeout": timeout}
    return {}


def create_engine(settings: StoreSettings) -> Engine:
    """Create the process's engine and pool, sized and timed out by configuration."""
    url = sa.make_url(settings.url)
    kwargs: dict[str, Any] = {
        "pool_pre_ping": True,
        "connect_args": _connect_args(url, settings.connect_timeout),
    }
    if not (url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")):
        kwargs.update(pool_size=settings.pool_size, pool_timeout=settings.pool_timeout,
                      max_overflow=settings.pool_size, pool_recycle=1800)
    return sa.create_engine(url, **kwargs)


_STORES: weakref.WeakSet[ApexStore] = weakref.WeakSet()


def _reset_after_fork() -> None:
    # A pooled connection copied into a forked child (Celery prefork) must never be
    # used by both processes: drop the child's copies without closing the parent's.
    for store in list(_STORES):
        store._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)


class ApexStore:
    """Read-only access to the APEX schema.

    One engine and pool per process, created on first use.
    """

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._catalog: tuple[float, dict[tuple[str, str], list[str]]] | None = None
        self._views: dict[str, bool] = {}
        self._meta = sa.MetaData()
        self.templates = sa.Table(
            settings.template_table, self._meta,
            sa.Column("cloud_id", sa.String(30)),
            sa.Column("resource_type", sa.String(30)),
            sa.Column("module_version", sa.String(30)),
            sa.Column("jinja_template", sa.Text),
        )
        self.users = sa.Table(
            settings.users_table, self._meta,
            sa.Column("login", sa.String(128)),
            sa.Column("gitlab_token", sa.String(256)),
        )
        _STORES.add(self)

    # --- engine ------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """The process's engine, created lazily."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    self._engine = create_engine(self.settings)
        return self._engine

    def _after_fork(self) -> None:
        if self._engine is not None:
            self._engine.dispose(close=False)
        self._lock = threading.Lock()

    def dispose(self) -> None:
        """Close every pooled connection (tests, shutdown)."""
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A pooled connection; driver outages become ``DatabaseUnavailable``."""
        try:
            with self.engine.connect() as conn:
                yield conn
        except _UNAVAILABLE as e:
            raise DatabaseUnavailable(f"database unavailable: {type(e.orig or e).__name__}"
                                      if isinstance(e, sa_exc.DBAPIError)
                                      else f"database unavailable: {e}") from e

    def ping(self) -> None:
        """Run ``SELECT 1``-equivalent; raises ``DatabaseUnavailable``."""
        with self.connect() as conn:
            conn.execute(sa.select(sa.literal(1))).scalar_one()

    # --- catalog -----------------------------------------------------------------------

    def catalog(self) -> dict[tuple[str, str], list[str]]:
        """Return ``{(cloud_id, resource_type): [module_version, ...]}``, cached.

        Only pairs whose both parts match ``IDENTIFIER`` are kept: a pair that could not
        safely name a view is not a pair the API can accept.
        """
        now = time.monotonic()
        cached = self._catalog
        if cached is not None and now - cached[0] < self.settings.catalog_ttl:
            return cached[1]
        t = self.templates
        query = (
            sa.select(t.c.cloud_id, t.c.resource_type, t.c.module_version)
            .order_by(t.c.cloud_id, t.c.resource_type, t.c.module_version)
        )
        with self.connect() as conn:
            rows = conn.execute(query).all()
        pairs: dict[tuple[str, str], list[str]] = {}
        for cloud_id, resource_type, version in rows:
            if IDENTIFIER.match(cloud_id or "") and IDENTIFIER.match(resource_type or ""):
                pairs.setdefault((cloud_id, resource_type), []).append(str(version))
        self._catalog = (now, pairs)
        return pairs

    def require_pair(self, cloud_id: str, resource_type: str) -> tuple[str, str]:
        """Return the catalog's own (cloud_id, resource_type) for the pair, or raise.

        Raises:
            NotFound: The pair is not in the catalog (unknown, or not an identifier).
        """
        if not (IDENTIFIER.match(cloud_id) and IDENTIFIER.match(resource_type)):
            raise NotFound(f"unknown cloud_id/resource_type pair {cloud_id!r}/{resource_type!r}")
        for pair in self.catalog():
            if pair == (cloud_id, resource_type):
                return pair
        raise NotFound(f"unknown cloud_id/resource_type pair {cloud_id!r}/{resource_type!r}")

    def _view(self, cloud_id: str, resource_type: str, suffix: str = "") -> sa.TableClause:
        # Names come from the catalog's own strings, re-checked: never from the caller.
        cloud_id, resource_type = self.require_pair(cloud_id, resource_type)
        name = self.settings.request_view.format(cloud_id=cloud_id, resource_type=resource_type)
        return sa.table(name + suffix)

    def _has_view(self, name: str) -> bool:
        if name not in self._views:
            with self.connect() as conn:
                self._views[name] = sa.inspect(conn).has_table(name)
        return self._views[name]

    # --- loading a job -----------------------------------------------------------------

    def load(self, request: JobRequest) -> tuple[ResourceRequest, Template]:
        """Load the request row, its security-group rules and its template.

        Args:
            request: The job's request (cloud, type, request id).

        Returns:
            The resource request (row + rules) and the template for its module version.

        Raises:
            NotFound: The pair is not in the catalog.
            RequestNotFound: No row with that id.
            TemplateNotFound: No template for the row's ``module_version``.
            DatabaseUnavailable: The database did not answer.
        """
        view = self._view(request.cloud_id, request.resource_type)
        rules_view = self._view(request.cloud_id, request.resource_type, "_sg_ingress")
        t = self.templates
        v = view.alias("r")
        query = (
            sa.select(sa.literal_column("r.*"), t.c.jinja_template.label("tfgen__template"),
                      t.c.module_version.label("tfgen__template_version"))
            .select_from(
                v.outerjoin(t, sa.and_(
                    t.c.cloud_id == request.cloud_id,
                    t.c.resource_type == request.resource_type,
                    t.c.module_version == sa.literal_column("r.module_version"),
                ))
            )
            .where(sa.literal_column("r.id") == sa.bindparam("request_id", request.request_id))
        )
        has_rules = self._has_view(rules_view.name)
        with self.connect() as conn:
            try:
                found = conn.execute(query).mappings().first()
            except sa_exc.ProgrammingError as e:
                raise RequestNotFound(f"request view {view.name} cannot be read") from e
            if found is None:
                raise RequestNotFound(
                    f"no {request.cloud_id}/{request.resource_type} request with id "
                    f"{request.request_id}"
                )
            rules: list[dict[str, Any]] = []
            if has_rules:
                rules_query = (
                    sa.select(sa.literal_column("*")).select_from(rules_view)
                    .where(sa.column("request_id") == sa.bindparam("rid", request.request_id))
                    .order_by(sa.literal_column("1"))
                )
                rules = [_plain_row(r) for r in conn.execute(rules_query).mappings()]
        row = _plain_row(found)
        text = row.pop("tfgen__template")
        row.pop("tfgen__template_version")
        resource = ResourceRequest(request.cloud_id, request.resource_type,
                                   request.request_id, row, tuple(rules))
        if text is None:
            raise TemplateNotFound(
                f"no template for {request.cloud_id}/{request.resource_type} "
                f"module_version {resource.module_version!r}",
                details={"module_version": resource.module_version},
            )
        template = Template(request.cloud_id, request.resource_type,
                            resource.module_version, str(text))
        return resource, template

    def user_token(self, login: str) -> Secret | None:
        """Return the user's GitLab token from the users table, if they have one."""
        query = sa.select(self.users.c.gitlab_token).where(
            self.users.c.login == sa.bindparam("login", login))
        with self.connect() as conn:
            token = conn.execute(query).scalar_one_or_none()
        return Secret(str(token)) if token else None
