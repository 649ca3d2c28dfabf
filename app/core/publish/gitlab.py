"""GitLab publisher: one commit and one merge request per request, safe to re-run.

Call sequence (python-gitlab over REST v4; ``projects.get(id, lazy=True)`` costs nothing)::

    new branch         GET branch (404) -> POST commit (start_branch) -> POST MR      = 3
    changed content    GET branch -> GET file x N -> POST commit -> GET open MRs      = 3 + N
    unchanged re-run   GET branch -> GET file x N -> GET open MRs                     = 2 + N

with N the number of files (one for a request); a branch that exists but has no open
MR adds one POST MR. A new branch starts from the target branch and every file is sent
as ``create``: only when GitLab answers "A file with this name already exists" (the file
is already on the target branch) are the target's copies read, one GET each, so the
file becomes an ``update`` (or is left out when identical).

Idempotency. The whole sequence runs under a lock per (project, branch), so jobs for
one request never interleave. Files are compared by ``content_sha256``; identical files
are left out, and when nothing is left no commit is made (``unchanged=True``), unless
the branch head carries this job's ``Tfgen-Job`` trailer: then it is the job's own
commit from an attempt whose worker died before hearing GitLab's answer, reported as
the job's commit (``unchanged=False``), as the git publisher does. An
existing branch is only ever committed to, never deleted or reset (no ``force``).
Updates carry the file's ``last_commit_id`` so a concurrent edit is rejected instead of
overwritten.

Retries. python-gitlab's own retrying is switched off per call (it would repeat a POST
whose answer was lost, and wait unbounded on ``Retry-After``); instead, per request:
429 waits ``Retry-After``, else ``RateLimit-Reset``, else backoff; 5xx, connection
errors and timeouts wait an exponential backoff with full jitter. Reads are simply
repeated. A POST that failed without a definite answer (5xx, connection drop) may have
been done, so it is never repeated blindly: the state is read again and the plan
recomputed (the commit shows up as identical files, the MR in the open-MR list). Retries
are bounded by ``max_retries`` per request and ``max_retry_time`` per publish; then
``GitLabUnavailable`` (retryable). 401/403 -> ``GitLabAuth``, a project the token
cannot see (404) -> ``GitLabNotFound``; neither is retried.

Tokens. Each publish builds its own ``gitlab.Gitlab`` with the requesting user's token
(or the fallback service token) and closes it afterwards; tokens are never logged, put
in messages or returned, and are scrubbed from anything GitLab echoes back.
"""

from __future__ import annotations

import email.utils
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import gitlab
import gitlab.exceptions
import requests

from app.core.backoff import full_jitter
from app.core.locks import LocalLocks, LockFactory
from app.core.model import Change, PublishResult, RenderedFile, Secret
from app.core.publish.base import branch_lock, made_by_job
from app.errors import GitLabAuth, GitLabNotFound, GitLabUnavailable, InternalError

