"""Token verification: one ``jwt.decode`` call for both modes, claims to ``Principal``."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from app.auth.keys import KeySource
from app.auth.principal import Principal, is_plausible_username
from app.auth.settings import AuthSettings, normalize_group
from app.core.lru import BoundedLRU
from app.errors import Unauthorized

__all__ = ["ALLOWED_ALGORITHMS", "TOKEN_CACHE_SIZE", "AuthState", "TokenVerifier"]

ALLOWED_ALGORITHMS: tuple[str, ...] = ("RS256", "ES256")
REQUIRED_CLAIMS = ["exp", "iss", "aud"]
MAX_TOKEN_LENGTH = 16 * 1024
#: Distinct verified tokens a process remembers (a client reuses its token until it expires).
TOKEN_CACHE_SIZE = 1024


@dataclass(frozen=True)
class _Verified:
    """What a full verification of one token proved, and what must be checked again."""

    principal: Principal
    kid: str
    key: jwt.PyJWK  # the key object the signature was checked with
    expires: int  # int(exp): PyJWT's reading
    not_before: int | None  # max(int(nbf), int(iat)) of those present


class TokenVerifier:
    """Verifies bearer tokens and turns their claims into a ``Principal``. No Flask.

    A token that verified is remembered (``cache_size`` tokens, least recently used
    first out), keyed by its exact text, so a client that sends the same token on every
    call pays the signature check once. Each later call still checks what can change:
    ``exp`` and ``nbf``/``iat`` against the clock (same leeway), and that the key source
    still gives the very key object the signature was checked with. A JWKS refetch
    builds new key objects, so every remembered token is verified in full again after
    one; a key rotated out of the set refuses its tokens as soon as the key source
    drops it, exactly as without the cache. Only successes are remembered.
    """

    def __init__(self, settings: AuthSettings, keys: KeySource, *,
                 cache_size: int = TOKEN_CACHE_SIZE,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.keys = keys
        self._clock = clock
        self._verified: BoundedLRU[str, _Verified] = BoundedLRU(cache_size)

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
        seen = self._verified.get(token)
        if seen is not None:
            try:
                if self._still_valid(seen):
                    return seen.principal
            except Unauthorized:
                self._forget(token)
                raise
            self._forget(token)  # a new key set: verify in full below
        return self._verify_in_full(token)

    def _still_valid(self, seen: _Verified) -> bool:
        """Check a remembered token's times and key again.

        Returns:
            False when the key source now holds another key object for the ``kid``.

        Raises:
            Unauthorized: Expired, not yet valid, or its key left the key set.
        """
        self._check_times(seen)
        return self.keys.signing_key(seen.kid) is seen.key

    def _check_times(self, seen: _Verified) -> None:
        """PyJWT's ``exp`` and ``nbf``/``iat`` rules, on this verifier's clock."""
        now, leeway = self._clock(), self.settings.leeway
        if seen.expires <= now - leeway:
            raise Unauthorized("token expired")
        if seen.not_before is not None and seen.not_before > now + leeway:
            raise Unauthorized("token not yet valid")

    def _forget(self, token: str) -> None:
        self._verified.pop(token)

    def _remember(self, token: str, seen: _Verified) -> None:
        self._verified.put(token, seen)

    def _verify_in_full(self, token: str) -> Principal:
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
        principal = self.principal_from_claims(claims)
        times = [int(claims[c]) for c in ("nbf", "iat") if c in claims]  # PyJWT read them
        seen = _Verified(principal, kid, key, int(claims["exp"]), max(times) if times else None)
        self._check_times(seen)  # the same clock as the remembered token's checks
        self._remember(token, seen)
        return principal

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
