"""A request's whole life through real workers: the job, then GitLab's webhooks.

The GitLab stand-in merges, closes and runs pipelines, and POSTs its webhooks exactly as
GitLab does (headers and bodies of its "Webhook events" documentation) over HTTP to the
API served by a real WSGI server; a real Celery worker applies them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis
from werkzeug.serving import make_server

from app import create_app
from app.core.jobs import JobRecord
from tests.conftest import Stack, Worker
from tests.stubs.gitlab_server import Delivery, GitLabStub
from tests.test_gitlab_jobs import LIVE, gitlab_env
from tests.test_gitlab_jobs import gitlab as gitlab  # the same GitLab, users and projects
from tests.test_metrics import value

SECRET = "whs-0123456789abcdef-not-real"
BRANCH = "feature/aws-rds-orders-db"


@pytest.fixture(scope="module")
def life(tmp_path_factory: pytest.TempPathFactory, gitlab: GitLabStub,
         redis_client: redis.Redis) -> Iterator[Stack]:
    env = {**gitlab_env(tmp_path_factory.mktemp("life"), gitlab, "life"),
           "GITLAB_WEBHOOK_SECRET": SECRET, "RECONCILE_INTERVAL": "0"}
    stack = Stack(env)
    server = make_server("127.0.0.1", 0, stack.app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    gitlab.add_webhook(f"http://127.0.0.1:{server.server_port}/api/v1/hooks/gitlab", SECRET)
    stack.worker = Worker(env, concurrency=2).start()
    yield stack
    server.shutdown()
    stack.close()


def request_doc(stack: Stack, path: str, user: str = "alice") -> Any:
    return stack.client.get(f"/api/v1/requests/{path}", headers=stack.auth(user))


def wait_request(stack: Stack, path: str, until: Callable[[dict[str, Any]], bool],
                 timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = request_doc(stack, path)
        if answer.status_code == 200 and until(answer.json):
            return dict(answer.json)
        if time.monotonic() > deadline:
            raise AssertionError(f"request {path} stuck: {answer.json}")
        time.sleep(0.05)


def events(stack: Stack, user: str = "alice", after: str | None = None, **params: Any
           ) -> dict[str, Any]:
    query = {k: v for k, v in {"after": after, **params}.items() if v is not None}
    answer = stack.client.get("/api/v1/events", query_string=query, headers=stack.auth(user))
    assert answer.status_code == 200, answer.json
    return dict(answer.json)


def all_events(stack: Stack, user: str = "alice") -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = events(stack, user, after=cursor, limit=50)
        out.extend(page["events"])
        if not page["events"]:
            return out
        cursor = page["next"]


def run_job(stack: Stack, request_id: int) -> dict[str, Any]:
    doc = stack.wait(stack.submit({"cloud_id": "aws", "resource_type": "rds",
                                   "request_id": request_id}).json["uuid"])
    assert doc["status"] == "SUCCESS", doc
    return doc


def test_job_merge_and_pipeline_move_the_request_and_the_feed(
        life: Stack, gitlab: GitLabStub) -> None:
    doc = run_job(life, 42)
    iid = doc["result"]["merge_request"]["iid"]
    record = request_doc(life, "aws/rds/42").json
    assert record["state"] == "mr_open" and record["last_job"] == doc["uuid"]
    assert record["merge_request"]["iid"] == iid
    assert record["merge_request"]["project_path"] == LIVE

    (merge,) = gitlab.merge(LIVE, iid)
    assert merge.headers["X-Gitlab-Event"] == "Merge Request Hook"
    merged = wait_request(life, "aws/rds/42", lambda r: r["state"] == "merged")
    sha = gitlab.project(LIVE).branches["main"]
    assert merged["merge_request"]["merge_commit_sha"] == sha
    assert merged["history"][-1]["source"] == "webhook"

    gitlab.run_pipeline(LIVE, "main", sha, "running")
    parent = gitlab.project(LIVE).commits[sha].parent_id
    assert parent is not None
    gitlab.run_pipeline(LIVE, "main", parent, "success")  # another commit's pipeline
    (done,) = gitlab.run_pipeline(LIVE, "main", sha, "success")
    assert done.payload["object_attributes"]["status"] == "success"
    applied = wait_request(life, "aws/rds/42", lambda r: r["state"] == "applied")
    assert applied["merge_request"]["pipeline"]["status"] == "success"

    mine = [e for e in all_events(life) if e["request_id"] == 42]
    kinds = [e["type"] for e in mine]
    assert kinds[:2] == ["job.started", "request.generating"]
    assert kinds[-4:] == ["job.succeeded", "request.mr_open", "request.merged",
                          "request.applied"]
    assert all(e["owner"] == "alice" and e["cloud_id"] == "aws" for e in mine)
    # Another user sees neither the request nor its events.
    assert request_doc(life, "aws/rds/42", user="dave").status_code == 404
    assert [e for e in all_events(life, user="dave") if e["request_id"] == 42] == []
    # An admin sees both.
    admin = life.client.get("/api/v1/requests/aws/rds/42",
                            headers=life.auth("root", "tfgen-admins"))
    assert admin.status_code == 200


def test_the_receiver_checks_the_secret_and_the_size(life: Stack, gitlab: GitLabStub) -> None:
    (delivery,) = gitlab.mr_event(LIVE, 1, "update", send=False)
    assert delivery.send(token="wrong-secret") == 401
    no_token = Delivery(delivery.url, {k: v for k, v in delivery.headers.items()
                                       if k != "X-Gitlab-Token"}, delivery.body)
    assert no_token.send() == 401
    huge = Delivery(delivery.url, delivery.headers, b" " * (1024 * 1024 + 1))
    assert huge.send() == 413
    # The route is not there at all without a secret.
    bare = create_app({**life.env, "GITLAB_WEBHOOK_SECRET": ""}).test_client()
    answer = bare.post("/api/v1/hooks/gitlab", data=delivery.body,
                       headers=dict(delivery.headers))
    assert answer.status_code == 404 and answer.json["code"] == "NOT_FOUND"
    wrong = life.client.post("/api/v1/hooks/gitlab", data=delivery.body,
                             headers={**delivery.headers, "X-Gitlab-Token": "nope"})
    assert wrong.status_code == 401 and wrong.json["code"] == "UNAUTHORIZED"


def test_duplicates_unknown_branches_and_late_events_change_nothing(
        life: Stack, gitlab: GitLabStub) -> None:
    doc = run_job(life, 43)
    iid = doc["result"]["merge_request"]["iid"]
    (early_update,) = gitlab.mr_event(LIVE, iid, "update", send=False)
    (merge,) = gitlab.merge(LIVE, iid, send=False)
    assert merge.send() == 202
    merged = wait_request(life, "aws/rds/43", lambda r: r["state"] == "merged")

    # GitLab's retry of the same event (same Idempotency-Key), and an old GitLab that
    # sends only X-Gitlab-Event-UUID: both accepted, neither applied again.
    life_client = life.app.test_client()
    duplicates = value("tfgen_gitlab_hooks_total", event="merge_request", outcome="duplicate")
    again = life_client.post("/api/v1/hooks/gitlab", data=merge.body, headers=dict(merge.headers))
    assert again.status_code == 202 and again.json == {"status": "duplicate"}
    old = {k: v for k, v in merge.headers.items() if k != "Idempotency-Key"}
    again = life_client.post("/api/v1/hooks/gitlab", data=merge.body, headers=old)
    assert again.status_code == 202 and again.json == {"status": "duplicate"}
    assert value("tfgen_gitlab_hooks_total", event="merge_request",
                 outcome="duplicate") == duplicates + 2

    # Late: the update GitLab sent before the merge arrives now; and a close.
    assert early_update.send() == 202
    (close,) = gitlab.mr_event(LIVE, iid, "close", send=False)
    assert close.send() == 202
    # A merge request tfgen did not make.
    foreign = gitlab.open_merge_request(LIVE, "feature/by-hand", send=False)
    (foreign_merge,) = gitlab.merge(LIVE, foreign["iid"], send=False)
    answer = life_client.post("/api/v1/hooks/gitlab", data=foreign_merge.body,
                              headers=dict(foreign_merge.headers))
    assert answer.status_code == 202 and answer.json == {"status": "ignored"}
    # Events tfgen does not follow are accepted and ignored, never 4xx'd.
    push = life_client.post("/api/v1/hooks/gitlab", json={"object_kind": "push"},
                            headers={"X-Gitlab-Token": SECRET, "X-Gitlab-Event": "Push Hook"})
    assert push.status_code == 202 and push.json == {"status": "ignored"}

    # A marker after them: once it is applied, the late ones have been handled too.
    sha = merged["merge_request"]["merge_commit_sha"]
    time.sleep(1)
    gitlab.run_pipeline(LIVE, "main", sha, "failed")
    final = wait_request(life, "aws/rds/43", lambda r: r["state"] == "apply_failed")
    moves = [h for h in final["history"] if h["source"] == "webhook"]
    assert [h["state"] for h in moves] == ["merged", "apply_failed"]


def test_a_burst_of_200_deliveries_is_handled_without_loss(
        life: Stack, gitlab: GitLabStub) -> None:
    svc = life.app.extensions["tfgen"]
    count = 200
    ids = range(5000, 5000 + count)
    deliveries = []
    for i in ids:
        # Seed records as a finished job leaves them, then merge each MR in GitLab.
        mr = gitlab.open_merge_request(LIVE, f"feature/aws-rds-burst-{i}", send=False)
        result = {"merge_request": {"iid": mr["iid"], "url": mr["web_url"],
                                    "source_branch": mr["source_branch"],
                                    "target_branch": "main"},
                  "commit": {"sha": mr["sha"]}, "remote": f"{gitlab.url}/{LIVE}"}
        for status in ("STARTED", "SUCCESS"):
            svc.lifecycle.job_changed(JobRecord(
                uuid=f"burst-{i}", owner="alice", status=status, started_at="2026-01-01T00:00:00Z",
                request={"cloud_id": "aws", "resource_type": "rds", "request_id": i,
                         "dry_run": False}, result=result if status == "SUCCESS" else None))
        deliveries.extend(gitlab.merge(LIVE, mr["iid"], send=False))
    cursor = None  # skip what the feed holds so far
    while True:
        page = events(life, after=cursor, limit=500)
        if not page["events"]:
            break
        cursor = page["next"]

    with ThreadPoolExecutor(max_workers=32) as pool:
        statuses = list(pool.map(lambda d: d.send(), deliveries))
    assert statuses == [202] * count

    merged: list[dict[str, Any]] = []
    deadline = time.monotonic() + 90
    while len(merged) < count and time.monotonic() < deadline:
        page = events(life, after=cursor, limit=500, wait=5)
        merged.extend(e for e in page["events"] if e["type"] == "request.merged")
        cursor = page["next"]
    assert sorted(e["request_id"] for e in merged) == list(ids)
    for i in (ids[0], ids[-1]):
        assert request_doc(life, f"aws/rds/{i}").json["state"] == "merged"


def test_feed_parameters_are_checked(life: Stack) -> None:
    for query in ({"limit": "0"}, {"limit": "501"}, {"wait": "26"}, {"wait": "x"},
                  {"after": "../../etc"}, {"after": "12"}, {"after": "1-2-3"}):
        answer = life.client.get("/api/v1/events", query_string=query, headers=life.auth())
        assert answer.status_code == 400 and answer.json["code"] == "VALIDATION_ERROR", query
    assert life.client.get("/api/v1/events").status_code == 401
    listed = life.client.get("/api/v1/requests?state=merged", headers=life.auth())
    assert listed.status_code == 200 and all(r["state"] == "merged" for r in listed.json)
    assert life.client.get("/api/v1/requests?state=nope", headers=life.auth()).status_code == 400


def test_the_cancel_path_feeds_the_same_hook(idle_stack: Stack, pg_stack: Stack) -> None:
    # Canceled while queued (the API ends it): the event, and no request record.
    canceled = value("tfgen_events_total", type="job.canceled")
    queued = idle_stack.submit({"cloud_id": "aws", "resource_type": "rds", "request_id": 42})
    assert idle_stack.delete(queued.json["uuid"]).status_code == 202
    assert value("tfgen_events_total", type="job.canceled") == canceled + 1
    feed = [e for e in all_events(idle_stack) if e["job_uuid"] == queued.json["uuid"]]
    assert [(e["type"], e["data"]["error"]["code"]) for e in feed] == [
        ("job.canceled", "CANCELED")]
    assert request_doc(idle_stack, "aws/rds/42").status_code == 404

    # Canceled while running (the worker ends it at the next stage): the request failed.
    job = pg_stack.submit({"cloud_id": "aws", "resource_type": "slowdb", "request_id": 21})
    pg_stack.wait(job.json["uuid"], until=lambda d: d["status"] in {"STARTED", "PROGRESS"})
    assert pg_stack.delete(job.json["uuid"]).status_code == 202
    assert pg_stack.wait(job.json["uuid"])["status"] == "REVOKED"
    kinds = [e["type"] for e in all_events(pg_stack) if e["request_id"] == 21
             and e["resource_type"] == "slowdb"]
    assert kinds == ["job.started", "request.generating", "job.canceled", "request.failed"]
    record = request_doc(pg_stack, "aws/slowdb/21").json
    assert record["state"] == "failed" and "CANCELED" in record["history"][-1]["detail"]
