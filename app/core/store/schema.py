"""A development copy of the APEX schema's shapes: the tables and views tfgen reads.

In production the APEX application owns these tables and views and tfgen only reads
them. Here they are created on SQLite or PostgreSQL (``manage.py init-db``) so the
embedded demo and the tests run against the same shapes: ``tf_template``, ``users``, and
per (cloud, type) a base table behind the ``v_<cloud>_<type>_requests`` view and, for
types with firewall rules, ``v_<cloud>_<type>_requests_sg_ingress``. Which types exist,
their rows and their templates are data, not shape: the demo's are in ``app.demo``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Engine

from app.core.store.values import RULES_SUFFIX

__all__ = ["DATETIME", "ResourceType", "apex_tables", "drop_schema", "init_schema",
           "request_columns", "rule_columns"]


@dataclass(frozen=True)
class ResourceType:
    """One (cloud, type) with its request columns, optional rule columns and sample rows."""

    cloud_id: str
    resource_type: str
    columns: Callable[[], list[sa.Column[Any]]]
    rule_columns: Callable[[], list[sa.Column[Any]]] | None = None
    rows: Sequence[Mapping[str, Any]] = ()
    rules: Sequence[Mapping[str, Any]] = ()
    templates: Mapping[str, str] = field(default_factory=dict)

    @property
    def table_name(self) -> str:
        """The base table behind the request view."""
        return f"apex_{self.cloud_id}_{self.resource_type}_request"

    @property
    def rules_table_name(self) -> str:
        """The base table behind the rules view (types with ``rule_columns``)."""
        return f"apex_{self.cloud_id}_{self.resource_type}{RULES_SUFFIX}"

    @property
    def view_name(self) -> str:
        """The request view tfgen reads."""
        return f"v_{self.cloud_id}_{self.resource_type}_requests"


# SQLite has no date type: store ISO 8601 text, so a view read without column types
# hands the template the same string PostgreSQL's and Oracle's datetimes become.
DATETIME = sa.DateTime().with_variant(
    sqlite.DATETIME(  # type: ignore[no-untyped-call]
        storage_format="%(year)04d-%(month)02d-%(day)02dT%(hour)02d:%(minute)02d:%(second)02d",
        regexp=r"(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)",
    ),
    "sqlite",
)


def request_columns() -> list[sa.Column[Any]]:
    """The columns every request table has, before its type's own."""
    return [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("module_version", sa.String(30), nullable=False),
        sa.Column("gitlab_project_id", sa.String(200)),
        sa.Column("requested_by", sa.String(128)),
        sa.Column("created_at", DATETIME),
    ]


def rule_columns() -> list[sa.Column[Any]]:
    """The columns of a firewall rules table (``sg_ingress``)."""
    return [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("request_id", sa.Integer, nullable=False, index=True),
        sa.Column("description", sa.String(200)),
        sa.Column("protocol", sa.String(10), nullable=False),
        sa.Column("from_port", sa.Integer, nullable=False),
        sa.Column("to_port", sa.Integer, nullable=False),
        sa.Column("cidr_blocks", sa.String(400), nullable=False),
    ]


def apex_tables(
    resource_types: Sequence[ResourceType], schema: str | None = None
) -> tuple[sa.MetaData, dict[str, sa.Table]]:
    """The metadata and tables (by name) of ``tf_template``, ``users`` and each type."""
    meta = sa.MetaData(schema=schema)
    tables = {
        "tf_template": sa.Table(
            "tf_template", meta,
            sa.Column("cloud_id", sa.String(30), primary_key=True),
            sa.Column("resource_type", sa.String(30), primary_key=True),
            sa.Column("module_version", sa.String(30), primary_key=True),
            sa.Column("jinja_template", sa.Text, nullable=False),
        ),
        "users": sa.Table(
            "users", meta,
            sa.Column("login", sa.String(128), primary_key=True),
            sa.Column("gitlab_token", sa.String(256)),
        ),
    }
    for rt in resource_types:
        tables[rt.table_name] = sa.Table(rt.table_name, meta, *rt.columns())
        if rt.rule_columns:
            tables[rt.rules_table_name] = sa.Table(rt.rules_table_name, meta,
                                                   *rt.rule_columns())
    return meta, tables


def _views(rt: ResourceType) -> list[tuple[str, str]]:
    views = [(rt.view_name, rt.table_name)]
    if rt.rule_columns:
        views.append((f"{rt.view_name}{RULES_SUFFIX}", rt.rules_table_name))
    return views


def _qualified(name: str, schema: str | None) -> str:
    return f"{schema}.{name}" if schema else name


def init_schema(
    engine: Engine, resource_types: Sequence[ResourceType], schema: str | None = None,
) -> None:
    """Create the tables and views (idempotent).

    Args:
        engine: A SQLite or PostgreSQL engine.
        resource_types: The request types to create tables and views for.
        schema: Create the objects in this schema (which must exist) instead of the
            connection's default one.
    """
    meta, _ = apex_tables(resource_types, schema)
    meta.create_all(engine)
    existing = set(sa.inspect(engine).get_view_names(schema=schema))
    with engine.begin() as conn:
        for rt in resource_types:
            for view, table in _views(rt):
                if view not in existing:
                    # Identifiers are this module's constants and the configured
                    # schema name, never request data.
                    ddl = (f"CREATE VIEW {_qualified(view, schema)} AS "  # noqa: S608
                           f"SELECT * FROM {_qualified(table, schema)}")
                    conn.execute(sa.text(ddl))


def drop_schema(
    engine: Engine, resource_types: Sequence[ResourceType], schema: str | None = None,
) -> None:
    """Drop the views and tables created by ``init_schema``."""
    existing = set(sa.inspect(engine).get_view_names(schema=schema))
    with engine.begin() as conn:
        for rt in resource_types:
            for view, _table in _views(rt):
                if view in existing:
                    conn.execute(sa.text(f"DROP VIEW {_qualified(view, schema)}"))
    meta, _ = apex_tables(resource_types, schema)
    meta.drop_all(engine)
