"""The one lifecycle hook: every job and request change goes through ``Lifecycle``.

- A job changes status only through ``JobStore.transition`` (a compare-and-set), and the
  job store the services hand out is a ``HookedJobStore``: each status transition carries
  its event (``Lifecycle.job_event``), which the store writes in the transition's own
  atomic step (one MULTI/EXEC on Redis, one SQL transaction), so a status change and its
  event land together or not at all. After a transition that won,
  ``Lifecycle.job_written`` counts the event, tells ``on_append`` and steps the request
  record. The worker, the cancel path and the overdue rules therefore feed the hook
  without knowing of it, and no caller writes an event.
- What is not in that atomic step: the request record's step (another key or table,
  written right after). The atomic step marks the job in the store's follow-up index,
  and the mark is cleared once the step is done. If the step fails
  (``lifecycle.hook_failed``, logged and counted), the mark stays, and the beat sweep
  (``Lifecycle.catch_up``) re-derives the step from the job's record as it then stands,
  unless the request has moved on to a later job or the step had landed after all.
- A request changes only through ``Lifecycle.request_step`` (from a job, a GitLab
  webhook or the reconciler), which applies a step of ``app/core/requests.py`` inside
  the request store's compare-and-set and appends ``request.<state>`` when the state moved.

Events (``app/core/events.py``) are written here and nowhere else; after each append
``on_append`` (when set) is told, which is how webhooks out hear of it
(``app/core/webhooks.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any
from urllib.parse import urlsplit

from app.core.events import EventLog
from app.core.jobs import JobRecord, JobStore, utcnow
from app.core.jobs.record import EventFor
from app.core.requests import RequestRecord, RequestStore, Step, job_step, request_key

__all__ = ["JOB_EVENTS", "HookedJobStore", "Lifecycle"]

log = logging.getLogger(__name__)

JOB_EVENTS = {"STARTED": "job.started", "RETRY": "job.retry", "SUCCESS": "job.succeeded",
              "FAILURE": "job.failed", "REVOKED": "job.canceled"}


class Lifecycle:
    """Carries job and request changes to the request records and the event log.

    Args:
        events: The event log.
        requests: The request store.
        target_branch: The branch merge requests and git branches aim at.
        gitlab_url: GitLab's base URL, to name a project by its path.
        observer: Told the type of each event appended, and ``lifecycle.hook_failed``
            (metrics).
        on_append: Called with the cursor of each appended event (webhooks out). It
            must be cheap; what it raises is logged, never raised: the event is written.
    """

    def __init__(self, events: EventLog, requests: RequestStore, *, target_branch: str = "main",
                 gitlab_url: str | None = None,
                 observer: Callable[[str], None] = lambda kind: None,
                 on_append: Callable[[str], None] | None = None) -> None:
        self.on_append = on_append
        self.events = events
        self.observer = observer
        self.requests = requests
        self.target_branch = target_branch
        self.gitlab_url = (gitlab_url or "").rstrip("/")

    # --- jobs ----------------------------------------------------------------------------

    def job_changed(self, job: JobRecord) -> None:
        """A job's status changed (called once per winning transition): append its event
        in a write of its own, then step the request (``HookedJobStore`` writes the event
        with the transition instead, and calls ``job_written``)."""
        event = self.job_event(job)
        if event is None:
            return
        event["id"] = self.events.append(event)
        self.job_written(job, event)

    def job_event(self, job: JobRecord) -> dict[str, Any] | None:
        """The event of ``job``'s status as it now stands (None: that status has none)."""
        kind = JOB_EVENTS.get(job.status)
        if kind is None:
            return None
        request = job.request
        data: dict[str, Any] = {"status": job.status, "stage": job.stage,
                                "attempts": job.attempts, "dry_run": bool(request.get("dry_run"))}
        if job.error:
            data["error"] = {"code": job.error.get("code"), "message": job.error.get("message")}
        if job.status == "SUCCESS" and job.result:
            data["merge_request"] = job.result.get("merge_request")
            data["commit"] = job.result.get("commit")
        return self._event(kind, job.owner, request, job.uuid, data)

    def job_written(self, job: JobRecord, event: Mapping[str, Any]) -> None:
        """``event`` of ``job``'s status change is in the log: count it, tell ``on_append``,
        step the request record."""
        self._appended(str(event["type"]), str(event["id"]))
        request = job.request
        if request.get("dry_run"):
            return  # a dry run changes nothing anywhere: it is not the request's life
        key = request_key(request["cloud_id"], request["resource_type"], request["request_id"])
        step = job_step(job.document(), target_branch=self.target_branch,
                        project_path=self.project_path)
        self.request_step(key, step, source="job", job_uuid=job.uuid)

    def catch_up(self, jobs: JobStore, older_than: float = 60.0, limit: int = 500) -> int:
        """Redo the request step of each job whose follow-up mark is ``older_than`` old.

        The mark is written with the job's event and cleared after its request step, so
        a mark left behind is a step that may not have landed. The step is re-derived
        from the job as it stands now, and skipped when the request record already has
        it or has moved on to a later job. Returns how many marks were settled.
        """
        settled = 0
        for uuid in jobs.followups(older_than, limit):
            try:
                job = jobs.get(uuid)
                if job is not None and job.status in JOB_EVENTS and \
                        not job.request.get("dry_run"):
                    self._redo_request_step(job)
                jobs.followup_done(uuid)
            except Exception:  # still unreachable: the mark stays for the next sweep
                log.exception("lifecycle.catch_up_failed: job %s", uuid)
                continue
            settled += 1
        return settled

    def _redo_request_step(self, job: JobRecord) -> None:
        request = job.request
        key = request_key(request["cloud_id"], request["resource_type"], request["request_id"])
        step = job_step(job.document(), target_branch=self.target_branch,
                        project_path=self.project_path)
        self.request_step(key, _unless_seen(job, step), source="job", job_uuid=job.uuid)

    def project_path(self, web_url: str | None) -> str | None:
        """``platform/infra-live`` from ``https://gitlab.example.com/platform/infra-live``."""
        if not web_url:
            return None
        if self.gitlab_url and web_url.startswith(self.gitlab_url + "/"):
            return web_url[len(self.gitlab_url) + 1:].strip("/")
        return urlsplit(web_url).path.strip("/") or None

    # --- requests ------------------------------------------------------------------------

    def request_step(self, key: str, step: Step, *, source: str,
                     job_uuid: str | None = None) -> RequestRecord | None:
        """Apply ``step`` to the record ``key``; append ``request.<state>`` if it moved."""
        seen: dict[str, str | None] = {}

        def noting_previous(current: RequestRecord | None) -> Any:
            seen["previous"] = current.state if current else None  # the winning try's
            return step(current)

        record, changed = self.requests.update(key, noting_previous)
        if record is None:
            return None
        self._link(record)
        if changed:
            last = record.history[-1] if record.history else {}
            data = {"state": record.state, "previous": seen.get("previous"),
                    "source": source, "detail": last.get("detail"),
                    "merge_request": record.merge_request, "branch": record.branch,
                    "owners": record.owners}
            request = {"cloud_id": record.cloud_id, "resource_type": record.resource_type,
                       "request_id": record.request_id}
            self._append(f"request.{record.state}", record.owner, request,
                         job_uuid or record.last_job, data)
        return record

    def _link(self, record: RequestRecord) -> None:
        """Let webhooks find the record by project and branch, and by merge commit."""
        mr = record.merge_request
        if not mr or not mr.get("project_path"):
            return
        path = mr["project_path"]
        self.requests.link(f"branch:{path}:{mr['source_branch']}", record.key)
        if mr.get("merge_commit_sha"):
            self.requests.link(f"commit:{path}:{mr['merge_commit_sha']}", record.key)

    @staticmethod
    def _event(kind: str, owner: str, request: Mapping[str, Any], job_uuid: str | None,
               data: Mapping[str, Any]) -> dict[str, Any]:
        return {"type": kind, "at": utcnow(), "owner": owner,
                "cloud_id": request["cloud_id"], "resource_type": request["resource_type"],
                "request_id": request["request_id"], "job_uuid": job_uuid, "data": dict(data)}

    def _append(self, kind: str, owner: str, request: Mapping[str, Any], job_uuid: str | None,
                data: Mapping[str, Any]) -> None:
        cursor = self.events.append(self._event(kind, owner, request, job_uuid, data))
        self._appended(kind, cursor)

    def _appended(self, kind: str, cursor: str) -> None:
        self.observer(kind)
        if self.on_append is not None:
            try:
                self.on_append(cursor)
            except Exception:  # the beat sweep fans out what this call did not
                log.exception("lifecycle.on_append_failed", extra={"cursor": cursor})


