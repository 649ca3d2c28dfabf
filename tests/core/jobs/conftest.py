"""A job store on each database the job stores run on: Redis, SQLite, PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from app.core.jobs import JobRecord, JobStore, RedisJobStore, SqlJobStore
from tests.conftest import RUN_ID


@pytest.fixture(params=["redis", "sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "redis":
        client: redis.Redis = request.getfixturevalue("redis_client")
        yield RedisJobStore(client, prefix=f"tfgen-test-{RUN_ID}-jobs-{uuid.uuid4().hex[:6]}")
    elif request.param == "sqlite":
        sql = SqlJobStore(f"sqlite:///{tmp_path / 'jobs.sqlite'}")
        yield sql
        sql.engine.dispose()
    else:
        url: str = request.getfixturevalue("pg_url")
        table = f"tfgen_job_{uuid.uuid4().hex[:8]}"
        sql = SqlJobStore(url, table=table)
        yield sql
        with sql.engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {table}_idempotency, {table}"))
        sql.engine.dispose()


def record(owner: str = "alice") -> JobRecord:
    """A new PENDING job of ``owner``."""
    return JobRecord(uuid=str(uuid.uuid4()), owner=owner,
                     request={"cloud_id": "aws", "resource_type": "rds", "request_id": 42,
                              "dry_run": False})
