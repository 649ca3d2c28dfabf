"""Reconciliation: for sites GitLab's webhooks cannot reach, read what they would say.

Each run takes at most ``batch`` requests in ``published``, ``mr_open`` or ``merged``,
least recently checked first (so a long list is covered over several runs), reads
their merge request (and once merged, the target branch's pipeline for the merge
commit) or, with the git publisher, whether the branch reached its target, and applies
the same steps as the webhooks with source ``reconcile``. Calls per run are bounded:
at most two reads per request, each retried within the publisher's bounds; when GitLab
keeps failing or rate limiting past them, the run stops and the next one goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.core.lifecycle import Lifecycle
from app.core.model import Secret
from app.core.requests import (
    RequestRecord,
    branch_merged_step,
    merge_request_step,
    pipeline_step,
)
from app.errors import GitLabUnavailable, TfgenError

__all__ = ["Reconciler", "RunReport"]

log = logging.getLogger(__name__)

_ACTIONS = {"merged": "merge", "closed": "close", "opened": "reopen", "locked": None}


@dataclass
class RunReport:
    """What one run did."""

    checked: int = 0
    moved: int = 0
    errors: int = 0
    stopped: str | None = None
    moves: list[str] = field(default_factory=list)


@dataclass
class Reconciler:
    """Reads GitLab (or the git remote) for the requests waiting on it.

    Args:
        lifecycle: The hook steps go through.
        publisher: The configured publisher; ``read_merge_request`` (GitLab) or
            ``branch_merged`` (git) is what it asks.
        batch: Requests per run (``RECONCILE_BATCH``).
        token_for: The GitLab token for a request's owner, when there is no service token.
    """

    lifecycle: Lifecycle
    publisher: Any
    batch: int = 50
    token_for: Callable[[str], Secret | None] = lambda owner: None

    def run(self) -> RunReport:
        """Check up to ``batch`` requests; return what happened."""
        report = RunReport()
        for record in self.lifecycle.requests.due(self.batch):
            report.checked += 1
            try:
                moved = self._check(record)
            except GitLabUnavailable as e:
                report.stopped = e.message
                log.warning("reconcile stopped: %s", e.message)
                break
            except TfgenError as e:
                report.errors += 1
                log.warning("reconcile %s: %s", record.key, e.message)
                continue
            if moved:
                report.moved += 1
                report.moves.append(f"{record.key}:{moved}")
        return report

    def _check(self, record: RequestRecord) -> str | None:
        mr = record.merge_request
        if mr and hasattr(self.publisher, "read_merge_request"):
            return self._check_merge_request(record, mr)
        if record.branch and record.state == "published" \
                and hasattr(self.publisher, "branch_merged"):
            head = self.publisher.branch_merged(record.branch["name"],
                                                record.branch["target_branch"])
            if head is None:
                return None
            return self._apply(record, branch_merged_step(target_sha=head, source="reconcile"))
        return None

    def _check_merge_request(self, record: RequestRecord, mr: dict[str, Any]) -> str | None:
        project = mr.get("project_id") or mr.get("project_path")
        if not project:
            return None
        token = None if getattr(self.publisher, "_fallback_token", None) \
            else self.token_for(record.owner)
        seen = self.publisher.read_merge_request(project, int(mr["iid"]),
                                                 target_branch=mr["target_branch"], token=token)
        if seen is None:
            return None
        moved = None
        action = _ACTIONS.get(seen["state"])
        if action:
            moved = self._apply(record, merge_request_step(
                iid=int(mr["iid"]), action=action, source="reconcile",
                merge_commit_sha=seen.get("merge_commit_sha")))
        pipeline = seen.get("pipeline")
        if pipeline and seen.get("merge_commit_sha"):
            moved = self._apply(record, pipeline_step(
                pipeline_id=pipeline["id"], status=pipeline["status"],
                sha=seen["merge_commit_sha"], ref=mr["target_branch"], source="reconcile",
                finished_at=pipeline.get("finished_at"))) or moved
        return moved

    def _apply(self, record: RequestRecord, step: Any) -> str | None:
        before = record.state
        after = self.lifecycle.request_step(record.key, step, source="reconcile")
        return after.state if after is not None and after.state != before else None
