"""The generation task: thin. Ids in, stages out, retry decisions; the work is in core.

Reliability settings (``config/settings.py``): late ack and reject on worker lost, so a
worker killed mid-job has the job run again; the publisher makes that re-run idempotent.
The job record, not Celery's result, is what the API shows.
"""

from __future__ import annotations

import random
from typing import Any

from celery import Task, shared_task
from celery.exceptions import SoftTimeLimitExceeded
from celery.signals import task_revoked
from flask import current_app

from app.core.jobs import ACTIVE, JobStore, expire_overdue, utcnow
from app.errors import Canceled, TfgenError
from app.logs import get_logger
from app.metrics import JOB_RETRIES, StageTimer
from app.services import Services
from tasks.observe import TracedRequest, job_finished

log = get_logger("tfgen.tasks")

RUNNING = frozenset({"STARTED", "PROGRESS"})


def retry_countdown(retries: int, cap: int, retry_after: float | None = None) -> float:
    """Exponential backoff with full jitter, at least ``retry_after`` when the service said so."""
    backoff = random.uniform(0, min(cap, 2 ** (retries + 1)))
    return min(cap, max(backoff, retry_after or 0))


def _soft_limit_hit(e: BaseException) -> bool:
    """True when the soft time limit broke into the work that raised ``e``.

    Domain code turns what goes wrong inside it into its own errors (a template that
    failed, a query that failed), so the limit may arrive wrapped: look down the chain.
    """
    seen: BaseException | None = e
    while seen is not None:
        if isinstance(seen, SoftTimeLimitExceeded):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _timeout(jobs: JobStore, job_uuid: str, message: str) -> str:
    _finish(jobs, job_uuid, "FAILURE",
            error={"code": "TIMEOUT", "retryable": True, "message": message})
    return "FAILURE"


def _finish(jobs: JobStore, job_uuid: str, status: str, **fields: Any) -> None:
    record = jobs.transition(job_uuid, ACTIVE,
                             {"status": status, "finished_at": utcnow(), **fields})
    if record is not None:
        job_finished(record)


class JobMessage(TracedRequest):
    """The task message in the worker's main process, which outlives a killed child."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        """Past the hard limit the child is killed unheard: end its job from here."""
        super().on_timeout(soft, timeout)
        if soft:
            return
        flask_app = self.task.app.flask_app
        with flask_app.app_context():
            _timeout(flask_app.extensions["tfgen"].jobs, self.id,
                     f"job killed at its hard time limit ({timeout:g} s)")


@shared_task(bind=True, name="tfgen.generate", acks_late=True, reject_on_worker_lost=True,
             Request=JobMessage)
def generate(self: Task, job_uuid: str) -> str:
    """Run job ``job_uuid`` through fetch, render, validate and publish."""
    svc: Services = current_app.extensions["tfgen"]
    config = current_app.config
    jobs = svc.jobs
    record = jobs.get(job_uuid)
    if record is None:
        log.warning("job.missing", reason="no record (expired or never written); dropped")
        return "MISSING"
    record = expire_overdue(jobs, record, config)
    if record.final:
        return record.status  # redelivered after it ended, or canceled while queued
    if record.cancel_requested:
        _finish(jobs, job_uuid, "REVOKED", error=Canceled("canceled by the user").to_dict())
        return "REVOKED"
    now = utcnow()
    started = jobs.transition(job_uuid, ACTIVE, {
        "status": "STARTED", "started_at": record.started_at or now,
        "attempt_started_at": now, "attempts": 1, "worker": self.request.hostname,
        "error": None,
    })
    if started is None:
        return "SKIPPED"

    timer = StageTimer()

    def on_stage(stage: str) -> None:
        timer.enter(stage)
        log.info("job.stage", stage=stage, attempt=started.attempts)
        jobs.transition(job_uuid, RUNNING, {
            "status": "PROGRESS", "stage": stage,
            "stages": [{"stage": stage, "at": utcnow(), "attempt": started.attempts}],
        })

    def check_canceled() -> None:
        current = jobs.get(job_uuid)
        if current is not None and current.cancel_requested:
            raise Canceled("canceled by the user")

    soft_limit_message = f"job exceeded its time limit ({config['JOB_SOFT_TIME_LIMIT']} s)"
    try:
        result = svc.pipeline.run(job_uuid, started.job_request, started.owner,
                                  on_stage=on_stage, check_canceled=check_canceled)
    except Canceled as e:
        _finish(jobs, job_uuid, "REVOKED", error=e.to_dict())
        return "REVOKED"
    except TfgenError as e:
        if _soft_limit_hit(e):
            return _timeout(jobs, job_uuid, soft_limit_message)
        max_retries = int(config["JOB_MAX_RETRIES"])
        if e.retryable and self.request.retries < max_retries:
            countdown = retry_countdown(self.request.retries, int(config["JOB_RETRY_BACKOFF_MAX"]),
                                        e.details.get("retry_after"))
            JOB_RETRIES.labels(e.code).inc()
            log.warning("job.retry", code=e.code, countdown=round(countdown, 1))
            jobs.transition(job_uuid, RUNNING, {
                "status": "RETRY", "error": e.to_dict(),
                "stages": [{"stage": "retry", "at": utcnow(), "attempt": started.attempts,
                            "countdown": round(countdown, 1), "code": e.code}],
            })
            raise self.retry(countdown=countdown, exc=e, max_retries=max_retries) from e
        _finish(jobs, job_uuid, "FAILURE", error=e.to_dict())
        return "FAILURE"
    except Exception as e:  # SoftTimeLimitExceeded itself lands here
        if _soft_limit_hit(e):
            return _timeout(jobs, job_uuid, soft_limit_message)
        log.exception("job.internal_error")
        _finish(jobs, job_uuid, "FAILURE", error={
            "code": "INTERNAL", "retryable": False,
            "message": "internal error; the operators have the details in the logs"})
        return "FAILURE"
    finally:
        timer.close()  # the stage a job ended in counts too, however it ended
    _finish(jobs, job_uuid, "SUCCESS", stage="done", result=dict(result),
            stages=[{"stage": "done", "at": utcnow(), "attempt": started.attempts}])
    return "SUCCESS"


@task_revoked.connect
def _on_revoked(sender: Any = None, request: Any = None, expired: bool = False,
                **_: Any) -> None:
    """A message that waited past ``JOB_QUEUE_EXPIRES`` ends its job as TIMEOUT."""
    if not expired or request is None:
        return
    flask_app = getattr(getattr(sender, "app", None), "flask_app", None)
    if flask_app is None:
        return
    with flask_app.app_context():
        _timeout(flask_app.extensions["tfgen"].jobs, request.id,
                 "job waited in the queue longer than JOB_QUEUE_EXPIRES")
