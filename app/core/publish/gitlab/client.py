"""One publish's conversation with GitLab: the client, retries, error translation.

python-gitlab's own retrying is switched off per call (it would repeat a POST whose
answer was lost, and wait unbounded on ``Retry-After``); instead, per request: 429 waits
``Retry-After``, else ``RateLimit-Reset``, else backoff; 5xx, connection errors and
timeouts wait an exponential backoff with full jitter. Reads are simply repeated. A POST
that failed without a definite answer (5xx, connection drop) may have been done, so it
is never repeated blindly: ``write`` raises ``Ambiguous`` for the caller to read the
state again. Retries are bounded by ``max_retries`` per request and ``max_retry_time``
per publish; then ``GitLabUnavailable`` (retryable). 401/403 -> ``GitLabAuth``, a
project the token cannot see (404) -> ``GitLabNotFound``; neither is retried.

Tokens: each publish builds its own ``gitlab.Gitlab`` with the requesting user's token;
the token travels per request (python-gitlab's auth object), never on the shared
session, which keeps no cookies, so one user's credentials never serve another's job.
The session (one per thread) keeps GitLab's connections open between publishes.
"""

from __future__ import annotations

import email.utils
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.cookiejar import DefaultCookiePolicy
from typing import Any, TypeVar

import gitlab
import gitlab.exceptions
import requests

from app.core.backoff import full_jitter
from app.errors import GitLabAuth, GitLabNotFound, GitLabUnavailable

__all__ = ["NO_LIBRARY_RETRY", "Ambiguous", "Conversation", "GitLabObserver", "Missing",
           "Rejected", "RetryPolicy", "Sessions", "rate_limit_delay"]

log = logging.getLogger(__name__)

T = TypeVar("T")

# Told of each request's outcome and each retry, for metrics:
# ("request", "ok" | "not_found" | "rate_limited" | "transient" | "rejected" | "auth")
# and ("retry", "rate_limited" | "transient").
GitLabObserver = Callable[[str, str], None]

# Passed to every python-gitlab call: retrying is ours (see the module docstring).
NO_LIBRARY_RETRY: dict[str, Any] = {"obey_rate_limit": False, "retry_transient_errors": False}


def ignore(event: str, detail: str) -> None:
    """The default observer."""


class Transient(Exception):
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


class Rejected(Exception):
    """GitLab answered a definite 4xx (other than auth and project 404)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


class Missing(Exception):
    """404 for something inside a visible project (a branch, a ref, a file)."""


class Ambiguous(Exception):
    """A POST failed without a definite answer: GitLab may or may not have acted."""


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds on retrying: per request (count) and per publish (time)."""

    max_retries: int
    backoff_base: float
    backoff_max: float
    max_retry_time: float


class Conversation:
    """One publish's exchange with GitLab: counts calls, retries, translates errors."""

    def __init__(self, policy: RetryPolicy, token: str, label: str,
                 observer: GitLabObserver = ignore) -> None:
        self.policy = policy
        self.observer = observer
        self.calls = 0
        self.deadline = time.monotonic() + policy.max_retry_time
        self.last_headers: Mapping[str, str] = {}
        self.unclear_writes = 0  # POSTs that failed without a definite answer, so far
        self._token = token
        self._label = label

    def remember_headers(self, response: requests.Response) -> None:
        """Keep the headers of the latest answer: a 429 error no longer carries them."""
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
            except Transient as e:
                self.wait(what, attempt, e)
                attempt += 1

    def read_optional(self, what: str, call: Callable[[], T]) -> T | None:
        """Like ``read``, but a 404 for a branch or file answers ``None``."""
        try:
            return self.read(what, call)
        except Missing:
            return None

    def write(self, what: str, call: Callable[[], T]) -> T:
        """Run a POST. A 429 is repeated (GitLab did nothing); other transient failures
        raise ``Ambiguous`` after the backoff, for the caller to re-read the state.

        Unclear failures count across the whole publish, so the backoff keeps growing
        and the count bound holds even though each one starts a fresh plan.
        """
        attempt = 0
        while True:
            try:
                return self._once(what, call)
            except Missing as e:
                raise GitLabNotFound(f"{self._label}: {what}: {self.scrub(e)}") from e
            except Transient as e:
                if e.rate_limited:
                    self.wait(what, attempt, e)
                    attempt += 1
                    continue
                self.wait(what, self.unclear_writes, e)
                self.unclear_writes += 1
                raise Ambiguous(e.reason) from e

    def wait(self, what: str, attempt: int, failure: Transient) -> None:
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
        log.warning("gitlab %s: %s failed (%s), retry %d in %.2fs",
                    self._label, what, failure.reason, attempt + 1, delay)
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
            raise Transient(type(e).__name__) from e
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
            return Missing(message)
        if status == 429:
            delay = rate_limit_delay(self.last_headers)
            return Transient("429 rate limited", rate_limited=True, delay=delay)
        if status is None or status >= 500:
            reason = f"{status}: {message}" if status else message
            return Transient(reason, delay=rate_limit_delay(self.last_headers))
        return Rejected(status, message)


def _outcome(failure: Exception) -> str:
    """The observer's name for a translated failure."""
    if isinstance(failure, Transient):
        return "rate_limited" if failure.rate_limited else "transient"
    if isinstance(failure, Missing | GitLabNotFound):
        return "not_found"
    if isinstance(failure, GitLabAuth):
        return "auth"
    return "rejected"


def rate_limit_delay(headers: Mapping[str, str]) -> float | None:
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


class _NoCookies(DefaultCookiePolicy):
    """GitLab's cookies are never kept: the session serves many users' tokens."""

    def set_ok(self, cookie: Any, request: Any) -> bool:
        return False


class Sessions:
    """HTTP sessions to GitLab, one per thread, kept between publishes.

    A kept session reuses its TCP (and TLS) connections: a publish's three calls and
    the next job's do not each pay a handshake. It holds no credentials and accepts no
    cookies; each publish's answers reach that publish's ``Conversation`` through
    ``talking``. Proxy and CA settings are read from the environment once.
    """

    def __init__(self, url: str, ssl_verify: bool | str) -> None:
        self._url = url
        self._local = threading.local()
        settings = requests.Session().merge_environment_settings(url, {}, None, ssl_verify,
                                                                 None)
        self._proxies = settings["proxies"]
        self.verify: bool | str = settings["verify"]

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.trust_env = False  # read once above: not on every request
            session.proxies = dict(self._proxies)
            session.cookies.set_policy(_NoCookies())
            session.hooks["response"].append(self._hook)
            self._local.session = session
        return session

    def _hook(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        talk: Conversation | None = getattr(self._local, "talk", None)
        if talk is not None:
            talk.remember_headers(response)

    @contextmanager
    def talking(self, talk: Conversation, token: str, timeout: float
                ) -> Iterator[gitlab.Gitlab]:
        """A client acting with ``token`` whose answers ``talk`` hears, for one publish."""
        session = self._session()
        self._local.talk = talk
        try:
            yield gitlab.Gitlab(self._url, private_token=token, timeout=timeout,
                                ssl_verify=self.verify, retry_transient_errors=False,
                                session=session)
        except BaseException:
            # A publish cut off mid-request (a time limit) may leave a half-read answer
            # on a kept connection: start this thread's next publish afresh.
            session.close()
            self._local.session = None
            raise
        finally:
            self._local.talk = None
