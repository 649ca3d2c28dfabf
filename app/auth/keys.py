"""Where token keys come from: the IdP's JWK set (cached) or a fixed set (dev mode)."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import jwt
import requests

from app.errors import ApiError, Unauthorized

__all__ = ["MAX_JWKS_BYTES", "AuthUnavailable", "JwksCache", "KeySource", "StaticKeys",
           "parse_jwks"]

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


class JwksCache:
    """The identity provider's JWK set: fetched on demand, cached, refetched with care.

    - The set is cached ``ttl`` seconds, then refetched on the next use.
    - A ``kid`` missing from the cache triggers one refetch (the IdP may have rotated
      keys), but at most one such refetch per ``refetch_interval`` seconds (a few, per
      process): a flood of tokens with bogus kids costs one fetch per interval, and a
      bogus kid cannot hold back a real rotation for longer than that interval.
    - A failed fetch waits ``cooldown`` seconds before the next try, and stale keys keep
      serving meanwhile.
    - Each fetch has a short ``timeout`` and a size limit.
    - Only ``RSA`` keys (RS256) and ``EC`` P-256 keys (ES256) for signing are kept;
      symmetric (``oct``) keys and other algorithms in the set are ignored.

    When ``url`` is None it is discovered from ``{issuer}/.well-known/openid-configuration``.
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
        self._url = url
        self._issuer = issuer
        self._ttl = ttl
        self._cooldown = cooldown
        self._refetch_interval = refetch_interval
        self._timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._refresh_due = float("-inf")
        self._failed_at: float | None = None
        self._forced_at: float | None = None
        self.fetch_count = 0

    def signing_key(self, kid: str) -> jwt.PyJWK:
        """Return the key for ``kid``, refetching the set when it is stale or lacks ``kid``.

        Raises:
            Unauthorized: ``kid`` is unknown even after a permitted refetch.
            AuthUnavailable: No keys could ever be fetched.
        """
        with self._lock:
            now = self._clock()
            fetched_now = False
            if now >= self._refresh_due:
                fetched_now = self._refresh(now)
            key = self._known(kid)
            if key is None and not fetched_now and self._may_force(now):
                self._forced_at = now
                self._refresh(now)
                key = self._known(kid)
            if key is not None:
                return key
            if self._keys is None:
                raise AuthUnavailable("the identity provider's signing keys are unavailable")
            raise Unauthorized("unknown signing key")

    def _known(self, kid: str) -> jwt.PyJWK | None:
        return None if self._keys is None else self._keys.get(kid)

    def _may_force(self, now: float) -> bool:
        return self._forced_at is None or now - self._forced_at >= self._refetch_interval

    def _refresh(self, now: float) -> bool:
        """Fetch the set unless a recent failure asks to wait; return whether it worked."""
        if self._failed_at is not None and now - self._failed_at < self._cooldown:
            return False
        try:
            url = self._jwks_url()
            self.fetch_count += 1
            keys = parse_jwks(self._get_json(url))
            if not keys:
                raise ValueError(f"{url} lists no RS256/ES256 signing key")
        except (requests.RequestException, ValueError) as e:
            # Stale keys keep serving; the next attempt waits a cool-down, not a full TTL.
            self._failed_at, self._refresh_due = now, now + self._cooldown
            log.warning("JWKS fetch failed, keeping %s cached keys: %s", len(self._keys or {}), e)
            return False
        self._keys, self._failed_at, self._refresh_due = keys, None, now + self._ttl
        log.info("JWKS fetched: %d signing keys (kids %s)", len(keys), sorted(keys))
        return True

    def _jwks_url(self) -> str:
        if self._url is None:
            issuer = str(self._issuer)
            discovery = f"{issuer.rstrip('/')}/.well-known/openid-configuration"
            document = self._get_json(discovery)
            if document.get("issuer") != issuer:  # OpenID Connect Discovery 1.0, 4.3
                raise ValueError(f"{discovery} names another issuer")
            jwks_uri = document.get("jwks_uri")
            if not isinstance(jwks_uri, str) or not jwks_uri:
                raise ValueError(f"{discovery} has no jwks_uri")
            self._url = jwks_uri
        return self._url

    def _get_json(self, url: str) -> dict[str, Any]:
        with requests.get(
            url, timeout=self._timeout, stream=True, headers={"Accept": "application/json"}
        ) as response:
            response.raise_for_status()
            body = response.raw.read(MAX_JWKS_BYTES + 1, decode_content=True)
        if len(body) > MAX_JWKS_BYTES:
            raise ValueError(f"{url} answered more than {MAX_JWKS_BYTES} bytes")
        document = json.loads(body)
        if not isinstance(document, dict):
            raise ValueError(f"{url} did not answer a JSON object")
        return document


def parse_jwks(document: Mapping[str, Any]) -> dict[str, jwt.PyJWK]:
    """Return the usable signing keys of a JWK set by ``kid``; skip the others.

    Raises:
        ValueError: The document is not a JWK set.
    """
    entries = document.get("keys")
    if not isinstance(entries, list):
        raise ValueError("JWKS has no 'keys' list")
    keys: dict[str, jwt.PyJWK] = {}
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
            keys[kid] = jwt.PyJWK(entry, algorithm=expected)
        except jwt.PyJWTError as e:
            log.warning("JWKS key %s skipped: %s", kid, e)
    return keys
