"""The Celery app, bound to ``create_app()``: ``celery -A tasks worker|flower``."""

from __future__ import annotations

from app import create_app

flask_app = create_app()
app = celery = flask_app.extensions["celery"]

from tasks import deliver as deliver  # noqa: E402 - webhooks out
from tasks import generate as generate  # noqa: E402 - registers the task on the app
from tasks import hooks as hooks  # noqa: E402 - GitLab webhook events
from tasks import observe as observe  # noqa: E402 - connects the logging/metrics signals
from tasks import periodic as periodic  # noqa: E402 - what beat schedules
