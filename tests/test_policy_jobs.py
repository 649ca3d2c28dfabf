"""The policy stage in whole jobs: a real worker, the starter library, the GitLab stand-in.

Deny blocks and publishes nothing; warn proceeds and shows in the merge request; a
waiver turns a deny into ``waived`` with its commit trailer, an expired one does not; a
policy file that does not compile fails jobs with ``POLICY_ERROR`` naming file and line
while ``/ready`` says why, and jobs pass again once it is fixed; hostile values reach a
policy exactly as stored.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa

from app.core.waivers import Waiver
from tests.conftest import ROOT, Stack, Worker, sqlite_apex, stack_env
from tests.stubs.gitlab_server import GitLabStub, Project

ALICE = "glpat-demo-alice-not-a-real-token"  # users.gitlab_token in the demo data
LIVE = "platform/infra-live"
OPEN_SSH = "no-world-ingress-to-admin-or-database-ports"
HOSTILE = 'q"uote ${var.secret} %{ if x }\nsecond line \\ end'
ADMIN = "tfgen-admins"

# A probe policy for request 71 only: it echoes what it sees as warnings.
PROBE = """package tfgen.probe

warn contains {"rule": "probe-request-name", "msg": input.request.name} if {
	input.request.request_id == 71
}

warn contains {"rule": "probe-rendered-name", "msg": body.tags.Name} if {
	input.request.request_id == 71
	some _, doc in input.files
	some _, bodies in doc.resource.aws_instance
	some body in bodies
}

warn contains {"rule": "probe-rule-description", "msg": r.description} if {
	input.request.request_id == 71
	some r in input.request.sg_rules
}

