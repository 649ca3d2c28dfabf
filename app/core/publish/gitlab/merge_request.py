"""The merge-request half of a publish, and the reconciler's read of one.

A branch this publish created cannot have a merge request yet: it is opened at once
(one POST). Otherwise the open one is looked up first (``GET merge_requests?
source_branch=&state=opened``) and opened only when there is none. GitLab answers 409
to a second open MR for the same source branch, and a POST whose answer was lost may
have opened ours: both adopt what the lookup finds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

from app.core.model import Change
from app.core.publish.gitlab.client import NO_LIBRARY_RETRY, Ambiguous, Conversation, Rejected
from app.errors import GitLabUnavailable, InternalError

__all__ = ["MergeRequestOptions", "open_merge_request", "project_url", "read_merge_request"]


class MergeRequestOptions:
    """What new merge requests get: labels, an assignee, reviewers."""

    def __init__(self, labels: Sequence[str] = (), assignee_id: int | None = None,
                 reviewer_ids: Sequence[int] = ()) -> None:
        self.labels = tuple(labels)
        self.assignee_id = assignee_id
        self.reviewer_ids = tuple(reviewer_ids)

    def fields(self, change: Change) -> dict[str, Any]:
        """The POST body of a new merge request for ``change``."""
        data: dict[str, Any] = {"source_branch": change.branch,
                                "target_branch": change.target_branch,
                                "title": change.title, "description": change.description}
        if self.labels:
            data["labels"] = ",".join(self.labels)
        if self.assignee_id is not None:
            data["assignee_id"] = self.assignee_id
        if self.reviewer_ids:
            data["reviewer_ids"] = list(self.reviewer_ids)
        return data


def open_merge_request(talk: Conversation, project: Any, change: Change,
                       options: MergeRequestOptions, *, branch_is_new: bool,
                       attempts: int) -> dict[str, Any]:
    """Return the open MR for the branch, creating it when there is none."""
    if not branch_is_new:  # a fresh branch cannot have an MR yet: save the lookup
        found = _find_open(talk, project, change)
        if found is not None:
            return found
    data = options.fields(change)
    for _ in range(attempts):
        try:
            mr = talk.write("create merge request",
                            partial(project.mergerequests.create, data, **NO_LIBRARY_RETRY))
            return _summary(mr.attributes)
        except Rejected as e:
            if e.status != 409:
                raise InternalError(f"GitLab rejected the merge request: {e.message}") from e
        except Ambiguous:
            pass
        # 409 (one exists) or a lost answer (ours may exist): adopt what is there.
        found = _find_open(talk, project, change)
        if found is not None:
            return found
    raise GitLabUnavailable(f"could not open a merge request for {change.branch!r}")


def _find_open(talk: Conversation, project: Any, change: Change) -> dict[str, Any] | None:
    mrs = talk.read("list open merge requests", partial(
        project.mergerequests.list, source_branch=change.branch, state="opened",
        get_all=False, **NO_LIBRARY_RETRY))
    same_target = [mr for mr in mrs if mr.target_branch == change.target_branch]
    chosen = (same_target or mrs or [None])[0]
    return None if chosen is None else _summary(chosen.attributes)


def read_merge_request(talk: Conversation, project: Any, iid: int, target_branch: str
                       ) -> dict[str, Any] | None:
    """The MR's state, merge commit and (once merged) the target's pipeline for it."""
    mr = talk.read_optional("get merge request",
                            partial(project.mergerequests.get, iid, **NO_LIBRARY_RETRY))
    if mr is None:
        return None
    attrs = mr.attributes
    sha = attrs.get("merge_commit_sha") or attrs.get("squash_commit_sha")
    if attrs.get("state") == "merged" and not sha:
        sha = attrs.get("sha")  # a fast-forward merge lands the head itself
    pipeline = None
    if attrs.get("state") == "merged" and sha:
        found = talk.read("list pipelines", partial(
            project.pipelines.list, ref=target_branch, sha=sha, order_by="id", sort="desc",
            get_all=False, per_page=1, **NO_LIBRARY_RETRY))
        if found:
            p = found[0].attributes
            pipeline = {"id": int(p["id"]), "status": str(p["status"]),
                        "finished_at": p.get("finished_at") or p.get("updated_at")}
    return {"state": str(attrs.get("state")), "merge_commit_sha": sha, "pipeline": pipeline}


def _summary(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "iid": int(attributes["iid"]),
        "url": str(attributes["web_url"]),
        "source_branch": str(attributes["source_branch"]),
        "target_branch": str(attributes["target_branch"]),
    }


def project_url(mr_url: str) -> str | None:
    """The project's web URL, cut from an MR's (``<project>/-/merge_requests/<iid>``):
    one GET project fewer."""
    head, sep, _ = mr_url.rpartition("/-/merge_requests/")
    return head if sep else None
