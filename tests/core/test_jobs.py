"""Job stores: a job record and its idempotency key are written in one atomic step, on
Redis, SQLite and PostgreSQL alike."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
    return JobRecord(uuid=str(uuid.uuid4()), owner=owner,
                     request={"cloud_id": "aws", "resource_type": "rds", "request_id": 42,
                              "dry_run": False})


def test_parallel_creates_with_one_key_store_one_job(store: JobStore) -> None:
    owner = f"u-{uuid.uuid4().hex[:6]}"
    start = threading.Barrier(12)

    def submit(_: int) -> str:
        mine = record(owner)
        start.wait()
        return store.create(mine, idempotency_key="key-1").uuid

    with ThreadPoolExecutor(12) as pool:
        answers = set(pool.map(submit, range(12)))
    assert len(answers) == 1
    assert [r.uuid for r in store.list(owner)] == list(answers)


def test_a_key_bound_to_a_job_without_record_is_taken_over(store: JobStore) -> None:
    ghost = record()  # a claim whose record never came (the old claim-then-create order)
    store.create(ghost, idempotency_key="key-2")
    store.delete(ghost.uuid)

    first = store.create(record(), idempotency_key="key-2")
    again = store.create(record(), idempotency_key="key-2")
    assert first.uuid != ghost.uuid
    assert again.uuid == first.uuid
    assert store.get(first.uuid) is not None


def test_a_key_bound_to_a_live_job_returns_that_job_and_stores_nothing(store: JobStore) -> None:
    owner = f"u-{uuid.uuid4().hex[:6]}"
    earlier = store.create(record(owner), idempotency_key="key-3")
    duplicate = record(owner)
    assert store.create(duplicate, idempotency_key="key-3").uuid == earlier.uuid
    assert store.get(duplicate.uuid) is None
    assert [r.uuid for r in store.list(owner)] == [earlier.uuid]
