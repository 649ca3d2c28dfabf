"""Waiver stores on real Redis and SQLite: add, find per request, expire, delete."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.core.waivers import SqlWaiverStore, Waiver, WaiverStore, waiver_store_from_url
from app.errors import DatabaseUnavailable
from tests.conftest import REDIS_URL, RUN_ID


@pytest.fixture(params=["redis", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path,
          redis_client: redis.Redis) -> Iterator[WaiverStore]:
    if request.param == "redis":
        yield waiver_store_from_url(REDIS_URL, prefix=f"tfgen-test-{RUN_ID}-{uuid.uuid4().hex}")
    else:
        yield waiver_store_from_url(f"sqlite:///{tmp_path / 'jobs.sqlite'}")


def waiver(request_id: int, rule: str, minutes: int) -> Waiver:
    return Waiver.new(cloud_id="aws", resource_type="ec2", request_id=request_id, rule=rule,
                      reason="r", granted_by="root",
                      expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes))


def test_waivers_are_found_per_request_and_expire(store: WaiverStore) -> None:
    live, old, other = waiver(7, "a", 60), waiver(7, "b", -1), waiver(8, "a", 60)
    for w in (live, old, other):
        store.add(w)
    assert {w.id for w in store.for_request("aws", "ec2", 7)} == {live.id, old.id}
    assert [w.active() for w in (live, old)] == [True, False]
    assert store.get(live.id) == live
    assert {w.id for w in store.all()} == {live.id, old.id, other.id}
    assert store.delete(live.id) is True
    assert store.delete(live.id) is False
    assert store.get(live.id) is None
    assert {w.id for w in store.for_request("aws", "ec2", 7)} == {old.id}


def test_expiry_is_stored_as_utc() -> None:
    when = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    w = Waiver.new(cloud_id="aws", resource_type="rds", request_id=1, rule="r", reason="x",
                   granted_by="root", expires_at=when)
    assert w.expires_at == "2030-01-02T01:04:05Z"
    assert w.to_dict()["active"] is True


def test_sql_waiver_store_translates_driver_errors(tmp_path: Path) -> None:
    # The SQLite file's directory goes away: every call, and opening the store, answers
    # the store's own retryable error, never the driver's.
    folder = tmp_path / "db"
    folder.mkdir()
    sql = SqlWaiverStore(f"sqlite:///{folder / 'jobs.sqlite'}")
    kept = waiver(7, "a", 60)
    sql.add(kept)
    sql.engine.dispose()  # as a new process would: no pooled connection to the old file
    folder.rename(tmp_path / "gone")
    calls = [lambda: sql.add(waiver(8, "a", 60)), lambda: sql.get(kept.id),
             lambda: sql.delete(kept.id), sql.all, lambda: sql.for_request("aws", "ec2", 7),
             lambda: SqlWaiverStore(f"sqlite:///{folder / 'jobs.sqlite'}")]
    for call in calls:
        with pytest.raises(DatabaseUnavailable, match="waiver store unavailable"):
            call()
