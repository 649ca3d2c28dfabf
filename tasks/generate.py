"""The generation task: thin. Ids in, stages out, retry decisions; the work is in core.

Reliability settings (``config/settings/``): late ack and reject on worker lost, so a
worker killed mid-job has the job run again; the publisher makes that re-run idempotent.
The job record, not Celery's result, is what the API shows; Celery's state (and Flower,
which learns it from task events) tells the same story:

- SUCCESS returns; FAILURE raises ``JobFailed`` (Celery: FAILURE, ``task-failed``; it is
  in ``throws``, so it is logged without a traceback and never retried by Celery);
  a cancel marks the task REVOKED, sends ``task-revoked`` and raises ``Ignore``.
- Each start counts a delivery in the record: a child killed by a signal (SIGKILL, a
  SIGABRT from native code) cannot count its own death. At ``JOB_MAX_DELIVERIES`` the
  job ends FAILURE ``INTERNAL`` saying the worker died.
- The job store (Redis) restarting is waited out for ``JOB_STORE_RETRY_TIME``; past
  that the message is handed back to the broker (``Reject(requeue=True)``), never
  acked and dropped, so an outage delays a job but cannot orphan it.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

from billiard.exceptions import WorkerLostError
from celery import Celery, Task, shared_task, states
from celery.exceptions import Ignore, Reject, SoftTimeLimitExceeded
from celery.signals import task_revoked
from flask import current_app
from kombu.exceptions import OperationalError
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from app.core.backoff import retry_countdown
from app.core.jobs import (
    ACTIVE,
    RUNNING,
    JobLifecycle,
    JobRecord,
    error_document,
    expire_overdue,
    utcnow,
)
from app.errors import (
    Canceled,
    InternalError,
    JobStoreUnavailable,
    JobTimeout,
    QueueUnavailable,
    TfgenError,
)
from app.logs import get_logger
from app.metrics import JOB_RETRIES, StageTimer
from app.services import Services
from tasks.observe import CORRELATION_HEADER, TracedRequest

log = get_logger("tfgen.tasks")

T = TypeVar("T")


class JobFailed(Exception):
    """Raised by a job that ended FAILURE, so Celery and Flower show FAILURE too."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class JobStoreAway(Exception):
    """The job store stayed unreachable past ``JOB_STORE_RETRY_TIME``."""


class PatientJobs:
    """The job lifecycle as a task uses it: an outage (a Redis restart) is waited out."""

    def __init__(self, jobs: JobLifecycle, seconds: float) -> None:
        self.jobs = jobs
        self._retrying = Retrying(
            retry=retry_if_exception_type(JobStoreUnavailable),
            stop=stop_after_delay(seconds), wait=wait_exponential_jitter(0.2, 3),
            before_sleep=lambda state: log.warning(
                "job.store_unavailable", attempt=state.attempt_number,
                error=str(state.outcome.exception()) if state.outcome else None),
            reraise=True)

    def _call(self, fn: Callable[[], T]) -> T:
        try:
            return self._retrying(fn)
        except JobStoreUnavailable as e:
            raise JobStoreAway(str(e)) from e

    def get(self, uuid: str) -> JobRecord | None:
        """``JobStore.get``, waiting out an outage."""
        return self._call(lambda: self.jobs.store.get(uuid))

    def transition(self, uuid: str, allowed: Collection[str], changes: Mapping[str, Any]
                   ) -> JobRecord | None:
        """``JobStore.transition``, waiting out an outage."""
        return self._call(lambda: self.jobs.store.transition(uuid, allowed, changes))

    def finish(self, uuid: str, status: str, error: TfgenError | None = None,
               **changes: Any) -> JobRecord | None:
        """``JobLifecycle.finish``, waiting out an outage; the record as it now stands."""
        return self._call(lambda: self.jobs.finish(uuid, status, error, changes=changes)
                          or self.jobs.store.get(uuid))

    def expire_overdue(self, record: JobRecord, config: Mapping[str, Any]) -> JobRecord:
        """``expire_overdue``, waiting out an outage."""
        return self._call(lambda: expire_overdue(self.jobs, record, config))


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


