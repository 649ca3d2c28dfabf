"""The settings model: read once, typed, the Flask mapping derived from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from app import create_app
from config.settings import SETTINGS_KEY, ConfigError, Settings, env_names, load, load_settings
from config.settings.model import _shown


def test_nothing_set_is_one_embedded_dev_stack(tmp_path: Path) -> None:
    s = load(env={"TFGEN_VAR_DIR": str(tmp_path)})
    assert s.app_env == s.auth.app_env == s.flower.app_env == "dev"
    assert (s.auth.mode, s.log.format) == ("dev", "console")
    assert s.store.url == f"sqlite:///{tmp_path / 'apex.sqlite'}"
    assert s.celery.broker_url == "filesystem://"
    assert s.auth.dev_key_path == tmp_path / "dev-signing-key.pem"


def test_prod_has_no_embedded_defaults_and_safe_ones() -> None:
    with pytest.raises(ConfigError, match="OIDC_ISSUER is required"):
        load(env={"APP_ENV": "prod"})
    env = {"APP_ENV": "prod", "OIDC_ISSUER": "https://idp/realms/t", "OIDC_AUDIENCE": "tfgen"}
    with pytest.raises(ConfigError, match="DATABASE_URL is required"):
        load(env=env)
    s = load(env={**env, "DATABASE_URL": "sqlite://", "CELERY_BROKER_URL": "redis://r:6379/0",
                  "GIT_REMOTE": "/srv/remote.git"})
    assert (s.auth.mode, s.log.format, s.auth.cloud_permissions) == ("oidc", "json", {})
    # Results, job records and publish locks follow a Redis broker.
    assert s.celery.result_backend == s.celery.job_store_url == s.publish.lock_url == (
        "redis://r:6379/0")


@pytest.mark.parametrize(("name", "value"), [
    ("JOB_TIME_LIMIT", "soon"), ("DATABASE_POOL_PRE_PING", "maybe"), ("PUBLISHER", "svn"),
    ("DATABASE_SCHEMA", "a-b"), ("GITLAB_MR_REVIEWER_IDS", "1,x"), ("CLOUD_PERMISSIONS", "{x"),
    ("OIDC_LEEWAY", "120"), ("TERRAFORM_FMT_ENGINE", "gofmt"), ("APP_ENV", "staging"),
    ("GUNICORN_WORKERS", "two"), ("PORT", "http"), ("CELERY_TASK_SENT_EVENT", "maybe"),
    ("WEBHOOK_SECRET_KEY", "hunter2"), ("WEBHOOK_SECRET_KEY", "A" * 32),
])
def test_a_malformed_variable_stops_the_process_naming_it(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load(env={name: value})


@pytest.mark.parametrize(("env", "hidden"), [
    ({"WEBHOOK_SECRET_KEY": "hunter2-hunter2"}, "hunter2"),
    ({"FLOWER_BASIC_AUTH": "ops:s3cret,auditor-s3cret"}, "s3cret"),
    ({"FLOWER_BASIC_AUTH": ":s3cret"}, "s3cret"),
])
def test_an_error_never_repeats_a_secret(env: dict[str, str], hidden: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load(env=env)
    assert hidden not in str(refused.value)


def test_an_error_repeats_a_url_without_its_password() -> None:
    assert _shown("DATABASE_URL", "postgresql://u:pw@db:5432/x") == (
        "'postgresql://u:***@db:5432/x'")
    assert _shown("JOB_TIME_LIMIT", "soon") == "'soon'"
    assert _shown("GITLAB_URL", "http://[bad") == "'http://[bad'"


def test_empty_counts_as_unset_and_lists_parse_once() -> None:
    s = load(env={"JOB_QUEUE": "", "GITLAB_MR_LABELS": "tfgen, apex", "GITLAB_SSL_VERIFY": "no",
                  "GITLAB_MR_REVIEWER_IDS": "3,4", "DATABASE_SCHEMA": "APEX_OWNER"})
    assert s.celery.queue == "tfgen"
    assert (s.gitlab.mr_labels, s.gitlab.mr_reviewer_ids) == (("tfgen", "apex"), (3, 4))
    assert s.gitlab.ssl_verify is False
    assert s.store.schema == "apex_owner"


def test_the_flask_mapping_is_derived_from_the_typed_settings(tmp_path: Path) -> None:
    app = create_app({"APP_ENV": "test", "TFGEN_VAR_DIR": str(tmp_path), "JOB_TIME_LIMIT": "400",
                      "GITLAB_MR_LABELS": "a,b"})
    settings = app.config[SETTINGS_KEY]
    assert isinstance(settings, Settings)
    assert app.config["JOB_TIME_LIMIT"] == settings.celery.time_limit == 400
    assert app.config["CELERY"]["task_time_limit"] == 400
    assert app.config["GITLAB_MR_LABELS"] == ["a", "b"]
    assert app.extensions["tfgen"].store.settings is settings.store
    assert app.extensions["tfgen_auth"].settings is settings.auth


@pytest.mark.parametrize(("value", "sent"), [(None, False), ("1", True), ("true", True),
                                             ("0", False), ("", False)])
def test_the_task_sent_event_is_the_operators_choice(tmp_path: Path, value: str | None,
                                                     sent: bool) -> None:
    config = {"APP_ENV": "test", "TFGEN_VAR_DIR": str(tmp_path)}
    if value is not None:
        config["CELERY_TASK_SENT_EVENT"] = value
    app = create_app(config)
    assert app.config["CELERY"]["task_send_sent_event"] is sent
    assert app.extensions["celery"].conf.task_send_sent_event is sent


def test_beat_schedules_the_periodic_tasks_by_their_own_names(tmp_path: Path) -> None:
    app = create_app({"APP_ENV": "test", "TFGEN_VAR_DIR": str(tmp_path),
                      "RECONCILE_INTERVAL": "0", "WEBHOOK_SWEEP_INTERVAL": "7"})
    schedule = app.config["CELERY"]["beat_schedule"]
    assert app.extensions["celery"].conf.beat_schedule == schedule
    assert schedule == {  # an interval of 0 turns a task off
        "tfgen-sweep": {"task": "tfgen.sweep", "schedule": 60.0,
                        "options": {"queue": "tfgen", "expires": 60}},
        "tfgen-webhooks-sweep": {"task": "tfgen.webhooks.sweep", "schedule": 7.0,
                                 "options": {"queue": "tfgen-webhooks", "expires": 7}},
    }


def test_gunicorn_reads_the_typed_server_settings() -> None:
    s = load(env={"PORT": "9000", "GUNICORN_WORKERS": "3", "GUNICORN_THREADS": ""})
    assert (s.server.port, s.server.workers, s.server.threads) == (9000, 3, 4)
    assert load(env={}).server.workers is None  # gunicorn_conf: 2 x CPU limit + 1
    # Workers are not replaced unless asked: a replacement piles kept-alive clients onto
    # the other workers (config/gunicorn_conf.py, max_requests).
    assert load(env={}).server.max_requests == 0


def test_every_field_names_its_variable() -> None:
    names = env_names()
    assert {"DATABASE_URL", "OIDC_JWKS_COOLDOWN", "JOB_QUEUE", "GITLAB_WEBHOOK_SECRET",
            "POLICY_DIR", "FLOWER_BASIC_AUTH", "LOG_FORMAT", "APP_ENV"} <= names
    flat = load_settings(env={})
    assert {n for n in names if n in flat} >= {"DATABASE_URL", "JOB_QUEUE", "LOG_FORMAT"}
