"""Fixtures for auth tests: the IdP stand-in and a minimal Flask + flask-restx app.

The app factory is built elsewhere; this app plugs auth in through the same calls it
will make (``init_auth``, ``register_swagger_ui``) and maps ``TfgenError`` like it will.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Blueprint, Flask, request
from flask.testing import FlaskClient
from flask_restx import Api, Resource

from app.auth import (
    can_see,
    current_principal,
    init_auth,
    register_swagger_ui,
    require_cloud,
    resolve_owner,
)
from app.errors import TfgenError
from tests.stubs.idp import IdentityProvider

CLOUD_PERMISSIONS = '{"aws-users": ["aws"], "gcp-users": ["gcp"], "platform": ["*"]}'


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    with IdentityProvider() as provider:
        yield provider


@pytest.fixture
def auth_config(idp: IdentityProvider) -> dict[str, Any]:
    return {
        "APP_ENV": "test",
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


def _error_body(error: TfgenError) -> dict[str, Any]:
    body: dict[str, Any] = {"message": error.message, "code": error.code}
    if error.details:
        body["errors"] = error.details
    return body


def make_app(config: dict[str, Any]) -> Flask:
    """A minimal app: one route returning the principal, one submit-like route."""
    app = Flask(__name__)
    app.config.update(TESTING=True, **config)
    init_auth(app)
    blueprint = Blueprint("api", __name__, url_prefix="/api/v1")
    api = Api(blueprint, doc="/docs", title="tfgen auth test", version="1")
    register_swagger_ui(app, api)
    ns = api.namespace("auth", path="/")

    @api.errorhandler(TfgenError)
    def handle_tfgen_error(error: TfgenError) -> tuple[dict[str, Any], int]:
        return _error_body(error), error.status

    @ns.route("/whoami")
    class WhoAmI(Resource):
        def get(self) -> dict[str, Any]:
            """Return the caller."""
            p = current_principal()
            return {
                "username": p.username,
                "groups": sorted(p.groups),
                "roles": sorted(p.roles),
                "is_admin": p.is_admin,
                "client_id": p.client_id,
                "clouds": sorted(p.clouds),
            }

    @ns.route("/submit")
    class Submit(Resource):
        def post(self) -> tuple[dict[str, Any], int]:
            """Submit-like: check the cloud, resolve the owner."""
            p = current_principal()
            body = request.get_json()
            require_cloud(p, body["cloud_id"])
            owner = resolve_owner(p, body.get("on_behalf_of"))
            return {"owner": owner, "visible": can_see(p, owner)}, 202

    app.register_blueprint(blueprint)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.errorhandler(TfgenError)
    def handle_outside_api(error: TfgenError) -> tuple[dict[str, Any], int]:
        return _error_body(error), error.status

    return app


@pytest.fixture
def app(auth_config: dict[str, Any]) -> Flask:
    return make_app(auth_config)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
