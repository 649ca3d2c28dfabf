"""Realistic demo data for the development APEX schema: four request types and users.

The rows carry the cases a reviewer wants to see: a list held as ``[a, b]`` text, a
flag, a description that tries to interpolate, a request for a template version nobody
wrote, and firewall rules.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from app.core.store.schema import (
    ResourceType,
    apex_tables,
    init_schema,
    request_columns,
    rule_columns,
)
from app.demo.templates import (
    AZURE_STORAGE_TEMPLATE,
    AZURE_VM_TEMPLATE,
    EC2_TEMPLATE,
    RDS_TEMPLATE,
)

__all__ = ["DEMO_USERS", "RESOURCE_TYPES", "create_demo_database", "load_demo"]

_CREATED = dt.datetime(2026, 11, 2, 9, 30)

RESOURCE_TYPES: tuple[ResourceType, ...] = (
    ResourceType(
        "aws", "rds",
        columns=lambda: [
            *request_columns(),
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
            *request_columns(),
            sa.Column("ami", sa.String(40), nullable=False),
            sa.Column("instance_type", sa.String(30), nullable=False),
            sa.Column("subnet_id", sa.String(40), nullable=False),
            sa.Column("vpc_id", sa.String(40), nullable=False),
        ],
        rule_columns=rule_columns,
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
            *request_columns(),
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
            *request_columns(),
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


def load_demo(
    engine: Engine, resource_types: Sequence[ResourceType] = RESOURCE_TYPES,
    schema: str | None = None,
) -> None:
    """Replace the demo rows, rules, templates and users (idempotent)."""
    _, tables = apex_tables(resource_types, schema)
    with engine.begin() as conn:
        for table in tables.values():
            conn.execute(table.delete())
        conn.execute(tables["users"].insert(), list(DEMO_USERS))
        for rt in resource_types:
            conn.execute(tables[rt.table_name].insert(), list(rt.rows))
            if rt.rules:
                conn.execute(tables[rt.rules_table_name].insert(), list(rt.rules))
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
