"""GitLab webhook events, applied in the background: thin, the work is in core."""

from __future__ import annotations

from typing import Any

from celery import Celery, shared_task
from flask import current_app

from app.core import gitlab_events
from app.logs import get_logger
from app.services import Services

log = get_logger("tfgen.hooks")


@shared_task(name="tfgen.gitlab_hook", acks_late=True, reject_on_worker_lost=True,
             autoretry_for=(Exception,), retry_backoff=True, retry_backoff_max=60,
             max_retries=10, ignore_result=True)
def gitlab_hook(event: dict[str, Any]) -> str:
    """Apply one parsed GitLab event (``app.core.gitlab_events.parse``) to its request."""
    svc: Services = current_app.extensions["tfgen"]
    record = gitlab_events.apply(svc.lifecycle, event)
    if record is None:
        log.info("hook.unknown", kind=event.get("kind"), project=event.get("project_path"),
                 reason="no request of tfgen's (branch or commit it did not make)")
        return "IGNORED"
    log.info("hook.applied", kind=event.get("kind"), request=record.key, state=record.state)
    return record.state


def submit(event: dict[str, Any]) -> None:
    """Put one parsed GitLab event on ``JOB_QUEUE`` for a worker to apply.

    Raises:
        Exception: Whatever the broker raised; the caller answers so that GitLab
            delivers again.
    """
    celery: Celery = current_app.extensions["celery"]
    # time limits None: the worker's own settings govern (see tasks.generate.submit).
    celery.send_task(gitlab_hook.name, args=[event], queue=current_app.config["JOB_QUEUE"],
                     retry=True, time_limit=None, soft_time_limit=None)
