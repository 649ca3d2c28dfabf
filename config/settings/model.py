"""``Settings``: every part, read once from the environment with pydantic-settings.

Variables keep their flat names (``GITLAB_URL``, not ``GITLAB__URL``): ``FlatEnvSource``
hands each part the variables its fields name. Defaults that depend on ``APP_ENV`` (the
embedded stack outside prod, console logs, dev sign-in) are in ``profile_defaults``; a
variable set but empty counts as unset. Anything wrong stops the process with a
``ConfigError`` naming the variable.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from config.settings.parts import (
    AuthSettings,
    CelerySettings,
    FlowerSettings,
    GitLabSettings,
    LogSettings,
    Part,
    PolicySettings,
    PublishSettings,
    ReconcileSettings,
    RenderSettings,
    StoreSettings,
    WebhookSettings,
)
from config.settings.server import ServerSettings

__all__ = ["ROOT", "ConfigError", "Settings", "env_names", "load", "profile_defaults"]

ROOT = Path(__file__).resolve().parent.parent.parent

#: Development and tests: who may submit for which cloud when CLOUD_PERMISSIONS is unset.
DEV_PERMISSIONS = {"aws-admins": ["aws"], "azure-admins": ["azure"], "tfgen-admins": ["*"]}

_ENV: ContextVar[Mapping[str, Any] | None] = ContextVar("tfgen_settings_env", default=None)


class ConfigError(RuntimeError):
    """A setting is missing or invalid; the message names it."""


class FlatEnvSource(PydanticBaseSettingsSource):
    """Each part's fields from the flat variables their aliases name (empty = unset)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        """Unused: ``__call__`` hands out whole parts."""
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        """The variables of each part, by part name."""
        source = _ENV.get()
        source = os.environ if source is None else source
        present = {k: v for k, v in source.items() if v is not None and v != ""}
        parts: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, Part):
                parts[name] = {k: present[k] for k in _aliases(field.annotation) if k in present}
            elif field.validation_alias in present:
                parts[name] = present[str(field.validation_alias)]
        return parts


class Settings(BaseSettings):
    """All of tfgen's settings, typed; ``load()`` builds it, once per process."""

    model_config = SettingsConfigDict(extra="ignore", validate_by_alias=True,
                                      validate_by_name=True)

    app_env: Literal["dev", "test", "prod"] = Field("dev", validation_alias="APP_ENV")
    var_dir: Path = Field(ROOT / "var", validation_alias="TFGEN_VAR_DIR")
    auth: AuthSettings
    store: StoreSettings
    celery: CelerySettings
    gitlab: GitLabSettings
    publish: PublishSettings
    render: RenderSettings
    policies: PolicySettings
    reconcile: ReconcileSettings
    webhooks: WebhookSettings
    log: LogSettings
    server: ServerSettings
    flower: FlowerSettings

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The flat environment only (no dotenv, no secrets folder)."""
        return (FlatEnvSource(settings_cls),)


def _aliases(part: type[Part]) -> Iterator[str]:
    for field in part.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, str):
            yield alias
        elif isinstance(alias, AliasChoices):  # the variable is the first choice
            yield str(alias.choices[0])


def env_names() -> set[str]:
    """Every environment variable the settings model reads."""
    names = {"APP_ENV", "TFGEN_VAR_DIR"}
    for field in Settings.model_fields.values():
        if isinstance(field.annotation, type) and issubclass(field.annotation, Part):
            names.update(_aliases(field.annotation))
    return names


def profile_defaults(source: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults that depend on ``APP_ENV``, for the variables ``source`` leaves unset.

    Outside prod the stack is embedded under ``TFGEN_VAR_DIR``: SQLite APEX and job
    records, Celery's filesystem transport, a bare git repository as the remote. On a
    Redis broker, results, job records and publish locks follow the broker.
    """
    app_env = source.get("APP_ENV") or "dev"
    var_dir = Path(source.get("TFGEN_VAR_DIR") or ROOT / "var")
    defaults: dict[str, Any] = {"AUTH_DEV_KEY_PATH": str(var_dir / "dev-signing-key.pem")}
    if app_env != "prod":
        defaults |= {
            "DATABASE_URL": f"sqlite:///{var_dir / 'apex.sqlite'}",
            "JOB_STORE_URL": f"sqlite:///{var_dir / 'jobs.sqlite'}",
            "CELERY_BROKER_URL": "filesystem://",
            "CELERY_RESULT_BACKEND": f"file://{var_dir / 'results'}",
            "GIT_REMOTE": str(var_dir / "remote.git"),
            "AUTH_MODE": "dev",
            "LOG_FORMAT": "console",
            "CLOUD_PERMISSIONS": DEV_PERMISSIONS,
        }
    broker = source.get("CELERY_BROKER_URL") or defaults.get("CELERY_BROKER_URL") or ""
    if str(broker).startswith(("redis://", "rediss://")):
        defaults |= {"CELERY_RESULT_BACKEND": broker, "JOB_STORE_URL": broker,
                     "PUBLISH_LOCK_URL": broker}
    return defaults


def load(
    env: Mapping[str, Any] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Read the settings from ``env`` (default ``os.environ``) with ``overrides`` on top.

    Raises:
        ConfigError: A required variable is missing or a value is invalid; names it.
    """
    source = {k: v for k, v in (os.environ if env is None else env).items() if v != ""}
    source.update({k: v for k, v in (overrides or {}).items() if v is not None and v != ""})
    source = {**profile_defaults(source), **source}
    token = _ENV.set(source)
    try:
        settings = Settings()
    except ValidationError as e:
        raise ConfigError(_describe(e, source)) from None
    finally:
        _ENV.reset(token)
    _require(settings)
    return settings


def _describe(error: ValidationError, source: Mapping[str, Any]) -> str:
    """The first problem, naming the variable: ``NAME is required`` or ``NAME: why``."""
    first = error.errors()[0]
    aliases = {name: str(f.validation_alias) for name, f in Settings.model_fields.items()}
    names = [aliases.get(str(part), str(part)) for part in first["loc"]]
    names = [name for name in names if name.isupper()]
    message = str(first["msg"]).removeprefix("Value error, ")
    if not names:
        return message  # a rule across variables: its message names them
    name = names[-1]
    if first["type"] == "missing":
        app_env = source.get("APP_ENV") or "dev"
        return f"{name} is required (APP_ENV={app_env}); see run/prd-env.sh"
    return f"{name}: {message}, got {_shown(name, source.get(name))}"


_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSWORD|_KEY$|BASIC_AUTH")


def _shown(name: str, value: Any) -> str:
    """A refused value as an error may repeat it: never a secret, nor a URL's password."""
    if not isinstance(value, str):
        return repr(value)
    if _SECRET_NAME.search(name):
        return f"a value of {len(value)} characters (not shown)"
    try:
        parts = urlsplit(value)
    except ValueError:  # an unbalanced [ in the host: no URL, nothing to hide
        return repr(value)
    if parts.password:
        value = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@")
                               ).geturl()
    return repr(value)


def _require(settings: Settings) -> None:
    """Settings that only some choices need."""
    needed = {"git": ("GIT_REMOTE", settings.publish.git_remote),
              "gitlab": ("GITLAB_URL", settings.gitlab.url)}[settings.publish.publisher]
    if needed[1] is None:
        raise ConfigError(f"{needed[0]} is required (APP_ENV={settings.app_env}, "
                          f"PUBLISHER={settings.publish.publisher}); see run/prd-env.sh")
