"""The verified-token cache: a remembered token is still checked on every call.

``TokenVerifier`` remembers tokens that verified, so a client reusing its token pays the
signature check once; each call still checks the token's times and that its key is the
one the key source holds now. These tests would pass a verifier without a cache and
fail one that answered from the cache without those checks.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from app.auth import AuthSettings, JwksCache, StaticKeys, TokenVerifier, parse_jwks
from app.errors import Unauthorized
from tests.stubs.idp import IdentityProvider


def settings(idp: IdentityProvider, leeway: int = 30) -> AuthSettings:
    return AuthSettings.from_config({"APP_ENV": "test", "OIDC_ISSUER": idp.issuer,
                                     "OIDC_AUDIENCE": idp.audience,
                                     "OIDC_LEEWAY": str(leeway)})


class Clock:
    """Wall-clock time the test moves by hand (the cache's checks read it)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class SwappableKeys:
    """A key source whose key for a kid the test replaces (an IdP re-keying in place)."""

    def __init__(self, keys: dict[str, jwt.PyJWK]) -> None:
        self.keys = keys

    def signing_key(self, kid: str) -> jwt.PyJWK:
        try:
            return self.keys[kid]
        except KeyError:
            raise Unauthorized("unknown signing key") from None


@pytest.fixture
def idp() -> Any:
    with IdentityProvider() as provider:
        yield provider


def test_token_whose_exp_passes_while_remembered_is_refused(idp: IdentityProvider) -> None:
    clock = Clock()
    verifier = TokenVerifier(settings(idp), StaticKeys(parse_jwks(idp.jwks())), clock=clock)
    token = idp.mint(exp=int(clock.now) + 60)
    assert verifier.verify(token).username == "alice"
    clock.now += 60 + 30 - 1  # within the leeway still
    assert verifier.verify(token).username == "alice"
    clock.now += 2
    with pytest.raises(Unauthorized, match="token expired"):
        verifier.verify(token)
    with pytest.raises(Unauthorized, match="token expired"):  # and it stays refused
        verifier.verify(token)


def test_token_expiring_on_the_real_clock_is_refused() -> None:
    with IdentityProvider() as idp:
        verifier = TokenVerifier(settings(idp, leeway=0), StaticKeys(parse_jwks(idp.jwks())))
        exp = int(time.time()) + 2
        token = idp.mint(exp=exp)
        assert verifier.verify(token).username == "alice"
        assert verifier.verify(token).username == "alice"  # remembered
        time.sleep(max(0.0, exp - time.time()) + 0.1)
        with pytest.raises(Unauthorized, match="token expired"):
            verifier.verify(token)


def test_clock_going_back_before_nbf_refuses_a_remembered_token(idp: IdentityProvider) -> None:
    clock = Clock()
    verifier = TokenVerifier(settings(idp, leeway=0), StaticKeys(parse_jwks(idp.jwks())),
                             clock=clock)
    token = idp.mint(nbf=int(clock.now) - 5)
    assert verifier.verify(token).username == "alice"
    clock.now -= 60
    with pytest.raises(Unauthorized, match="not yet valid"):
        verifier.verify(token)


def test_rotated_out_key_stops_being_accepted(idp: IdentityProvider) -> None:
    keys = JwksCache(idp.jwks_url, issuer=idp.issuer, refetch_interval=0.0)
    verifier = TokenVerifier(settings(idp), keys)
    old = idp.mint()
    assert verifier.verify(old).username == "alice"
    assert verifier.verify(old).username == "alice"  # remembered
    idp.rotate()  # the old key leaves the JWKS
    assert verifier.verify(idp.mint()).username == "alice"  # unknown kid: one refetch
    with pytest.raises(Unauthorized, match="unknown signing key"):
        verifier.verify(old)


def test_key_replaced_under_the_same_kid_is_checked_again(idp: IdentityProvider) -> None:
    keys = SwappableKeys(parse_jwks(idp.jwks()))
    verifier = TokenVerifier(settings(idp), keys)
    token = idp.mint()
    assert verifier.verify(token).username == "alice"
    with IdentityProvider() as stranger:  # another RSA key, published as rsa-1
        keys.keys[idp.rsa_kid] = parse_jwks(stranger.jwks())[stranger.rsa_kid]
    with pytest.raises(Unauthorized, match="signature invalid"):
        verifier.verify(token)


def test_tampered_copy_of_a_remembered_token_is_refused(idp: IdentityProvider) -> None:
    verifier = TokenVerifier(settings(idp), StaticKeys(parse_jwks(idp.jwks())))
    token = idp.mint()
    assert verifier.verify(token).username == "alice"
    head, claims, signature = token.split(".")
    forged = ".".join([head, claims, ("A" if signature[0] != "A" else "B") + signature[1:]])
    with pytest.raises(Unauthorized):
        verifier.verify(forged)
    assert verifier.verify(token).username == "alice"


def test_cache_keeps_at_most_its_size(idp: IdentityProvider) -> None:
    verifier = TokenVerifier(settings(idp), StaticKeys(parse_jwks(idp.jwks())), cache_size=2)
    tokens = [idp.mint(jti=str(i)) for i in range(3)]
    for token in tokens:
        verifier.verify(token)
    assert len(verifier._verified) == 2
    assert list(verifier._verified) == tokens[1:]  # the least recently used left
