"""The commit half of a publish: read what the branch holds, plan, commit once.

One ``GET files/:path?ref=<branch>`` per file answers both "does the branch exist"
(GitLab answers ``404 Commit Not Found`` for a ref that is not there, ``404 File Not
Found`` for a file missing from an existing ref) and "is the content the same" (its
``content_sha256``). A new branch's files are sent as ``create`` with ``start_branch``;
only when GitLab answers "A file with this name already exists" (the file is already on
the target branch) are the target's copies read, so the file becomes an ``update`` (or
is left out when identical). Updates carry the file's ``last_commit_id`` so a concurrent
edit is rejected instead of overwritten. An existing branch is only ever committed to,
never deleted or reset (no ``force``).

After a POST that failed without an answer, the state is read again and the plan
recomputed: the commit shows up as identical files, reported as this publish's commit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from app.core.model import Change, RenderedFile
from app.core.publish.base import made_by_job
from app.core.publish.gitlab.client import (
    NO_LIBRARY_RETRY,
    Ambiguous,
    Conversation,
    Missing,
    Rejected,
)
from app.errors import GitLabNotFound, GitLabUnavailable, InternalError

__all__ = ["Committed", "commit_change"]

log = logging.getLogger(__name__)

# GitLab's 400 answers on a commit meaning "the state is not what you planned on":
# re-read and plan again (after a lost answer these are the commit we already made).
_STALE_PLAN_MESSAGES = (
    "A file with this name already exists",
    "A file with this name doesn't exist",
    "already exists. Switch to that branch",
    "has changed since you started editing it",
)
_NO_BRANCH_MESSAGE = "You can only create or edit files when you are on a branch"
_NO_REF_MESSAGE = "Commit Not Found"  # GET files/... with a ref that does not exist


@dataclass
class _Plan:
    """What the branch holds now and the commit actions that would bring our files."""

    branch_exists: bool
    head: str | None = None
    actions: list[dict[str, str]] = field(default_factory=list)
    last_commits: set[str] = field(default_factory=set)  # commits that last changed a file


@dataclass(frozen=True)
class Committed:
    """The commit step's outcome."""

    commit_sha: str | None
    unchanged: bool
    branch_existed: bool
    branch_is_new: bool  # made by this publish: it cannot have a merge request yet


def commit_change(talk: Conversation, project: Any, change: Change, attempts: int
                  ) -> Committed:
    """Commit ``change.files`` on ``change.branch`` unless the branch holds them already.

    Raises:
        GitLabNotFound: The target branch is not there.
        GitLabUnavailable: The plan went stale ``attempts`` times, or GitLab kept failing.
        InternalError: GitLab rejected the commit for another reason.
    """
    read_target = False  # read the target's copies of the files (new branch only)
    maybe_committed = False  # a commit POST may have landed without our hearing it
    for _ in range(attempts):
        plan = _plan(talk, project, change, read_target=read_target)
        if not plan.actions:
            # After an unclear POST, files found on the branch are that commit's; so are
            # they when the head carries this job's trailer (an earlier attempt's).
            ours = plan.branch_exists and (
                maybe_committed or _head_is_this_jobs(talk, project, change, plan))
            return Committed(plan.head, not ours, plan.branch_exists, False)
        try:
            commit = talk.write("create commit", partial(
                project.commits.create, _payload(change, plan), **NO_LIBRARY_RETRY))
        except Ambiguous:
            maybe_committed = True
            continue
        except Rejected as e:
            if _NO_BRANCH_MESSAGE in e.message and not plan.branch_exists:
                raise GitLabNotFound(f"target branch {change.target_branch!r} not found") from e
            if not any(m in e.message for m in _STALE_PLAN_MESSAGES):
                raise InternalError(f"GitLab rejected the commit: {e.message}") from e
            log.info("gitlab %s: plan was stale (%s), reading again", change.branch, e)
            read_target = read_target or not plan.branch_exists
            continue
        new = not plan.branch_exists and not maybe_committed
        return Committed(str(commit.id), False, plan.branch_exists, new)
    raise GitLabUnavailable(f"could not commit to {change.branch!r}: state kept changing")


def _plan(talk: Conversation, project: Any, change: Change, *, read_target: bool) -> _Plan:
    """Read the branch's copies of the files and decide one action per differing file."""
    first, branch_exists = _read_file(talk, project, change.files[0].path, change.branch)
    if branch_exists:
        return _compare(talk, project, change.files, change.branch, _Plan(True), first)
    if not read_target:
        # Budget: a new branch's files are assumed new; GitLab tells us otherwise.
        return _Plan(False, actions=[_action("create", f) for f in change.files])
    return _compare(talk, project, change.files, change.target_branch, _Plan(False), None)


def _compare(talk: Conversation, project: Any, files: Sequence[RenderedFile], ref: str,
             plan: _Plan, first: Any) -> _Plan:
    """Fill ``plan`` from the copies of ``files`` at ``ref`` (``first``: file 0's, read)."""
    for index, rendered in enumerate(files):
        current = first if index == 0 and plan.branch_exists else \
            _read_file(talk, project, rendered.path, ref)[0]
        if current is None:
            plan.actions.append(_action("create", rendered))
            continue
        plan.head = plan.head or str(current.commit_id)
        plan.last_commits.add(str(current.last_commit_id))
        if current.content_sha256 != rendered.sha256:
            action = _action("update", rendered)
            if plan.branch_exists:
                action["last_commit_id"] = str(current.last_commit_id)
            plan.actions.append(action)
    return plan


def _read_file(talk: Conversation, project: Any, path: str, ref: str) -> tuple[Any, bool]:
    """The file at ``ref`` (None when it is not there) and whether ``ref`` exists."""
    try:
        found = talk.read(f"get file {path}",
                          partial(project.files.get, path, ref=ref, **NO_LIBRARY_RETRY))
    except Missing as e:
        return None, _NO_REF_MESSAGE not in str(e)
    return found, True


def _head_is_this_jobs(talk: Conversation, project: Any, change: Change, plan: _Plan) -> bool:
    """Does the branch head carry this job's trailer? Asked (one GET) only when an
    earlier attempt of the job may have published and the head last changed a file."""
    if not change.earlier_attempt or plan.head not in plan.last_commits:
        return False
    branch = talk.read_optional("get branch", partial(
        project.branches.get, change.branch, **NO_LIBRARY_RETRY))
    return branch is not None and str(branch.commit["id"]) == plan.head and \
        made_by_job(str(branch.commit.get("message") or ""), change.job_uuid)


def _payload(change: Change, plan: _Plan) -> dict[str, Any]:
    payload: dict[str, Any] = {"branch": change.branch,
                               "commit_message": change.commit_message,
                               "actions": plan.actions}
    if not plan.branch_exists:
        payload["start_branch"] = change.target_branch
    return payload


def _action(kind: str, rendered: RenderedFile) -> dict[str, str]:
    return {"action": kind, "file_path": rendered.path, "content": rendered.content}
