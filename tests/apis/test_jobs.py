"""GET/DELETE /api/v1/uuid/<uuid> and GET /api/v1/jobs against a real worker."""

from __future__ import annotations

import uuid

import redis

from app.core.pipeline import STAGES
from tests.conftest import Stack, Worker, git

RDS = {"cloud_id": "aws", "resource_type": "rds", "request_id": 42}
SLOW = {"cloud_id": "aws", "resource_type": "slowdb"}


def test_unknown_uuid_answers_404(stack: Stack) -> None:
    for job_uuid in (str(uuid.uuid4()), "not-a-uuid"):
        r = stack.get(job_uuid)
        assert r.status_code == 404
        assert r.json["code"] == "NOT_FOUND"
        assert stack.delete(job_uuid, "alice").status_code == 404


def test_job_ends_success_with_one_commit_on_the_feature_branch(stack: Stack) -> None:
    body = {"cloud_id": "aws", "resource_type": "ec2", "request_id": 7}
    job_uuid = stack.submit(body).json["uuid"]
    doc = stack.wait(job_uuid)
    assert doc["status"] == "SUCCESS", doc
    assert doc["stage"] == "done"
    assert doc["owner"] == "alice"
    assert doc["request"] == {"cloud_id": "aws", "resource_type": "ec2", "request_id": 7,
                              "dry_run": False}
    assert doc["attempts"] == 1
    assert doc["submitted_at"] <= doc["started_at"] <= doc["finished_at"]
    result = doc["result"]
    assert result["branch"] == "feature/aws-ec2-web-frontend-01"
    assert [f["path"] for f in result["files"]] == ["aws/ec2/web-frontend-01.tf"]
    sha = result["commit"]["sha"]
    assert git(stack.remote, "rev-parse", result["branch"]) == sha
    message = git(stack.remote, "log", "-1", "--format=%B", sha)
    assert f"Tfgen-Job: {job_uuid}" in message
    assert "Tfgen-Request: aws/ec2/7" in message
    assert "Tfgen-Template: aws/ec2@2.0.0 sha256:" in message
    content = git(stack.remote, "show", f"{sha}:aws/ec2/web-frontend-01.tf")
    assert '"SSH from the office"' in content and '["10.10.0.0/16", "10.20.0.0/16"]' in content
    # The branch starts from main: its parent is main's head.
    assert git(stack.remote, "rev-parse", f"{sha}^") == git(stack.remote, "rev-parse", "main")


def test_rerun_with_same_content_makes_no_new_commit(stack: Stack) -> None:
    body = {"cloud_id": "azure", "resource_type": "storage", "request_id": 201}
    first = stack.wait(stack.submit(body).json["uuid"])
    second = stack.wait(stack.submit(body).json["uuid"])
    assert first["status"] == second["status"] == "SUCCESS"
    assert first["result"]["unchanged"] is False
    assert second["result"]["unchanged"] is True
    assert second["result"]["commit"] == first["result"]["commit"]
    branch = first["result"]["branch"]
    assert git(stack.remote, "rev-list", "--count", f"main..{branch}") == "1"


def test_dry_run_returns_files_and_report_and_publishes_nothing(stack: Stack) -> None:
    doc = stack.wait(stack.submit({**RDS, "request_id": 43, "dry_run": True}).json["uuid"])
    assert doc["status"] == "SUCCESS", doc
    files = doc["result"]["files"]
    assert files[0]["path"] == "aws/rds/billing-reports-db.tf"
    assert 'engine            = "mysql"' in files[0]["content"]
    assert doc["result"]["validation"]["ok"] is True
    assert "stage" in doc and "publish" not in [s["stage"] for s in doc["stages"]]
    assert "feature/aws-rds-billing-reports-db" not in git(stack.remote, "branch", "--list")


def test_failures_carry_their_code(stack: Stack) -> None:
    missing = stack.wait(stack.submit({**RDS, "request_id": 999}).json["uuid"])
    assert missing["status"] == "FAILURE"
    assert missing["error"]["code"] == "REQUEST_NOT_FOUND"
    assert missing["error"]["retryable"] is False
    assert missing["stage"] == "fetch"
    no_template = stack.wait(stack.submit({**RDS, "request_id": 44}).json["uuid"])
    assert no_template["error"]["code"] == "TEMPLATE_NOT_FOUND"
    assert "0.9.0" in no_template["error"]["message"]


