"""Token verification: one ``jwt.decode`` call for both modes, claims to ``Principal``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from app.auth.keys import KeySource
from app.auth.principal import Principal, is_plausible_username
from app.auth.settings import AuthSettings, normalize_group
from app.errors import Unauthorized

__all__ = ["ALLOWED_ALGORITHMS", "AuthState", "TokenVerifier"]

ALLOWED_ALGORITHMS: tuple[str, ...] = ("RS256", "ES256")
REQUIRED_CLAIMS = ["exp", "iss", "aud"]
MAX_TOKEN_LENGTH = 16 * 1024


class TokenVerifier:
    """Verifies bearer tokens and turns their claims into a ``Principal``. No Flask."""

    def __init__(self, settings: AuthSettings, keys: KeySource) -> None:
        self.settings = settings
        self.keys = keys

    def verify(self, token: str) -> Principal:
        """Verify ``token`` and return the caller it names.

        Raises:
            Unauthorized: The token is malformed, unsigned, signed with a key or
                algorithm not allowed, expired, not yet valid, for another issuer or
                audience, or lacks a required claim. The message never holds the token.
            AuthUnavailable: The identity provider's keys cannot be fetched.
        """
        if len(token) > MAX_TOKEN_LENGTH:
            raise Unauthorized("token too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed token") from None
        alg, kid = header.get("alg"), header.get("kid")
        # Checked before any key lookup so that junk tokens never cause a JWKS fetch.
        if alg not in ALLOWED_ALGORITHMS:
            raise Unauthorized("token algorithm not allowed")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("token has no key id (kid)")
        key = self.keys.signing_key(kid)
        s = self.settings
        try:
            claims = jwt.decode(
                token,
                key=key,
                algorithms=[key.algorithm_name],  # the key's algorithm, never the header's
                audience=s.audience,
                issuer=s.issuer,
                leeway=s.leeway,
                options={"require": REQUIRED_CLAIMS, "enforce_minimum_key_length": True},
            )
        except jwt.PyJWTError as e:
            raise Unauthorized(_reason(e)) from e
        return self.principal_from_claims(claims)

    def principal_from_claims(self, claims: Mapping[str, Any]) -> Principal:
        """Build the ``Principal`` from verified claims.

        Raises:
            Unauthorized: The username claim is missing or not a plausible username, or
                the groups claim is not a list of strings.
        """
        s = self.settings
        username = claims.get(s.username_claim)
        if not isinstance(username, str) or not is_plausible_username(username):
            raise Unauthorized(f"token has no valid {s.username_claim} claim")
        groups = frozenset(normalize_group(g) for g in _strings(claims, s.groups_claim))
        client_roles = _mapping(_mapping(claims.get("resource_access")).get(s.audience))
        roles = frozenset(
            [
                *_strings(_mapping(claims.get("realm_access")), "roles"),
                *_strings(client_roles, "roles"),
                *_strings(claims, "roles"),
            ]
        )
        clouds = frozenset().union(*(s.cloud_permissions.get(g, frozenset()) for g in groups))
        client_id = claims.get("azp") or claims.get("client_id") or claims.get("appid")
        return Principal(
            username=username,
            groups=groups,
            roles=roles,
            is_admin=s.admin_group is not None and normalize_group(s.admin_group) in groups,
            client_id=client_id if isinstance(client_id, str) else None,
            clouds=clouds,
        )


def _reason(error: jwt.PyJWTError) -> str:
    """A fixed, token-free description of why PyJWT rejected a token."""
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"token lacks the required {error.claim} claim"
    reasons: tuple[tuple[type[jwt.PyJWTError], str], ...] = (
        (jwt.ExpiredSignatureError, "token expired"),
        (jwt.ImmatureSignatureError, "token not yet valid"),
        (jwt.InvalidIssuerError, "token issuer not accepted"),
        (jwt.InvalidAudienceError, "token audience not accepted"),
        (jwt.InvalidAlgorithmError, "token algorithm not allowed"),
        (jwt.InvalidSignatureError, "token signature invalid"),
    )
    for kind, reason in reasons:
        if isinstance(error, kind):
            return reason
    return "invalid token"


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _strings(claims: Mapping[str, Any], name: str) -> list[str]:
    value = claims.get(name)
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise Unauthorized(f"token claim {name} is not a list of strings")


@dataclass(frozen=True)
class AuthState:
    """What ``init_auth`` binds to an app: its settings and its verifier."""

    settings: AuthSettings
    verifier: TokenVerifier
