"""The event log alone, on Redis Streams and on SQLite: order, cursor, caps, long poll."""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from app.core.events import EventLog, RedisEventLog, SqlEventLog, read_events
from app.errors import BadRequest
from tests.conftest import REDIS_URL, RUN_ID


def open_log(spec: tuple[str, str], **kwargs: Any) -> EventLog:
    kind, where = spec
    if kind == "redis":
        return RedisEventLog(redis.Redis.from_url(REDIS_URL), prefix=where, **kwargs)
    return SqlEventLog(where, **kwargs)


@pytest.fixture(params=["redis", "sqlite"])
def spec(request: pytest.FixtureRequest, tmp_path: Path, redis_client: redis.Redis
         ) -> Iterator[tuple[str, str]]:
    if request.param == "redis":
        prefix = f"tfgen-test-{RUN_ID}-{uuid.uuid4().hex[:6]}"
        yield ("redis", prefix)
        redis_client.delete(f"{prefix}:events")
    else:
        yield ("sqlite", f"sqlite:///{tmp_path / 'events.sqlite'}")


def everyone(event: Any) -> bool:
    return True


def writer(spec: tuple[str, str], name: str, count: int) -> None:
    log = open_log(spec)
    for i in range(count):
        log.append({"type": "job.started", "owner": name, "n": i})


def test_pages_under_concurrent_writers_lose_and_repeat_nothing(spec: tuple[str, str]) -> None:
    log = open_log(spec)
    log.append({"type": "job.started", "owner": "seed", "n": 0})  # the table exists
    writers, per_writer = 4, 150
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=writer, args=(spec, f"w{w}", per_writer))
             for w in range(writers)]
    for p in procs:
        p.start()
    seen: list[dict[str, Any]] = []
    cursor = None
    deadline = time.monotonic() + 60
    while len(seen) < writers * per_writer + 1 and time.monotonic() < deadline:
        page, cursor = read_events(log, after=cursor, limit=37, wait=1, visible=everyone)
        seen.extend(page)
    for p in procs:
        p.join(30)
    page, cursor = read_events(log, after=cursor, limit=500, wait=0, visible=everyone)
    seen.extend(page)

    keys = [(e["owner"], e["n"]) for e in seen]
    assert len(keys) == len(set(keys)) == writers * per_writer + 1
    for w in range(writers):  # each writer's events in its own order
        assert [e["n"] for e in seen if e["owner"] == f"w{w}"] == list(range(per_writer))


def test_the_cursor_skips_what_the_caller_may_not_see(spec: tuple[str, str]) -> None:
    log = open_log(spec)
    for i in range(10):
        log.append({"type": "job.started", "owner": "alice" if i % 3 == 0 else "bob", "n": i})
    mine, cursor = read_events(log, after=None, limit=2, wait=0,
                               visible=lambda e: e["owner"] == "alice")
    assert [e["n"] for e in mine] == [0, 3]
    rest, cursor = read_events(log, after=cursor, limit=10, wait=0,
                               visible=lambda e: e["owner"] == "alice")
    assert [e["n"] for e in rest] == [6, 9]
    empty, again = read_events(log, after=cursor, limit=10, wait=0, visible=everyone)
    assert empty == [] and again == cursor


def test_a_long_poll_returns_when_an_event_arrives(spec: tuple[str, str]) -> None:
    log = open_log(spec)
    log.append({"type": "job.started", "owner": "alice", "n": 0})
    _, cursor = read_events(log, after=None, limit=10, wait=0, visible=everyone)
    got: list[Any] = []

    def poll() -> None:
        got.append(read_events(log, after=cursor, limit=10, wait=20, visible=everyone))

    t = threading.Thread(target=poll)
    t.start()
    time.sleep(0.5)
    assert t.is_alive()  # still waiting: nothing new yet
    log.append({"type": "job.succeeded", "owner": "alice", "n": 1})
    t.join(10)
    assert not t.is_alive()
    events, _ = got[0]
    assert [e["n"] for e in events] == [1]


def test_the_log_is_capped_in_length_and_age(spec: tuple[str, str]) -> None:
    log = open_log(spec, max_len=50)
    for i in range(300):
        log.append({"type": "job.started", "owner": "alice", "n": i})
    kept, _ = read_events(log, after=None, limit=500, wait=0, visible=everyone)
    assert 50 <= len(kept) < 300 and kept[-1]["n"] == 299
    aged = open_log(spec, max_age=2)
    time.sleep(2.5)  # everything above is older than max_age now
    for i in range(100):
        aged.append({"type": "job.started", "owner": "alice", "n": 1000 + i})
    kept, _ = read_events(aged, after=None, limit=500, wait=0, visible=everyone)
    assert kept and all(e["n"] >= 1000 for e in kept) and kept[-1]["n"] == 1099


def test_a_cursor_from_elsewhere_is_a_bad_request(spec: tuple[str, str]) -> None:
    log = open_log(spec)
    with pytest.raises(BadRequest):
        read_events(log, after="not-a-cursor", limit=1, wait=0, visible=everyone)
