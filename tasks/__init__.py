"""The Celery tasks, and the Celery app for ``celery -A tasks worker|beat|flower``.

Importing ``tasks`` builds nothing: the tasks are ``@shared_task`` and bind to whichever
Celery app ``create_app()`` made (``app.celery_init_app``). The API imports a task's
``submit()`` from here without a second Flask app. Celery's ``-A tasks`` asks this module
for ``app`` (or ``celery``): only then is the Flask app built, once, from the
environment (PEP 562 module ``__getattr__``).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from tasks import deliver as deliver  # webhooks out
from tasks import generate as generate  # registers tfgen.generate (a shared task)
from tasks import hooks as hooks  # GitLab webhook events
from tasks import observe as observe  # connects the logging/metrics signals
from tasks import periodic as periodic  # what beat schedules

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["deliver", "generate", "hooks", "observe", "periodic"]

_built: list[Flask] = []
_lock = threading.Lock()


def _flask_app() -> Flask:
    with _lock:
        if not _built:
            from app import create_app

            _built.append(create_app())
        return _built[0]


def __getattr__(name: str) -> Any:
    """``app``/``celery``: the Celery app of ``create_app()``; ``flask_app``: that app."""
    if name in ("app", "celery"):
        return _flask_app().extensions["celery"]
    if name == "flask_app":
        return _flask_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