def worker_died(deliveries: int) -> InternalError:
    """The error of a job whose worker died on each of its ``deliveries``."""
    return InternalError(f"the worker process died running this job, {deliveries} time(s) "
                         "(JOB_MAX_DELIVERIES); the operators have the details in the logs")


def published_before(record: JobRecord) -> bool:
    """Did an earlier attempt of the job enter publish (recorded before the publisher
    runs)? Only then can its branch hold the job's own commit (``Change.earlier_attempt``)."""
    return any(s.get("stage") == "publish" for s in record.stages)


def timed_out(message: str) -> JobTimeout:
    """A time limit ended the job (retryable: it may fit another time)."""
    return JobTimeout(message, retryable=True)


def _finish(jobs: JobLifecycle, job_uuid: str, status: str, error: TfgenError
            ) -> JobRecord | None:
    """End the job unless it has ended already; return its record as it now stands."""
    return jobs.finish(job_uuid, status, error) or jobs.store.get(job_uuid)


def conclude(task: Task, record: JobRecord | None) -> str:
    """Leave the task the way its job ended, so Celery's state says what the record says.

    Raises:
        JobFailed: The job ended FAILURE (Celery: FAILURE, ``task-failed``).
        Ignore: The job was canceled; the task is marked REVOKED first.
    """
    if record is None:
        return "MISSING"
    if record.status == "FAILURE":
        error = record.error or {}
        raise JobFailed(str(error.get("code", "INTERNAL")), str(error.get("message", "")))
    if record.status == "REVOKED":
        reason = str((record.error or {}).get("message", "canceled"))
        try:
            task.backend.mark_as_revoked(task.request.id, reason, request=task.request)
            task.send_event("task-revoked", terminated=False, signum=None, expired=False)
        except Exception as e:  # a result store or broker outage: the record says it
            log.warning("job.revoke_not_told", error=type(e).__name__)
        raise Ignore(reason)
    return record.status


def tell_celery_failed(celery: Celery, record: JobRecord, hostname: str | None = None) -> None:
    """Record a job ended outside its task (queue expiry, sweep) as FAILURE in Celery.

    Stores the state in the result backend and sends ``task-failed``, which Flower reads.
    """
    error = record.error or {}
    exc = JobFailed(str(error.get("code", "INTERNAL")), str(error.get("message", "")))
    try:
        celery.backend.store_result(record.uuid, exc, states.FAILURE)
        with celery.events.default_dispatcher(hostname=hostname) as dispatcher:
            dispatcher.send("task-failed", uuid=record.uuid, exception=repr(exc),
                            traceback=None)
    except Exception as e:  # the record is the truth; Celery's view is best effort
        log.warning("job.failure_not_told", error=type(e).__name__)


class JobMessage(TracedRequest):
    """The task message in the worker's main process, which outlives a killed child."""

    def on_timeout(self, soft: bool, timeout: float) -> None:
        """Past the hard limit the child is killed unheard: end its job from here."""
        super().on_timeout(soft, timeout)
        if soft:
            return
        flask_app = self.task.app.flask_app
        with flask_app.app_context():
            _finish(flask_app.extensions["tfgen"].job_lifecycle, self.id, "FAILURE",
                    timed_out(f"job killed at its hard time limit ({timeout:g} s)"))

    def on_failure(self, exc_info: Any, send_failed_event: bool = True,
                   return_ok: bool = False) -> None:
        """A child that died at its job's last allowed delivery ends the job here."""
        exc = getattr(exc_info.exception, "exc", exc_info.exception)
        if isinstance(exc, WorkerLostError):
            self._end_if_out_of_deliveries()
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)

    def _end_if_out_of_deliveries(self) -> None:
        flask_app = self.task.app.flask_app
        with flask_app.app_context():
            jobs: JobLifecycle = flask_app.extensions["tfgen"].job_lifecycle
            try:
                record = jobs.store.get(self.id)
                if record is None or record.status not in RUNNING or \
                        record.deliveries < int(flask_app.config["JOB_MAX_DELIVERIES"]):
                    return
                log.error("job.worker_died", deliveries=record.deliveries, job_uuid=self.id)
                _finish(jobs, self.id, "FAILURE", worker_died(record.deliveries))
            except TfgenError as e:  # store away: the redelivery counts and ends it
                log.warning("job.worker_died_not_recorded", error=str(e))


