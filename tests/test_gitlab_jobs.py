"""Whole jobs through real Celery workers publishing to the GitLab stand-in over HTTP.

The publisher's own rules are tested alone in ``tests/core/publish/test_gitlab.py``;
here the API, Redis, a prefork worker, the SQLite APEX store (users' tokens included)
and python-gitlab run together: faults on a fifth of GitLab's answers, a worker killed
while it publishes, and the promise that no token leaves the worker.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa

from app.demo import RESOURCE_TYPES
from tests.conftest import RUN_ID, Stack, Worker, sqlite_apex, stack_env
from tests.stubs.gitlab_server import P_COMMITS, GitLabStub, Project

ALICE = "glpat-demo-alice-not-a-real-token"  # users.gitlab_token in the demo data
CAROL = "glpat-demo-carol-not-a-real-token"
SERVICE = "glpat-service-tfgen-bot-0123456789"  # GITLAB_TOKEN: for users without one
MALLORY = "glpat-revoked-mallory-000000000000"  # in users, unknown to GitLab
LIVE, AZURE = "platform/infra-live", "platform/infra-azure"
EXTRA_IDS = range(1000, 1050)  # fifty more aws/rds requests for the fault run


@pytest.fixture(scope="module")
def gitlab() -> Iterator[GitLabStub]:
    with GitLabStub(seed=7) as stub:
        for name, token in (("alice", ALICE), ("carol", CAROL), ("tfgen-bot", SERVICE)):
            stub.add_user(name, token)
        stub.add_project(LIVE, members={"alice": "developer", "tfgen-bot": "developer"})
        stub.add_project(AZURE, members={"carol": "developer"})
        yield stub


def add_requests(database_url: str) -> None:
    """Fifty more aws/rds rows and a user whose token GitLab no longer knows."""
    engine = sa.create_engine(database_url)
    meta = sa.MetaData()
    rds = sa.Table(next(rt for rt in RESOURCE_TYPES if rt.resource_type == "rds").table_name,
                   meta, autoload_with=engine)
    users = sa.Table("users", meta, autoload_with=engine)
    with engine.begin() as conn:
        (template,) = conn.execute(sa.select(rds).where(rds.c.id == 42)).mappings()
        conn.execute(rds.insert(), [
            {**template, "id": i, "name": f"fault-db-{i}", "allocated_storage": Decimal(i)}
            for i in EXTRA_IDS])
        conn.execute(users.insert(), [{"login": "mallory", "gitlab_token": MALLORY}])
    engine.dispose()


def gitlab_env(base: Path, stub: GitLabStub, name: str) -> dict[str, str]:
    database_url = sqlite_apex(base / "apex.sqlite")
    add_requests(database_url)
    return {
        **stack_env(base, database_url, name),
        "PUBLISHER": "gitlab",
        "GITLAB_URL": stub.url,
        "GITLAB_TOKEN": SERVICE,
        "GITLAB_MR_LABELS": "tfgen,terraform",
        "GITLAB_MAX_RETRIES": "12",
        "GITLAB_BACKOFF_BASE": "0.005",
        "GITLAB_RETRY_MAX_TIME": "40",
        "GITLAB_REQUEST_TIMEOUT": "5",
        # A job whose publish gave up is retried by Celery: keep its countdown short here.
        "JOB_RETRY_BACKOFF_MAX": "2",
    }


@pytest.fixture(scope="module")
def gl_stack(tmp_path_factory: pytest.TempPathFactory, gitlab: GitLabStub,
             redis_client: redis.Redis) -> Iterator[Stack]:
    env = gitlab_env(tmp_path_factory.mktemp("gl"), gitlab, "gl")
    stack = Stack(env)
    stack.worker = Worker(env, concurrency=2).start()
    yield stack
    stack.close()


def new_commits(project: Project, branch: str) -> list[object]:
    base = {c.id for c in project.history("main")}
    return [c for c in project.history(branch) if c.id not in base]


def test_job_opens_a_merge_request_with_the_users_token(
        gl_stack: Stack, gitlab: GitLabStub) -> None:
    gitlab.reset_counts()
    doc = gl_stack.wait(gl_stack.submit(
        {"cloud_id": "aws", "resource_type": "rds", "request_id": 42}).json["uuid"])

    assert doc["status"] == "SUCCESS", doc
    result = doc["result"]
    project = gitlab.project(LIVE)
    branch = "feature/aws-rds-orders-db"
    (mr,) = project.open_merge_requests(branch)
    assert result["merge_request"] == {"iid": mr["iid"], "url": mr["web_url"],
                                       "source_branch": branch, "target_branch": "main"}
    assert mr["labels"] == ["tfgen", "terraform"]
    assert doc["uuid"] in mr["description"] and "aws/rds@1.2.0" in mr["description"]
    (commit,) = new_commits(project, branch)
    assert result["commit"] == {"sha": commit.id}  # type: ignore[attr-defined]
    assert f"Tfgen-Job: {doc['uuid']}" in commit.message  # type: ignore[attr-defined]
    assert gitlab.count() == 3
    assert {r.user for r in gitlab.requests[-3:]} == {"alice"}

    gitlab.reset_counts()
    again = gl_stack.wait(gl_stack.submit(
        {"cloud_id": "aws", "resource_type": "rds", "request_id": 42}).json["uuid"])
    assert again["status"] == "SUCCESS"
    assert again["result"]["unchanged"] is True
    assert again["result"]["merge_request"] == result["merge_request"]
    assert gitlab.count() == 2  # the file on the branch answers "exists" and "same"
    assert len(new_commits(project, branch)) == 1


def test_user_without_a_token_acts_with_the_service_token(
        gl_stack: Stack, gitlab: GitLabStub) -> None:
    doc = gl_stack.wait(gl_stack.submit(
        {"cloud_id": "aws", "resource_type": "rds", "request_id": 43}, user="bob").json["uuid"],
        user="bob")
    assert doc["status"] == "SUCCESS", doc
    assert gitlab.requests[-1].user == "tfgen-bot"


@pytest.mark.parametrize(("user", "groups", "body", "code"), [
    ("mallory", "aws-admins", {"cloud_id": "aws", "resource_type": "rds", "request_id": 42},
     "GITLAB_AUTH"),
    ("carol", "aws-admins", {"cloud_id": "aws", "resource_type": "rds", "request_id": 42},
     "GITLAB_NOT_FOUND"),
])
def test_permanent_gitlab_errors_fail_at_once(
        gl_stack: Stack, user: str, groups: str, body: dict[str, object], code: str) -> None:
    headers = gl_stack.auth(user, groups)
    job = gl_stack.client.post("/api/v1/terraform/generate", json=body, headers=headers)
    doc = gl_stack.wait(job.json["uuid"], user=user)
    assert doc["status"] == "FAILURE"
    assert doc["error"]["code"] == code and doc["error"]["retryable"] is False
    assert doc["attempts"] == 1
    for token in (ALICE, CAROL, SERVICE, MALLORY):
        assert token not in str(doc)


@pytest.mark.slow
def test_200_jobs_with_30_percent_gitlab_faults(gl_stack: Stack, gitlab: GitLabStub) -> None:
    gitlab.chaos(0.3, ["500", "502", "503", "429", "429-bare", "reset", "lost"])
    try:
        uuids = [gl_stack.submit({"cloud_id": "aws", "resource_type": "rds",
                                  "request_id": i}).json["uuid"]
                 for _ in range(4) for i in EXTRA_IDS]
        docs = [gl_stack.wait(u, timeout=300) for u in uuids]
    finally:
        gitlab.chaos(0.0)

    assert len(docs) == 200
    assert [d["status"] for d in docs] == ["SUCCESS"] * 200, [
        d["error"] for d in docs if d["status"] != "SUCCESS"][:3]
    project = gitlab.project(LIVE)
    for i in EXTRA_IDS:
        branch = f"feature/aws-rds-fault-db-{i}"
        commits = new_commits(project, branch)
        assert len(commits) == 1, branch  # same content four times: one commit
        assert len(project.open_merge_requests(branch)) == 1, branch
        mrs = {d["result"]["merge_request"]["iid"] for d in docs
               if d["request"]["request_id"] == i}
        assert len(mrs) == 1, branch
    assert sum(not d["result"]["unchanged"] for d in docs) >= len(EXTRA_IDS)
    faults = {r.fault for r in gitlab.requests if r.fault}
    assert {"500", "429", "reset", "lost"} <= faults
    assert gitlab.refused == []


@pytest.mark.slow
def test_worker_killed_while_publishing_ends_with_one_commit_and_one_mr(
        tmp_path: Path, gitlab: GitLabStub, redis_client: redis.Redis) -> None:
    stack = Stack(gitlab_env(tmp_path, gitlab, f"glkill-{uuid.uuid4().hex[:6]}"))
    stack.worker = worker = Worker(stack.env, concurrency=1).start()
    killed: list[int] = []

    def kill_the_worker_child(project: Project) -> None:
        # Runs in the stand-in right after it applied the commit, before it answers:
        # the commit exists in GitLab but the worker never learns it.
        for child in worker.children():
            os.kill(child, signal.SIGKILL)
            killed.append(child)

    try:
        gitlab.after_next("POST", P_COMMITS, kill_the_worker_child)
        doc = stack.wait(stack.submit(
            {"cloud_id": "azure", "resource_type": "vm", "request_id": 101},
            user="carol").json["uuid"], user="carol", timeout=120)
    finally:
        stack.close()

    assert killed
    assert doc["status"] == "SUCCESS", doc
    assert doc["attempts"] == 2
    publishes = [s["attempt"] for s in doc["stages"] if s["stage"] == "publish"]
    assert publishes == [1, 2]
    project = gitlab.project(AZURE)
    branch = doc["result"]["merge_request"]["source_branch"]
    (commit,) = new_commits(project, branch)
    # The re-run reports the commit the first attempt made, recognised by its trailer.
    assert doc["result"]["unchanged"] is False
    assert doc["result"]["commit"]["sha"] == commit.id
    assert f"Tfgen-Job: {doc['uuid']}" in commit.message
    assert len(project.open_merge_requests(branch)) == 1
    assert len([m for m in project.merge_requests if m["source_branch"] == branch]) == 1


def test_no_token_in_logs_messages_redis_or_answers(
        gl_stack: Stack, gitlab: GitLabStub, redis_client: redis.Redis,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    headers = gl_stack.auth("alice")
    bearer = headers["Authorization"].split()[1]
    worker_lines = len(gl_stack.worker.lines) if gl_stack.worker else 0
    submitted = gl_stack.client.post(
        "/api/v1/terraform/generate", headers=headers,
        json={"cloud_id": "aws", "resource_type": "rds", "request_id": 1000 + 49})
    doc = gl_stack.wait(submitted.json["uuid"])
    listing = gl_stack.client.get("/api/v1/jobs", headers=headers)
    assert doc["status"] == "SUCCESS"

    assert gl_stack.worker is not None
    logs = caplog.text + "".join(gl_stack.worker.lines[worker_lines:])
    assert doc["uuid"] in logs  # the job was logged...
    stored = b"".join(
        redis_client.dump(key) or b""
        for key in itertools.chain(redis_client.scan_iter(f"*{RUN_ID}*"),
                                   redis_client.scan_iter("celery-task-meta-*"),
                                   redis_client.scan_iter("unacked*")))
    answers = submitted.get_data(as_text=True) + str(doc) + listing.get_data(as_text=True)
    for secret in (ALICE, SERVICE, bearer):
        assert secret not in logs  # ...without a token
        assert secret.encode() not in stored
        assert secret not in answers
