"""Flower settings: ``celery -A tasks flower`` (through ``./flowerconfig.py``).

Flower reads this file as Python and takes the module's globals named like its options.
Everything comes from the environment (``FLOWER_*``); see ``run/prd-env.sh``.

Authentication, one of:
- ``FLOWER_BASIC_AUTH``: ``user:password`` (several, comma-separated), from a Secret;
- OAuth2: ``FLOWER_AUTH_PROVIDER`` (e.g. ``flower.views.auth.GitLabLoginHandler``),
  ``FLOWER_OAUTH2_KEY``, ``FLOWER_OAUTH2_SECRET``, ``FLOWER_OAUTH2_REDIRECT_URI`` and
  ``FLOWER_AUTH`` (a regular expression of the e-mail addresses let in).
With ``APP_ENV=prod`` Flower refuses to start without either. ``/healthcheck`` and
``/metrics`` (Prometheus) stay open for probes and scrapes, as Flower does by design.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

__all__ = ["flower_options"]


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def flower_options(env: Mapping[str, str]) -> dict[str, Any]:
    """Flower's options from ``env``.

    Args:
        env: The environment.

    Returns:
        Option names and values, as Flower's config file declares them.

    Raises:
        SystemExit: ``APP_ENV=prod`` and no authentication is configured.
    """
    options: dict[str, Any] = {
        "address": env.get("FLOWER_ADDRESS", "0.0.0.0"),  # noqa: S104 - a pod's port
        "port": int(env.get("FLOWER_PORT", "5555")),
        "url_prefix": env.get("FLOWER_URL_PREFIX", ""),
        # Behind the ingress: trust X-Forwarded-* for redirects and the OAuth callback.
        "xheaders": True,
        # Workers scale with the queue: forget pods gone for 5 minutes.
        "purge_offline_workers": int(env.get("FLOWER_PURGE_OFFLINE_WORKERS", "300")),
        # Task history lives in memory only (the job records are the truth): keep it small.
        "max_tasks": int(env.get("FLOWER_MAX_TASKS", "10000")),
        "persistent": False,
        "enable_events": True,
        "inspect_timeout": float(env.get("FLOWER_INSPECT_TIMEOUT", "3000")),
        # "args" is the request (aws/rds/42, the task's argsrepr), not the job UUID.
        "tasks_columns": "name,uuid,args,state,received,started,runtime,worker,retries",
    }
    basic_auth = _split(env.get("FLOWER_BASIC_AUTH", ""))
    if basic_auth:
        options["basic_auth"] = basic_auth
    oauth = {name: env.get(f"FLOWER_{name.upper()}", "") for name in (
        "auth_provider", "oauth2_key", "oauth2_secret", "oauth2_redirect_uri", "auth")}
    if oauth["auth_provider"]:
        missing = [f"FLOWER_{k.upper()}" for k, v in oauth.items() if not v]
        if missing:
            raise SystemExit(f"Flower OAuth needs {', '.join(missing)}")
        options.update(oauth)
    if env.get("APP_ENV", "dev") == "prod" and not basic_auth and not oauth["auth_provider"]:
        raise SystemExit("Flower refuses to start unauthenticated with APP_ENV=prod: set "
                         "FLOWER_BASIC_AUTH, or FLOWER_AUTH_PROVIDER with FLOWER_OAUTH2_*")
    return options


globals().update(flower_options(os.environ))
