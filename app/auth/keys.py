"""Where token keys come from: the IdP's JWK set (cached) or a fixed set (dev mode)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jwt
import requests
from jwt import PyJWKClient, PyJWKClientError, PyJWKSet
from jwt.jwk_set_cache import JWKSetCache

from app.errors import ApiError, Unauthorized

__all__ = [
    "MAX_JWKS_BYTES",
    "UNKNOWN_KID_REFETCH_INTERVAL",
    "AuthUnavailable",
    "JwksCache",
    "KeySource",
    "StaticKeys",
    "parse_jwks",
    "usable_entries",
]

log = logging.getLogger(__name__)

MAX_JWKS_BYTES = 512 * 1024
#: Seconds between refetches caused by a ``kid`` missing from the cached set.
UNKNOWN_KID_REFETCH_INTERVAL = 5.0


class AuthUnavailable(ApiError):
    """The identity provider's keys cannot be fetched: the caller should retry later.

    Not a 401: the token may well be valid, and APEX must not treat it as rejected.
    """

    status, code, retryable = 503, "AUTH_UNAVAILABLE", True


class KeySource(Protocol):
    """Where the verifier finds the public key for a token's ``kid``."""

    def signing_key(self, kid: str) -> jwt.PyJWK:
        """Return the key for ``kid``; raise ``Unauthorized`` when there is none."""
        ...


class StaticKeys:
    """A fixed set of keys (dev mode: the local dev signing key)."""

    def __init__(self, keys: Mapping[str, jwt.PyJWK]) -> None:
        self._keys = dict(keys)

    def signing_key(self, kid: str) -> jwt.PyJWK:
        """Return the key for ``kid``."""
        try:
            return self._keys[kid]
        except KeyError:
            raise Unauthorized("unknown signing key") from None


class _ExpiringSet(JWKSetCache):
    """PyJWT's JWK-set cache, expiring at a time the owner chooses per put.

    A good set lives ``lifespan`` seconds; stale keys re-served after a failed fetch
    live only ``next_lifespan`` (the failure cool-down), so the next try comes sooner.
    """

    def __init__(self, lifespan: float, clock: Callable[[], float]) -> None:
        super().__init__(lifespan)
        self.next_lifespan = lifespan
        self._clock = clock
        self._expires_at = float("-inf")

    def put(self, jwk_set: PyJWKSet | dict[str, Any] | None) -> None:
        super().put(jwk_set)
        self._expires_at = self._clock() + self.next_lifespan

    def is_expired(self) -> bool:
        return self.jwk_set_with_timestamp is not None and self._clock() >= self._expires_at


