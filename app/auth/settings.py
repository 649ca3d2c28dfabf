"""Authentication settings: ``AuthSettings`` and the parsing of ``OIDC_*``/``AUTH_*``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DEV_ISSUER", "EXTENSION_KEY", "AuthSettings", "normalize_group"]

DEV_ISSUER = "tfgen-dev"
#: Where ``init_auth`` keeps the app's settings and verifier (``app.extensions``).
EXTENSION_KEY = "tfgen_auth"
_AUTH_MODES = ("oidc", "dev")
_APP_ENVS = ("dev", "test", "prod")
_DEV_APP_ENVS = ("dev", "test")


@dataclass(frozen=True)
class AuthSettings:
    """Validated authentication settings, built from the Flask config by ``from_config``."""

    mode: str
    app_env: str
    issuer: str
    audience: str
    jwks_url: str | None
    username_claim: str = "preferred_username"
    groups_claim: str = "groups"
    leeway: int = 30
    jwks_cache_ttl: int = 300
    jwks_cooldown: int = 60
    jwks_timeout: float = 5.0
    authorization_url: str | None = None
    token_url: str | None = None
    cloud_permissions: Mapping[str, frozenset[str]] = field(default_factory=dict)
    admin_group: str | None = None
    realm: str = "tfgen"
    dev_key_path: Path = Path("var/dev-signing-key.pem")
    protected_prefix: str = "/api/v1/"
    public_paths: tuple[str, ...] = ("/api/v1/docs", "/api/v1/swagger.json")
    swagger_scopes: tuple[str, ...] = ("openid", "profile", "email")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AuthSettings:
        """Build and validate the settings from a config mapping (the Flask config).

        Args:
            config: Mapping holding ``AUTH_*``, ``OIDC_*``, ``CLOUD_PERMISSIONS``,
                ``ADMIN_GROUP``, ``APP_ENV`` and ``SWAGGER_UI_OAUTH_SCOPES``.

        Returns:
            The validated settings.

        Raises:
            ValueError: A setting is missing or invalid; the message names it.
        """
        app_env = _str_setting(config, "APP_ENV", "prod")
        if app_env not in _APP_ENVS:
            raise ValueError(f"APP_ENV must be one of {', '.join(_APP_ENVS)}, not {app_env!r}")
        mode = _str_setting(config, "AUTH_MODE", "oidc")
        if mode not in _AUTH_MODES:
            raise ValueError(f"AUTH_MODE must be 'oidc' or 'dev', not {mode!r}")
        if mode == "dev" and app_env not in _DEV_APP_ENVS:
            raise ValueError(
                f"AUTH_MODE=dev is refused when APP_ENV={app_env}: dev signing is only for "
                "APP_ENV=dev or test; set AUTH_MODE=oidc with OIDC_ISSUER and OIDC_AUDIENCE"
            )
        issuer, audience, jwks_url = _token_source(config, mode, app_env)
        base = issuer.rstrip("/")
        return cls(
            mode=mode,
            app_env=app_env,
            issuer=issuer,
            audience=audience,
            jwks_url=jwks_url,
            username_claim=_str_setting(config, "OIDC_USERNAME_CLAIM", "preferred_username"),
            groups_claim=_str_setting(config, "OIDC_GROUPS_CLAIM", "groups"),
            leeway=_int_setting(config, "OIDC_LEEWAY", 30, 0, 60),
            jwks_cache_ttl=_int_setting(config, "OIDC_JWKS_CACHE_TTL", 300, 10, 86400),
            jwks_cooldown=_int_setting(config, "OIDC_JWKS_COOLDOWN", 60, 1, 3600),
            jwks_timeout=float(_int_setting(config, "OIDC_JWKS_TIMEOUT", 5, 1, 30)),
            authorization_url=_optional(config, "OIDC_AUTHORIZATION_URL")
            or (f"{base}/protocol/openid-connect/auth" if mode == "oidc" else None),
            token_url=_optional(config, "OIDC_TOKEN_URL")
            or (f"{base}/protocol/openid-connect/token" if mode == "oidc" else None),
            cloud_permissions=_cloud_permissions(config.get("CLOUD_PERMISSIONS")),
            admin_group=_optional(config, "ADMIN_GROUP"),
            realm=_realm(config),
            dev_key_path=Path(config.get("AUTH_DEV_KEY_PATH") or "var/dev-signing-key.pem"),
            protected_prefix=_str_setting(config, "AUTH_PROTECTED_PREFIX", "/api/v1/"),
            public_paths=_str_list(
                config, "AUTH_PUBLIC_PATHS", ("/api/v1/docs", "/api/v1/swagger.json")
            ),
            swagger_scopes=_str_list(
                config, "SWAGGER_UI_OAUTH_SCOPES", ("openid", "profile", "email")
            ),
        )


def _token_source(
    config: Mapping[str, Any], mode: str, app_env: str
) -> tuple[str, str, str | None]:
    """Return the issuer, audience and JWKS URL that tokens are checked against."""
    if mode == "dev":
        return DEV_ISSUER, _str_setting(config, "OIDC_AUDIENCE", "tfgen"), None
    issuer = _required(config, "OIDC_ISSUER")  # compared verbatim with `iss`
    audience = _required(config, "OIDC_AUDIENCE")
    jwks_url = _optional(config, "OIDC_JWKS_URL")
    if app_env == "prod":
        for name, url in (("OIDC_ISSUER", issuer), ("OIDC_JWKS_URL", jwks_url)):
            if url is not None and not url.startswith("https://"):
                raise ValueError(f"{name} must be an https:// URL when APP_ENV=prod")
    return issuer, audience, jwks_url


def _optional(config: Mapping[str, Any], name: str) -> str | None:
    value = config.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string")
    return value.strip() or None


def _required(config: Mapping[str, Any], name: str) -> str:
    value = _optional(config, name)
    if value is None:
        raise ValueError(f"{name} is required when AUTH_MODE=oidc")
    return value


def _str_setting(config: Mapping[str, Any], name: str, default: str) -> str:
    return _optional(config, name) or default


def _int_setting(config: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = config.get(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, not {value!r}") from None
    if not low <= number <= high:
        raise ValueError(f"{name} must be between {low} and {high}, not {number}")
    return number


def _str_list(config: Mapping[str, Any], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    value = config.get(name)
    if value is None or value == "":
        return default
    items = value.replace(",", " ").split() if isinstance(value, str) else value
    if not isinstance(items, Iterable) or not all(isinstance(i, str) for i in items):
        raise ValueError(f"{name} must be a list of strings")
    return tuple(items)


def _realm(config: Mapping[str, Any]) -> str:
    realm = _str_setting(config, "AUTH_REALM", "tfgen")
    if not realm.isprintable() or '"' in realm or "\\" in realm:
        raise ValueError("AUTH_REALM must be printable and hold no quote or backslash")
    return realm


def _cloud_permissions(value: Any) -> dict[str, frozenset[str]]:
    """Parse ``CLOUD_PERMISSIONS``: a JSON object (or dict) of group -> list of cloud_ids."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError("CLOUD_PERMISSIONS must be a JSON object") from None
    if not isinstance(value, Mapping):
        raise ValueError("CLOUD_PERMISSIONS must be a JSON object of group -> [cloud_id]")
    parsed: dict[str, frozenset[str]] = {}
    for group, clouds in value.items():
        if (
            not isinstance(group, str)
            or isinstance(clouds, str)
            or not isinstance(clouds, Sequence)
            or not all(isinstance(c, str) and c for c in clouds)
        ):
            raise ValueError(
                f"CLOUD_PERMISSIONS[{group!r}] must be a list of cloud_id strings (or '*')"
            )
        parsed[normalize_group(group)] = frozenset(clouds)
    return parsed


def normalize_group(group: str) -> str:
    """Drop Keycloak's leading '/' of full group paths; '/team/ops' stays 'team/ops'."""
    return group[1:] if group.startswith("/") else group

