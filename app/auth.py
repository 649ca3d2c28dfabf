"""Bearer tokens, cloud permissions and job ownership.

The acting user always comes from a verified JWT, never from a body field:

- ``TokenVerifier`` checks a token with PyJWT against keys from a ``KeySource``:
  ``JwksCache`` (the identity provider's JWKS, cached, with rotation, a refetch cool-down
  and a short timeout) or, in dev mode, the local dev signing key. Both modes run the
  same ``jwt.decode`` call: RS256/ES256 only (chosen by the key, never by the token
  header), ``exp``/``iss``/``aud`` required, a small leeway.
- ``Principal`` is what a verified token says about the caller: username, groups, roles,
  admin flag, OAuth2 client and the clouds its groups allow.
- ``require_cloud``, ``resolve_owner`` and ``can_see`` are the permission rules; they are
  pure functions of the principal, so domain and HTTP code can both use them.
- ``init_auth`` / ``current_principal`` / ``register_swagger_ui`` plug it into Flask.

Configuration names and defaults are documented in ``docs/auth.md``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import jwt
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, current_app, g, request
from flask.wrappers import Response
from jinja2 import BaseLoader, ChoiceLoader, FileSystemLoader

from app.errors import ApiError, Forbidden, Unauthorized

__all__ = [
    "ALLOWED_ALGORITHMS",
    "AUTHORIZATIONS",
    "DEV_ISSUER",
    "ON_BEHALF_OF_ROLE",
    "SECURITY",
    "AuthSettings",
    "AuthUnavailable",
    "JwksCache",
    "KeySource",
    "Principal",
    "StaticKeys",
    "TokenVerifier",
    "authorizations",
    "build_verifier",
    "can_see",
    "current_principal",
    "init_auth",
    "load_dev_signing_key",
    "mint_dev_token",
    "parse_jwks",
    "register_swagger_ui",
    "require_cloud",
    "resolve_owner",
    "security_requirements",
]

log = logging.getLogger(__name__)

ALLOWED_ALGORITHMS: tuple[str, ...] = ("RS256", "ES256")
ON_BEHALF_OF_ROLE = "tfgen.on_behalf_of"

#: Routes that check their own secret instead of a bearer token (``app/apis/hooks.py``).
SECRET_AUTHENTICATED_PATHS = ("/api/v1/hooks/gitlab",)
DEV_ISSUER = "tfgen-dev"
EXTENSION_KEY = "tfgen_auth"
REQUIRED_CLAIMS = ["exp", "iss", "aud"]
MAX_TOKEN_LENGTH = 16 * 1024
MAX_JWKS_BYTES = 512 * 1024
SWAGGER_TEMPLATES = Path(__file__).resolve().parent.parent / "swagger" / "templates"

_AUTH_MODES = ("oidc", "dev")
_APP_ENVS = ("dev", "test", "prod")
_DEV_APP_ENVS = ("dev", "test")
_G_PRINCIPAL = "tfgen_principal"
_G_CHALLENGE = "tfgen_auth_challenge"


class AuthUnavailable(ApiError):
    """The identity provider's keys cannot be fetched: the caller should retry later.

    Not a 401: the token may well be valid, and APEX must not treat it as rejected.
    """

    status, code, retryable = 503, "AUTH_UNAVAILABLE", True


# --- Settings ----------------------------------------------------------------------------


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
        if mode == "dev":
            issuer = DEV_ISSUER
            audience = _str_setting(config, "OIDC_AUDIENCE", "tfgen")
            jwks_url = None
        else:
            issuer = _required(config, "OIDC_ISSUER")  # compared verbatim with `iss`
            audience = _required(config, "OIDC_AUDIENCE")
            jwks_url = _optional(config, "OIDC_JWKS_URL")
            if app_env == "prod":
                for name, url in (("OIDC_ISSUER", issuer), ("OIDC_JWKS_URL", jwks_url)):
                    if url is not None and not url.startswith("https://"):
                        raise ValueError(f"{name} must be an https:// URL when APP_ENV=prod")
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
        parsed[_normalize_group(group)] = frozenset(clouds)
    return parsed


def _normalize_group(group: str) -> str:
    """Drop Keycloak's leading '/' of full group paths; '/team/ops' stays 'team/ops'."""
    return group[1:] if group.startswith("/") else group