# No STARTED state stored in the result backend (a SET and a PUBLISH a job): the job
# record says STARTED, and Flower learns it from the task-started event, sent anyway.
# The final state is still stored (Celery's view agrees with the record).
@shared_task(bind=True, name="tfgen.generate", acks_late=True, reject_on_worker_lost=True,
             track_started=False, Request=JobMessage, throws=(JobFailed,))
def generate(self: Task, job_uuid: str) -> str:
    """Run job ``job_uuid`` through fetch, render, validate and publish."""
    svc: Services = current_app.extensions["tfgen"]
    jobs = PatientJobs(svc.job_lifecycle, float(current_app.config["JOB_STORE_RETRY_TIME"]))
    try:
        return _run(self, svc, jobs, job_uuid)
    except JobStoreAway as e:
        # Not acked: back to the queue (or, with the broker away too, left unacked for
        # the visibility timeout to restore). The record stays as it was.
        log.error("job.requeued", reason=f"job store unreachable: {e}")
        raise Reject(str(e), requeue=True) from e


def submit(job_uuid: str, correlation_id: str, request_ref: str) -> None:
    """Put job ``job_uuid`` on the queue: the API's one way to start a job.

    Sent through the current Flask app's Celery app, on ``JOB_QUEUE``, expiring after
    ``JOB_QUEUE_EXPIRES``, with the correlation id in the message headers.

    Args:
        job_uuid: The job (also the task id, so Flower and the record agree).
        correlation_id: The request's correlation id, logged by the worker.
        request_ref: ``aws/rds/42``: what Flower shows as the task's arguments.

    Raises:
        QueueUnavailable: The broker did not take the message.
    """
    config = current_app.config
    celery: Celery = current_app.extensions["celery"]
    try:
        # The worker's own time limits govern: Celery would otherwise stamp this
        # process's limits for the (locally registered) task into the message, and a
        # limit in the message wins over the worker's settings.
        celery.send_task(
            generate.name, args=[job_uuid], task_id=job_uuid, argsrepr=request_ref,
            time_limit=None, soft_time_limit=None,
            queue=config["JOB_QUEUE"], expires=config["JOB_QUEUE_EXPIRES"],
            headers={CORRELATION_HEADER: correlation_id}, retry=True,
        )
    except (OperationalError, OSError) as e:
        raise QueueUnavailable("job queue unavailable; nothing was recorded, try again") from e


def _run(self: Task, svc: Services, jobs: PatientJobs, job_uuid: str) -> str:
    config = current_app.config
    record = jobs.get(job_uuid)
    if record is None:
        log.warning("job.missing", reason="no record (expired or never written); dropped")
        return "MISSING"
    record = jobs.expire_overdue(record, config)
    if record.final:
        return conclude(self, record)  # redelivered after it ended, or canceled while queued
    if record.cancel_requested:
        return conclude(self, jobs.finish(job_uuid, "REVOKED", Canceled("canceled by the user")))
    redelivered = record.status in RUNNING  # the delivery that started it never ended
    deliveries = record.deliveries + 1 if redelivered else 1
    if deliveries > int(config["JOB_MAX_DELIVERIES"]):
        log.error("job.worker_died", deliveries=record.deliveries)
        return conclude(self, jobs.finish(job_uuid, "FAILURE", worker_died(record.deliveries)))
    now = utcnow()
    started = jobs.transition(job_uuid, ACTIVE, {
        "status": "STARTED", "started_at": record.started_at or now,
        "attempt_started_at": (record.attempt_started_at if redelivered else None) or now,
        "attempts": 1, "deliveries": deliveries, "worker": self.request.hostname,
        "error": None,
    })
    if started is None:
        return conclude(self, jobs.get(job_uuid))
    return conclude(self, _work(self, svc, jobs, started))


