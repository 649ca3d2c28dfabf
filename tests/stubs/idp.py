"""An OpenID Connect identity provider stand-in on loopback, shaped like Keycloak.

It serves what tfgen reads from a real IdP, at Keycloak's paths:
``/realms/<realm>/.well-known/openid-configuration`` and
``/realms/<realm>/protocol/openid-connect/certs`` (the JWKS, which like Keycloak's also
lists an encryption key that verifiers must skip). It holds an RSA and an EC signing key,
can rotate the RSA key (new kid, old key dropped), counts JWKS fetches, can stall or fail
the JWKS endpoint, and mints tokens with any claims and headers.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

__all__ = ["IdentityProvider"]


def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPrivateKey):
        jwk: dict[str, Any] = RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
        alg = "RS256"
    else:
        jwk = ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
        alg = "ES256"
    return {**jwk, "kid": kid, "use": "sig", "alg": alg}


class IdentityProvider:
    """A Keycloak-like IdP on ``127.0.0.1:<free port>``; use as a context manager."""

    def __init__(self, realm: str = "tfgen", audience: str = "tfgen") -> None:
        self.realm = realm
        self.audience = audience
        self.rsa_key = _rsa_key()
        self.rsa_kid = "rsa-1"
        self.ec_key = ec.generate_private_key(ec.SECP256R1())
        self.ec_kid = "ec-1"
        self._enc_key = _rsa_key()
        self._generation = 1
        self._lock = threading.Lock()
        self.jwks_fetches = 0
        self.jwks_status = 200
        self.stall = threading.Event()  # set: the JWKS endpoint waits for `release`
        self.release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # --- lifecycle --------------------------------------------------------------------

    def __enter__(self) -> IdentityProvider:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def issuer(self) -> str:
        return f"{self.base_url}/realms/{self.realm}"

    @property
    def jwks_url(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/certs"

    # --- keys -------------------------------------------------------------------------

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            enc = RSAAlgorithm.to_jwk(self._enc_key.public_key(), as_dict=True)
            return {
                "keys": [
                    _public_jwk(self.rsa_key, self.rsa_kid),
                    _public_jwk(self.ec_key, self.ec_kid),
                    {**enc, "kid": "enc-1", "use": "enc", "alg": "RSA-OAEP"},
                ]
            }

    def rotate(self) -> str:
        """Replace the RSA signing key: new kid, the old key leaves the JWKS. Return the kid."""
        with self._lock:
            self._generation += 1
            self.rsa_key = _rsa_key()
            self.rsa_kid = f"rsa-{self._generation}"
            return self.rsa_kid

    def rsa_public_pem(self) -> bytes:
        return self.rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    # --- tokens -----------------------------------------------------------------------

    def claims(self, **overrides: Any) -> dict[str, Any]:
        """Keycloak-style access-token claims; an override of None removes the claim."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": "3f2c-alice",
            "typ": "Bearer",
            "azp": "tfgen-swagger",
            "preferred_username": "alice",
            "groups": ["aws-users"],
            "realm_access": {"roles": ["offline_access"]},
            "iat": now,
            "exp": now + 300,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def mint(
        self,
        *,
        key: str = "rsa",
        headers: dict[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """Sign ``self.claims(**claims)`` with the RSA (RS256) or EC (ES256) key."""
        if key == "rsa":
            signing_key: Any = self.rsa_key
            algorithm, kid = "RS256", self.rsa_kid
        else:
            signing_key, algorithm, kid = self.ec_key, "ES256", self.ec_kid
        header = {"kid": kid, **(headers or {})}
        return jwt.encode(self.claims(**claims), signing_key, algorithm=algorithm, headers=header)

    # --- HTTP -------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        idp = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                prefix = f"/realms/{idp.realm}"
                if self.path == f"{prefix}/.well-known/openid-configuration":
                    self._json(200, idp.discovery())
                elif self.path == f"{prefix}/protocol/openid-connect/certs":
                    with idp._lock:
                        idp.jwks_fetches += 1
                    if idp.stall.is_set():
                        idp.release.wait(30)
                    if idp.jwks_status != 200:
                        self._json(idp.jwks_status, {"error": "unavailable"})
                    else:
                        self._json(200, idp.jwks())
                else:
                    self._json(404, {"error": "Not Found"})

            def _json(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("Cache-Control", "no-cache")
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/protocol/openid-connect/auth",
            "token_endpoint": f"{self.issuer}/protocol/openid-connect/token",
            "jwks_uri": self.jwks_url,
            "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            "code_challenge_methods_supported": ["plain", "S256"],
        }
