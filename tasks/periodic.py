"""Tasks ``celery -A tasks beat`` sends on a schedule, and the schedule (``beat_schedule``).

- ``tfgen.reconcile`` every ``RECONCILE_INTERVAL`` seconds: requests waiting on GitLab.
- ``tfgen.sweep`` every ``JOB_SWEEP_INTERVAL`` seconds: ends every unfinished job past
  its deadline as FAILURE ``TIMEOUT`` (``app.core.jobs.deadline``), so a job whose
  message was lost (a Redis outage, a worker host gone) ends without anyone polling it;
  then redoes the request steps a failure left undone (``Lifecycle.catch_up``).
- ``tfgen.webhooks.sweep`` (``tasks.deliver``) every ``WEBHOOK_SWEEP_INTERVAL`` seconds.

The schedule names the tasks by their objects, so each task name is spelled once, in
its decorator; ``celery_init_app`` puts it under ``CELERY["beat_schedule"]``.
"""

from __future__ import annotations

from typing import Any

from celery import Task, shared_task
from flask import current_app

from app.core.jobs import sweep_overdue
from app.core.reconcile import Reconciler
from app.logs import get_logger
from app.services import Services
from config.settings import Settings
from tasks import deliver
from tasks.generate import tell_celery_failed

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
    ended = sweep_overdue(svc.job_lifecycle, current_app.config)  # each counted and audited
    for record in ended:
        tell_celery_failed(self.app, record, self.request.hostname)
    if ended:
        log.warning("jobs.swept", count=len(ended), jobs=[r.uuid for r in ended])
    caught_up = svc.lifecycle.catch_up(svc.jobs)  # request steps a failure left undone
    if caught_up:
        log.warning("jobs.request_steps_caught_up", count=caught_up)
    return len(ended)


def beat_schedule(s: Settings) -> dict[str, Any]:
    """What ``celery -A tasks beat`` sends, and how often (an interval of 0 turns it off).

    A run that waited longer than one interval is dropped: the next one does its work.
    Entries are named after their task (``tfgen-reconcile`` for ``tfgen.reconcile``).
    """
    schedule: dict[str, Any] = {}
    for task, interval, queue in (
            (reconcile, s.reconcile.interval, s.celery.queue),
            (sweep, s.celery.sweep_interval, s.celery.queue),
            # Webhooks out: fan out what a lost message left behind, re-send what is due.
            (deliver.sweep, s.webhooks.sweep_interval, s.webhooks.queue)):
        if interval > 0:
            schedule[task.name.replace(".", "-")] = {
                "task": task.name, "schedule": float(interval),
                "options": {"queue": queue, "expires": interval}}
    return schedule