class JwksCache(PyJWKClient):
    """The identity provider's JWK set: PyJWT's ``PyJWKClient`` plus what it lacks.

    From ``PyJWKClient``: the set cached ``ttl`` seconds (its lifespan), one lock, and a
    ``kid`` missing from the cache triggering one refetch (the IdP may have rotated keys)
    at most once per ``refetch_interval`` seconds per process (its cool-down, which here
    counts only those forced refetches): a flood of bogus kids costs one fetch per
    interval, and a bogus kid cannot hold back a real rotation for longer.

    Added here:
    - a failed fetch keeps serving the stale keys and waits ``cooldown`` seconds before
      the next try (no keys at all: ``AuthUnavailable``, a 503, not a 401);
    - each fetch has a short ``timeout`` and a size cap (``MAX_JWKS_BYTES``);
    - only ``RSA`` keys (RS256) and ``EC`` P-256 keys (ES256) for signing are kept;
    - when ``url`` is None it is discovered from ``{issuer}/.well-known/openid-configuration``.

    ``clock`` drives the set's lifespan and the failure cool-down (tests move it by hand);
    PyJWT reads ``time.monotonic()`` for the refetch interval.
    """

    def __init__(
        self,
        url: str | None,
        *,
        issuer: str | None = None,
        ttl: float = 300,
        cooldown: float = 60,
        refetch_interval: float = UNKNOWN_KID_REFETCH_INTERVAL,
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if url is None and issuer is None:
            raise ValueError("JwksCache needs a JWKS url or an issuer to discover it from")
        discovery = f"{str(issuer).rstrip('/')}/.well-known/openid-configuration"
        super().__init__(url or discovery, lifespan=ttl, timeout=timeout,
                         cooldown_duration=refetch_interval)
        self._discover = url is None
        self._issuer = issuer
        self._cooldown = cooldown
        self._clock = clock
        self._cache = _ExpiringSet(ttl, clock)
        self.jwk_set_cache = self._cache
        self._stale: dict[str, Any] | None = None
        self._failed_at: float | None = None
        self.fetch_count = 0

    def signing_key(self, kid: str) -> jwt.PyJWK:
        """Return the key for ``kid``, refetching the set when it is stale or lacks ``kid``.

        Raises:
            Unauthorized: ``kid`` is unknown even after a permitted refetch.
            AuthUnavailable: No keys could ever be fetched.
        """
        try:
            return self.get_signing_key(kid)
        except PyJWKClientError:
            raise Unauthorized("unknown signing key") from None

    def fetch_data(self) -> Any:
        """The usable part of the JWK set; the stale set while the IdP fails.

        Raises:
            AuthUnavailable: The fetch failed and no keys were ever fetched.
        """
        now = self._clock()
        if self._failed_at is not None and now - self._failed_at < self._cooldown:
            return self._serve_stale()
        try:
            self.fetch_count += 1
            document = _get_json(self._jwks_url(), self.timeout)
            usable = usable_entries(document)
            if not usable:
                raise ValueError(f"{self.uri} lists no RS256/ES256 signing key")
        except (requests.RequestException, ValueError) as e:
            # Stale keys keep serving; the next attempt waits a cool-down, not a full TTL.
            self._failed_at = now
            log.warning("JWKS fetch failed, keeping the cached keys: %s", e)
            return self._serve_stale()
        self._stale, self._failed_at = {"keys": usable}, None
        self._cache.next_lifespan = self._cache.lifespan
        log.info("JWKS fetched: %d signing keys (kids %s)", len(usable),
                 sorted(str(entry["kid"]) for entry in usable))
        return self._stale

    def _serve_stale(self) -> dict[str, Any]:
        if self._stale is None:
            raise AuthUnavailable("the identity provider's signing keys are unavailable")
        self._cache.next_lifespan = self._cooldown
        return self._stale

    def _jwks_url(self) -> str:
        if self._discover:
            issuer = str(self._issuer)
            document = _get_json(self.uri, self.timeout)
            if document.get("issuer") != issuer:  # OpenID Connect Discovery 1.0, 4.3
                raise ValueError(f"{self.uri} names another issuer")
            jwks_uri = document.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri:
                raise ValueError(f"{self.uri} has no jwks_uri")
            self.uri, self._discover = jwks_uri, False
        return self.uri


def _get_json(url: str, timeout: float) -> dict[str, Any]:
    """GET a JSON object, reading at most ``MAX_JWKS_BYTES`` (PyJWT reads unbounded)."""
    with requests.get(
        url, timeout=timeout, stream=True, headers={"Accept": "application/json"}
    ) as response:
        response.raise_for_status()
        body = response.raw.read(MAX_JWKS_BYTES + 1, decode_content=True)
    if len(body) > MAX_JWKS_BYTES:
        raise ValueError(f"{url} answered more than {MAX_JWKS_BYTES} bytes")
    document = json.loads(body)
    if not isinstance(document, dict):
        raise ValueError(f"{url} did not answer a JSON object")
    return document


def usable_entries(document: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The RS256/ES256 signing keys of a JWK set, each with its ``alg``; skip the others.

    Raises:
        ValueError: The document is not a JWK set.
    """
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError("JWKS has no 'keys' list")
    usable: list[dict[str, Any]] = []
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        kid, kty, alg = entry.get("kid"), entry.get("kty"), entry.get("alg")
        expected = {"RSA": "RS256", "EC": "ES256"}.get(kty or "")
        if not isinstance(kid, str) or expected is None or alg not in (None, expected):
            continue
        if kty == "EC" and entry.get("crv") != "P-256":
            continue
        try:
            jwt.PyJWK(entry, algorithm=expected)
        except jwt.PyJWTError as e:
            log.warning("JWKS key %s skipped: %s", kid, e)
            continue
        usable.append({**entry, "alg": expected})
    return usable


def parse_jwks(document: Mapping[str, Any]) -> dict[str, jwt.PyJWK]:
    """Return the usable signing keys of a JWK set by ``kid``; skip the others.

    Raises:
        ValueError: The document is not a JWK set.
    """
    return {entry["kid"]: jwt.PyJWK(entry) for entry in usable_entries(document)}
