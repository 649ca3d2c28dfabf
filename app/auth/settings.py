"""Authentication settings: the typed ``AuthSettings`` part of ``config.settings``.

The model, its defaults and its validation live once, in ``config/settings/parts.py``;
this module re-exports it and finds the part an app was configured with.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from config.settings import SETTINGS_KEY, Settings
from config.settings.parts import DEV_ISSUER, AuthSettings, normalize_group

__all__ = ["DEV_ISSUER", "EXTENSION_KEY", "AuthSettings", "auth_settings", "normalize_group"]

#: Where ``init_auth`` keeps the app's settings and verifier (``app.extensions``).
EXTENSION_KEY = "tfgen_auth"


def auth_settings(config: Mapping[str, Any]) -> AuthSettings:
    """The auth part of an app's config: the typed part when present, else validated.

    Raises:
        ValueError: A setting is missing or invalid; the message names it.
    """
    settings = config.get(SETTINGS_KEY)
    if isinstance(settings, Settings):
        return settings.auth
    return AuthSettings.from_config(config)
