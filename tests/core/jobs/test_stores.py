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
from app.errors import JobStoreUnavailable
from tests.conftest import RUN_ID
from tests.core.jobs.conftest import record


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


@pytest.fixture(params=["redis", "sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[JobStore]]:
    """Six stores on one database, as six worker processes would have."""
    if request.param == "redis":
        client: redis.Redis = request.getfixturevalue("redis_client")
        prefix = f"tfgen-test-{RUN_ID}-jobs-{uuid.uuid4().hex[:6]}"
        yield [RedisJobStore(client, prefix=prefix) for _ in range(6)]
        return
    if request.param == "sqlite":
        url, table = f"sqlite:///{tmp_path / 'jobs.sqlite'}", "tfgen_job"
    else:
        url, table = request.getfixturevalue("pg_url"), f"tfgen_job_{uuid.uuid4().hex[:8]}"
    sql = [SqlJobStore(url, table=table) for _ in range(6)]
    yield list(sql)
    if request.param == "postgresql":
        with sql[0].engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE {table}_idempotency, {table}"))
    for one in sql:
        one.engine.dispose()


def test_racing_transitions_all_apply_and_none_reads_as_refused(stores: list[JobStore]) -> None:
    # Every transition is allowed (PENDING stays PENDING): a lost compare-and-set race
    # must be run again, never answered None ("refused") nor lost.
    job = record()
    stores[0].create(job)
    rounds = 25
    start = threading.Barrier(len(stores))

    def bump(store: JobStore) -> list[JobRecord | None]:
        start.wait()
        return [store.transition(job.uuid, {"PENDING"}, {"attempts": 1}) for _ in range(rounds)]

    with ThreadPoolExecutor(len(stores)) as pool:
        answers = [a for batch in pool.map(bump, stores) for a in batch]
    assert [a for a in answers if a is None] == []
    final = stores[0].get(job.uuid)
    assert final is not None and final.attempts == len(stores) * rounds


def test_sql_job_store_translates_driver_errors(tmp_path: Path) -> None:
    # The SQLite file's directory goes away (a volume unmounted): the next connection
    # fails in the driver, and the store answers its own retryable error.
    folder = tmp_path / "db"
    folder.mkdir()
    sql = SqlJobStore(f"sqlite:///{folder / 'jobs.sqlite'}")
    job = record()
    sql.create(job)
    sql.engine.dispose()  # as a new process would: no pooled connection to the old file
    folder.rename(tmp_path / "gone")
    calls = [lambda: sql.get(job.uuid), lambda: sql.list(None), sql.ping,
             lambda: sql.transition(job.uuid, {"PENDING"}, {"stage": "x"}),
             lambda: sql.create(record()), sql.unfinished]
    for call in calls:
        with pytest.raises(JobStoreUnavailable, match="job store unavailable"):
            call()
