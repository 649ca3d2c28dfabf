"""Dev mode: the local signing key (created on first use) and tokens signed with it."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask

from app.auth.settings import EXTENSION_KEY, AuthSettings, auth_settings

__all__ = ["dev_jwk", "load_dev_signing_key", "mint_dev_token"]

log = logging.getLogger(__name__)


def load_dev_signing_key(path: Path) -> rsa.RSAPrivateKey:
    """Load the dev RSA key from ``path``, creating it (mode 0600) on first use.

    Creation writes a temporary file and hard-links it into place, so concurrent workers
    never see a half-written key and never overwrite each other's.
    """
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
            try:
                os.link(tmp, path)
                log.info("created the dev signing key %s", path)
            except FileExistsError:
                pass  # another process won the race; use its key
        finally:
            tmp.unlink()
    if path.stat().st_mode & 0o077:
        log.warning("dev signing key %s is readable by others; chmod 600 it", path)
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError(f"AUTH_DEV_KEY_PATH {path} does not hold an RSA private key")
    return loaded


def dev_jwk(key: rsa.RSAPrivateKey) -> tuple[str, jwt.PyJWK]:
    """Return the RFC 7638 thumbprint (the kid) and the public JWK of the dev key."""
    numbers = key.public_key().public_numbers()

    def b64(n: int) -> str:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")

    jwk = {"e": b64(numbers.e), "kty": "RSA", "n": b64(numbers.n)}
    canonical = json.dumps(jwk, separators=(",", ":"), sort_keys=True).encode("ascii")
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode()
    return kid, jwt.PyJWK({**jwk, "kid": kid, "use": "sig"}, algorithm="RS256")


def mint_dev_token(
    app_or_settings: Flask | AuthSettings,
    username: str,
    groups: list[str],
    roles: Sequence[str] = (),
    ttl: int = 3600,
) -> str:
    """Sign a token with the dev key that the dev-mode verifier accepts.

    Args:
        app_or_settings: A Flask app (its auth settings) or ``AuthSettings``.
        username: Goes into the username claim and ``sub``.
        groups: Goes into the groups claim.
        roles: Goes into the flat ``roles`` claim (e.g. ``tfgen.on_behalf_of``).
        ttl: Lifetime in seconds.

    Raises:
        ValueError: Auth is not in dev mode (never mint tokens for a real issuer).
    """
    if isinstance(app_or_settings, AuthSettings):
        settings = app_or_settings
    else:
        state = app_or_settings.extensions.get(EXTENSION_KEY)
        settings = state.settings if state else auth_settings(app_or_settings.config)
    if settings.mode != "dev":
        raise ValueError("dev tokens can only be minted with AUTH_MODE=dev")
    key = load_dev_signing_key(settings.dev_key_path)
    kid, _ = dev_jwk(key)
    now = int(time.time())
    claims = {
        "iss": settings.issuer,
        "aud": settings.audience,
        "sub": username,
        settings.username_claim: username,
        settings.groups_claim: list(groups),
        "roles": list(roles),
        "azp": "tfgen-dev",
        "iat": now,
        "nbf": now,
        "exp": now + ttl,
        "jti": secrets.token_hex(16),
    }
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": kid})