def test_another_users_job_looks_unknown(stack: Stack) -> None:
    job_uuid = stack.submit(RDS, user="alice").json["uuid"]
    stack.wait(job_uuid)
    as_bob = stack.get(job_uuid, user="bob")
    unknown = stack.get(str(uuid.uuid4()), user="bob")
    assert as_bob.status_code == unknown.status_code == 404
    assert as_bob.json["message"] == unknown.json["message"]
    assert stack.delete(job_uuid, "bob").status_code == 404


def test_jobs_lists_the_callers_jobs_newest_first(stack: Stack) -> None:
    uuids = [stack.submit(RDS, user="dave").json["uuid"] for _ in range(3)]
    for job_uuid in uuids:
        stack.wait(job_uuid, user="dave")
    listed = stack.client.get("/api/v1/jobs", headers=stack.auth("dave")).json
    assert [j["uuid"] for j in listed] == list(reversed(uuids))
    assert {j["owner"] for j in listed} == {"dave"}
    admin = stack.client.get("/api/v1/jobs?user=dave",
                             headers=stack.auth("root", groups="tfgen-admins")).json
    assert [j["uuid"] for j in admin] == list(reversed(uuids))


def test_delete_of_a_finished_job_answers_409(stack: Stack) -> None:
    job_uuid = stack.submit(RDS).json["uuid"]
    stack.wait(job_uuid)
    r = stack.delete(job_uuid, "alice")
    assert r.status_code == 409
    assert r.json["code"] == "CONFLICT"


def test_stages_of_a_running_job_are_observed_in_order(pg_stack: Stack) -> None:
    job_uuid = pg_stack.submit({**SLOW, "request_id": 1}).json["uuid"]
    seen: list[str] = []

    def record(doc: dict[str, object]) -> bool:
        stage = str(doc["stage"])
        if not seen or seen[-1] != stage:
            seen.append(stage)
        return doc["status"] in {"SUCCESS", "FAILURE", "REVOKED"}

    doc = pg_stack.wait(job_uuid, until=record)
    assert doc["status"] == "SUCCESS", doc
    assert "fetch" in seen and seen[-1] == "done"
    assert seen == sorted(seen, key=STAGES.index)  # never backwards
    history = [s["stage"] for s in doc["stages"]]
    assert history == ["fetch", "render", "validate", "policy", "publish", "done"]
    times = [s["at"] for s in doc["stages"]]
    assert times == sorted(times)


def test_cancel_of_a_running_job_ends_revoked_before_publishing(pg_stack: Stack) -> None:
    job_uuid = pg_stack.submit({**SLOW, "request_id": 2}).json["uuid"]
    pg_stack.wait(job_uuid, until=lambda d: d["stage"] == "fetch")
    r = pg_stack.delete(job_uuid, "alice")
    assert r.status_code == 202
    assert r.json["cancel_requested"] is True
    doc = pg_stack.wait(job_uuid)
    assert doc["status"] == "REVOKED"
    assert doc["error"]["code"] == "CANCELED"
    assert "publish" not in [s["stage"] for s in doc["stages"]]
    assert "feature/aws-slowdb-slow-2" not in git(pg_stack.remote, "branch", "--list")


def test_cancel_of_a_queued_job_ends_revoked_and_never_runs(
    idle_stack: Stack, redis_client: redis.Redis
) -> None:
    job_uuid = idle_stack.submit(RDS).json["uuid"]
    assert idle_stack.get(job_uuid).json["status"] == "PENDING"
    r = idle_stack.delete(job_uuid, "alice")
    assert r.status_code == 202
    assert r.json["status"] == "REVOKED"
    assert r.json["error"]["code"] == "CANCELED"
    # A worker that starts afterwards (it never saw the revoke broadcast) drops it.
    idle_stack.worker = Worker(idle_stack.env, concurrency=1).start()
    queue = idle_stack.env["JOB_QUEUE"]
    idle_stack.wait(job_uuid, until=lambda d: redis_client.llen(queue) == 0, timeout=30)
    idle_stack.worker.stop()
    doc = idle_stack.get(job_uuid).json
    assert doc["status"] == "REVOKED"
    assert doc["started_at"] is None and doc["attempts"] == 0
    assert git(idle_stack.remote, "branch", "--list", "feature/*") == ""
