"""Bearer-token verification through the real app's routes: what passes, what answers 401."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask
from flask.testing import FlaskClient

from tests.auth.conftest import PROTECTED, bearer, submit, whoami
from tests.stubs.idp import IdentityProvider

INVALID_TOKEN_CHALLENGE = 'Bearer realm="tfgen", error="invalid_token", error_description="'


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(idp: IdentityProvider, header: dict[str, Any], signature: bytes = b"") -> str:
    """Build a token by hand (PyJWT refuses to make the hostile ones)."""
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(idp.claims()).encode())
    return f"{head}.{body}.{_b64(signature)}"


def _hs256_with_public_pem(idp: IdentityProvider) -> str:
    """The key-confusion attack: HMAC-sign with the RSA public key PEM as the secret."""
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": idp.rsa_kid}).encode())
    body = _b64(json.dumps(idp.claims()).encode())
    mac = hmac.new(idp.rsa_public_pem(), f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(mac)}"


def _signed_by_stranger(idp: IdentityProvider) -> str:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(idp.claims(), stranger, algorithm="RS256", headers={"kid": idp.rsa_kid})


def _tampered(idp: IdentityProvider) -> str:
    header, _, signature = idp.mint().split(".")
    body = _b64(json.dumps(idp.claims(preferred_username="root")).encode())
    return f"{header}.{body}.{signature}"


REJECTED: dict[str, tuple[Callable[[IdentityProvider], str], str]] = {
    "expired": (lambda idp: idp.mint(exp=int(time.time()) - 120), "token expired"),
    "nbf in future": (lambda idp: idp.mint(nbf=int(time.time()) + 120), "token not yet valid"),
    "iat in future": (lambda idp: idp.mint(iat=int(time.time()) + 120), "token not yet valid"),
    "wrong issuer": (lambda idp: idp.mint(iss="https://evil.example/realms/tfgen"), "issuer"),
    "wrong audience": (lambda idp: idp.mint(aud="account"), "audience"),
    "bad signature": (_signed_by_stranger, "token signature invalid"),
    "tampered claims": (_tampered, "token signature invalid"),
    "alg none": (
        lambda idp: _unsigned(idp, {"alg": "none", "typ": "JWT", "kid": idp.rsa_kid}),
        "algorithm not allowed",
    ),
    "HS256 with public key": (_hs256_with_public_pem, "algorithm not allowed"),
    "RS384": (
        lambda idp: jwt.encode(
            idp.claims(), idp.rsa_key, algorithm="RS384", headers={"kid": idp.rsa_kid}
        ),
        "algorithm not allowed",
    ),
    "ES256 header on the RSA key": (
        lambda idp: _unsigned(idp, {"alg": "ES256", "kid": idp.rsa_kid}, b"x" * 64),
        "algorithm not allowed",
    ),
    "unknown kid": (lambda idp: idp.mint(headers={"kid": "nobody"}), "unknown signing key"),
    "no kid": (
        lambda idp: jwt.encode(idp.claims(), idp.rsa_key, algorithm="RS256"),
        "no key id",
    ),
    "missing exp": (lambda idp: idp.mint(exp=None), "required exp claim"),
    "missing iss": (lambda idp: idp.mint(iss=None), "required iss claim"),
    "missing aud": (lambda idp: idp.mint(aud=None), "required aud claim"),
    "missing username": (lambda idp: idp.mint(preferred_username=None), "preferred_username"),
    "blank username": (lambda idp: idp.mint(preferred_username=" "), "preferred_username"),
    "groups not a list": (lambda idp: idp.mint(groups={"a": 1}), "groups"),
    "garbage": (lambda idp: "not-a-jwt", "malformed token"),
}


@pytest.mark.parametrize("case", sorted(REJECTED))
def test_rejected_tokens_answer_401_with_invalid_token_challenge(
    client: FlaskClient, idp: IdentityProvider, case: str
) -> None:
    make, reason = REJECTED[case]
    response = client.get(PROTECTED, headers=bearer(make(idp)))
    assert response.status_code == 401
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith(INVALID_TOKEN_CHALLENGE)
    assert reason in challenge
    assert response.json is not None and response.json["code"] == "UNAUTHORIZED"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Basic YWxpY2U6c2VjcmV0"}, {"Authorization": "Bearer "}],
    ids=["no header", "basic", "empty bearer"],
)
def test_missing_bearer_token_answers_plain_challenge(
    client: FlaskClient, headers: dict[str, str]
) -> None:
    response = client.get(PROTECTED, headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="tfgen"'


def test_valid_rs256_token_names_the_caller(
    app: Flask, client: FlaskClient, idp: IdentityProvider
) -> None:
    response = client.get(PROTECTED, headers=bearer(idp.mint()))
    assert response.status_code == 200
    assert whoami(app, idp.mint()) == {
        "username": "alice",
        "groups": ["aws-users"],
        "roles": ["offline_access"],
        "is_admin": False,
        "client_id": "tfgen-swagger",
        "clouds": ["aws"],
    }


def test_valid_es256_token_passes(
    app: Flask, client: FlaskClient, idp: IdentityProvider
) -> None:
    response = client.get(PROTECTED, headers=bearer(idp.mint(key="ec")))
    assert response.status_code == 200
    assert whoami(app, idp.mint(key="ec"))["username"] == "alice"


def test_audience_may_be_a_list(client: FlaskClient, idp: IdentityProvider) -> None:
    token = idp.mint(aud=["account", idp.audience])
    assert client.get(PROTECTED, headers=bearer(token)).status_code == 200


@pytest.mark.parametrize(
    ("claims", "status"),
    [
        ({"exp": -20}, 200),  # expired 20 s ago, within the 30 s leeway
        ({"exp": -45}, 401),
        ({"nbf": 20}, 200),  # valid in 20 s: clock skew
        ({"nbf": 45}, 401),
        ({"iat": 20}, 200),
        ({"iat": 45}, 401),
    ],
)
def test_leeway_absorbs_small_clock_skew_only(
    client: FlaskClient, idp: IdentityProvider, claims: dict[str, int], status: int
) -> None:
    now = int(time.time())
    moved: dict[str, Any] = {name: now + offset for name, offset in claims.items()}
    token = idp.mint(**moved)
    assert client.get(PROTECTED, headers=bearer(token)).status_code == status


def test_roles_come_from_realm_client_and_flat_claims(app: Flask, idp: IdentityProvider) -> None:
    token = idp.mint(
        realm_access={"roles": ["realm-role"]},
        resource_access={
            idp.audience: {"roles": ["client-role"]},
            "other-client": {"roles": ["not-ours"]},
        },
        roles=["azure-app-role"],
    )
    assert whoami(app, token)["roles"] == ["azure-app-role", "client-role", "realm-role"]


def test_full_group_paths_and_admin_group(app: Flask, idp: IdentityProvider) -> None:
    token = idp.mint(groups=["/azure-users", "/tfgen-admins", "/team/aws-users"])
    caller = whoami(app, token)
    assert caller["groups"] == ["azure-users", "team/aws-users", "tfgen-admins"]
    assert caller["is_admin"] is True
    assert caller["clouds"] == ["azure"]  # 'team/aws-users' is not 'aws-users'


def test_principal_is_verified_once_per_request(client: FlaskClient, idp: IdentityProvider) -> None:
    # The generate route calls current_principal() after the /api/v1 guard already did.
    assert submit(client, idp.mint(), "aws")[0] == 202


def test_every_api_route_is_guarded_and_others_are_not(client: FlaskClient) -> None:
    unknown = client.get("/api/v1/no-such-route")
    assert unknown.status_code == 401
    assert unknown.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/health").status_code == 200
    assert client.get("/api/v1/swagger.json").status_code == 200
    assert client.get("/api/v1/docs").status_code == 200
    assert client.options(PROTECTED).status_code == 200
