"""The job record, its statuses and the store interface every job store implements."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from typing import Any, Protocol

from app.core.model import JobRequest

__all__ = ["ACTIVE", "FINAL", "STATUSES", "EventFor", "JobRecord", "JobStore", "apply_changes",
           "parse_time", "text", "utcnow"]

#: Every status a job can have, in the order it goes through them (the API lists them so).
STATUSES = ("PENDING", "STARTED", "PROGRESS", "RETRY", "SUCCESS", "FAILURE", "REVOKED")
FINAL = frozenset({"SUCCESS", "FAILURE", "REVOKED"})
ACTIVE = frozenset(STATUSES) - FINAL


def utcnow() -> str:
    """Now, as an ISO-8601 UTC timestamp with milliseconds."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: str) -> dt.datetime:
    """Parse a timestamp written by ``utcnow``."""
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass
class JobRecord:
    """One job as the API shows it (the design's job document) plus bookkeeping."""

    uuid: str
    owner: str
    request: dict[str, Any]
    status: str = "PENDING"
    stage: str = "queued"
    submitted_at: str = field(default_factory=utcnow)
    started_at: str | None = None
    finished_at: str | None = None
    attempts: int = 0
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    correlation_id: str | None = None
    cancel_requested: bool = False
    stages: list[dict[str, Any]] = field(default_factory=list)
    attempt_started_at: str | None = None
    worker: str | None = None
    deliveries: int = 0
    """Deliveries of the current task message that started; a child killed mid-job
    (SIGKILL, SIGABRT) cannot count its own death, so each start counts instead."""

    @property
    def job_request(self) -> JobRequest:
        """The request as a value object."""
        return JobRequest.from_dict(self.request)

    @property
    def final(self) -> bool:
        """True once the job has ended (SUCCESS, FAILURE or REVOKED)."""
        return self.status in FINAL

    def document(self) -> dict[str, Any]:
        """Return the job document APEX polls (the design's shape)."""
        return {
            "uuid": self.uuid,
            "status": self.status,
            "stage": self.stage,
            "owner": self.owner,
            "request": self.request,
            "submitted_at": self.submitted_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "attempts": self.attempts,
            "result": self.result,
            "error": self.error,
            "correlation_id": self.correlation_id,
            "cancel_requested": self.cancel_requested,
            "stages": self.stages,
        }

    def to_fields(self) -> dict[Any, str]:
        """Serialise every field to a string (Redis hash, SQL row).

        The text ``asdict`` then ``json.dumps`` would give, without ``asdict``'s deep copy
        of every value (a quarter of a submit's record write): a dataclass met anywhere
        inside is turned into a dict as ``asdict`` would.
        """
        encode = _ENCODE
        return {name: encode(getattr(self, name)) for name in _FIELD_ORDER}

    @classmethod
    def from_fields(cls, data: Mapping[Any, Any]) -> JobRecord:
        """Rebuild from ``to_fields`` output.

        The fields' JSON texts are read as one object, one parse instead of one per field
        (half the time of a poll's record read).
        """
        prefixes = _FIELD_PREFIXES
        members = [prefix + text(v) for k, v in data.items()
                   if (prefix := prefixes.get(k)) is not None]
        return cls(**json.loads("{" + ",".join(members) + "}"))


_FIELD_ORDER = tuple(f.name for f in fields(JobRecord))
_FIELD_NAMES = frozenset(_FIELD_ORDER)
# '"name":' by field name, as text and as bytes (a Redis hash's keys): a record read
# looks each key up once instead of decoding it and dumping the name.
_FIELD_PREFIXES: dict[str | bytes, str] = {
    key: json.dumps(name) + ":" for name in _FIELD_ORDER for key in (name, name.encode())}


def _plain(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


# One encoder for every field: json.dumps with any non-default argument builds a new
# JSONEncoder per call, which cost half of a record's serialisation.
_ENCODE = json.JSONEncoder(separators=(",", ":"), default=_plain).encode


def text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


#: Builds the event of a status change from the record as the transition writes it (None:
#: no event). The store writes it in the transition's own atomic step and sets its
#: ``id`` (the cursor) on the mapping it was given.
EventFor = Callable[[JobRecord], dict[str, Any] | None]


class JobStore(Protocol):
    """Where job records live."""

    ttl: int

    def create(self, record: JobRecord, idempotency_key: str | None = None) -> JobRecord:
        """Store a new record, bound to ``idempotency_key`` in the same atomic step.

        Returns:
            ``record`` when stored; when ``idempotency_key`` is already bound to a job
            whose record exists, that job's record (and nothing is stored). A key bound
            to a job without a record (never created, or expired) is taken over.
        """

    def get(self, uuid: str) -> JobRecord | None:
        """Return the record, or None when unknown or expired."""

    def delete(self, uuid: str) -> None:
        """Remove a record (an enqueue that failed leaves nothing behind)."""

    def transition(
        self, uuid: str, allowed: Collection[str], changes: Mapping[str, Any],
        event: EventFor | None = None,
    ) -> JobRecord | None:
        """Apply ``changes`` only if the status is in ``allowed``; return the new record.

        Returns None (and changes nothing) when the record is missing or its status is
        not allowed. ``stages`` in ``changes`` is appended, ``attempts`` is added. With
        ``event``, the event it builds is appended to the event log bound to the store
        in the same atomic write: both land, or neither.
        """

    def list(self, owner: str | None, limit: int = 50) -> list[JobRecord]:
        """Recent records, newest first; ``owner=None`` lists everyone's."""

    def unfinished(self, limit: int = 500) -> tuple[JobRecord, ...]:
        """Records not yet final, oldest first (the overdue sweep reads these)."""

    def ping(self) -> None:
        """Raise ``JobStoreUnavailable`` when the store does not answer."""

    def release_idempotency(self, key: str) -> None:
        """Forget ``key`` (its job was never enqueued)."""

    def followups(self, older_than: float, limit: int = 500) -> tuple[str, ...]:
        """Jobs whose event was written with a transition ``older_than`` seconds ago or
        more, and whose follow-up (the request step) is not marked done; oldest first."""

    def followup_done(self, uuid: str) -> None:
        """Mark the follow-up of job ``uuid``'s last event done."""


def apply_changes(record: JobRecord, changes: Mapping[str, Any]) -> JobRecord:
    for key, value in changes.items():
        if key == "stages":
            record.stages = [*record.stages, *value]
        elif key == "attempts":
            record.attempts += int(value)
        else:
            setattr(record, key, value)
    return record
