"""The spec's security schemes and our Swagger UI page (OAuth2 with PKCE)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask
from jinja2 import BaseLoader, ChoiceLoader, FileSystemLoader

from app.auth.settings import EXTENSION_KEY, AuthSettings, auth_settings
from app.auth.tokens import AuthState

__all__ = ["AUTHORIZATIONS", "SECURITY", "authorizations", "register_swagger_ui",
           "security_requirements"]

SWAGGER_TEMPLATES = Path(__file__).resolve().parents[2] / "swagger" / "templates"

#: The config-independent part of the spec's security definitions: paste a token.
AUTHORIZATIONS: dict[str, Any] = {
    "Bearer": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "Type Bearer, a space, then your access token (Bearer eyJhbGci...).",
    },
}

#: Security requirement for AUTHORIZATIONS alone (either scheme satisfies a requirement).
SECURITY: list[dict[str, list[str]]] = [{"Bearer": []}]


def authorizations(settings: AuthSettings) -> dict[str, Any]:
    """Return the spec's security definitions: OAuth2 (authorization code) and Bearer.

    Dev mode has no authorization server, so only the Bearer scheme is declared.
    """
    if settings.mode != "oidc":
        return dict(AUTHORIZATIONS)
    return {
        "oauth2": {
            "type": "oauth2",
            "flow": "accessCode",
            "authorizationUrl": settings.authorization_url,
            "tokenUrl": settings.token_url,
            "scopes": {scope: f"{scope} scope" for scope in settings.swagger_scopes},
        },
        **AUTHORIZATIONS,
    }


def security_requirements(settings: AuthSettings) -> list[dict[str, list[str]]]:
    """Return the spec's security requirement: OAuth2 or a pasted Bearer token."""
    if settings.mode != "oidc":
        return list(SECURITY)
    return [{"oauth2": list(settings.swagger_scopes)}, *SECURITY]


def register_swagger_ui(app: Flask, api: Any | None = None) -> None:
    """Serve our ``swagger-ui.html`` (OAuth2 with PKCE) and declare the security schemes.

    Puts ``swagger/templates`` in front of the app's template loader, so flask-restx's
    ``render_template("swagger-ui.html")`` picks our copy. With ``api`` (a flask-restx
    ``Api``), also sets its ``authorizations`` and ``security`` (every operation then
    requires a token unless it declares ``security=[]``); call before the spec is served.
    """
    loaders: list[BaseLoader] = [FileSystemLoader(SWAGGER_TEMPLATES)]
    if app.jinja_loader is not None:
        loaders.append(app.jinja_loader)
    app.jinja_loader = ChoiceLoader(loaders)  # type: ignore[misc,assignment]
    state: AuthState | None = app.extensions.get(EXTENSION_KEY)
    settings = state.settings if state else auth_settings(app.config)
    app.config.setdefault("SWAGGER_UI_OAUTH_SCOPES", " ".join(settings.swagger_scopes))
    if api is not None:
        api.authorizations = authorizations(settings)
        api.security = security_requirements(settings)
