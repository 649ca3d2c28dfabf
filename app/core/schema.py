"""A development copy of the APEX schema, and realistic demo data for it.

In production the APEX application owns these tables and views and tfgen only reads
them. Here they are created on SQLite or PostgreSQL (``manage.py init-db``) so the
embedded demo and the tests run against the same shapes: ``tf_template``, ``users``, and
per (cloud, type) a base table behind the ``v_<cloud>_<type>_requests`` view and, for
types with firewall rules, ``v_<cloud>_<type>_requests_sg_ingress``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import sqlite
from sqlalchemy.engine import Engine

__all__ = ["RESOURCE_TYPES", "ResourceType", "create_demo_database", "drop_schema", "init_schema",
           "load_demo"]


@dataclass(frozen=True)
class ResourceType:
    """One (cloud, type) with its request columns and optional rule columns."""

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
    def view_name(self) -> str:
        """The request view tfgen reads."""
        return f"v_{self.cloud_id}_{self.resource_type}_requests"


# SQLite has no date type: store ISO 8601 text, so a view read without column types
# hands the template the same string PostgreSQL's and Oracle's datetimes become.
_DATETIME = sa.DateTime().with_variant(
    sqlite.DATETIME(  # type: ignore[no-untyped-call]
        storage_format="%(year)04d-%(month)02d-%(day)02dT%(hour)02d:%(minute)02d:%(second)02d",
        regexp=r"(\d+)-(\d+)-(\d+)T(\d+):(\d+):(\d+)",
    ),
    "sqlite",
)


def _common() -> list[sa.Column[Any]]:
    return [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("module_version", sa.String(30), nullable=False),
        sa.Column("gitlab_project_id", sa.String(200)),
        sa.Column("requested_by", sa.String(128)),
        sa.Column("created_at", _DATETIME),
    ]


def _rule_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("request_id", sa.Integer, nullable=False, index=True),
        sa.Column("description", sa.String(200)),
        sa.Column("protocol", sa.String(10), nullable=False),
        sa.Column("from_port", sa.Integer, nullable=False),
        sa.Column("to_port", sa.Integer, nullable=False),
        sa.Column("cidr_blocks", sa.String(400), nullable=False),
    ]


_CREATED = dt.datetime(2026, 11, 2, 9, 30)

RDS_TEMPLATE = """\
# Managed by tfgen from APEX request {{ cloud_id }}/{{ resource_type }}/{{ id }}.
module "rds_{{ id }}" {
  source = "git::https://gitlab.example.com/platform/modules/aws-rds.git?ref=v{{ module_version }}"

  identifier        = {{ name | hcl }}
  engine            = {{ engine | hcl }}
  engine_version    = {{ engine_version | hcl }}
  instance_class    = {{ instance_class | hcl }}
  allocated_storage = {{ allocated_storage | hcl }}
  multi_az          = {{ multi_az | to_terraform_bool }}
  subnet_ids        = {{ subnet_ids | to_terraform_list }}

  tags = {
    Name        = "{{ name }}"
    Description = "{{ description }}"
    CostCenter  = "{{ cost_center }}"
    RequestedBy = "{{ requested_by }}"
  }
}
"""

EC2_TEMPLATE = """\
# Managed by tfgen from APEX request {{ cloud_id }}/{{ resource_type }}/{{ id }}.
resource "aws_security_group" "vm_{{ id }}" {
  name        = "{{ name }}-sg"
  description = {{ ("Ingress for " ~ name) | to_terraform_string }}
  vpc_id      = {{ vpc_id | to_terraform_string }}
{% for rule in sg_rules %}
  ingress {
    description = {{ rule.description | to_terraform_string }}
    protocol    = {{ rule.protocol | to_terraform_string }}
    from_port   = {{ rule.from_port | hcl }}
    to_port     = {{ rule.to_port | hcl }}
    cidr_blocks = {{ rule.cidr_blocks.split(",") | to_terraform_list }}
  }
{% endfor %}
}

resource "aws_instance" "vm_{{ id }}" {
  ami                    = {{ ami | to_terraform_string }}
  instance_type          = {{ instance_type | to_terraform_string }}
  subnet_id              = {{ subnet_id | to_terraform_string }}
  vpc_security_group_ids = [aws_security_group.vm_{{ id | hcl }}.id]

  tags = {
    Name = "{{ name }}"
  }
}
"""

AZURE_VM_TEMPLATE = """\
# Managed by tfgen from APEX request {{ cloud_id }}/{{ resource_type }}/{{ id }}.
module "vm_{{ id }}" {
  source = "git::https://gitlab.example.com/platform/modules/azure-vm.git?ref=v{{ module_version }}"

