"""Fixtures for auth tests: the IdP stand-in and the real app (``create_app``).

Auth is tested through the wiring production runs: ``create_app`` with its settings, the
/api/v1 guard, the error handlers and the correlation-id hook, on the real routes. The
app runs embedded (SQLite APEX with the demo data, SQLite jobs, the filesystem queue);
no worker is needed because nothing here waits for a job to run.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.auth import current_principal
from app.demo import create_demo_database
from tests.stubs.idp import IdentityProvider

CLOUD_PERMISSIONS = '{"aws-users": ["aws"], "azure-users": ["azure"], "platform": ["*"]}'

#: A request row of the demo APEX data for each cloud (``app/demo/data.py``).
DEMO_REQUESTS = {"aws": ("ec2", 7), "azure": ("vm", 101)}

#: A protected route every signed-in caller may read.
PROTECTED = "/api/v1/jobs"


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    with IdentityProvider() as provider:
        yield provider


def embedded_config(base: Path) -> dict[str, Any]:
    """Settings of one embedded app under ``base`` (auth settings go on top)."""
    var = base / "var"
    var.mkdir(parents=True, exist_ok=True)
    return {
        "APP_ENV": "test",
        "TFGEN_VAR_DIR": str(var),
        "DATABASE_URL": create_demo_database(f"sqlite:///{base / 'apex.sqlite'}"),
        "JOB_STORE_URL": f"sqlite:///{var / 'jobs.sqlite'}",
        "CELERY_BROKER_URL": "filesystem://",
        "CELERY_RESULT_BACKEND": f"file://{var / 'results'}",
        "PUBLISHER": "git",
        "GIT_REMOTE": str(var / "remote.git"),
    }


@pytest.fixture
def auth_config(idp: IdentityProvider, tmp_path: Path) -> dict[str, Any]:
    return {
        **embedded_config(tmp_path),
        "AUTH_MODE": "oidc",
        "OIDC_ISSUER": idp.issuer,
        "OIDC_AUDIENCE": idp.audience,
        "OIDC_JWKS_URL": idp.jwks_url,
        "OIDC_LEEWAY": "30",
        "CLOUD_PERMISSIONS": CLOUD_PERMISSIONS,
        "ADMIN_GROUP": "tfgen-admins",
        "SWAGGER_UI_OAUTH_CLIENT_ID": "tfgen-swagger",
        "SWAGGER_UI_OAUTH_REALM": "tfgen",
        "SWAGGER_UI_OAUTH_APP_NAME": "tfgen API",
    }


def make_app(config: dict[str, Any]) -> Flask:
    """The real app for ``config`` (overrides on top of the environment)."""
    return create_app(config)


@pytest.fixture
def app(auth_config: dict[str, Any]) -> Iterator[Flask]:
    application = make_app(auth_config)
    yield application
    application.extensions["tfgen"].store.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def whoami(app: Flask, token: str) -> dict[str, Any]:
    """What the app's own binding makes of ``token`` on a protected route."""
    with app.test_request_context(PROTECTED, headers=bearer(token)):
        p = current_principal()
    return {
        "username": p.username,
        "groups": sorted(p.groups),
        "roles": sorted(p.roles),
        "is_admin": p.is_admin,
        "client_id": p.client_id,
        "clouds": sorted(p.clouds),
    }


def submit(client: FlaskClient, token: str, cloud_id: str,
           on_behalf_of: str | None = None) -> tuple[int, dict[str, Any]]:
    """POST a demo request of ``cloud_id`` to the real generate route.

    Returns the status and, when accepted, the job's owner and whether the caller may
    see the job (a GET of its URL with the same token); otherwise the error body.
    """
    resource_type, request_id = DEMO_REQUESTS.get(cloud_id, ("vm", 101))
    body: dict[str, Any] = {"cloud_id": cloud_id, "resource_type": resource_type,
                            "request_id": request_id, "dry_run": True}
    if on_behalf_of is not None:
        body["on_behalf_of"] = on_behalf_of
    response = client.post("/api/v1/terraform/generate", json=body, headers=bearer(token))
    assert response.json is not None
    if response.status_code != 202:
        return response.status_code, response.json
    job = client.get(response.headers["Location"], headers=bearer(token))
    owner = job.json["owner"] if job.status_code == 200 and job.json else None
    if owner is None:  # not visible to the caller: read it as its owner would
        return 202, {"owner": _owner_of(client, response.json["uuid"]), "visible": False}
    return 202, {"owner": owner, "visible": True}


def _owner_of(client: FlaskClient, job_uuid: str) -> str:
    app: Flask = client.application
    record = app.extensions["tfgen"].jobs.get(job_uuid)
    return str(record.owner)
