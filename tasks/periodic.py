"""Tasks ``celery -A tasks beat`` sends on a schedule (``CELERY["beat_schedule"]``)."""

from __future__ import annotations

from typing import Any

from celery import shared_task
from flask import current_app

from app.core.reconcile import Reconciler
from app.logs import get_logger
from app.services import Services

log = get_logger("tfgen.periodic")


@shared_task(name="tfgen.reconcile", ignore_result=True)
def reconcile() -> dict[str, Any]:
    """Read GitLab (or the git remote) for requests waiting on it: ``RECONCILE_BATCH`` a run."""
    svc: Services = current_app.extensions["tfgen"]
    reconciler = Reconciler(svc.lifecycle, svc.publisher,
                            batch=int(current_app.config["RECONCILE_BATCH"]),
                            token_for=svc.store.user_token)
    report = reconciler.run()
    log.info("reconcile.run", checked=report.checked, moved=report.moved, errors=report.errors,
             stopped=report.stopped, moves=report.moves)
    return {"checked": report.checked, "moved": report.moved, "stopped": report.stopped}
