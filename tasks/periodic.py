"""Tasks ``celery -A tasks beat`` sends on a schedule (``CELERY["beat_schedule"]``).

- ``tfgen.reconcile`` every ``RECONCILE_INTERVAL`` seconds: requests waiting on GitLab.
- ``tfgen.sweep`` every ``JOB_SWEEP_INTERVAL`` seconds: ends every unfinished job past
  its deadline as FAILURE ``TIMEOUT`` (``app.core.jobs.deadline``), so a job whose
  message was lost (a Redis outage, a worker host gone) ends without anyone polling it.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from flask import current_app

from app.core.jobs import sweep_overdue
from app.core.reconcile import Reconciler
from app.logs import get_logger
from app.services import Services
from tasks.generate import tell_celery_failed
from tasks.observe import job_finished

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


@shared_task(bind=True, name="tfgen.sweep", acks_late=False, ignore_result=True)
def sweep(self: Task) -> int:
    """End overdue jobs; return how many this run ended."""
    svc: Services = current_app.extensions["tfgen"]
    ended = sweep_overdue(svc.jobs, current_app.config)
    for record in ended:
        job_finished(record)
        tell_celery_failed(self.app, record, self.request.hostname)
    if ended:
        log.warning("jobs.swept", count=len(ended), jobs=[r.uuid for r in ended])
    return len(ended)