# --- The caller --------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """The caller, as a verified token describes it.

    Attributes:
        username: The token's username claim (``OIDC_USERNAME_CLAIM``).
        groups: Groups from ``OIDC_GROUPS_CLAIM``, without a leading '/'.
        roles: Realm roles, the audience's client roles and a flat ``roles`` claim.
        is_admin: Member of ``ADMIN_GROUP``: sees every job.
        client_id: The OAuth2 client the token was issued to (``azp``/``client_id``).
        clouds: Cloud ids the caller's groups allow (``CLOUD_PERMISSIONS``); '*' is all.
    """

    username: str
    groups: frozenset[str]
    roles: frozenset[str]
    is_admin: bool
    client_id: str | None
    clouds: frozenset[str] = frozenset()

    @property
    def may_act_for_others(self) -> bool:
        """Whether the caller holds the ``tfgen.on_behalf_of`` role (the APEX client)."""
        return ON_BEHALF_OF_ROLE in self.roles


def require_cloud(principal: Principal, cloud_id: str) -> None:
    """Allow the call only when the caller's groups grant ``cloud_id``.

    For a submission made ``on_behalf_of`` a user, this checks the *calling client's*
    permissions (see ``resolve_owner``).

    Raises:
        Forbidden: No group of the caller lists ``cloud_id`` or ``"*"``.
    """
    if "*" in principal.clouds or cloud_id in principal.clouds:
        return
    raise Forbidden(
        f"{principal.username} may not use cloud_id {cloud_id[:64]!r}",
        details={"cloud_id": "not allowed for the caller's groups"},
    )


def resolve_owner(principal: Principal, on_behalf_of: str | None) -> str:
    """Return the user a submitted job belongs to.

    Only a caller holding the ``tfgen.on_behalf_of`` role (the APEX service client) may
    name another user; the job then belongs to that user (their GitLab token is used and
    they see the job). The cloud check stays on the *client's own* permissions
    (``require_cloud(principal, ...)``): tfgen cannot verify any groups a client would
    claim for the user, APEX already decides which of its users may request what, and an
    operator bounds what APEX may do by the groups of its service account. Naming oneself
    is allowed without the role.

    Raises:
        Forbidden: ``on_behalf_of`` names someone else and the caller lacks the role, or
            it is not a plausible username.
    """
    if on_behalf_of is None or on_behalf_of == principal.username:
        return principal.username
    if not principal.may_act_for_others:
        raise Forbidden(
            f"only a client holding the {ON_BEHALF_OF_ROLE} role may set on_behalf_of",
            details={"on_behalf_of": f"requires the {ON_BEHALF_OF_ROLE} role"},
        )
    if not _is_plausible_username(on_behalf_of):
        raise Forbidden(
            "on_behalf_of is not a valid username",
            details={"on_behalf_of": "not a valid username"},
        )
    return on_behalf_of


def can_see(principal: Principal, owner: str) -> bool:
    """Whether the caller may see a job owned by ``owner``.

    Owners see their jobs, admins see all, and so does a client holding the
    ``tfgen.on_behalf_of`` role: APEX polls the jobs it submits for its users, and a client
    that may act as any user gains nothing by reading their jobs.
    """
    return principal.username == owner or principal.is_admin or principal.may_act_for_others


def _is_plausible_username(name: str) -> bool:
    return 0 < len(name) <= 255 and name.isprintable() and not any(c.isspace() for c in name)


# --- Keys --------------------------------------------------------------------------------


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
      keys), but at most one such refetch per ``cooldown`` seconds: a flood of tokens with
      bogus kids costs at most one fetch per cool-down. A failed fetch also waits a
      cool-down before the next try, and stale keys keep serving meanwhile.
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
        timeout: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if url is None and issuer is None:
            raise ValueError("JwksCache needs a JWKS url or an issuer to discover it from")
        self._url = url
        self._issuer = issuer
        self._ttl = ttl
        self._cooldown = cooldown
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
        return self._forced_at is None or now - self._forced_at >= self._cooldown

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


# --- Verification ------------------------------------------------------------------------


class TokenVerifier:
    """Verifies bearer tokens and turns their claims into a ``Principal``. No Flask."""

    def __init__(self, settings: AuthSettings, keys: KeySource) -> None:
        self.settings = settings
        self.keys = keys

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
        return self.principal_from_claims(claims)

    def principal_from_claims(self, claims: Mapping[str, Any]) -> Principal:
        """Build the ``Principal`` from verified claims.

        Raises:
            Unauthorized: The username claim is missing or not a plausible username, or
                the groups claim is not a list of strings.
        """
        s = self.settings
        username = claims.get(s.username_claim)
        if not isinstance(username, str) or not _is_plausible_username(username):
            raise Unauthorized(f"token has no valid {s.username_claim} claim")
        groups = frozenset(_normalize_group(g) for g in _strings(claims, s.groups_claim))
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
            is_admin=s.admin_group is not None and _normalize_group(s.admin_group) in groups,
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


# --- Dev signing -------------------------------------------------------------------------


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


def _dev_jwk(key: rsa.RSAPrivateKey) -> tuple[str, jwt.PyJWK]:
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
        settings = state.settings if state else AuthSettings.from_config(app_or_settings.config)
    if settings.mode != "dev":
        raise ValueError("dev tokens can only be minted with AUTH_MODE=dev")
    key = load_dev_signing_key(settings.dev_key_path)
    kid, _ = _dev_jwk(key)
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


# --- Flask glue --------------------------------------------------------------------------


@dataclass(frozen=True)
class _AuthState:
    settings: AuthSettings
    verifier: TokenVerifier


def build_verifier(settings: AuthSettings) -> TokenVerifier:
    """Build the verifier for ``settings``: JWKS in oidc mode, the dev key in dev mode."""
    if settings.mode == "dev":
        kid, jwk = _dev_jwk(load_dev_signing_key(settings.dev_key_path))
        return TokenVerifier(settings, StaticKeys({kid: jwk}))
    keys = JwksCache(
        settings.jwks_url,
        issuer=settings.issuer,
        ttl=settings.jwks_cache_ttl,
        cooldown=settings.jwks_cooldown,
        timeout=settings.jwks_timeout,
    )
    return TokenVerifier(settings, keys)


def init_auth(app: Flask) -> None:
    """Bind authentication to ``app``: settings, verifier, /api/v1 guard, 401 challenge.

    Every request under ``AUTH_PROTECTED_PREFIX`` (default ``/api/v1/``) except
    ``AUTH_PUBLIC_PATHS`` (the Swagger UI and spec) and CORS preflights must carry a
    valid bearer token, so a new route is protected without anyone remembering to.

    Raises:
        ValueError: A setting is missing or invalid, or ``AUTH_MODE=dev`` is set while
            ``APP_ENV`` is not dev or test.
    """
    settings = AuthSettings.from_config(app.config)
    app.extensions[EXTENSION_KEY] = _AuthState(settings, build_verifier(settings))
    if settings.mode == "dev":
        log.warning("AUTH_MODE=dev: tokens are signed by the local key %s", settings.dev_key_path)
    app.before_request(_guard_api)
    app.after_request(_add_challenge)


def _settings() -> AuthSettings:
    state: _AuthState = current_app.extensions[EXTENSION_KEY]
    return state.settings


def _guard_api() -> None:
    settings = _settings()
    path = request.path
    if (
        request.method != "OPTIONS"
        and path.startswith(settings.protected_prefix)
        and path.rstrip("/") not in settings.public_paths
        and path.rstrip("/") not in SECRET_AUTHENTICATED_PATHS
    ):
        current_principal()


def _add_challenge(response: Response) -> Response:
    """Make every 401 carry a Bearer challenge (RFC 6750 section 3)."""
    challenge = response.headers.get("WWW-Authenticate", "")
    if response.status_code == 401 and not challenge.startswith("Bearer"):
        response.headers["WWW-Authenticate"] = g.get(
            _G_CHALLENGE, f'Bearer realm="{_settings().realm}"'
        )
    return response


def current_principal() -> Principal:
    """Return the caller of the current request, verifying its bearer token once.

    Raises:
        Unauthorized: No bearer token, or the token does not verify.
        AuthUnavailable: The identity provider's keys cannot be fetched.
    """
    cached: Principal | None = g.get(_G_PRINCIPAL)
    if cached is not None:
        return cached
    state: _AuthState = current_app.extensions[EXTENSION_KEY]
    realm = state.settings.realm
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        setattr(g, _G_CHALLENGE, f'Bearer realm="{realm}"')
        raise Unauthorized("a bearer token is required")
    try:
        principal = state.verifier.verify(token.strip())
    except Unauthorized as e:
        # The reason is one of our fixed strings: safe for logs and the header.
        log.info("bearer token rejected: %s", e.message)
        setattr(
            g,
            _G_CHALLENGE,
            f'Bearer realm="{realm}", error="invalid_token", error_description="{e.message}"',
        )
        raise
    setattr(g, _G_PRINCIPAL, principal)
    return principal


# --- Swagger -----------------------------------------------------------------------------

#: The config-independent part of the spec's security definitions: paste a token.
AUTHORIZATIONS: dict[str, Any] = {
    "Bearer": {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": "Type Bearer, a space, then your access token (Bearer eyJhbGci...).",
    },
}

#: Security requirement for AUTHORIZATIONS alone (either scheme satisfies a requirement).
SECURITY: list[dict[str, list[str]]] = [{"Bearer": []}]


def authorizations(settings: AuthSettings) -> dict[str, Any]:
    """Return the spec's security definitions: OAuth2 (authorization code) and Bearer.

    Dev mode has no authorization server, so only the Bearer scheme is declared.
    """
    if settings.mode != "oidc":
        return dict(AUTHORIZATIONS)
    return {
        "oauth2": {
            "type": "oauth2",
            "flow": "accessCode",
            "authorizationUrl": settings.authorization_url,
            "tokenUrl": settings.token_url,
            "scopes": {scope: f"{scope} scope" for scope in settings.swagger_scopes},
        },
        **AUTHORIZATIONS,
    }


def security_requirements(settings: AuthSettings) -> list[dict[str, list[str]]]:
    """Return the spec's security requirement: OAuth2 or a pasted Bearer token."""
    if settings.mode != "oidc":
        return list(SECURITY)
    return [{"oauth2": list(settings.swagger_scopes)}, *SECURITY]


def register_swagger_ui(app: Flask, api: Any | None = None) -> None:
    """Serve our ``swagger-ui.html`` (OAuth2 with PKCE) and declare the security schemes.

    Puts ``swagger/templates`` in front of the app's template loader, so flask-restx's
    ``render_template("swagger-ui.html")`` picks our copy. With ``api`` (a flask-restx
    ``Api``), also sets its ``authorizations`` and ``security`` (every operation then
    requires a token unless it declares ``security=[]``); call before the spec is served.
    """
    loaders: list[BaseLoader] = [FileSystemLoader(SWAGGER_TEMPLATES)]
    if app.jinja_loader is not None:
        loaders.append(app.jinja_loader)
    app.jinja_loader = ChoiceLoader(loaders)  # type: ignore[misc,assignment]
    state: _AuthState | None = app.extensions.get(EXTENSION_KEY)
    settings = state.settings if state else AuthSettings.from_config(app.config)
    app.config.setdefault("SWAGGER_UI_OAUTH_SCOPES", " ".join(settings.swagger_scopes))
    if api is not None:
        api.authorizations = authorizations(settings)
        api.security = security_requirements(settings)
