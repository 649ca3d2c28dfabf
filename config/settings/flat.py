"""The flat configuration mapping Flask, Celery and the rest read, derived from ``Settings``.

``app.config["GITLAB_URL"]``, ``app.config["CELERY"]``, ... are written here from the
typed parts, never parsed again; ``app.config["SETTINGS"]`` holds the typed object.
"""

from __future__ import annotations

from typing import Any

from config.settings.model import Settings

__all__ = ["SETTINGS_KEY", "celery_options", "flat_config"]

#: Where the typed ``Settings`` sits in the Flask config.
SETTINGS_KEY = "SETTINGS"


def flat_config(s: Settings) -> dict[str, Any]:
    """The Flask config mapping (upper-case keys) of ``s``, built one part at a time."""
    cfg: dict[str, Any] = {
        SETTINGS_KEY: s, "APP_ENV": s.app_env, "TESTING": s.app_env == "test",
        "VAR_DIR": str(s.var_dir),
        # Bodies larger than this get 413 (Flask's own setting name).
        "MAX_CONTENT_LENGTH": s.server.max_content_length,
        "RESTX_MASK_SWAGGER": False, "RESTX_ERROR_404_HELP": False, "RESTX_BUNDLE_ERRORS": True,
    }
    for part in (_store, _jobs, _publishing, _events_and_webhooks, _render_and_policies,
                 _auth, _logs):
        cfg.update(part(s))
    cfg["CELERY"] = celery_options(s)
    return cfg


def _store(s: Settings) -> dict[str, Any]:
    store = s.store
    return {
        "DATABASE_URL": store.url, "DATABASE_SCHEMA": store.schema,
        "DATABASE_POOL_SIZE": store.pool_size, "DATABASE_MAX_OVERFLOW": store.max_overflow,
        "DATABASE_POOL_TIMEOUT": store.pool_timeout, "DATABASE_POOL_RECYCLE": store.pool_recycle,
        "DATABASE_POOL_PRE_PING": store.pool_pre_ping,
        "DATABASE_CONNECT_TIMEOUT": store.connect_timeout, "CATALOG_TTL": store.catalog_ttl,
        "APEX_TEMPLATE_TABLE": store.template_table, "APEX_USERS_TABLE": store.users_table,
        "APEX_REQUEST_VIEW": store.request_view,
    }


def _jobs(s: Settings) -> dict[str, Any]:
    jobs = s.celery
    return {
        "JOB_STORE_URL": jobs.job_store_url, "JOB_KEY_PREFIX": jobs.key_prefix,
        "JOB_RESULT_TTL": jobs.result_ttl, "JOB_SOFT_TIME_LIMIT": jobs.soft_time_limit,
        "JOB_TIME_LIMIT": jobs.time_limit, "JOB_QUEUE_EXPIRES": jobs.queue_expires,
        "JOB_MAX_RETRIES": jobs.max_retries, "JOB_RETRY_BACKOFF_MAX": jobs.retry_backoff_max,
        "JOB_MAX_DELIVERIES": jobs.max_deliveries, "JOB_STORE_RETRY_TIME": jobs.store_retry_time,
        "JOB_SWEEP_INTERVAL": jobs.sweep_interval,
        "JOB_QUEUE": jobs.queue,
    }


def _publishing(s: Settings) -> dict[str, Any]:
    gitlab = s.gitlab
    return {
        "PUBLISHER": s.publish.publisher, "GIT_REMOTE": s.publish.git_remote,
        "PUBLISH_LOCK_URL": s.publish.lock_url,
        "GITLAB_URL": gitlab.url, "GITLAB_TOKEN": gitlab.token,
        "GITLAB_TARGET_BRANCH": gitlab.target_branch, "GITLAB_MR_LABELS": list(gitlab.mr_labels),
        "GITLAB_MR_ASSIGNEE_ID": gitlab.mr_assignee_id or None,
        "GITLAB_MR_REVIEWER_IDS": list(gitlab.mr_reviewer_ids),
        "GITLAB_MAX_RETRIES": gitlab.max_retries, "GITLAB_RETRY_MAX_TIME": gitlab.retry_max_time,
        "GITLAB_BACKOFF_BASE": gitlab.backoff_base,
        "GITLAB_REQUEST_TIMEOUT": gitlab.request_timeout, "GITLAB_SSL_VERIFY": gitlab.ssl_verify,
    }


def _events_and_webhooks(s: Settings) -> dict[str, Any]:
    return {
        "GITLAB_WEBHOOK_SECRET": s.reconcile.gitlab_webhook_secret,
        "EVENT_MAX_LEN": s.reconcile.event_max_len, "EVENT_MAX_AGE": s.reconcile.event_max_age,
        "RECONCILE_INTERVAL": s.reconcile.interval, "RECONCILE_BATCH": s.reconcile.batch,
        "WEBHOOK_QUEUE": s.webhooks.queue, "WEBHOOK_MAX_ATTEMPTS": s.webhooks.max_attempts,
        "WEBHOOK_BACKOFF_BASE": s.webhooks.backoff_base,
        "WEBHOOK_BACKOFF_MAX": s.webhooks.backoff_max,
        "WEBHOOK_ALLOWED_HOSTS": [h.lower() for h in s.webhooks.allowed_hosts],
        "WEBHOOK_SECRET_KEY": s.webhooks.secret_key,
        "WEBHOOK_ROTATION_GRACE": s.webhooks.rotation_grace,
        "WEBHOOK_SWEEP_INTERVAL": s.webhooks.sweep_interval,
    }