def _unless_seen(job: JobRecord, step: Step) -> Step:
    """``step`` of ``job``, unless the request already took it or has a later job."""
    verb = {"STARTED": "started", "SUCCESS": "succeeded"}.get(job.status,
                                                              f"ended {job.status}")
    mark = f"job {job.uuid} {verb}"

    def guarded(current: RequestRecord | None) -> tuple[RequestRecord, bool] | None:
        if current is not None:
            if current.last_job != job.uuid and job.uuid in current.jobs:
                return None  # a later job of the request has moved it on
            if any(str(h.get("detail", "")).startswith(mark) for h in current.history):
                return None  # the step landed; only its mark was left behind
        return step(current)

    return guarded


class HookedJobStore:
    """A job store whose status transitions write their event with them, then call
    ``Lifecycle.job_written``.

    Everything else is the wrapped store's. The event is part of the transition's atomic
    write when the wrapped store has the event log bound (the services bind it): if the
    log cannot be written, the transition fails (retryable) and nothing changed. What
    comes after (the request step, the webhook nudge) failing is logged, never raised:
    the transition has happened, and the job must still end (``lifecycle.hook_failed``).
    """

    def __init__(self, inner: JobStore, lifecycle: Lifecycle) -> None:
        self.inner = inner
        self.lifecycle = lifecycle
        self.ttl = inner.ttl

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def create(self, record: JobRecord, idempotency_key: str | None = None) -> JobRecord:
        """Store a new record (bound to its idempotency key in the same step)."""
        return self.inner.create(record, idempotency_key)

    def get(self, uuid: str) -> JobRecord | None:
        """Return the record."""
        return self.inner.get(uuid)

    def delete(self, uuid: str) -> None:
        """Remove a record."""
        self.inner.delete(uuid)

    def transition(self, uuid: str, allowed: Collection[str], changes: Mapping[str, Any],
                   event: EventFor | None = None) -> JobRecord | None:
        """The wrapped transition, with its event when it changes the status; then the hook."""
        if "status" not in changes:
            return self.inner.transition(uuid, allowed, changes, event)
        if getattr(self.inner, "events", None) is None:  # no log bound: two writes
            record = self.inner.transition(uuid, allowed, changes, event)
            if record is not None:
                self._after(record, self.lifecycle.job_changed)
            return record
        built: list[dict[str, Any] | None] = [None]

        def event_for(record: JobRecord) -> dict[str, Any] | None:
            built[0] = self.lifecycle.job_event(record)  # the attempt that won sets it last
            return built[0]

        record = self.inner.transition(uuid, allowed, changes, event_for)
        written = built[0]
        if record is None or written is None:
            return record
        # Done: clear the job's follow-up mark. Failed: the mark stays for the sweep.
        if self._after(record, lambda job: self.lifecycle.job_written(job, written)):
            self._after(record, lambda job: self.inner.followup_done(job.uuid))
        return record

    def _after(self, record: JobRecord, hook: Callable[[JobRecord], None]) -> bool:
        try:
            hook(record)
        except Exception:
            log.exception("lifecycle.hook_failed: job %s %s", record.uuid, record.status)
            self.lifecycle.observer("lifecycle.hook_failed")
            return False
        return True

    def list(self, owner: str | None, limit: int = 50) -> list[JobRecord]:
        """Recent records."""
        return self.inner.list(owner, limit)

    def ping(self) -> None:
        """Ping the wrapped store."""
        self.inner.ping()

    def unfinished(self, limit: int = 500) -> tuple[JobRecord, ...]:
        """Records not yet final, oldest first."""
        return self.inner.unfinished(limit)

    def release_idempotency(self, key: str) -> None:
        """Forget an idempotency key."""
        self.inner.release_idempotency(key)

    def followups(self, older_than: float, limit: int = 500) -> tuple[str, ...]:
        """Jobs whose follow-up is not marked done."""
        return self.inner.followups(older_than, limit)

    def followup_done(self, uuid: str) -> None:
        """Mark a job's follow-up done."""
        self.inner.followup_done(uuid)
