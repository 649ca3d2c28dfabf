"""Rendering and validation as a real worker runs them: dry runs, escaping, failures."""

from __future__ import annotations

import pygohcl
import pytest
import sqlalchemy as sa

from tests.conftest import Stack

EVIL_NAME = 'evil" }\nresource "aws_iam_user" "x" {\n  name = "${var.secret}'
TEMPLATES = {
    "6.6.6": 'module "m" {\n  a = "{{ name.__class__.__mro__ }}"\n}\n',
    "6.6.7": 'module "m" {\n  a = 1\n  b = "{{ no_such_column }}"\n}\n',
    "6.6.8": 'module "m" {\n  a = {{ name }}\n}\n',
    "6.6.9": 'module "m" {\n  a = {{ name | hcl }}\n  b = = 1\n}\n',
}


@pytest.fixture(scope="module")
def rows(stack: Stack) -> dict[str, int]:
    engine = sa.create_engine(stack.env["DATABASE_URL"])
    ids = {"1.2.0": 900, "6.6.6": 901, "6.6.7": 902, "6.6.8": 903, "6.6.9": 904}
    with engine.begin() as conn:
        for version, text in TEMPLATES.items():
            conn.execute(sa.text(
                "INSERT INTO tf_template (cloud_id, resource_type, module_version, "
                "jinja_template) VALUES ('aws', 'rds', :v, :t)"), {"v": version, "t": text})
        for version, request_id in ids.items():
            conn.execute(sa.text(
                "INSERT INTO apex_aws_rds_request (id, name, module_version, gitlab_project_id, "
                "engine, engine_version, instance_class, allocated_storage, multi_az, "
                "subnet_ids, cost_center, description) VALUES (:id, :name, :v, 'p', "
                "'postgres', '16', 'db.t3.small', 20, 0, 'subnet-1', NULL, :name)"),
                {"id": request_id, "name": EVIL_NAME, "v": version})
    engine.dispose()
    return ids


def dry_run(stack: Stack, request_id: int) -> dict[str, object]:
    body = {"cloud_id": "aws", "resource_type": "rds", "request_id": request_id, "dry_run": True}
    return stack.wait(stack.submit(body).json["uuid"])


def test_a_dry_run_returns_formatted_escaped_content_and_the_report(
    stack: Stack, rows: dict[str, int]
) -> None:
    doc = dry_run(stack, rows["1.2.0"])
    assert doc["status"] == "SUCCESS", doc
    result = doc["result"]
    assert isinstance(result, dict)
    (file,) = result["files"]
    assert file["path"] == "aws/rds/evil-resource-aws-iam-user-x-name-var-secret.tf"
    parsed = pygohcl.loads(file["content"])
    assert list(parsed) == ["module"]
    module = parsed["module"]["rds_900"]
    assert module["identifier"] == EVIL_NAME
    assert module["tags"]["Description"] == EVIL_NAME
    checks = {c["name"]: c for c in result["validation"]["checks"]}
    assert checks["hcl-parse"]["status"] == "passed"
    assert checks["terraform-fmt"]["status"] == "passed"
    assert checks["terraform-validate"]["status"] == "skipped"
    assert "tags = {\n    Name        = " in file["content"]  # fmt aligned the '='


@pytest.mark.parametrize(("version", "code", "line", "fragment"), [
    ("6.6.6", "RENDER_ERROR", 2, "unsafe"),
    ("6.6.7", "INVALID_REQUEST_DATA", 3, "'no_such_column'"),
    ("6.6.8", "INVALID_REQUEST_DATA", 2, "printed outside quotes"),
])
def test_template_and_data_problems_fail_the_job_with_their_code(
    stack: Stack, rows: dict[str, int], version: str, code: str, line: int, fragment: str
) -> None:
    doc = dry_run(stack, rows[version])
    assert doc["status"] == "FAILURE", doc
    assert doc["stage"] == "render"
    error = doc["error"]
    assert isinstance(error, dict)
    assert error["code"] == code
    assert error["retryable"] is False
    assert f"aws/rds@{version} line {line}" in error["message"]
    assert fragment in error["message"]


def test_invalid_hcl_fails_validation_with_line_column_and_lines(
    stack: Stack, rows: dict[str, int]
) -> None:
    doc = dry_run(stack, rows["6.6.9"])
    assert doc["status"] == "FAILURE", doc
    assert doc["stage"] == "validate"
    error = doc["error"]
    assert isinstance(error, dict)
    assert error["code"] == "VALIDATION_FAILED"
    assert error["details"] == {"path": "aws/rds/evil-resource-aws-iam-user-x-name-var-secret.tf",
                                "line": 3, "column": 7, "check": "hcl-parse"}
    assert "> 3 |   b = = 1" in error["message"]
