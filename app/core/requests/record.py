"""The request record: one APEX request as tfgen knows it, its states and their ranks."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["HISTORY_KEPT", "JOBS_KEPT", "RANK", "RECONCILE_STATES", "STATES", "RequestRecord",
           "Step", "request_key"]

STATES = ("generating", "failed", "published", "mr_open", "merged", "closed", "applied",
          "apply_failed")
RANK = {"generating": 0, "failed": 0, "published": 1, "mr_open": 1, "closed": 1,
        "merged": 2, "applied": 3, "apply_failed": 3}
# States whose next move happens in GitLab or the remote: the reconciler looks at these.
RECONCILE_STATES = frozenset({"published", "mr_open", "merged"})
HISTORY_KEPT = 100
JOBS_KEPT = 50


def _utcnow() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def request_key(cloud_id: str, resource_type: str, request_id: int) -> str:
    """The record's key, ``<cloud_id>/<resource_type>/<request_id>``."""
    return f"{cloud_id}/{resource_type}/{int(request_id)}"


@dataclass
class RequestRecord:
    """One APEX request as tfgen knows it (the design's request document)."""

    cloud_id: str
    resource_type: str
    request_id: int
    state: str = "generating"
    merge_request: dict[str, Any] | None = None
    branch: dict[str, Any] | None = None
    owner: str = ""
    owners: list[str] = field(default_factory=list)
    last_job: str | None = None
    jobs: list[str] = field(default_factory=list)
    history: list[dict[str, Any]] = field(default_factory=list)
    updated_at: str = field(default_factory=_utcnow)

    @property
    def key(self) -> str:
        """``<cloud_id>/<resource_type>/<request_id>``."""
        return request_key(self.cloud_id, self.resource_type, self.request_id)

    def document(self) -> dict[str, Any]:
        """The request document the API answers."""
        return asdict(self)

    def to_json(self) -> str:
        """Serialise for the store."""
        return json.dumps(asdict(self), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> RequestRecord:
        """Rebuild from ``to_json`` output."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in json.loads(raw).items() if k in names})

    def move(self, state: str, source: str, detail: str) -> bool:
        """Go to ``state`` (recording it in ``history``); return whether it changed."""
        changed = state != self.state
        self.state = state
        self.note(source, detail)
        return changed

    def note(self, source: str, detail: str) -> None:
        """Add a history line for the current state."""
        self.updated_at = _utcnow()
        self.history = [*self.history, {"at": self.updated_at, "state": self.state,
                                        "source": source, "detail": detail}][-HISTORY_KEPT:]


# A step looks at a record (None: not there yet) and returns the record to store and
# whether its state changed, or None to change nothing.
Step = Callable[[RequestRecord | None], tuple[RequestRecord, bool] | None]