warn contains {"rule": "probe-rendered-description", "msg": body.ingress[0].description} if {
	input.request.request_id == 71
	some _, doc in input.files
	some _, bodies in doc.resource.aws_security_group
	some body in bodies
}
"""

BROKEN = "package tfgen.broken\n\ndeny contains msg if {\n  msg :=\n}\n"


def add_ec2_requests(database_url: str) -> None:
    """Requests opening SSH to the world (70, 72, 74) and one full of hostile text (71)."""
    engine = sa.create_engine(database_url)
    meta = sa.MetaData()
    requests = sa.Table("apex_aws_ec2_request", meta, autoload_with=engine)
    rules = sa.Table("apex_aws_ec2_sg_ingress", meta, autoload_with=engine)
    with engine.begin() as conn:
        (template,) = conn.execute(sa.select(requests).where(requests.c.id == 7)).mappings()
        for request_id, name in ((70, "bastion-a"), (71, HOSTILE), (72, "bastion-b"),
                                 (74, "bastion-c")):
            conn.execute(requests.insert(), [{**template, "id": request_id, "name": name}])
            open_ssh = request_id != 71
            conn.execute(rules.insert(), [{
                "id": 1000 + request_id, "request_id": request_id,
                "description": "SSH from anywhere" if open_ssh else HOSTILE,
                "protocol": "tcp", "from_port": 22 if open_ssh else 443,
                "to_port": 22 if open_ssh else 443, "cidr_blocks": "0.0.0.0/0"}])
    engine.dispose()


@pytest.fixture(scope="module")
def gitlab() -> Iterator[GitLabStub]:
    with GitLabStub(seed=16) as stub:
        stub.add_user("alice", ALICE)
        stub.add_project(LIVE, members={"alice": "developer"})
        yield stub


@pytest.fixture(scope="module")
def policy_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("policies") / "policies"
    shutil.copytree(ROOT / "policies", folder)
    (folder / "probe.rego").write_text(PROBE)
    return folder


@pytest.fixture(scope="module")
def policy_stack(tmp_path_factory: pytest.TempPathFactory, gitlab: GitLabStub,
                 policy_dir: Path, redis_client: redis.Redis) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("policy")
    database_url = sqlite_apex(base / "apex.sqlite")
    add_ec2_requests(database_url)
    env = {**stack_env(base, database_url, "policy"), "PUBLISHER": "gitlab",
           "GITLAB_URL": gitlab.url, "GITLAB_MAX_RETRIES": "2",
           "GITLAB_BACKOFF_BASE": "0.005", "POLICY_DIR": str(policy_dir)}
    stack = Stack(env)
    stack.worker = Worker(env, concurrency=2).start()
    yield stack
    stack.close()


def run(stack: Stack, request_id: int, resource_type: str = "ec2",
        dry_run: bool = False) -> dict[str, Any]:
    body = {"cloud_id": "aws", "resource_type": resource_type, "request_id": request_id,
            "dry_run": dry_run}
    return stack.wait(stack.submit(body).json["uuid"])


def branch_of(project: Project, name: str) -> str | None:
    return project.branches.get(f"feature/aws-ec2-{name}")


def test_a_deny_fails_the_job_and_publishes_nothing(
        policy_stack: Stack, gitlab: GitLabStub) -> None:
    doc = run(policy_stack, 70)
    assert doc["status"] == "FAILURE", doc
    assert doc["stage"] == "policy"
    error = doc["error"]
    assert error["code"] == "POLICY_DENIED" and error["retryable"] is False
    rules = {v["rule"] for v in error["violations"]}
    assert rules == {OPEN_SSH}
    messages = [v["msg"] for v in error["violations"]]
    assert "request rule SSH from anywhere opens port(s) 22 to 0.0.0.0/0" in messages
    assert any("aws_security_group.vm_70 opens port(s) 22" in m for m in messages)
    assert branch_of(gitlab.project(LIVE), "bastion-a") is None
    assert not gitlab.project(LIVE).open_merge_requests("feature/aws-ec2-bastion-a")


def test_a_dry_run_reports_a_deny_instead_of_failing(policy_stack: Stack) -> None:
    doc = run(policy_stack, 70, dry_run=True)
    assert doc["status"] == "SUCCESS", doc
    policy = doc["result"]["policy"]
    assert {d["rule"] for d in policy["denied"]} == {OPEN_SSH}
    assert {p["file"] for p in policy["policies"]} >= {"ingress.rego", "tags.rego"}


def test_a_warning_proceeds_and_shows_in_the_merge_request(
        policy_stack: Stack, gitlab: GitLabStub) -> None:
    doc = run(policy_stack, 7)  # the demo's ec2 request: its instance has no CostCenter tag
    assert doc["status"] == "SUCCESS", doc
    policy = doc["result"]["policy"]
    assert policy["denied"] == [] and policy["waived"] == []
    assert [w["rule"] for w in policy["warnings"]] == ["required-tag-costcenter"]
    (mr,) = gitlab.project(LIVE).open_merge_requests("feature/aws-ec2-web-frontend-01")
    assert "### Policy" in mr["description"]
    assert "warning `required-tag-costcenter`: aws/ec2/web-frontend-01.tf: " \
           "aws_instance.vm_7 has no CostCenter tag" in mr["description"]


def test_the_demo_rds_request_trips_one_warning(policy_stack: Stack) -> None:
    doc = run(policy_stack, 42, resource_type="rds")
    assert doc["status"] == "SUCCESS", doc
    warnings = doc["result"]["policy"]["warnings"]
    assert [w["rule"] for w in warnings] == ["storage-encryption-explicit"]


def grant(stack: Stack, request_id: int, expires_at: str) -> Any:
    return stack.client.post("/api/v1/waivers", headers=stack.auth("root", ADMIN), json={
        "cloud_id": "aws", "resource_type": "ec2", "request_id": request_id,
        "rule": OPEN_SSH, "reason": "bastion behind a NACL", "expires_at": expires_at})


def test_a_waiver_turns_the_deny_into_waived_with_its_trailer(
        policy_stack: Stack, gitlab: GitLabStub) -> None:
    answer = grant(policy_stack, 74, "2099-01-31")
    assert answer.status_code == 201, answer.json
    doc = run(policy_stack, 74)
    assert doc["status"] == "SUCCESS", doc
    policy = doc["result"]["policy"]
    assert policy["denied"] == []
    assert {w["rule"] for w in policy["waived"]} == {OPEN_SSH}
    assert policy["waived"][0]["waiver"]["granted_by"] == "root"
    project = gitlab.project(LIVE)
    head = project.commits[project.branches["feature/aws-ec2-bastion-c"]]
    assert f"Tfgen-Waiver: {OPEN_SSH} by root until 2099-01-31T00:00:00Z" in head.message
    assert head.message.rstrip().splitlines()[-1].startswith("Tfgen-Waiver: ")
    (mr,) = project.open_merge_requests("feature/aws-ec2-bastion-c")
    assert f"waived `{OPEN_SSH}`" in mr["description"]


def test_an_expired_waiver_does_not_waive(policy_stack: Stack, gitlab: GitLabStub) -> None:
    svc = policy_stack.app.extensions["tfgen"]
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    svc.waivers.add(Waiver.new(cloud_id="aws", resource_type="ec2", request_id=72,
                               rule=OPEN_SSH, reason="was fine last month",
                               expires_at=past, granted_by="root"))
    doc = run(policy_stack, 72)
    assert doc["status"] == "FAILURE", doc
    assert doc["error"]["code"] == "POLICY_DENIED"
    assert branch_of(gitlab.project(LIVE), "bastion-b") is None


def test_hostile_values_reach_a_policy_exactly_as_stored(policy_stack: Stack) -> None:
    doc = run(policy_stack, 71, dry_run=True)
    assert doc["status"] == "SUCCESS", doc
    seen = {w["rule"]: w["msg"] for w in doc["result"]["policy"]["warnings"]}
    assert seen["probe-request-name"] == HOSTILE
    assert seen["probe-rendered-name"] == HOSTILE
    assert seen["probe-rule-description"] == HOSTILE
    assert seen["probe-rendered-description"] == HOSTILE


def test_a_broken_policy_fails_jobs_and_ready_until_it_is_fixed(
        policy_stack: Stack, policy_dir: Path) -> None:
    broken = policy_dir / "broken.rego"
    broken.write_text(BROKEN)
    try:
        doc = run(policy_stack, 7, dry_run=True)
        assert doc["status"] == "FAILURE", doc
        error = doc["error"]
        assert error["code"] == "POLICY_ERROR"
        assert error["details"]["file"] == "broken.rego" and error["details"]["line"] == 4
        assert "broken.rego:4:" in error["message"]
        ready = policy_stack.client.get("/ready")
        assert ready.status_code == 503
        assert "policies" in ready.json["failing"]
        assert "broken.rego:4:" in ready.json["checks"]["policies"]
        assert str(policy_dir) in ready.json["checks"]["policies"]
    finally:
        broken.write_text(BROKEN.replace("msg :=\n", 'msg := "fixed"\n  false\n'))
    assert run(policy_stack, 7, dry_run=True)["status"] == "SUCCESS"
    assert policy_stack.client.get("/ready").status_code == 200
