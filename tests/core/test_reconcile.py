"""The reconciler alone: the GitLab publisher's reads against the GitLab stand-in, real
Redis stores. Bounded calls per run, rate limits honoured, same steps as the webhooks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from app.core.events import RedisEventLog
from app.core.jobs import JobRecord
from app.core.lifecycle import Lifecycle
from app.core.model import Secret
from app.core.publish.gitlab import GitLabPublisher
from app.core.reconcile import Reconciler
from app.core.requests import RedisRequestStore
from tests.conftest import RUN_ID
from tests.stubs.fixtures import ALICE, PROJECT
from tests.stubs.fixtures import gitlab_stub as gitlab_stub
from tests.stubs.gitlab_server import P_MR, P_PIPELINES, GitLabStub


@pytest.fixture
def lifecycle(redis_client: redis.Redis, gitlab_stub: GitLabStub) -> Iterator[Lifecycle]:
    prefix = f"tfgen-test-{RUN_ID}-{uuid.uuid4().hex[:6]}"
    yield Lifecycle(RedisEventLog(redis_client, prefix=prefix),
                    RedisRequestStore(redis_client, prefix=prefix), gitlab_url=gitlab_stub.url)


def publisher(stub: GitLabStub, **kwargs: object) -> GitLabPublisher:
    return GitLabPublisher(stub.url, fallback_token=Secret(ALICE), backoff_base=0.01,
                           **kwargs)  # type: ignore[arg-type]


def seed(lifecycle: Lifecycle, stub: GitLabStub, request_id: int) -> int:
    """A request whose job opened a merge request (as a finished job leaves it)."""
    mr = stub.open_merge_request(PROJECT, f"feature/aws-rds-r{request_id}", send=False)
    result = {"merge_request": {"iid": mr["iid"], "url": mr["web_url"],
                                "source_branch": mr["source_branch"], "target_branch": "main"},
              "commit": {"sha": mr["sha"]}, "remote": f"{stub.url}/{PROJECT}"}
    for status in ("STARTED", "SUCCESS"):
        lifecycle.job_changed(JobRecord(
            uuid=f"job-{request_id}", owner="alice", status=status,
            started_at="2026-01-01T00:00:00Z",
            request={"cloud_id": "aws", "resource_type": "rds", "request_id": request_id,
                     "dry_run": False}, result=result if status == "SUCCESS" else None))
    return int(mr["iid"])


def state(lifecycle: Lifecycle, request_id: int) -> str:
    record = lifecycle.requests.get(f"aws/rds/{request_id}")
    assert record is not None
    return record.state


def test_each_run_reads_at_most_its_batch_and_covers_everyone_in_turn(
        lifecycle: Lifecycle, gitlab_stub: GitLabStub) -> None:
    iids = {rid: seed(lifecycle, gitlab_stub, rid) for rid in range(1, 6)}
    for rid in (1, 3, 5):
        gitlab_stub.merge(PROJECT, iids[rid], send=False)
    gitlab_stub.close(PROJECT, iids[2], send=False)
    reconciler = Reconciler(lifecycle, publisher(gitlab_stub), batch=2)
    gitlab_stub.reset_counts()
    reports = []
    for run in range(3):
        reports.append(reconciler.run())
        assert gitlab_stub.count("GET", P_MR) <= 2 * (run + 1)
    assert [r.checked for r in reports] == [2, 2, 2]
    assert {rid: state(lifecycle, rid) for rid in iids} == {
        1: "merged", 2: "closed", 3: "merged", 4: "mr_open", 5: "merged"}
    record = lifecycle.requests.get("aws/rds/1")
    assert record is not None and record.history[-1]["source"] == "reconcile"
    sha = record.merge_request["merge_commit_sha"]  # type: ignore[index]
    project = gitlab_stub.project(PROJECT)
    assert sha == next(m for m in project.merge_requests
                       if m["iid"] == iids[1])["merge_commit_sha"]

    # Once merged, the target branch's pipeline for the merge commit decides.
    gitlab_stub.run_pipeline(PROJECT, "main", sha, "success", send=False)
    for _ in range(3):
        reconciler.run()
    assert state(lifecycle, 1) == "applied"
    assert gitlab_stub.count("GET", P_PIPELINES) >= 1


def test_a_rate_limit_is_waited_out_as_gitlab_asks(
        lifecycle: Lifecycle, gitlab_stub: GitLabStub) -> None:
    iid = seed(lifecycle, gitlab_stub, 7)
    gitlab_stub.merge(PROJECT, iid, send=False)
    gitlab_stub.fail_next("429", method="GET", pattern=P_MR, retry_after=1.0)
    gitlab_stub.reset_counts()
    report = Reconciler(lifecycle, publisher(gitlab_stub), batch=5).run()
    assert report.moved == 1 and state(lifecycle, 7) == "merged"
    limited, retried = [r for r in gitlab_stub.requests if r.pattern == P_MR][:2]
    assert limited.status == 429 and retried.status == 200
    assert retried.at - limited.at >= 1.0


def test_a_run_stops_when_gitlab_keeps_refusing(
        lifecycle: Lifecycle, gitlab_stub: GitLabStub) -> None:
    for rid in range(10, 14):
        seed(lifecycle, gitlab_stub, rid)
    gitlab_stub.fail_next("429-bare", method="GET", pattern=P_MR, times=50)
    gitlab_stub.reset_counts()
    report = Reconciler(lifecycle, publisher(gitlab_stub, max_retries=2), batch=4).run()
    assert report.stopped is not None and report.checked == 1
    assert gitlab_stub.count("GET", P_MR) == 3  # one request, two retries, then the run ends
