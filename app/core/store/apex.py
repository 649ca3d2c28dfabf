"""The APEX queries: catalog, request rows with their template and rules, user tokens.

One set of queries for every database: Oracle (``oracle+oracledb``, thin mode) in
production, SQLite embedded, PostgreSQL in tests. Domain code never branches on the
dialect.

Round trips per job: one query loads the request row joined with its template for the
row's ``module_version``, one loads its security-group rules; the user's GitLab token
costs one more at publish time. Connections run in autocommit with no reset on return
and no pre-ping by default, so no ``BEGIN``, ``ROLLBACK`` or ping travels besides those
queries. A pooled connection the database dropped is noticed on use and the read is
retried once on a fresh one; any other outage is ``DatabaseUnavailable`` (retryable).

View names are built only from catalog pairs that match ``IDENTIFIER``; every value is
a bound parameter, so nothing from a request reaches SQL text.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import Select

from app.core.model import JobRequest, ResourceRequest, Secret, Template
from app.core.store.engine import StoreSettings, create_engine, describe, interruption, unavailable
from app.core.store.values import RULES_SUFFIX, is_identifier, plain_row, plain_value, rule_order
from app.errors import (
    DatabaseUnavailable,
    InternalError,
    NotFound,
    RequestNotFound,
    TemplateNotFound,
)

__all__ = ["ApexStore"]

log = logging.getLogger("tfgen.store")

T = TypeVar("T")


_STORES: weakref.WeakSet[ApexStore] = weakref.WeakSet()


def _reset_after_fork() -> None:
    # A pooled connection copied into a forked child (Celery prefork, gunicorn) must
    # never be used by both processes: drop the child's copies without closing the
    # parent's sockets (SQLAlchemy's "engine.dispose(close=False)" recipe).
    for store in list(_STORES):
        store._after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)


class ApexStore:
    """Read-only access to the APEX schema.

    One engine and pool per process, created on first use and dropped in a forked
    child. Thread-safe.
    """

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self._engine: Engine | None = None
        self._lock = threading.Lock()
        self._catalog: tuple[float, dict[tuple[str, str], list[str]]] | None = None
        self._missing_views: dict[str, float] = {}
        self.templates = sa.table(
            settings.template_table,
            sa.column("cloud_id"), sa.column("resource_type"),
            sa.column("module_version"), sa.column("jinja_template"),
            schema=settings.schema,
        )
        self.users = sa.table(
            settings.users_table, sa.column("login"), sa.column("gitlab_token"),
            schema=settings.schema,
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
        """A pooled connection; outages become ``DatabaseUnavailable``.

        Raises:
            DatabaseUnavailable: The connection was refused, lost or timed out.
        """
        try:
            with self.engine.connect() as conn:
                try:
                    yield conn
                except BaseException as e:
                    # PEP 249: every driver error derives from its module's ``Error``.
                    broke_in = interruption(e, self.engine.dialect.loaded_dbapi.Error)
                    if broke_in is None:
                        raise
                    conn.invalidate()  # never back into the pool mid-statement
                    if broke_in is e:
                        raise
                    raise broke_in from None
        except (sa_exc.DBAPIError, sa_exc.TimeoutError) as e:
            if not unavailable(e):
                raise
            raise DatabaseUnavailable(f"database unavailable ({describe(e)})") from e

    def _read(self, work: Callable[[Connection], T]) -> T:
        """Run ``work`` on a pooled connection, once more if that one was found dead."""
        for attempt in (1, 2):
            try:
                with self.connect() as conn:
                    return work(conn)
            except DatabaseUnavailable as e:
                cause = e.__cause__
                stale = isinstance(cause, sa_exc.DBAPIError) and cause.connection_invalidated
                if attempt == 2 or not stale:
                    raise
                # SQLAlchemy has invalidated the pool's older connections too.
                log.info("pooled database connection was dead (%s); reading again", e.message)
        raise AssertionError("unreachable")  # pragma: no cover

    def ping(self) -> None:
        """Run a ``SELECT 1`` equivalent.

        Raises:
            DatabaseUnavailable: The database did not answer.
        """
        self._read(lambda conn: conn.execute(sa.select(sa.literal(1))).scalar_one())

    # --- catalog -----------------------------------------------------------------------

    def catalog(self) -> dict[tuple[str, str], list[str]]:
        """Return ``{(cloud_id, resource_type): [module_version, ...]}``, cached.

        Only pairs whose both parts match ``IDENTIFIER`` are kept: a pair that could not
        safely name a view is not a pair the API can accept. When a refresh finds the
        database unavailable, the previous catalog is served for another TTL.

        Raises:
            DatabaseUnavailable: The database did not answer and nothing is cached.
        """
        now = time.monotonic()
        cached = self._catalog
        if cached is not None and now - cached[0] < self.settings.catalog_ttl:
            return cached[1]
        t = self.templates.c
        query = (
            sa.select(t.cloud_id, t.resource_type, t.module_version).distinct()
            .order_by(t.cloud_id, t.resource_type, t.module_version)
        )
        try:
            rows = self._read(lambda conn: conn.execute(query).all())
        except DatabaseUnavailable:
            if cached is None:
                raise
            log.warning("catalog refresh failed: database unavailable; serving the cached one")
            self._catalog = (now, cached[1])
            return cached[1]
        pairs: dict[tuple[str, str], list[str]] = {}
        for cloud_id, resource_type, version in rows:
            if is_identifier(cloud_id) and is_identifier(resource_type):
                pairs.setdefault((cloud_id, resource_type), []).append(str(plain_value(version)))
        self._catalog = (now, pairs)
        return pairs

    def invalidate(self) -> None:
        """Forget the cached catalog and missing views: the next call reads them again."""
        self._catalog = None
        self._missing_views = {}

    def require_pair(self, cloud_id: str, resource_type: str) -> tuple[str, str]:
        """Return the catalog's own (cloud_id, resource_type) strings for the pair.

        Raises:
            NotFound: The pair is not in the catalog (unknown, or not an identifier).
            DatabaseUnavailable: The catalog could not be read.
        """
        unknown = NotFound(f"unknown cloud_id/resource_type pair {cloud_id!r}/{resource_type!r}")
        if not (is_identifier(cloud_id) and is_identifier(resource_type)):
            raise unknown
        for pair in self.catalog():
            if pair == (cloud_id, resource_type):
                return pair  # the catalog's strings, not the caller's
        raise unknown

    # --- statements ----------------------------------------------------------------------

    def request_view(self, cloud_id: str, resource_type: str, suffix: str = "") -> sa.TableClause:
        """The request view (or, with ``suffix``, its rules view) of a catalog pair.

        Raises:
            NotFound: The pair is not in the catalog.
        """
        cloud_id, resource_type = self.require_pair(cloud_id, resource_type)
        name = self.settings.request_view.format(cloud_id=cloud_id, resource_type=resource_type)
        return sa.table(name + suffix, schema=self.settings.schema)

    def statements(self, request: JobRequest) -> tuple[Select[Any], Select[Any]]:
        """The two statements a load runs: row with template, then the rules.

        Exposed so they can be compiled for any dialect and inspected.

        Raises:
            NotFound: The pair is not in the catalog.
        """
        cloud_id, resource_type = self.require_pair(request.cloud_id, request.resource_type)
        r = self.request_view(cloud_id, resource_type).alias("r")
        t = self.templates.c
        row_query: Select[Any] = (
            sa.select(sa.literal_column("r.*"), t.jinja_template.label("tfgen__template"))
            .select_from(r.outerjoin(self.templates, sa.and_(
                t.cloud_id == sa.bindparam("cloud_id", cloud_id),
                t.resource_type == sa.bindparam("resource_type", resource_type),
                t.module_version == sa.literal_column("r.module_version"),
            )))
            .where(sa.literal_column("r.id") == sa.bindparam("request_id", request.request_id))
        )
        rules = self.request_view(cloud_id, resource_type, RULES_SUFFIX)
        rules_query: Select[Any] = (
            sa.select(sa.literal_column("*")).select_from(rules)
            .where(sa.column("request_id") == sa.bindparam("rules_request_id",
                                                           request.request_id))
        )
        return row_query, rules_query

    # --- loading a job -----------------------------------------------------------------

    def load(self, request: JobRequest) -> tuple[ResourceRequest, Template]:
        """Load the request row, its security-group rules and its template.

        Two round trips (one when there is no such row, or no rules view); the
        catalog costs one more when its cache has expired.

        Args:
            request: The job's request (cloud, type, request id).

        Returns:
            The resource request (row + rules) and the template for its module version.

        Raises:
            RequestNotFound: No row with that id, or the request view is missing.
            TemplateNotFound: No template for the row's ``module_version``, or the pair
                is no longer in the catalog (its templates were removed after the job
                was accepted: the API answers an unknown pair with 404 before that).
            DatabaseUnavailable: The database did not answer (retryable).
            InternalError: A view exists but its query fails (schema mismatch).
        """
        try:
            row_query, rules_query = self.statements(request)
        except NotFound as e:  # an API answer, not a job failure code
            raise TemplateNotFound(
                f"no template for {request.cloud_id}/{request.resource_type} any more: "
                "the pair left the catalog after the job was accepted",
                details={"cloud_id": request.cloud_id,
                         "resource_type": request.resource_type},
            ) from e
        row, rules = self._read(lambda conn: self._load_rows(conn, request, row_query,
                                                             rules_query))
        text = row.pop("tfgen__template")
        resource = ResourceRequest(request.cloud_id, request.resource_type,
                                   request.request_id, row,
                                   tuple(sorted(rules, key=rule_order)))
        if text is None:
            raise TemplateNotFound(
                f"no template for {request.cloud_id}/{request.resource_type} "
                f"module_version {resource.module_version!r}",
                details={"module_version": resource.module_version},
            )
        template = Template(request.cloud_id, request.resource_type,
                            resource.module_version, str(text))
        return resource, template

    def _load_rows(
        self, conn: Connection, request: JobRequest, row_query: Select[Any],
        rules_query: Select[Any],
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        view_name = self.settings.request_view.format(
            cloud_id=request.cloud_id, resource_type=request.resource_type)
        try:
            first = conn.execute(row_query).mappings().first()
        except sa_exc.DBAPIError as e:
            if self._view_missing(conn, e, view_name):
                raise RequestNotFound(
                    f"request view {view_name} does not exist or is not granted to tfgen"
                ) from e
            raise self._statement_error(e, view_name) from e
        if first is None:
            raise RequestNotFound(
                f"no {request.cloud_id}/{request.resource_type} request with id "
                f"{request.request_id}")
        found = plain_row(first)
        if found["tfgen__template"] is None:
            return found, []  # fails with TEMPLATE_NOT_FOUND: the rules do not matter
        rules_name = view_name + RULES_SUFFIX
        missing_since = self._missing_views.get(rules_name)
        if missing_since is not None and \
                time.monotonic() - missing_since < self.settings.catalog_ttl:
            return found, []
        try:
            rules = [plain_row(r) for r in conn.execute(rules_query).mappings()]
        except sa_exc.DBAPIError as e:
            # The rules view is optional: the first load of a pair without one pays
            # for the failed query and a look in the dictionary, then the answer is
            # cached for the catalog's TTL.
            if self._view_missing(conn, e, rules_name):
                log.info("no rules view %s: requests of this type have no sg_rules",
                         rules_name)
                self._missing_views[rules_name] = time.monotonic()
                return found, []
            raise self._statement_error(e, rules_name) from e
        self._missing_views.pop(rules_name, None)
        return found, rules

    def _view_missing(self, conn: Connection, error: sa_exc.DBAPIError, name: str) -> bool:
        """After a failed query: is it because the view does not exist (for us)?"""
        if error.connection_invalidated:
            return False
        try:
            conn.rollback()  # PostgreSQL refuses further statements in a failed transaction
            return not sa.inspect(conn).has_table(name, schema=self.settings.schema)
        except (sa_exc.DBAPIError, sa_exc.TimeoutError) as e:
            if unavailable(e):
                raise
            return False

    @staticmethod
    def _statement_error(e: sa_exc.DBAPIError, view_name: str) -> Exception:
        if unavailable(e):
            return e  # connect() maps it to DatabaseUnavailable
        log.error("query on %s failed: %s", view_name, e.orig)
        return InternalError(f"APEX view {view_name} cannot be read ({describe(e)}); "
                             "its columns may not match what tfgen expects")

    def user_token(self, login: str) -> Secret | None:
        """Return the user's GitLab token from the users table, if they have one.

        One round trip.

        Raises:
            DatabaseUnavailable: The database did not answer.
        """
        u = self.users.c
        query = sa.select(u.gitlab_token).where(u.login == sa.bindparam("login", login))
        token = self._read(lambda conn: conn.execute(query).scalar_one_or_none())
        token = plain_value(token)
        return Secret(str(token)) if token else None
