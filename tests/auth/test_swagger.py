"""Swagger UI: our template override (OAuth2 with PKCE) and the spec's security schemes."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from tests.auth.conftest import make_app
from tests.stubs.idp import IdentityProvider


def test_docs_page_uses_pkce_and_the_configured_client(client: FlaskClient) -> None:
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert "usePkceWithAuthorizationCodeGrant: true" in page
    assert 'clientId: "tfgen-swagger"' in page
    assert 'realm: "tfgen"' in page
    assert 'appName: "tfgen API"' in page
    assert 'scopes: "openid profile email"' in page
    assert "oauth2-redirect.html" in page


def test_docs_page_escapes_config_values(auth_config: dict[str, Any]) -> None:
    app = make_app({**auth_config, "SWAGGER_UI_OAUTH_APP_NAME": '</script><script>x="'})
    page = app.test_client().get("/api/v1/docs").get_data(as_text=True)
    assert "</script><script>" not in page


def test_authorize_dialog_text_survives_swagger_ui_markdown(client: FlaskClient) -> None:
    # Swagger UI renders the description as HTML: "<access token>" was eaten as a tag.
    spec = client.get("/api/v1/swagger.json").json
    assert spec is not None
    text = spec["securityDefinitions"]["Bearer"]["description"]
    assert "<" not in text and ">" not in text and "access token" in text


def test_spec_declares_oauth2_and_bearer_on_every_operation(
    client: FlaskClient, idp: IdentityProvider
) -> None:
    spec = client.get("/api/v1/swagger.json").json
    assert spec is not None
    assert spec["securityDefinitions"] == {
        "oauth2": {
            "type": "oauth2",
            "flow": "accessCode",
            "authorizationUrl": f"{idp.issuer}/protocol/openid-connect/auth",
            "tokenUrl": f"{idp.issuer}/protocol/openid-connect/token",
            "scopes": {
                "openid": "openid scope",
                "profile": "profile scope",
                "email": "email scope",
            },
        },
        "Bearer": {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "Type Bearer, a space, then your access token "
                           "(Bearer eyJhbGci...).",
        },
    }
    required = [{"oauth2": ["openid", "profile", "email"]}, {"Bearer": []}]
    assert spec["security"] == required
    operations = {
        (path, method): op
        for path, ops in spec["paths"].items()
        for method, op in ops.items()
        if method != "parameters"  # shared path parameters, not an operation
    }
    opted_out = {
        key: op["security"]
        for key, op in operations.items()
        if op.get("security", spec["security"]) != required
    }
    # Only GitLab's webhook checks its own secret instead of a token.
    assert opted_out == {("/hooks/gitlab", "post"): []}
    assert len(operations) > len(opted_out)


def test_authorization_urls_can_be_overridden(auth_config: dict[str, Any]) -> None:
    app = make_app(
        {
            **auth_config,
            "OIDC_AUTHORIZATION_URL": "https://login.example/oauth2/v2.0/authorize",
            "OIDC_TOKEN_URL": "https://login.example/oauth2/v2.0/token",
        }
    )
    spec = app.test_client().get("/api/v1/swagger.json").json
    assert spec is not None
    oauth2 = spec["securityDefinitions"]["oauth2"]
    assert oauth2["authorizationUrl"] == "https://login.example/oauth2/v2.0/authorize"
    assert oauth2["tokenUrl"] == "https://login.example/oauth2/v2.0/token"