def _work(self: Task, svc: Services, jobs: PatientJobs, started: JobRecord) -> JobRecord | None:
    """Run the started job through the pipeline and end it by what happened."""
    job_uuid, attempt = started.uuid, started.attempts
    timer = StageTimer()

    def on_stage(stage: str) -> None:
        """Record the stage; a cancel asked for meanwhile ends the job here (the record
        the transition wrote tells, so no read of its own)."""
        timer.enter(stage)
        log.info("job.stage", stage=stage, attempt=attempt)
        entered = jobs.transition(job_uuid, RUNNING, {
            "status": "PROGRESS", "stage": stage,
            "stages": [{"stage": stage, "at": utcnow(), "attempt": attempt}],
        }) or jobs.get(job_uuid)  # no longer running: ended elsewhere, or gone
        if entered is not None and entered.cancel_requested:
            raise Canceled("canceled by the user")

    try:
        result = svc.pipeline.run(job_uuid, started.job_request, started.owner,
                                  on_stage=on_stage, earlier_attempt=published_before(started))
    except JobStoreAway:
        raise
    except Exception as e:  # SoftTimeLimitExceeded itself lands here too
        status, error = _failed(self, jobs, started, e)
        return jobs.finish(job_uuid, status, error)
    finally:
        timer.close()  # the stage a job ended in counts too, however it ended
    return jobs.finish(job_uuid, "SUCCESS", stage="done", result=dict(result),
                       stages=[{"stage": "done", "at": utcnow(), "attempt": attempt}])


def _failed(self: Task, jobs: PatientJobs, started: JobRecord, e: Exception
            ) -> tuple[str, TfgenError]:
    """How the job ends after the pipeline raised ``e``, unless it is retried (raises)."""
    config = current_app.config
    if isinstance(e, Canceled):
        return "REVOKED", e
    if _soft_limit_hit(e):
        return "FAILURE", timed_out(
            f"job exceeded its time limit ({config['JOB_SOFT_TIME_LIMIT']} s)")
    if isinstance(e, TfgenError):
        max_retries = int(config["JOB_MAX_RETRIES"])
        if e.retryable and self.request.retries < max_retries:
            _retry(self, jobs, started.uuid, e, started.attempts, max_retries)
        return "FAILURE", e
    log.exception("job.internal_error")
    return "FAILURE", InternalError(
        "internal error; the operators have the details in the logs")


def _retry(self: Task, jobs: PatientJobs, job_uuid: str, e: TfgenError, attempt: int,
           max_retries: int) -> None:
    """Record the retry and send the next message; raises Celery's ``Retry``."""
    config = current_app.config
    countdown = retry_countdown(self.request.retries, int(config["JOB_RETRY_BACKOFF_MAX"]),
                                e.details.get("retry_after"))
    JOB_RETRIES.labels(e.code).inc()
    log.warning("job.retry", code=e.code, countdown=round(countdown, 1))
    jobs.transition(job_uuid, RUNNING, {
        "status": "RETRY", "error": error_document(e),
        "stages": [{"stage": "retry", "at": utcnow(), "attempt": attempt,
                    "countdown": round(countdown, 1), "code": e.code}],
    })
    # The broker may be restarting too: keep trying to send the retry for as long as
    # the job store is waited for, and if it still fails, hand the message back
    # instead of letting Celery drop it (its own fallback is Reject(requeue=False)).
    wait = float(config["JOB_STORE_RETRY_TIME"])
    policy = {"max_retries": max(1, int(wait // 2)), "interval_start": 0.5,
              "interval_step": 0.5, "interval_max": 2.0}
    try:
        raise self.retry(countdown=countdown, exc=e, max_retries=max_retries,
                         retry=True, retry_policy=policy) from e
    except Reject as lost:
        raise JobStoreAway(f"could not send the retry: {lost.reason}") from e


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
        record = _finish(flask_app.extensions["tfgen"].job_lifecycle, request.id, "FAILURE",
                         timed_out("job waited in the queue longer than JOB_QUEUE_EXPIRES"))
        if record is not None and record.status == "FAILURE":
            tell_celery_failed(sender.app, record, getattr(request, "hostname", None))