__all__ = ["GitLabObserver", "GitLabPublisher"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Told of each request's outcome and each retry, for metrics:
# ("request", "ok" | "not_found" | "rate_limited" | "transient" | "rejected" | "auth")
# and ("retry", "rate_limited" | "transient").
GitLabObserver = Callable[[str, str], None]


def _ignore(event: str, detail: str) -> None:
    """The default observer."""

# Passed to every python-gitlab call: retrying is ours (see the module docstring).
_NO_LIBRARY_RETRY: dict[str, Any] = {"obey_rate_limit": False, "retry_transient_errors": False}

# GitLab's 400 answers on a commit meaning "the state is not what you planned on":
# re-read and plan again (after a lost answer these are the commit we already made).
_STALE_PLAN_MESSAGES = (
    "A file with this name already exists",
    "A file with this name doesn't exist",
    "already exists. Switch to that branch",
    "has changed since you started editing it",
)
_NO_BRANCH_MESSAGE = "You can only create or edit files when you are on a branch"


class _Transient(Exception):
    """A failure worth waiting for: 429, 5xx, a dropped connection or a timeout.

    ``rate_limited``: a 429, which GitLab answers before doing anything, so even a POST
    may be repeated as is. ``delay``: the wait GitLab asked for, when it said.
    """

    def __init__(
        self, reason: str, *, rate_limited: bool = False, delay: float | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.rate_limited = rate_limited
        self.delay = delay


class _Rejected(Exception):
    """GitLab answered a definite 4xx (other than auth and project 404)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class _Missing(Exception):
    """404 for something inside a visible project (a branch, a file)."""


class _Ambiguous(Exception):
    """A POST failed without a definite answer: GitLab may or may not have acted."""


@dataclass
class _Plan:
    """What the branch holds now and the commit actions that would bring our files."""

    branch_exists: bool
    head: str | None
    actions: list[dict[str, str]] = field(default_factory=list)
    head_message: str | None = None  # the branch head's commit message


@dataclass(frozen=True)
class _Policy:
    max_retries: int
    backoff_base: float
    backoff_max: float
    max_retry_time: float


class _Conversation:
    """One publish's exchange with GitLab: counts calls, retries, translates errors."""

    def __init__(self, policy: _Policy, token: str, label: str,
                 observer: GitLabObserver = _ignore) -> None:
        self.policy = policy
        self.observer = observer
        self.calls = 0
        self.deadline = time.monotonic() + policy.max_retry_time
        self.last_headers: Mapping[str, str] = {}
        self.unclear_writes = 0  # POSTs that failed without a definite answer, so far
        self._token = token
        self._label = label

    def remember_headers(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        """requests response hook: keep the headers a 429 error no longer carries."""
        self.last_headers = response.headers

    def scrub(self, text: object) -> str:
        """``text`` as a string with the token cut out, should GitLab ever echo it."""
        out = str(text)
        return out.replace(self._token, "***") if self._token else out

    def read(self, what: str, call: Callable[[], T]) -> T:
        """Run an idempotent request, repeating it after transient failures."""
        attempt = 0
        while True:
            try:
                return self._once(what, call)
            except _Transient as e:
                self.wait(what, attempt, e)
                attempt += 1

    def read_optional(self, what: str, call: Callable[[], T]) -> T | None:
        """Like ``read``, but a 404 for a branch or file answers ``None``."""
        try:
            return self.read(what, call)
        except _Missing:
            return None

    def write(self, what: str, call: Callable[[], T]) -> T:
        """Run a POST. A 429 is repeated (GitLab did nothing); other transient failures
        raise ``_Ambiguous`` after the backoff, for the caller to re-read the state.

        Unclear failures count across the whole publish, so the backoff keeps growing
        and the count bound holds even though each one starts a fresh plan.
        """
        attempt = 0
        while True:
            try:
                return self._once(what, call)
            except _Missing as e:
                raise GitLabNotFound(f"{self._label}: {what}: {self.scrub(e)}") from e
            except _Transient as e:
                if e.rate_limited:
                    self.wait(what, attempt, e)
                    attempt += 1
                    continue
                self.wait(what, self.unclear_writes, e)
                self.unclear_writes += 1
                raise _Ambiguous(e.reason) from e

    def wait(self, what: str, attempt: int, failure: _Transient) -> None:
        """Sleep before retry ``attempt + 1``, or raise ``GitLabUnavailable`` when the
        count or the time bound would be passed."""
        policy = self.policy
        if failure.delay is not None:
            delay = failure.delay + random.uniform(0, policy.backoff_base)
        else:
            delay = full_jitter(attempt, policy.backoff_base, policy.backoff_max)
        left = self.deadline - time.monotonic()
        if attempt >= policy.max_retries or delay > left:
            raise GitLabUnavailable(
                f"{self._label}: GitLab still failing after {attempt + 1} attempt(s) "
                f"({what}: {failure.reason})",
                details={"retry_after": round(failure.delay or policy.backoff_base, 3)},
            ) from failure
        self.observer("retry", "rate_limited" if failure.rate_limited else "transient")
        log.warning(
            "gitlab %s: %s failed (%s), retry %d in %.2fs",
            self._label,
            what,
            failure.reason,
            attempt + 1,
            delay,
        )
        time.sleep(delay)

    def _once(self, what: str, call: Callable[[], T]) -> T:
        self.calls += 1
        self.last_headers = {}
        try:
            answer = call()
        except gitlab.exceptions.GitlabError as e:
            failure = self._translate(what, e)
            self.observer("request", _outcome(failure))
            raise failure from e
        except requests.RequestException as e:
            # A requests error keeps the prepared request, token header included; drop it
            # so the token cannot travel with the exception chain into logs or results.
            e.request = None
            e.response = None
            self.observer("request", "transient")
            raise _Transient(type(e).__name__) from e
        self.observer("request", "ok")
        return answer

    def _translate(self, what: str, e: gitlab.exceptions.GitlabError) -> Exception:
        status = e.response_code
        message = self.scrub(e.error_message)
        where = f"{self._label}: {what}"
        if status in (401, 403):
            return GitLabAuth(f"{where}: GitLab refused the token ({status}: {message})")
        if status == 404:
            if "project" in message.lower():
                return GitLabNotFound(f"{where}: project not found or not visible to the token")
            return _Missing(message)
        if status == 429:
            delay = _rate_limit_delay(self.last_headers)
            return _Transient("429 rate limited", rate_limited=True, delay=delay)
        if status is None or status >= 500:
            reason = f"{status}: {message}" if status else message
            return _Transient(reason, delay=_rate_limit_delay(self.last_headers))
        return _Rejected(status, message)


def _outcome(failure: Exception) -> str:
    """The observer's name for a translated failure."""
    if isinstance(failure, _Transient):
        return "rate_limited" if failure.rate_limited else "transient"
    if isinstance(failure, _Missing | GitLabNotFound):
        return "not_found"
    if isinstance(failure, GitLabAuth):
        return "auth"
    return "rejected"


def _rate_limit_delay(headers: Mapping[str, str]) -> float | None:
    """Seconds GitLab asked to wait: ``Retry-After`` (seconds or HTTP date), else
    ``RateLimit-Reset`` (Unix time); ``None`` when it said neither."""
    retry_after = headers.get("Retry-After")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            try:
                when = email.utils.parsedate_to_datetime(retry_after)
            except (TypeError, ValueError):
                return None
            return max(0.0, when.timestamp() - time.time())
    reset = headers.get("RateLimit-Reset")
    if reset:
        try:
            return max(0.0, float(reset) - time.time())
        except ValueError:
            return None
    return None


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
        observer: GitLabObserver = _ignore,
    ) -> None:
        self.url = url.rstrip("/")
        self._fallback_token = fallback_token
        self.labels = tuple(labels)
        self.assignee_id = assignee_id
        self.reviewer_ids = tuple(reviewer_ids)
        self._lock_factory: LockFactory = lock_factory or LocalLocks()
        self._policy = _Policy(max_retries, backoff_base, backoff_max, max_retry_time)
        self.request_timeout = request_timeout
        self.ssl_verify = ssl_verify
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
            return self._publish_locked(gl, talk, change, change.project_id)

    # --- reads for the reconciler ------------------------------------------------------

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
        label = f"{project}!{iid}"
        with self._client(token, label) as (gl, talk):
            proj = gl.projects.get(project, lazy=True)
            mr = talk.read_optional(
                "get merge request", partial(proj.mergerequests.get, iid, **_NO_LIBRARY_RETRY))
            if mr is None:
                return None
            attrs = mr.attributes
            sha = attrs.get("merge_commit_sha") or attrs.get("squash_commit_sha")
            if attrs.get("state") == "merged" and not sha:
                sha = attrs.get("sha")  # a fast-forward merge lands the head itself
            pipeline = None
            if attrs.get("state") == "merged" and sha:
                found = talk.read("list pipelines", partial(
                    proj.pipelines.list, ref=target_branch, sha=sha, order_by="id", sort="desc",
                    get_all=False, per_page=1, **_NO_LIBRARY_RETRY))
                if found:
                    p = found[0].attributes
                    pipeline = {"id": int(p["id"]), "status": str(p["status"]),
                                "finished_at": p.get("finished_at") or p.get("updated_at")}
            return {"state": str(attrs.get("state")), "merge_commit_sha": sha,
                    "pipeline": pipeline}

    # --- one publish, under the lock ---------------------------------------------------

    @contextmanager
    def _client(self, token: Secret, label: str) -> Iterator[tuple[gitlab.Gitlab, _Conversation]]:
        """A fresh client per publish: one user's token never serves another's job."""
        talk = _Conversation(self._policy, token.reveal(), label, self.observer)
        session = requests.Session()
        session.hooks["response"].append(talk.remember_headers)
        gl = gitlab.Gitlab(
            self.url,
            private_token=token.reveal(),
            timeout=self.request_timeout,
            ssl_verify=self.ssl_verify,
            retry_transient_errors=False,
            session=session,
        )
        try:
            with gl:
                yield gl, talk
        finally:
            session.close()

    def _publish_locked(
        self, gl: gitlab.Gitlab, talk: _Conversation, change: Change, project_id: str
    ) -> PublishResult:
        project = gl.projects.get(project_id, lazy=True)
        read_target = False  # read the target's copies of the files (new branch only)
        maybe_committed = False  # a commit POST may have landed without our hearing it
        for _ in range(self._policy.max_retries + 1):
            plan = self._plan(talk, project, change, read_target=read_target)
            if not plan.actions:
                # After an unclear POST, files found on the branch are that commit's.
                commit_sha = plan.head
                # Ours when a POST of this publish may have landed, or when the head
                # carries this job's trailer (an attempt whose worker died mid-publish).
                unchanged = not (maybe_committed and plan.branch_exists) and not (
                    plan.branch_exists and made_by_job(plan.head_message, change.job_uuid))
                break
            payload = self._commit_payload(change, plan)
            try:
                commit = talk.write(
                    "create commit", partial(project.commits.create, payload, **_NO_LIBRARY_RETRY)
                )
            except _Ambiguous:
                maybe_committed = True
                continue
            except _Rejected as e:
                if _NO_BRANCH_MESSAGE in e.message and not plan.branch_exists:
                    raise GitLabNotFound(f"target branch {change.target_branch!r} not found") from e
                if not any(m in e.message for m in _STALE_PLAN_MESSAGES):
                    raise InternalError(f"GitLab rejected the commit: {e.message}") from e
                log.info("gitlab %s: plan was stale (%s), reading again", change.branch, e)
                read_target = read_target or not plan.branch_exists
                continue
            commit_sha, unchanged = str(commit.id), False
            break
        else:
            raise GitLabUnavailable(f"could not commit to {change.branch!r}: state kept changing")

        branch_is_new = not plan.branch_exists and not unchanged and not maybe_committed
        merge_request = None
        if plan.branch_exists or not unchanged:
            merge_request = self._merge_request(talk, project, change, branch_is_new)
        log.info(
            "gitlab %s: %s, MR !%s, %d call(s)",
            change.branch,
            "unchanged" if unchanged else f"commit {str(commit_sha)[:12]}",
            merge_request["iid"] if merge_request else "-",
            talk.calls,
        )
        return PublishResult(
            commit_sha=commit_sha,
            files=change.files,
            unchanged=unchanged,
            merge_request=merge_request,
            remote=_project_url(merge_request["url"]) if merge_request else None,
        )

    def _plan(
        self, talk: _Conversation, project: Any, change: Change, *, read_target: bool
    ) -> _Plan:
        """Read the branch (and its files) and decide one action per differing file."""
        branch = talk.read_optional(
            "get branch", partial(project.branches.get, change.branch, **_NO_LIBRARY_RETRY)
        )
        if branch is None and not read_target:
            # Budget: a new branch's files are assumed new; GitLab tells us otherwise.
            actions = [_action("create", f) for f in change.files]
            return _Plan(branch_exists=False, head=None, actions=actions)
        ref = change.branch if branch is not None else change.target_branch
        plan = _Plan(
            branch_exists=branch is not None,
            head=str(branch.commit["id"]) if branch is not None else None,
            head_message=str(branch.commit.get("message") or "") if branch is not None
            else None,
        )
        for rendered in change.files:
            current = talk.read_optional(
                f"get file {rendered.path}",
                partial(project.files.get, rendered.path, ref=ref, **_NO_LIBRARY_RETRY),
            )
            if current is None:
                plan.actions.append(_action("create", rendered))
                continue
            plan.head = plan.head or str(current.commit_id)
            if current.content_sha256 != rendered.sha256:
                action = _action("update", rendered)
                if branch is not None:
                    action["last_commit_id"] = str(current.last_commit_id)
                plan.actions.append(action)
        return plan

    def _commit_payload(self, change: Change, plan: _Plan) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "branch": change.branch,
            "commit_message": change.commit_message,
            "actions": plan.actions,
        }
        if not plan.branch_exists:
            payload["start_branch"] = change.target_branch
        return payload

    def _merge_request(
        self, talk: _Conversation, project: Any, change: Change, branch_is_new: bool
    ) -> dict[str, Any]:
        """Return the open MR for the branch, creating it when there is none."""
        if not branch_is_new:  # a fresh branch cannot have an MR yet: save the lookup
            found = self._find_open_mr(talk, project, change)
            if found is not None:
                return found
        data: dict[str, Any] = {
            "source_branch": change.branch,
            "target_branch": change.target_branch,
            "title": change.title,
            "description": change.description,
        }
        if self.labels:
            data["labels"] = ",".join(self.labels)
        if self.assignee_id is not None:
            data["assignee_id"] = self.assignee_id
        if self.reviewer_ids:
            data["reviewer_ids"] = list(self.reviewer_ids)
        for _ in range(self._policy.max_retries + 1):
            try:
                mr = talk.write(
                    "create merge request",
                    partial(project.mergerequests.create, data, **_NO_LIBRARY_RETRY),
                )
                return _mr_summary(mr.attributes)
            except _Rejected as e:
                if e.status != 409:
                    raise InternalError(f"GitLab rejected the merge request: {e.message}") from e
            except _Ambiguous:
                pass
            # 409 (one exists) or a lost answer (ours may exist): adopt what is there.
            found = self._find_open_mr(talk, project, change)
            if found is not None:
                return found
        raise GitLabUnavailable(f"could not open a merge request for {change.branch!r}")

    def _find_open_mr(
        self, talk: _Conversation, project: Any, change: Change
    ) -> dict[str, Any] | None:
        mrs = talk.read(
            "list open merge requests",
            partial(
                project.mergerequests.list,
                source_branch=change.branch,
                state="opened",
                get_all=False,
                **_NO_LIBRARY_RETRY,
            ),
        )
        same_target = [mr for mr in mrs if mr.target_branch == change.target_branch]
        chosen = (same_target or mrs or [None])[0]
        return None if chosen is None else _mr_summary(chosen.attributes)


def _action(kind: str, rendered: RenderedFile) -> dict[str, str]:
    return {"action": kind, "file_path": rendered.path, "content": rendered.content}


def _mr_summary(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "iid": int(attributes["iid"]),
        "url": str(attributes["web_url"]),
        "source_branch": str(attributes["source_branch"]),
        "target_branch": str(attributes["target_branch"]),
    }


def _project_url(mr_url: str) -> str | None:
    """The project's web URL, cut from an MR's (``<project>/-/merge_requests/<iid>``):
    one GET project fewer."""
    head, sep, _ = mr_url.rpartition("/-/merge_requests/")
    return head if sep else None