  name                = {{ name | to_terraform_string }}
  resource_group_name = {{ resource_group | to_terraform_string }}
  location            = {{ location | to_terraform_string }}
  size                = {{ vm_size | to_terraform_string }}
  admin_username      = {{ admin_username | to_terraform_string }}
  zones               = {{ zones.split(",") | to_terraform_list }}
}
"""

AZURE_STORAGE_TEMPLATE = """\
# Managed by tfgen from APEX request {{ cloud_id }}/{{ resource_type }}/{{ id }}.
resource "azurerm_storage_account" "sa_{{ id }}" {
  name                     = {{ account_name | hcl }}
  resource_group_name      = {{ resource_group | hcl }}
  location                 = {{ location | hcl }}
  account_tier             = {{ tier | hcl }}
  account_replication_type = {{ replication | hcl }}

  tags = {{ {"Name": name, "RequestedBy": requested_by} | hcl_map }}
}
"""

RESOURCE_TYPES: tuple[ResourceType, ...] = (
    ResourceType(
        "aws", "rds",
        columns=lambda: [
            *_common(),
            sa.Column("engine", sa.String(30), nullable=False),
            sa.Column("engine_version", sa.String(30), nullable=False),
            sa.Column("instance_class", sa.String(30), nullable=False),
            sa.Column("allocated_storage", sa.Numeric(10, 0), nullable=False),
            sa.Column("multi_az", sa.Boolean, nullable=False),
            sa.Column("subnet_ids", sa.String(400), nullable=False),
            sa.Column("cost_center", sa.String(30)),
            sa.Column("description", sa.String(400)),
        ],
        rows=[
            {"id": 42, "name": "orders-db", "module_version": "1.2.0",
             "gitlab_project_id": "platform/infra-live", "requested_by": "alice",
             "created_at": _CREATED, "engine": "postgres", "engine_version": "16.4",
             "instance_class": "db.r6g.large", "allocated_storage": Decimal(100),
             "multi_az": True, "subnet_ids": "[subnet-0a1b, subnet-0c2d]",
             "cost_center": "CC-1042",
             "description": 'Orders "primary" store; ${do not interpolate}'},
            {"id": 43, "name": "Billing Reports DB", "module_version": "1.1.0",
             "gitlab_project_id": "platform/infra-live", "requested_by": "bob",
             "created_at": _CREATED, "engine": "mysql", "engine_version": "8.0",
             "instance_class": "db.t4g.medium", "allocated_storage": Decimal(50),
             "multi_az": False, "subnet_ids": "[subnet-0a1b]", "cost_center": "CC-2001",
             "description": "Monthly billing reports"},
            {"id": 44, "name": "legacy-db", "module_version": "0.9.0",
             "gitlab_project_id": "platform/infra-live", "requested_by": "alice",
             "created_at": _CREATED, "engine": "postgres", "engine_version": "11",
             "instance_class": "db.t3.small", "allocated_storage": Decimal(20),
             "multi_az": False, "subnet_ids": "subnet-0a1b", "cost_center": None,
             "description": "needs a template version nobody wrote"},
        ],
        templates={"1.1.0": RDS_TEMPLATE, "1.2.0": RDS_TEMPLATE},
    ),
    ResourceType(
        "aws", "ec2",
        columns=lambda: [
            *_common(),
            sa.Column("ami", sa.String(40), nullable=False),
            sa.Column("instance_type", sa.String(30), nullable=False),
            sa.Column("subnet_id", sa.String(40), nullable=False),
            sa.Column("vpc_id", sa.String(40), nullable=False),
        ],
        rule_columns=_rule_columns,
        rows=[
            {"id": 7, "name": "web-frontend-01", "module_version": "2.0.0",
             "gitlab_project_id": "platform/infra-live", "requested_by": "alice",
             "created_at": _CREATED, "ami": "ami-0abcdef1234567890",
             "instance_type": "t3.medium", "subnet_id": "subnet-0a1b", "vpc_id": "vpc-0f00"},
        ],
        rules=[
            {"id": 1, "request_id": 7, "description": "HTTPS from anywhere", "protocol": "tcp",
             "from_port": 443, "to_port": 443, "cidr_blocks": "0.0.0.0/0"},
            {"id": 2, "request_id": 7, "description": "SSH from the office", "protocol": "tcp",
             "from_port": 22, "to_port": 22, "cidr_blocks": "10.10.0.0/16,10.20.0.0/16"},
        ],
        templates={"2.0.0": EC2_TEMPLATE},
    ),
    ResourceType(
        "azure", "vm",
        columns=lambda: [
            *_common(),
            sa.Column("resource_group", sa.String(90), nullable=False),
            sa.Column("location", sa.String(40), nullable=False),
            sa.Column("vm_size", sa.String(40), nullable=False),
            sa.Column("admin_username", sa.String(40), nullable=False),
            sa.Column("zones", sa.String(20), nullable=False),
        ],
        rows=[
            {"id": 101, "name": "analytics-worker", "module_version": "3.1.0",
             "gitlab_project_id": "platform/infra-azure", "requested_by": "carol",
             "created_at": _CREATED, "resource_group": "rg-analytics",
             "location": "westeurope", "vm_size": "Standard_D4s_v5",
             "admin_username": "azureops", "zones": "1,2"},
        ],
        templates={"3.1.0": AZURE_VM_TEMPLATE},
    ),
    ResourceType(
        "azure", "storage",
        columns=lambda: [
            *_common(),
            sa.Column("account_name", sa.String(24), nullable=False),
            sa.Column("resource_group", sa.String(90), nullable=False),
            sa.Column("location", sa.String(40), nullable=False),
            sa.Column("tier", sa.String(20), nullable=False),
            sa.Column("replication", sa.String(10), nullable=False),
        ],
        rows=[
            {"id": 201, "name": "reports-archive", "module_version": "1.0.0",
             "gitlab_project_id": "platform/infra-azure", "requested_by": "carol",
             "created_at": _CREATED, "account_name": "streportsarchive",
             "resource_group": "rg-reports", "location": "northeurope",
             "tier": "Standard", "replication": "GRS"},
        ],
        templates={"1.0.0": AZURE_STORAGE_TEMPLATE},
    ),
)

DEMO_USERS = (
    {"login": "alice", "gitlab_token": "glpat-demo-alice-not-a-real-token"},
    {"login": "bob", "gitlab_token": None},
    {"login": "carol", "gitlab_token": "glpat-demo-carol-not-a-real-token"},
)


def _metadata(
    resource_types: Sequence[ResourceType], schema: str | None = None
) -> tuple[sa.MetaData, dict[str, sa.Table]]:
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
            name = f"apex_{rt.cloud_id}_{rt.resource_type}_sg_ingress"
            tables[name] = sa.Table(name, meta, *rt.rule_columns())
    return meta, tables


def _views(rt: ResourceType) -> list[tuple[str, str]]:
    views = [(rt.view_name, rt.table_name)]
    if rt.rule_columns:
        views.append((f"{rt.view_name}_sg_ingress",
                      f"apex_{rt.cloud_id}_{rt.resource_type}_sg_ingress"))
    return views


def _qualified(name: str, schema: str | None) -> str:
    return f"{schema}.{name}" if schema else name


def init_schema(
    engine: Engine, resource_types: Sequence[ResourceType] = RESOURCE_TYPES,
    schema: str | None = None,
) -> None:
    """Create the tables and views (idempotent).

    Args:
        engine: A SQLite or PostgreSQL engine.
        resource_types: The request types to create tables and views for.
        schema: Create the objects in this schema (which must exist) instead of the
            connection's default one.
    """
    meta, _ = _metadata(resource_types, schema)
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
    engine: Engine, resource_types: Sequence[ResourceType] = RESOURCE_TYPES,
    schema: str | None = None,
) -> None:
    """Drop the views and tables created by ``init_schema``."""
    existing = set(sa.inspect(engine).get_view_names(schema=schema))
    with engine.begin() as conn:
        for rt in resource_types:
            for view, _table in _views(rt):
                if view in existing:
                    conn.execute(sa.text(f"DROP VIEW {_qualified(view, schema)}"))
    meta, _ = _metadata(resource_types, schema)
    meta.drop_all(engine)


def load_demo(
    engine: Engine, resource_types: Sequence[ResourceType] = RESOURCE_TYPES,
    schema: str | None = None,
) -> None:
    """Replace the demo rows, rules, templates and users (idempotent)."""
    _, tables = _metadata(resource_types, schema)
    with engine.begin() as conn:
        for table in tables.values():
            conn.execute(table.delete())
        conn.execute(tables["users"].insert(), list(DEMO_USERS))
        for rt in resource_types:
            conn.execute(tables[rt.table_name].insert(), list(rt.rows))
            if rt.rules:
                conn.execute(tables[f"apex_{rt.cloud_id}_{rt.resource_type}_sg_ingress"].insert(),
                             list(rt.rules))
            conn.execute(tables["tf_template"].insert(), [
                {"cloud_id": rt.cloud_id, "resource_type": rt.resource_type,
                 "module_version": version, "jinja_template": text}
                for version, text in rt.templates.items()
            ])


def create_demo_database(
    url: str, resource_types: Sequence[ResourceType] = RESOURCE_TYPES,
) -> str:
    """Create the schema with the demo data at ``url`` (SQLite, PostgreSQL); return ``url``."""
    engine = sa.create_engine(url)
    try:
        init_schema(engine, resource_types)
        load_demo(engine, resource_types)
    finally:
        engine.dispose()
    return url
