"""Bearer tokens, cloud permissions and job ownership (a package; see the modules below).

The acting user always comes from a verified JWT, never from a body field:

- ``TokenVerifier`` checks a token with PyJWT against keys from a ``KeySource``:
  ``JwksCache`` (the identity provider's JWKS, cached, with rotation, a refetch cool-down
  and a short timeout) or, in dev mode, the local dev signing key. Both modes run the
  same ``jwt.decode`` call: RS256/ES256 only (chosen by the key, never by the token
  header), ``exp``/``iss``/``aud`` required, a small leeway.
- ``Principal`` is what a verified token says about the caller: username, groups, roles,
  admin flag, OAuth2 client and the clouds its groups allow.
- ``require_cloud``, ``resolve_owner`` and ``can_see`` are the permission rules; they are
  pure functions of the principal, so domain and HTTP code can both use them.
- ``init_auth`` / ``current_principal`` / ``register_swagger_ui`` plug it into Flask.

Configuration names and defaults are documented in ``docs/auth.md``.

Modules: ``settings`` (``AuthSettings``), ``principal`` (the caller and the permission
rules), ``keys`` (JWKS cache, static keys), ``tokens`` (``TokenVerifier``), ``dev`` (dev
signing key and tokens), ``binding`` (Flask), ``swagger`` (security schemes, UI page).
"""

from __future__ import annotations

from app.auth.binding import build_verifier, current_principal, init_auth
from app.auth.dev import load_dev_signing_key, mint_dev_token
from app.auth.keys import AuthUnavailable, JwksCache, KeySource, StaticKeys, parse_jwks
from app.auth.principal import (
    ON_BEHALF_OF_ROLE,
    Principal,
    can_see,
    require_cloud,
    resolve_owner,
)
from app.auth.settings import DEV_ISSUER, AuthSettings
from app.auth.swagger import (
    AUTHORIZATIONS,
    SECURITY,
    authorizations,
    register_swagger_ui,
    security_requirements,
)
from app.auth.tokens import ALLOWED_ALGORITHMS, TokenVerifier

__all__ = [
    "ALLOWED_ALGORITHMS",
    "AUTHORIZATIONS",
    "DEV_ISSUER",
    "ON_BEHALF_OF_ROLE",
    "SECURITY",
    "AuthSettings",
    "AuthUnavailable",
    "JwksCache",
    "KeySource",
    "Principal",
    "StaticKeys",
    "TokenVerifier",
    "authorizations",
    "build_verifier",
    "can_see",
    "current_principal",
    "init_auth",
    "load_dev_signing_key",
    "mint_dev_token",
    "parse_jwks",
    "register_swagger_ui",
    "require_cloud",
    "resolve_owner",
    "security_requirements",
]
