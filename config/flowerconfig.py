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

from pydantic import ValidationError

from config.settings.parts import FlowerSettings

__all__ = ["flower_options"]


def flower_options(env: Mapping[str, str]) -> dict[str, Any]:
    """Flower's options from ``env`` (the ``FlowerSettings`` part of tfgen's settings).

    Args:
        env: The environment.

    Returns:
        Option names and values, as Flower's config file declares them.

    Raises:
        SystemExit: ``APP_ENV=prod`` and no authentication is configured, or a
            ``FLOWER_*`` value is invalid.
    """
    try:
        flower = FlowerSettings.model_validate({k: v for k, v in env.items() if v})
    except ValidationError as e:
        raise SystemExit(f"Flower settings: {e}") from None
    options: dict[str, Any] = {
        "address": flower.address,
        "port": flower.port,
        "url_prefix": flower.url_prefix,
        # Behind the ingress: trust X-Forwarded-* for redirects and the OAuth callback.
        "xheaders": True,
        # Workers scale with the queue: forget pods gone for 5 minutes.
        "purge_offline_workers": flower.purge_offline_workers,
        # Task history lives in memory only (the job records are the truth): keep it small.
        "max_tasks": flower.max_tasks,
        "persistent": False,
        "enable_events": True,
        "inspect_timeout": flower.inspect_timeout,
        # "args" is the request (aws/rds/42, the task's argsrepr), not the job UUID.
        "tasks_columns": "name,uuid,args,state,received,started,runtime,worker,retries",
    }
    if flower.basic_auth:
        options["basic_auth"] = list(flower.basic_auth)
    oauth = {name: getattr(flower, name) for name in (
        "auth_provider", "oauth2_key", "oauth2_secret", "oauth2_redirect_uri", "auth")}
    if flower.auth_provider:
        missing = [f"FLOWER_{k.upper()}" for k, v in oauth.items() if not v]
        if missing:
            raise SystemExit(f"Flower OAuth needs {', '.join(missing)}")
        options.update(oauth)
    if flower.app_env == "prod" and not flower.basic_auth and not flower.auth_provider:
        raise SystemExit("Flower refuses to start unauthenticated with APP_ENV=prod: set "
                         "FLOWER_BASIC_AUTH, or FLOWER_AUTH_PROVIDER with FLOWER_OAUTH2_*")
    return options


globals().update(flower_options(os.environ))