def _render_and_policies(s: Settings) -> dict[str, Any]:
    render = s.render
    return {
        "TEMPLATE_CACHE_SIZE": render.template_cache_size, "TERRAFORM_BIN": render.terraform_bin,
        "TERRAFORM_FMT_ENGINE": render.fmt_engine,
        "TERRAFORM_PROVIDER_MIRROR": render.provider_mirror, "TERRAFORM_TIMEOUT": render.timeout,
        "POLICY_DIR": s.policies.policy_dir, "CHECKOV_BIN": s.policies.checkov_bin,
        "CHECKOV_TIMEOUT": s.policies.checkov_timeout,
    }


def _auth(s: Settings) -> dict[str, Any]:
    auth = s.auth
    return {
        "AUTH_MODE": auth.mode, "OIDC_ISSUER": auth.issuer, "OIDC_AUDIENCE": auth.audience,
        "OIDC_JWKS_URL": auth.jwks_url, "OIDC_USERNAME_CLAIM": auth.username_claim,
        "OIDC_GROUPS_CLAIM": auth.groups_claim,
        "CLOUD_PERMISSIONS": {g: sorted(c) for g, c in auth.cloud_permissions.items()},
        "AUTH_DEV_KEY_PATH": str(auth.dev_key_path), "ADMIN_GROUP": auth.admin_group,
        "SWAGGER_UI_OAUTH_CLIENT_ID": auth.swagger_client_id,
        "SWAGGER_UI_OAUTH_REALM": auth.swagger_realm,
        "SWAGGER_UI_OAUTH_APP_NAME": auth.swagger_app_name,
        "SWAGGER_UI_OAUTH_SCOPES": " ".join(auth.swagger_scopes),
    }


def _logs(s: Settings) -> dict[str, Any]:
    return {
        "LOG_LEVEL": s.log.level, "LOG_FORMAT": s.log.format,
        "WORKER_METRICS_PORT": s.log.worker_metrics_port,
        "WORKER_METRICS_ADDR": s.log.worker_metrics_addr,
    }


def celery_options(s: Settings) -> dict[str, Any]:
    """Celery's configuration (``app.config["CELERY"]``)."""
    jobs = s.celery
    visibility = jobs.effective_visibility_timeout
    options: dict[str, Any] = {
        "broker_url": jobs.broker_url, "result_backend": jobs.result_backend,
        "task_default_queue": jobs.queue, "task_serializer": "json",
        "accept_content": ["json"], "result_serializer": "json",
        "result_expires": jobs.result_ttl, "task_acks_late": True,
        "task_reject_on_worker_lost": True, "task_track_started": True,
        "task_soft_time_limit": jobs.soft_time_limit, "task_time_limit": jobs.time_limit,
        "worker_prefetch_multiplier": 1, "worker_send_task_events": True,
        # The task-sent event is a tenth of a submit's CPU (a second publish, on the event
        # exchange) for Flower to list a task before a worker receives it: off unless the
        # operator asks (CELERY_TASK_SENT_EVENT); the job record (PENDING) and
        # tfgen_queue_length show queued jobs, and workers' events (received, started,
        # succeeded...) feed Flower either way (docs/operations.md, Flower).
        "task_send_sent_event": jobs.task_sent_event,
        "broker_connection_retry_on_startup": True,
        "broker_connection_timeout": jobs.connect_timeout,
        # Fail the enqueue fast when the broker is down: the API answers 503.
        "task_publish_retry_policy": {
            "max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5,
        },
        "broker_transport_options": {"visibility_timeout": visibility},
        "result_backend_transport_options": {"visibility_timeout": visibility},
        # A result written while Redis restarts is retried, not lost (bounded: ~1 min).
        "result_backend_always_retry": True,
        "result_backend_max_retries": 12,
        # celery -A tasks beat: the schedule is tasks/periodic.py's, added by celery_init_app
        # (it names the tasks, and only the tasks spell their names).
        "beat_schedule_filename": str(s.var_dir / "celerybeat-schedule"),
    }
    if jobs.broker_url.startswith("redis://"):
        # kombu's Redis transport, keeping its client object between publishes
        # (app/core/broker.py): a tenth of a submit's CPU.
        options["broker_transport"] = "app.core.broker:Transport"
    if jobs.broker_url.startswith("filesystem://"):
        options["broker_transport_options"] = {
            "data_folder_in": str(s.var_dir / "queue"),
            "data_folder_out": str(s.var_dir / "queue"),
            "processed_folder": str(s.var_dir / "queue-processed"),
            # kombu defaults this to ./control, in whatever directory the process runs.
            "control_folder": str(s.var_dir / "queue-control"),
            "store_processed": False,
        }
    return options
