"""AuthSettings.from_config: defaults, and a clear error naming each bad setting."""

from __future__ import annotations

from typing import Any

import pytest

from app.auth import AuthSettings

OIDC = {
    "APP_ENV": "test",
    "OIDC_ISSUER": "https://idp.example/realms/tfgen/",
    "OIDC_AUDIENCE": "tfgen",
}


def settings(**overrides: Any) -> AuthSettings:
    return AuthSettings.from_config({**OIDC, **overrides})


def test_defaults() -> None:
    s = settings()
    assert s.mode == "oidc"
    assert s.issuer == "https://idp.example/realms/tfgen/"  # verbatim: compared with `iss`
    assert s.jwks_url is None  # discovered from the issuer
    assert s.username_claim == "preferred_username"
    assert s.groups_claim == "groups"
    assert s.leeway == 30
    assert (s.jwks_cache_ttl, s.jwks_cooldown, s.jwks_timeout) == (300, 60, 5.0)
    assert s.authorization_url == "https://idp.example/realms/tfgen/protocol/openid-connect/auth"
    assert s.token_url == "https://idp.example/realms/tfgen/protocol/openid-connect/token"
    assert s.cloud_permissions == {}
    assert s.admin_group == "tfgen-admins"  # the default the app always ran with


def test_overrides_and_parsing() -> None:
    s = settings(
        OIDC_LEEWAY="60",
        OIDC_AUTHORIZATION_URL="https://login.example/authorize",
        OIDC_TOKEN_URL="https://login.example/token",
        CLOUD_PERMISSIONS={"/aws-users": ["aws"], "ops": ["*"]},
        AUTH_PUBLIC_PATHS="/api/v1/docs, /api/v1/swagger.json",
    )
    assert s.leeway == 60
    assert s.authorization_url == "https://login.example/authorize"
    assert s.token_url == "https://login.example/token"
    assert s.cloud_permissions == {"aws-users": frozenset({"aws"}), "ops": frozenset({"*"})}
    assert s.public_paths == ("/api/v1/docs", "/api/v1/swagger.json")


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"OIDC_ISSUER": None}, "OIDC_ISSUER"),
        ({"OIDC_AUDIENCE": ""}, "OIDC_AUDIENCE"),
        ({"OIDC_LEEWAY": "120"}, "OIDC_LEEWAY"),
        ({"OIDC_LEEWAY": "soon"}, "OIDC_LEEWAY"),
        ({"OIDC_JWKS_TIMEOUT": "0"}, "OIDC_JWKS_TIMEOUT"),
        ({"CLOUD_PERMISSIONS": "{not json"}, "CLOUD_PERMISSIONS"),
        ({"CLOUD_PERMISSIONS": '{"aws-users": "aws"}'}, "CLOUD_PERMISSIONS"),
        ({"CLOUD_PERMISSIONS": '["aws"]'}, "CLOUD_PERMISSIONS"),
        ({"AUTH_MODE": "none"}, "AUTH_MODE"),
        ({"AUTH_REALM": 'tf"gen'}, "AUTH_REALM"),
        ({"APP_ENV": "staging"}, "APP_ENV"),
        ({"APP_ENV": "prod", "OIDC_ISSUER": "http://idp.example/realms/t"}, "OIDC_ISSUER"),
        ({"APP_ENV": "prod", "OIDC_JWKS_URL": "http://idp.example/certs"}, "OIDC_JWKS_URL"),
    ],
)
def test_invalid_settings_name_themselves(overrides: dict[str, Any], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        settings(**overrides)
