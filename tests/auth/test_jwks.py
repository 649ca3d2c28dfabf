"""The JWKS cache against the IdP stand-in: rotation, cool-down, TTL, outages, discovery."""

from __future__ import annotations

import base64
import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flask.testing import FlaskClient
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from app.auth import AuthSettings, AuthUnavailable, JwksCache, TokenVerifier, parse_jwks
from app.errors import Unauthorized
from tests.auth.conftest import PROTECTED, bearer
from tests.stubs.idp import IdentityProvider


class FakeClock:
    """Monotonic time the test moves by hand for the set's lifespan and the failure
    cool-down (the unknown-kid interval is PyJWT's, on real time: see ``INTERVAL``)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


#: A short unknown-kid refetch interval for the tests that wait it out on the real clock.
INTERVAL = 2.0


def make_verifier(
    idp: IdentityProvider, clock: FakeClock, *, url: str | None = "default", timeout: float = 5,
    refetch_interval: float = 5.0,
) -> tuple[TokenVerifier, JwksCache]:
    settings = AuthSettings.from_config(
        {"APP_ENV": "test", "OIDC_ISSUER": idp.issuer, "OIDC_AUDIENCE": idp.audience}
    )
    cache = JwksCache(
        idp.jwks_url if url == "default" else url,
        issuer=idp.issuer,
        ttl=300,
        cooldown=60,
        timeout=timeout,
        refetch_interval=refetch_interval,
        clock=clock,
    )
    return TokenVerifier(settings, cache), cache


def test_rotated_key_is_picked_up_with_exactly_one_refetch(
    client: FlaskClient, idp: IdentityProvider
) -> None:
    old_token = idp.mint()
    assert client.get(PROTECTED, headers=bearer(old_token)).status_code == 200
    assert idp.jwks_fetches == 1

    idp.rotate()
    new_token = idp.mint()
    assert client.get(PROTECTED, headers=bearer(new_token)).status_code == 200
    assert idp.jwks_fetches == 2
    assert client.get(PROTECTED, headers=bearer(new_token)).status_code == 200
    assert idp.jwks_fetches == 2

    # The old key left the JWKS; its tokens fail and, within the cool-down, fetch nothing.
    response = client.get(PROTECTED, headers=bearer(old_token))
    assert response.status_code == 401
    assert "unknown signing key" in response.headers["WWW-Authenticate"]
    assert idp.jwks_fetches == 2


def test_flood_of_unknown_kids_fetches_once_per_refetch_interval(
    idp: IdentityProvider, clock: FakeClock
) -> None:
    verifier, _ = make_verifier(idp, clock, refetch_interval=INTERVAL)
    verifier.verify(idp.mint())
    assert idp.jwks_fetches == 1

    bogus = [idp.mint(headers={"kid": secrets.token_hex(8)}) for _ in range(50)]
    for token in bogus:  # well inside one interval: signed beforehand
        with pytest.raises(Unauthorized, match="unknown signing key"):
            verifier.verify(token)
    assert idp.jwks_fetches == 2

    time.sleep(INTERVAL + 0.1)
    with pytest.raises(Unauthorized):
        verifier.verify(idp.mint(headers={"kid": "bogus-again"}))
    assert idp.jwks_fetches == 3
    # A steady flood costs one fetch per interval, never one per token.
    started, tokens = time.monotonic(), 0
    while time.monotonic() - started < 3 * INTERVAL:
        with pytest.raises(Unauthorized):
            verifier.verify(idp.mint(headers={"kid": secrets.token_hex(8)}))
        tokens += 1
        time.sleep(0.05)
    elapsed = time.monotonic() - started
    assert tokens > 20
    assert 3 + 2 <= idp.jwks_fetches <= 3 + int(elapsed / INTERVAL) + 1


def test_rotation_after_a_bogus_kid_is_picked_up_after_the_refetch_interval(
    idp: IdentityProvider, clock: FakeClock
) -> None:
    verifier, _ = make_verifier(idp, clock, refetch_interval=INTERVAL)
    verifier.verify(idp.mint())
    with pytest.raises(Unauthorized):
        verifier.verify(idp.mint(headers={"kid": "bogus"}))
    idp.rotate()
    new_token = idp.mint()
    with pytest.raises(Unauthorized, match="unknown signing key"):
        verifier.verify(new_token)  # within the interval: no fetch for it yet
    time.sleep(INTERVAL + 0.1)  # the interval, not the 60 s failure cool-down
    assert verifier.verify(new_token).username == "alice"
    assert idp.jwks_fetches == 3


def test_flood_through_the_app_fetches_at_most_once_more(
    client: FlaskClient, idp: IdentityProvider
) -> None:
    assert client.get(PROTECTED, headers=bearer(idp.mint())).status_code == 200
    for n in range(30):
        token = idp.mint(headers={"kid": f"bogus-{n}"})
        assert client.get(PROTECTED, headers=bearer(token)).status_code == 401
    assert idp.jwks_fetches == 2


def test_cold_cache_flood_fetches_the_set_and_refetches_at_most_once(
    idp: IdentityProvider, clock: FakeClock
) -> None:
    verifier, _ = make_verifier(idp, clock)
    for n in range(20):
        with pytest.raises(Unauthorized):
            verifier.verify(idp.mint(headers={"kid": f"bogus-{n}"}))
    assert idp.jwks_fetches <= 2


def test_disallowed_algorithms_never_cause_a_fetch(idp: IdentityProvider, clock: FakeClock) -> None:
    verifier, _ = make_verifier(idp, clock)
    for alg in ("none", "HS256", "RS512"):
        header = base64.urlsafe_b64encode(json.dumps({"alg": alg, "kid": "x"}).encode())
        token = f"{header.decode().rstrip('=')}.e30.c2ln"
        with pytest.raises(Unauthorized, match="algorithm not allowed"):
            verifier.verify(token)
    assert idp.jwks_fetches == 0


def test_set_is_refetched_after_its_ttl(idp: IdentityProvider, clock: FakeClock) -> None:
    verifier, _ = make_verifier(idp, clock)
    verifier.verify(idp.mint())
    clock.advance(299)
    verifier.verify(idp.mint())
    assert idp.jwks_fetches == 1
    clock.advance(1)
    verifier.verify(idp.mint())
    assert idp.jwks_fetches == 2


def test_idp_outage_keeps_stale_keys_and_waits_a_cooldown(
    idp: IdentityProvider, clock: FakeClock
) -> None:
    verifier, _ = make_verifier(idp, clock)
    verifier.verify(idp.mint())
    idp.jwks_status = 503
    clock.advance(301)
    assert verifier.verify(idp.mint()).username == "alice"  # stale key still serves
    assert idp.jwks_fetches == 2
    for _ in range(10):
        verifier.verify(idp.mint())
    assert idp.jwks_fetches == 2  # no retry storm while the IdP is down
    idp.jwks_status = 200
    clock.advance(60)
    verifier.verify(idp.mint())
    assert idp.jwks_fetches == 3


def test_no_keys_at_all_is_503_not_401(idp: IdentityProvider, clock: FakeClock) -> None:
    verifier, _ = make_verifier(idp, clock)
    idp.jwks_status = 500
    with pytest.raises(AuthUnavailable) as caught:
        verifier.verify(idp.mint())
    assert caught.value.status == 503
    for _ in range(5):
        with pytest.raises(AuthUnavailable):
            verifier.verify(idp.mint())
    assert idp.jwks_fetches == 1


def test_no_keys_answers_503_through_the_app(client: FlaskClient, idp: IdentityProvider) -> None:
    idp.jwks_status = 502
    response = client.get(PROTECTED, headers=bearer(idp.mint()))
    assert response.status_code == 503
    assert response.json is not None and response.json["code"] == "AUTH_UNAVAILABLE"


def test_stalled_jwks_endpoint_hits_the_fetch_timeout(
    idp: IdentityProvider, clock: FakeClock
) -> None:
    verifier, _ = make_verifier(idp, clock, timeout=0.2)
    idp.stall.set()
    try:
        with pytest.raises(AuthUnavailable):
            verifier.verify(idp.mint())
    finally:
        idp.release.set()


def test_jwks_url_is_discovered_from_the_issuer(idp: IdentityProvider, clock: FakeClock) -> None:
    verifier, cache = make_verifier(idp, clock, url=None)
    assert verifier.verify(idp.mint()).username == "alice"
    assert idp.jwks_fetches == 1
    assert cache.fetch_count == 1


def test_parse_jwks_keeps_only_rs256_and_es256_signing_keys() -> None:
    rsa_public = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    rsa_jwk = RSAAlgorithm.to_jwk(rsa_public, as_dict=True)
    p256 = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()).public_key(), as_dict=True)
    p384 = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP384R1()).public_key(), as_dict=True)
    keys = parse_jwks(
        {
            "keys": [
                {**rsa_jwk, "kid": "rsa", "use": "sig", "alg": "RS256"},
                {**rsa_jwk, "kid": "rsa-no-alg"},
                {**p256, "kid": "ec", "use": "sig"},
                {**rsa_jwk, "kid": "enc", "use": "enc", "alg": "RSA-OAEP"},
                {**rsa_jwk, "kid": "rs512", "alg": "RS512"},
                {**p384, "kid": "p384"},
                {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
                {**rsa_jwk, "use": "sig"},  # no kid
                "junk",
            ]
        }
    )
    assert {kid: key.algorithm_name for kid, key in keys.items()} == {
        "rsa": "RS256",
        "rsa-no-alg": "RS256",
        "ec": "ES256",
    }
    with pytest.raises(ValueError, match="keys"):
        parse_jwks({"not": "a jwks"})


def test_concurrent_flood_of_unknown_kids_fetches_once(
    idp: IdentityProvider, clock: FakeClock
) -> None:
    verifier, _ = make_verifier(idp, clock)
    verifier.verify(idp.mint())
    tokens = [idp.mint(headers={"kid": f"bogus-{n}"}) for n in range(40)]

    def attempt(token: str) -> str:
        try:
            verifier.verify(token)
        except Unauthorized as e:
            return e.message
        return "accepted"

    with ThreadPoolExecutor(max_workers=8) as pool:
        outcomes = set(pool.map(attempt, tokens))
    assert outcomes == {"unknown signing key"}
    assert idp.jwks_fetches == 2
