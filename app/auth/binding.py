"""Flask binding: ``init_auth`` (settings, verifier, /api/v1 guard, 401 challenge) and
``current_principal``."""

from __future__ import annotations

import logging

from flask import Flask, current_app, g, request
from flask.wrappers import Response

from app.auth.dev import dev_jwk, load_dev_signing_key
from app.auth.keys import JwksCache, StaticKeys
from app.auth.principal import Principal
from app.auth.settings import EXTENSION_KEY, AuthSettings, auth_settings
from app.auth.tokens import AuthState, TokenVerifier
from app.errors import Unauthorized

__all__ = ["SECRET_AUTHENTICATED_PATHS", "build_verifier", "current_principal", "init_auth"]

log = logging.getLogger(__name__)

#: Routes that check their own secret instead of a bearer token (``app/apis/hooks.py``).
SECRET_AUTHENTICATED_PATHS = ("/api/v1/hooks/gitlab",)
_G_PRINCIPAL = "tfgen_principal"
_G_CHALLENGE = "tfgen_auth_challenge"


def build_verifier(settings: AuthSettings) -> TokenVerifier:
    """Build the verifier for ``settings``: JWKS in oidc mode, the dev key in dev mode."""
    if settings.mode == "dev":
        kid, jwk = dev_jwk(load_dev_signing_key(settings.dev_key_path))
        return TokenVerifier(settings, StaticKeys({kid: jwk}))
    keys = JwksCache(
        settings.jwks_url,
        issuer=settings.issuer,
        ttl=settings.jwks_cache_ttl,
        cooldown=settings.jwks_cooldown,
        timeout=settings.jwks_timeout,
    )
    return TokenVerifier(settings, keys)


def init_auth(app: Flask) -> None:
    """Bind authentication to ``app``: settings, verifier, /api/v1 guard, 401 challenge.

    Every request under ``AUTH_PROTECTED_PREFIX`` (default ``/api/v1/``) except
    ``AUTH_PUBLIC_PATHS`` (the Swagger UI and spec) and CORS preflights must carry a
    valid bearer token, so a new route is protected without anyone remembering to.

    Raises:
        ValueError: A setting is missing or invalid, or ``AUTH_MODE=dev`` is set while
            ``APP_ENV`` is not dev or test.
    """
    settings = auth_settings(app.config)
    app.extensions[EXTENSION_KEY] = AuthState(settings, build_verifier(settings))
    if settings.mode == "dev":
        log.warning("AUTH_MODE=dev: tokens are signed by the local key %s", settings.dev_key_path)
    app.before_request(_guard_api)
    app.after_request(_add_challenge)


def _settings() -> AuthSettings:
    state: AuthState = current_app.extensions[EXTENSION_KEY]
    return state.settings


def _guard_api() -> None:
    settings = _settings()
    path = request.path
    if (
        request.method != "OPTIONS"
        and path.startswith(settings.protected_prefix)
        and path.rstrip("/") not in settings.public_paths
        and path.rstrip("/") not in SECRET_AUTHENTICATED_PATHS
    ):
        current_principal()


def _add_challenge(response: Response) -> Response:
    """Make every 401 carry a Bearer challenge (RFC 6750 section 3)."""
    if response.status_code != 401:
        return response  # before the header look-up, which raises inside when absent
    challenge = response.headers.get("WWW-Authenticate", "")
    if not challenge.startswith("Bearer"):
        response.headers["WWW-Authenticate"] = g.get(
            _G_CHALLENGE, f'Bearer realm="{_settings().realm}"'
        )
    return response


def current_principal() -> Principal:
    """Return the caller of the current request, verifying its bearer token once.

    Raises:
        Unauthorized: No bearer token, or the token does not verify.
        AuthUnavailable: The identity provider's keys cannot be fetched.
    """
    cached: Principal | None = g.get(_G_PRINCIPAL)
    if cached is not None:
        return cached
    state: AuthState = current_app.extensions[EXTENSION_KEY]
    realm = state.settings.realm
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        setattr(g, _G_CHALLENGE, f'Bearer realm="{realm}"')
        raise Unauthorized("a bearer token is required")
    try:
        principal = state.verifier.verify(token.strip())
    except Unauthorized as e:
        # The reason is one of our fixed strings: safe for logs and the header.
        log.info("bearer token rejected: %s", e.message)
        setattr(
            g,
            _G_CHALLENGE,
            f'Bearer realm="{realm}", error="invalid_token", error_description="{e.message}"',
        )
        raise
    setattr(g, _G_PRINCIPAL, principal)
    return principal
