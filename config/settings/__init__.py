"""Configuration: typed, read once from the environment, one place.

``load()`` returns the typed ``Settings`` (pydantic-settings; parts for auth, store,
Celery, GitLab, ...); ``load_settings()`` returns the Flask config mapping derived from
it (upper-case keys, the typed object under ``"SETTINGS"``). A setting that a given mode
needs and that has no safe default stops the process at start with a ``ConfigError``
naming it. With nothing set, ``APP_ENV=dev`` runs fully embedded: a SQLite store under
``var/``, Celery on its ``filesystem://`` transport, jobs in SQLite and a bare git
repository as the remote.

Modules: ``parts`` (one model per concern, fields aliased to the variables), ``server``
(the HTTP server's part: body limit, gunicorn), ``model`` (``Settings``, the environment
source, ``APP_ENV`` defaults, errors), ``flat`` (the flat mapping and Celery's options;
beat's schedule is ``tasks.periodic``'s, beside the tasks it names).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from config.settings.flat import SETTINGS_KEY, flat_config
from config.settings.model import ROOT, ConfigError, Settings, env_names, load

__all__ = ["ROOT", "SETTINGS_KEY", "ConfigError", "Settings", "env_names", "load",
           "load_settings"]


def load_settings(
    env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Build the configuration from ``env`` (default ``os.environ``) and ``overrides``.

    Args:
        env: Environment variables to read.
        overrides: Values that win over everything (tests use this).

    Returns:
        The configuration mapping, Flask-style upper-case keys; the typed ``Settings``
        under ``SETTINGS_KEY``.

    Raises:
        ConfigError: A required setting is missing, or a value is invalid.
    """
    cfg = flat_config(load(env, overrides))
    # Keys no variable sets (CELERY, TESTING, ...) may still be overridden as they are.
    cfg.update({k: v for k, v in (overrides or {}).items() if k not in env_names()})
    return cfg
