"""POST /api/v1/terraform/generate: 202, validation errors, catalog, broker outage."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import redis

from tests.conftest import Stack, free_port, sqlite_apex, stack_env

BODY = {"cloud_id": "aws", "resource_type": "rds", "request_id": 42}


def test_accepts_a_job_with_202_location_and_links(stack: Stack) -> None:
    r = stack.submit(BODY, headers={"X-Correlation-ID": "apex-req-123"})
    assert r.status_code == 202
    job_uuid = r.json["uuid"]
    assert str(uuid.UUID(job_uuid)) == job_uuid
    assert r.json["status"] == "PENDING"
    assert r.json["links"] == {"self": f"/api/v1/uuid/{job_uuid}"}
    assert r.headers["Location"] == f"/api/v1/uuid/{job_uuid}"
    assert r.headers["X-Correlation-ID"] == "apex-req-123"
    doc = stack.wait(job_uuid)
    assert doc["status"] == "SUCCESS", doc
    assert doc["correlation_id"] == "apex-req-123"


@pytest.mark.parametrize(("body", "field", "fragment"), [
    ({"resource_type": "rds", "request_id": 42}, "cloud_id", "required"),
    ({"cloud_id": "aws", "resource_type": "rds", "request_id": "42"}, "request_id", "integer"),
    ({"cloud_id": "aws", "resource_type": "rds", "request_id": 42, "dryrun": True},
     "dryrun", "unknown field"),
    ({"cloud_id": "aws", "resource_type": "rds", "request_id": 0}, "request_id", "minimum"),
    ({"cloud_id": "aws'; DROP TABLE tf_template;--", "resource_type": "rds", "request_id": 1},
     "cloud_id", "match"),
    ({"cloud_id": "aws", "resource_type": "rds", "request_id": 1, "dry_run": "yes"},
     "dry_run", "boolean"),
    ({"cloud_id": "aws\n", "resource_type": "rds", "request_id": 1}, "cloud_id", "match"),
    ({"cloud_id": "aws", "resource_type": "rds\n", "request_id": 1}, "resource_type", "match"),
])
def test_bad_fields_answer_400_with_errors_per_field(
    stack: Stack, body: dict[str, object], field: str, fragment: str
) -> None:
    r = stack.submit(body)
    assert r.status_code == 400
    assert r.json["code"] == "VALIDATION_ERROR"
    assert r.json["correlation_id"] == r.headers["X-Correlation-ID"]
    assert fragment in r.json["errors"][field]


def test_non_json_body_answers_400(stack: Stack) -> None:
    r = stack.client.post("/api/v1/terraform/generate", data="{not json",
                          content_type="application/json", headers=stack.auth("alice"))
    assert r.status_code == 400
    assert r.json["code"] == "VALIDATION_ERROR"
    assert "body" in r.json["errors"]


def test_json_array_body_answers_400(stack: Stack) -> None:
    r = stack.client.post("/api/v1/terraform/generate", json=[BODY],
                          headers=stack.auth("alice"))
    assert r.status_code == 400


def test_pair_outside_the_catalog_answers_404(stack: Stack) -> None:
    r = stack.submit({"cloud_id": "gcp", "resource_type": "rds", "request_id": 1})
    assert r.status_code == 404
    assert r.json["code"] == "NOT_FOUND"
    assert "gcp" in r.json["message"]


def test_idempotency_key_returns_the_same_job(stack: Stack) -> None:
    key = {"Idempotency-Key": f"apex-{uuid.uuid4()}"}
    first = stack.submit(BODY, headers=key)
    again = stack.submit(BODY, headers=key)
    other_user = stack.submit(BODY, user="bob", headers=key)
    assert first.status_code == again.status_code == 202
    assert again.json["uuid"] == first.json["uuid"]
    assert other_user.json["uuid"] != first.json["uuid"]
    stack.wait(first.json["uuid"])
    stack.wait(other_user.json["uuid"], user="bob")


def test_broker_unreachable_answers_503_and_records_nothing(
    tmp_path: Path, redis_client: redis.Redis
) -> None:
    env = stack_env(tmp_path, sqlite_apex(tmp_path / "apex.sqlite"), "down")
    env["CELERY_BROKER_URL"] = f"redis://127.0.0.1:{free_port()}/0"  # nobody listens
    s = Stack(env)
    try:
        r = s.submit(BODY, headers={"Idempotency-Key": "k-1"})
        assert r.status_code == 503
        assert r.json["code"] == "QUEUE_UNAVAILABLE"
        prefix = env["JOB_KEY_PREFIX"]
        assert list(redis_client.scan_iter(f"{prefix}:*")) == []
        listed = s.client.get("/api/v1/jobs", headers=s.auth("alice"))
        assert listed.status_code == 200
        assert listed.json == []
    finally:
        s.close()


def test_every_api_route_needs_a_token(stack: Stack) -> None:
    for method, path in (("post", "/api/v1/terraform/generate"), ("get", "/api/v1/jobs"),
                         ("get", "/api/v1/terraform/templates"),
                         ("get", f"/api/v1/uuid/{uuid.uuid4()}")):
        r = getattr(stack.client, method)(path, json=BODY)
        assert r.status_code == 401, path
        assert r.headers["WWW-Authenticate"].startswith("Bearer")
        assert r.json["code"] == "UNAUTHORIZED"
    assert stack.client.get("/health").status_code == 200


def test_a_cloud_outside_the_callers_groups_answers_403(stack: Stack) -> None:
    r = stack.client.post("/api/v1/terraform/generate", json=BODY,
                          headers=stack.auth("carol", groups="azure-admins"))
    assert r.status_code == 403
    assert r.json["code"] == "FORBIDDEN"


def test_on_behalf_of_needs_the_role(stack: Stack) -> None:
    body = {**BODY, "on_behalf_of": "bob"}
    r = stack.client.post("/api/v1/terraform/generate", json=body, headers=stack.auth("alice"))
    assert r.status_code == 403
    apex = stack.auth("apex-client", roles="tfgen.on_behalf_of")
    r = stack.client.post("/api/v1/terraform/generate", json=body, headers=apex)
    assert r.status_code == 202
    doc = stack.wait(r.json["uuid"], user="bob")
    assert doc["owner"] == "bob"
