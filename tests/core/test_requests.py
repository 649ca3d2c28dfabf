"""The request state machine alone: steps on the Redis and SQLite request stores."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from app.core.events import RedisEventLog, SqlEventLog, read_events
from app.core.lifecycle import Lifecycle
from app.core.requests import RedisRequestStore, SqlRequestStore, request_key
from app.errors import DatabaseUnavailable
from tests.conftest import RUN_ID

KEY = request_key("aws", "rds", 42)
MR = {"iid": 7, "url": "http://gitlab.test/platform/infra-live/-/merge_requests/7",
      "source_branch": "feature/aws-rds-orders-db", "target_branch": "main"}


@pytest.fixture(params=["redis", "sqlite"])
def lifecycle(request: pytest.FixtureRequest, tmp_path: Path, redis_client: redis.Redis
              ) -> Iterator[Lifecycle]:
    if request.param == "redis":
        prefix = f"tfgen-test-{RUN_ID}-{uuid.uuid4().hex[:6]}"
        yield Lifecycle(RedisEventLog(redis_client, prefix=prefix),
                        RedisRequestStore(redis_client, prefix=prefix),
                        gitlab_url="http://gitlab.test")
    else:
        url = f"sqlite:///{tmp_path / 'jobs.sqlite'}"
        yield Lifecycle(SqlEventLog(url), SqlRequestStore(url), gitlab_url="http://gitlab.test")


def job(status: str, *, job_uuid: str = "j1", owner: str = "alice", mr: Any = MR,
        branch: str | None = None, error: str | None = None) -> Any:
    from app.core.jobs import JobRecord

    result = None
    if status == "SUCCESS":
        result = {"merge_request": mr, "commit": {"sha": "c0ffee" * 6},
                  "remote": "http://gitlab.test/platform/infra-live" if mr else "/r.git",
                  "branch": branch}
    return JobRecord(uuid=job_uuid, owner=owner, status=status, started_at="2026-01-01T00:00:00Z",
                     request={"cloud_id": "aws", "resource_type": "rds", "request_id": 42,
                              "dry_run": False},
                     result=result,
                     error={"code": error, "message": error} if error else None)


def mr_event(lc: Lifecycle, action: str, iid: int = 7, sha: str | None = None) -> Any:
    from app.core.gitlab_events import apply

    return apply(lc, {"kind": "merge_request", "project_path": "platform/infra-live",
                      "project_id": 4242, "iid": iid, "action": action,
                      "source_branch": MR["source_branch"], "merge_commit_sha": sha})


def pipeline(lc: Lifecycle, pid: int, status: str, sha: str, finished: str) -> Any:
    from app.core.gitlab_events import apply

    return apply(lc, {"kind": "pipeline", "project_path": "platform/infra-live",
                      "pipeline_id": pid, "ref": "main", "sha": sha, "status": status,
                      "finished_at": finished})


def state(lc: Lifecycle) -> str:
    record = lc.requests.get(KEY)
    assert record is not None
    return record.state


def test_job_then_merge_then_pipeline_walks_every_state_once(lifecycle: Lifecycle) -> None:
    lifecycle.job_changed(job("STARTED"))
    assert state(lifecycle) == "generating"
    lifecycle.job_changed(job("SUCCESS"))
    assert state(lifecycle) == "mr_open"
    mr_event(lifecycle, "close")
    assert state(lifecycle) == "closed"
    mr_event(lifecycle, "reopen")
    assert state(lifecycle) == "mr_open"
    mr_event(lifecycle, "merge", sha="m" * 40)
    record = lifecycle.requests.get(KEY)
    assert record is not None and record.state == "merged"
    assert record.merge_request is not None
    assert record.merge_request["merge_commit_sha"] == "m" * 40
    assert record.merge_request["project_id"] == 4242
    pipeline(lifecycle, 100, "success", "m" * 40, "2026-01-01 10:00:00 UTC")
    assert state(lifecycle) == "applied"

    events, _ = read_events(lifecycle.events, after=None, limit=100, wait=0,
                            visible=lambda e: True)
    kinds = [e["type"] for e in events]
    assert kinds == ["job.started", "request.generating", "job.succeeded", "request.mr_open",
                     "request.closed", "request.mr_open", "request.merged", "request.applied"]
    assert [e["data"]["previous"] for e in events if e["type"].startswith("request.")] == [
        None, "generating", "mr_open", "closed", "mr_open", "merged"]
    assert [h["source"] for h in lifecycle.requests.get(KEY).history] == [  # type: ignore[union-attr]
        "job", "job", "webhook", "webhook", "webhook", "webhook"]


def test_a_late_or_replayed_event_never_moves_backwards(lifecycle: Lifecycle) -> None:
    lifecycle.job_changed(job("STARTED"))
    lifecycle.job_changed(job("SUCCESS"))
    mr_event(lifecycle, "merge", sha="m" * 40)
    for late in ("update", "open", "reopen", "close", "merge"):
        mr_event(lifecycle, late)
        assert state(lifecycle) == "merged", late
    pipeline(lifecycle, 100, "failed", "m" * 40, "2026-01-01 10:00:00 UTC")
    assert state(lifecycle) == "apply_failed"
    pipeline(lifecycle, 101, "success", "m" * 40, "2026-01-01 10:05:00 UTC")
    assert state(lifecycle) == "applied"
    # The first pipeline's news again, and the second one's running state: ignored.
    pipeline(lifecycle, 100, "failed", "m" * 40, "2026-01-01 10:00:00 UTC")
    pipeline(lifecycle, 101, "running", "m" * 40, "")
    assert state(lifecycle) == "applied"
    mr_event(lifecycle, "close")
    assert state(lifecycle) == "applied"


def test_events_for_other_merge_requests_and_commits_are_ignored(lifecycle: Lifecycle) -> None:
    lifecycle.job_changed(job("STARTED"))
    lifecycle.job_changed(job("SUCCESS"))
    mr_event(lifecycle, "merge", iid=8, sha="x" * 40)  # not the request's merge request
    assert state(lifecycle) == "mr_open"
    from app.core.gitlab_events import apply

    assert apply(lifecycle, {"kind": "merge_request", "project_path": "platform/infra-live",
                             "project_id": 1, "iid": 7, "action": "merge",
                             "source_branch": "feature/someone-elses", "merge_commit_sha": None}
                 ) is None
    assert pipeline(lifecycle, 5, "success", "y" * 40, "") is None
    assert state(lifecycle) == "mr_open"


def test_a_failed_rerun_keeps_an_open_merge_request_open(lifecycle: Lifecycle) -> None:
    lifecycle.job_changed(job("STARTED"))
    lifecycle.job_changed(job("SUCCESS"))
    lifecycle.job_changed(job("STARTED", job_uuid="j2"))
    assert state(lifecycle) == "generating"
    lifecycle.job_changed(job("FAILURE", job_uuid="j2", error="GITLAB_UNAVAILABLE"))
    record = lifecycle.requests.get(KEY)
    assert record is not None and record.state == "mr_open"
    assert "GITLAB_UNAVAILABLE" in record.history[-2]["detail"]
    assert record.jobs == ["j1", "j2"] and record.last_job == "j2"


def test_a_failure_without_a_merge_request_is_failed(lifecycle: Lifecycle) -> None:
    lifecycle.job_changed(job("STARTED"))
    lifecycle.job_changed(job("FAILURE", error="TEMPLATE_NOT_FOUND"))
    assert state(lifecycle) == "failed"


def test_git_publisher_success_is_published(lifecycle: Lifecycle) -> None:
    lifecycle.job_changed(job("STARTED"))
    lifecycle.job_changed(job("SUCCESS", mr=None, branch="feature/aws-rds-orders-db"))
    record = lifecycle.requests.get(KEY)
    assert record is not None and record.state == "published"
    assert record.branch == {"name": "feature/aws-rds-orders-db", "target_branch": "main",
                             "commit_sha": "c0ffee" * 6, "remote": "/r.git"}


def test_concurrent_steps_on_one_record_all_land(lifecycle: Lifecycle) -> None:
    lifecycle.job_changed(job("STARTED"))
    threads = [threading.Thread(target=lifecycle.job_changed,
                                args=(job("STARTED", job_uuid=f"j{i}", owner=f"u{i}"),))
               for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    record = lifecycle.requests.get(KEY)
    assert record is not None
    assert sorted(record.owners) == sorted(["alice", *(f"u{i}" for i in range(10))])


def test_sql_request_store_translates_driver_errors(tmp_path: Path) -> None:
    # The SQLite file's directory goes away: every call, and opening the store, answers
    # the store's own retryable error, never the driver's.
    folder = tmp_path / "db"
    folder.mkdir()
    url = f"sqlite:///{folder / 'jobs.sqlite'}"
    sql = SqlRequestStore(url)
    sql.link("branch", KEY)
    sql.engine.dispose()  # as a new process would: no pooled connection to the old file
    folder.rename(tmp_path / "gone")
    calls = [lambda: sql.get(KEY), lambda: sql.update(KEY, lambda current: None),
             lambda: sql.list(), lambda: sql.due(10), lambda: sql.link("b", KEY),
             lambda: sql.resolve("branch"), lambda: sql.claim_delivery("d", 60),
             lambda: sql.release_delivery("d"), lambda: SqlRequestStore(url)]
    for call in calls:
        with pytest.raises(DatabaseUnavailable, match="request store unavailable"):
            call()
