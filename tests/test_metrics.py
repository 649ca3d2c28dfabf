"""Metrics: requests by route and status, queue length from Redis, GitLab calls and retries."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client import REGISTRY

from app.core.publish.gitlab import GitLabPublisher
from app.metrics import QueueLengthCollector, StageTimer, observe_gitlab
from tests.conftest import REDIS_URL, RUN_ID, Stack, sqlite_apex, stack_env
from tests.core.publish.test_gitlab import make_change
from tests.stubs.fixtures import PROJECT, gitlab_stub
from tests.stubs.gitlab_server import P_COMMITS, P_FILE, GitLabStub

__all__ = ["gitlab_stub"]

BODY = {"cloud_id": "aws", "resource_type": "rds", "request_id": 42}


def value(name: str, **labels: str) -> float:
    """The current value of a sample in this process's registry (0 when absent)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture
def queued_stack(tmp_path: Path, redis_client: redis.Redis) -> Iterator[Stack]:
    """A stack on Redis whose queue no worker reads."""
    env = stack_env(tmp_path, sqlite_apex(tmp_path / "apex.sqlite"),
                    f"queued-{uuid.uuid4().hex[:6]}")
    s = Stack(env)
    yield s
    s.close()


def test_requests_are_counted_by_route_template_and_status(queued_stack: Stack) -> None:
    route = "/api/v1/uuid/<string:job_uuid>"
    before = value("tfgen_http_requests_total", method="GET", route=route, status="404")
    count_before = value("tfgen_http_request_duration_seconds_count", method="GET", route=route)
    for _ in range(3):
        r = queued_stack.client.get(f"/api/v1/uuid/{uuid.uuid4()}", headers=queued_stack.auth())
        assert r.status_code == 404
    assert value("tfgen_http_requests_total", method="GET", route=route,
                 status="404") == before + 3
    assert value("tfgen_http_request_duration_seconds_count", method="GET",
                 route=route) == count_before + 3
    # Unknown paths share one label: a scanner cannot blow up the series count.
    unmatched = value("tfgen_http_requests_total", method="GET", route="<unmatched>",
                      status="404")
    queued_stack.client.get(f"/nothing/{uuid.uuid4()}")
    assert value("tfgen_http_requests_total", method="GET", route="<unmatched>",
                 status="404") == unmatched + 1


def test_metrics_needs_no_token_and_shows_the_queue_length(queued_stack: Stack) -> None:
    for _ in range(2):
        assert queued_stack.submit(BODY).status_code == 202
    r = queued_stack.client.get("/metrics")
    assert r.status_code == 200
    text = r.get_data(as_text=True)
    queue = queued_stack.env["JOB_QUEUE"]
    assert f'tfgen_queue_length{{queue="{queue}"}} 2.0' in text
    assert "tfgen_queue_up 1.0" in text


def test_queue_collector_counts_priority_lists_and_reports_an_outage(
    redis_client: redis.Redis,
) -> None:
    queue = f"tfgen-test-{RUN_ID}-prio"
    redis_client.rpush(queue, "a", "b")
    redis_client.rpush(f"{queue}\x06\x169", "c")
    try:
        families = {f.name: f for f in QueueLengthCollector(REDIS_URL, [queue]).collect()}
        assert families["tfgen_queue_length"].samples[0].value == 3
        assert families["tfgen_queue_up"].samples[0].value == 1
    finally:
        redis_client.delete(queue, f"{queue}\x06\x169")
    down = QueueLengthCollector("redis://127.0.0.1:1/0", [queue])
    assert [(f.name, f.samples[0].value) for f in down.collect()] == [("tfgen_queue_up", 0)]


def test_stage_timer_observes_each_stage_once() -> None:
    clock = iter([0.0, 1.5, 1.5, 4.0]).__next__
    timer = StageTimer(clock=clock)
    before = {s: value("tfgen_job_stage_duration_seconds_sum", stage=s) for s in ("a", "b")}
    timer.enter("a")
    timer.enter("b")
    timer.close()
    timer.close()  # nothing open: no second observation
    assert value("tfgen_job_stage_duration_seconds_sum", stage="a") == before["a"] + 1.5
    assert value("tfgen_job_stage_duration_seconds_sum", stage="b") == before["b"] + 2.5


def test_gitlab_calls_and_retries_are_counted(gitlab_stub: GitLabStub) -> None:
    publisher = GitLabPublisher(gitlab_stub.url, max_retries=4, backoff_base=0.01,
                                backoff_max=0.05, observer=observe_gitlab)
    outcomes = ("ok", "not_found", "transient", "rate_limited", "rejected", "auth")
    before = {o: value("tfgen_gitlab_requests_total", outcome=o) for o in outcomes}
    retries = value("tfgen_gitlab_retries_total", reason="transient")
    gitlab_stub.fail_next("503", method="GET", pattern=P_FILE, times=2)
    gitlab_stub.reset_counts()

    publisher.publish(make_change(project=PROJECT))

    delta = {o: value("tfgen_gitlab_requests_total", outcome=o) - before[o] for o in outcomes}
    assert delta["transient"] == 2
    assert value("tfgen_gitlab_retries_total", reason="transient") == retries + 2
    assert delta["not_found"] == 1  # the file on the new branch (no such ref), then the POSTs
    assert sum(delta.values()) == gitlab_stub.count()  # every request the stand-in saw
    assert delta["ok"] >= 2 and gitlab_stub.count("POST", P_COMMITS) == 1
