"""``GitLabPublisher``: one commit and one merge request per request, safe to re-run.

Call sequence (python-gitlab over REST v4; ``projects.get(id, lazy=True)`` costs
nothing), with N the number of files (one for a request)::

    new branch         GET file (no such ref) -> POST commit (start_branch) -> POST MR  = 3
    changed content    GET file x N -> POST commit -> GET open MRs                     = 2 + N
    unchanged re-run   GET file x N -> GET open MRs                                    = 1 + N

A branch that exists but has no open MR adds one POST MR. When an earlier attempt of
the job may have published (``Change.earlier_attempt``) and the files on the branch
are already ours, one GET branch reads the head's ``Tfgen-Job`` trailer: a commit of
this job whose worker died before hearing GitLab's answer is reported as the job's
commit (``unchanged=False``), as the git publisher does.

Idempotency: the whole sequence runs under a lock per (project, branch), so jobs for
one request never interleave; files are compared by ``content_sha256`` and no commit
is made when nothing differs (``unchanged=True``). Retries, error translation and
tokens: ``client.py``; the commit: ``commit.py``; the merge request:
``merge_request.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import gitlab

from app.core.locks import LocalLocks, LockFactory
from app.core.model import Change, PublishResult, Secret
from app.core.publish.base import branch_lock
from app.core.publish.gitlab.client import (
    Conversation,
    GitLabObserver,
    RetryPolicy,
    Sessions,
    ignore,
)
from app.core.publish.gitlab.commit import commit_change
from app.core.publish.gitlab.merge_request import (
    MergeRequestOptions,
    open_merge_request,
    project_url,
    read_merge_request,
)
from app.errors import GitLabAuth, GitLabNotFound, InternalError

__all__ = ["GitLabPublisher"]

log = logging.getLogger(__name__)


class GitLabPublisher:
    """Publishes a change as one commit on its branch and one merge request (GitLab).

    Args:
        url: GitLab base URL (``https://gitlab.example.com``).
        fallback_token: Service token used when a change carries no user token.
        labels: Labels set on new merge requests.
        assignee_id: GitLab user id assigned to new merge requests.
        reviewer_ids: GitLab user ids asked to review new merge requests.
        lock_factory: ``(key) -> context manager``; serialises jobs per project and
            branch. Defaults to an in-process ``LocalLocks``; use ``RedisLocks`` when
            several workers run.
        max_retries: Retries per GitLab request after 429, 5xx or connection errors.
        backoff_base: First backoff step in seconds (doubled per retry, full jitter).
        backoff_max: Longest single backoff in seconds.
        max_retry_time: Bound on one publish's time spent retrying, in seconds.
        request_timeout: Timeout of each HTTP request, in seconds.
        ssl_verify: ``requests`` verify option (``True``, ``False`` or a CA bundle path).
        observer: Told of each request's outcome and each retry (metrics).
    """

    def __init__(
        self,
        url: str,
        *,
        fallback_token: Secret | None = None,
        labels: Sequence[str] = (),
        assignee_id: int | None = None,
        reviewer_ids: Sequence[int] = (),
        lock_factory: LockFactory | None = None,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 8.0,
        max_retry_time: float = 60.0,
        request_timeout: float = 15.0,
        ssl_verify: bool | str = True,
        observer: GitLabObserver = ignore,
    ) -> None:
        self.url = url.rstrip("/")
        self._fallback_token = fallback_token
        self.merge_requests = MergeRequestOptions(labels, assignee_id, reviewer_ids)
        self._lock_factory: LockFactory = lock_factory or LocalLocks()
        self._policy = RetryPolicy(max_retries, backoff_base, backoff_max, max_retry_time)
        self.request_timeout = request_timeout
        self._sessions = Sessions(self.url, ssl_verify)
        self.observer = observer

    def __repr__(self) -> str:
        return f"GitLabPublisher(url={self.url!r})"

    def publish(self, change: Change) -> PublishResult:
        """Commit ``change.files`` on ``change.branch`` and open or reuse its merge request.

        Args:
            change: The files, branch, messages and the requesting user's token.

        Returns:
            The commit (the branch head when ``unchanged``), the files and the MR.

        Raises:
            GitLabAuth: No token at all, or GitLab refused it (401/403).
            GitLabNotFound: No project id, or the project (or target branch) is not there.
            GitLabUnavailable: GitLab kept failing within the retry bounds (retryable).
            InternalError: GitLab rejected the request for another reason.
        """
        token = change.token if change.token else self._fallback_token
        if not token:
            raise GitLabAuth("no GitLab token for the requesting user and no GITLAB_TOKEN")
        if not change.project_id:
            raise GitLabNotFound("the request names no GitLab project")
        if not change.files:
            raise InternalError("nothing to publish: the change holds no files")
        label = f"{change.project_id}@{change.branch}"
        with (
            branch_lock(self._lock_factory, f"gitlab:{change.project_id}:{change.branch}",
                        change.job_uuid, f"{label}: another job is still publishing this branch"),
            self._client(token, label) as (gl, talk),
        ):
            return self._publish_locked(talk, gl.projects.get(change.project_id, lazy=True),
                                        change)

    def read_merge_request(self, project: str, iid: int, *, target_branch: str,
                           token: Secret | None = None) -> dict[str, Any] | None:
        """Read a merge request and, once merged, the target's pipeline for its commit.

        Two calls at most, each retried like the publisher's reads (429 waits
        ``Retry-After`` or ``RateLimit-Reset``, 5xx backs off), within the same bounds.

        Args:
            project: The project's id or path.
            iid: The merge request's iid.
            target_branch: The branch the pipeline runs on.
            token: The token to read with (default: the fallback service token).

        Returns:
            ``{"state", "merge_commit_sha", "pipeline": {"id", "status", "finished_at"} |
            None}``, or None when the merge request is gone.

        Raises:
            GitLabAuth: No token, or GitLab refused it.
            GitLabNotFound: The project is not visible.
            GitLabUnavailable: GitLab kept failing (or rate limiting) past the bounds.
        """
        token = token or self._fallback_token
        if not token:
            raise GitLabAuth("no GitLab token to read merge requests with")
        with self._client(token, f"{project}!{iid}") as (gl, talk):
            return read_merge_request(talk, gl.projects.get(project, lazy=True), iid,
                                      target_branch)

    @contextmanager
    def _client(self, token: Secret, label: str) -> Iterator[tuple[gitlab.Gitlab, Conversation]]:
        """A client per publish with the user's token: it never serves another's job."""
        talk = Conversation(self._policy, token.reveal(), label, self.observer)
        with self._sessions.talking(talk, token.reveal(), self.request_timeout) as gl:
            yield gl, talk

    def _publish_locked(self, talk: Conversation, project: Any, change: Change
                        ) -> PublishResult:
        attempts = self._policy.max_retries + 1
        done = commit_change(talk, project, change, attempts)
        merge_request = None
        if done.branch_existed or not done.unchanged:
            merge_request = open_merge_request(
                talk, project, change, self.merge_requests, branch_is_new=done.branch_is_new,
                attempts=attempts)
        log.info("gitlab %s: %s, MR !%s, %d call(s)", change.branch,
                 "unchanged" if done.unchanged else f"commit {str(done.commit_sha)[:12]}",
                 merge_request["iid"] if merge_request else "-", talk.calls)
        return PublishResult(
            commit_sha=done.commit_sha,
            files=change.files,
            unchanged=done.unchanged,
            merge_request=merge_request,
            remote=project_url(merge_request["url"]) if merge_request else None,
        )
