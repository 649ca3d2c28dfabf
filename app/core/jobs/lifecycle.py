"""How a job ends: every ending goes through ``JobLifecycle.finish``, and only there.

A job ends in many places: its task (success, a failure, a cancel seen between stages,
the soft time limit), the worker's main process (the hard time limit, a child that died
once too often, a message that expired in the queue), the overdue rules (on read and by
the beat sweep) and a cancel of a queued job. Each of them calls ``finish`` with a
``TfgenError`` (never a hand-built dict); ``error_document`` turns it into the job
document's ``error`` here, once. A ``finish`` that wins its compare-and-set calls the
injected ``on_finished`` hook exactly once (metrics and the audit line, wired in
``app/services.py``); the job's event is written by the job store with the transition
itself (``app/core/lifecycle.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

from app.core.jobs.record import ACTIVE, FINAL, JobRecord, JobStore, utcnow
from app.errors import JOB_FAILURE_CODES, Canceled, InternalError, TfgenError

__all__ = ["CANCELABLE", "QUEUED", "RUNNING", "JobLifecycle", "OnFinished", "error_document"]

log = logging.getLogger(__name__)

#: Statuses of a job waiting for a worker: a cancel ends it at once.
QUEUED = frozenset({"PENDING", "RETRY"})
#: Statuses of a job a worker runs: a cancel asks, the worker ends it at the next stage.
RUNNING = frozenset({"STARTED", "PROGRESS"})
CANCELABLE = QUEUED | RUNNING

#: The hook told of each job that ended: the record as ended, and what the ending path
#: adds for the audit line (``canceled_by``).
OnFinished = Callable[[JobRecord, Mapping[str, Any]], None]


def error_document(error: TfgenError) -> dict[str, Any]:
    """The job document's ``error`` object for ``error``.

    A code outside the design's fixed list (an API error that reached a job) is reported
    as ``INTERNAL`` with the same message: no other code ever appears in a job document.
    """
    if error.code not in JOB_FAILURE_CODES:
        error = InternalError(error.message, details=error.details, retryable=error.retryable)
    return error.to_dict()


def _ignore(record: JobRecord, context: Mapping[str, Any]) -> None:
    """No hook wired (tests of the store alone)."""


class JobLifecycle:
    """Ends jobs, one way for all: ``finish``; ``cancel`` on top of it.

    Args:
        store: The job store (the services' store writes each status change's event
            with the transition).
        on_finished: Called once per job that ``finish`` ended (metrics, audit). What it
            raises is logged, never raised: the job has ended.
    """

    def __init__(self, store: JobStore, on_finished: OnFinished = _ignore) -> None:
        self.store = store
        self.on_finished = on_finished

    def finish(self, uuid: str, status: str, error: TfgenError | None = None, *,
               allowed: Collection[str] = ACTIVE, changes: Mapping[str, Any] | None = None,
               context: Mapping[str, Any] | None = None) -> JobRecord | None:
        """End job ``uuid`` as ``status`` unless it has ended (or left ``allowed``).

        Args:
            uuid: The job.
            status: ``SUCCESS``, ``FAILURE`` or ``REVOKED``.
            error: Why it failed or was canceled (None for ``SUCCESS``).
            allowed: The statuses it may end from (default: any unfinished one).
            changes: More fields to write in the same transition (``result``...).
            context: Fields the ending path adds to the audit line.

        Returns:
            The record as this call ended it; None when it had ended already, is
            unknown, or its status was not in ``allowed`` (nothing written, no hook).

        Raises:
            ValueError: ``status`` is not final, or ``error`` does not fit it.
            JobStoreUnavailable: The store did not answer.
        """
        if status not in FINAL or (error is None) != (status == "SUCCESS"):
            raise ValueError(f"a job ends SUCCESS without an error, or FAILURE/REVOKED "
                             f"with one (got {status}, {error!r})")
        ended = self.store.transition(uuid, allowed, {
            **(changes or {}), "status": status, "finished_at": utcnow(),
            "error": error_document(error) if error is not None else None})
        if ended is not None:
            try:
                self.on_finished(ended, context or {})
            except Exception:
                log.exception("job.finished_hook_failed: job %s %s", uuid, status)
        return ended

    def cancel(self, uuid: str, *, revoke: Callable[[str], None],
               canceled_by: str | None = None) -> JobRecord | None:
        """Cancel job ``uuid``: at once if queued, at the next stage if running.

        Args:
            uuid: The job.
            revoke: Tells the workers to drop the job's message (a broadcast); what it
                raises is logged: the worker skips an ended job's message anyway.
            canceled_by: Who asked (for the audit line).

        Returns:
            The record: final (REVOKED) when it was queued, with ``cancel_requested``
            when running; None when it had already ended.
        """
        ended = self.finish(uuid, "REVOKED", Canceled("canceled by the user"),
                            allowed=QUEUED, changes={"cancel_requested": True},
                            context={"canceled_by": canceled_by} if canceled_by else None)
        if ended is not None:
            try:
                revoke(uuid)
            except Exception:
                log.warning("job.revoke_broadcast_failed: job %s", uuid)
            return ended
        # Running: the worker's next stage transition reads the flag and ends it there.
        return self.store.transition(uuid, RUNNING, {"cancel_requested": True})
