"""``swagger/swagger.json`` is the spec the running API serves, and the CLI writes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from flask import Flask

from app import create_app
from app.cli import DEFAULT_SPEC

DOCUMENTED_PATHS = {"/terraform/generate", "/terraform/templates", "/uuid/{job_uuid}", "/jobs",
                    "/waivers", "/waivers/{waiver_id}",
                    "/webhooks", "/webhooks/{webhook_id}", "/webhooks/{webhook_id}/rotate",
                    "/webhooks/{webhook_id}/deliveries",
                    "/webhooks/{webhook_id}/deliveries/{event_id}/redeliver",
                    "/requests", "/requests/{cloud_id}/{resource_type}/{request_id}",
                    "/events", "/hooks/gitlab"}


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    """The API as the committed spec was exported: no IdP configured."""
    return create_app({"APP_ENV": "test", "TFGEN_VAR_DIR": str(tmp_path / "var"),
                       "LOG_LEVEL": "WARNING"})


def test_committed_spec_equals_the_live_one(app: Flask) -> None:
    live = app.test_client().get("/api/v1/swagger.json")
    assert live.status_code == 200
    committed = json.loads(DEFAULT_SPEC.read_text())
    assert committed == live.json, "run `APP_ENV=test python manage.py export-swagger`"
    assert set(committed["paths"]) == DOCUMENTED_PATHS


def test_export_command_writes_the_live_spec_and_checks_it(app: Flask, tmp_path: Path) -> None:
    out = tmp_path / "spec.json"
    runner = app.test_cli_runner()
    result = runner.invoke(args=["export-swagger", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) == app.test_client().get("/api/v1/swagger.json").json
    assert runner.invoke(args=["export-swagger", "-o", str(out), "--check"]).exit_code == 0

    out.write_text(out.read_text().replace("/terraform/generate", "/terraform/old"))
    stale = runner.invoke(args=["export-swagger", "-o", str(out), "--check"])
    assert stale.exit_code != 0
    assert "not the live spec" in stale.output
