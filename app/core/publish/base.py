"""What both publishers share: the protocol, the branch lock, the trailer, URL redaction.

- ``Publisher``: the protocol ``git`` and ``gitlab`` implement;
- ``branch_lock``: one job at a time per branch; waiting too long for another job's lock
  is ``GitLabUnavailable`` (retryable), the same code for both publishers;
- ``made_by_job``: is a branch head this job's own commit (its ``Tfgen-Job`` trailer)?
- ``redact_credentials``: a URL's userinfo never reaches a message, a log or a lock key.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

from app.core.locks import LockFactory, LockTimeout
from app.core.model import JOB_TRAILER, Change, PublishResult
from app.errors import GitLabUnavailable

__all__ = ["Publisher", "branch_lock", "made_by_job", "redact_credentials"]

# ``scheme://userinfo@``: the userinfo (a user, a token, user:password) ends at the last
# '@' before the host; it cannot hold '/', so a path's '@' is left alone.
_URL_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*(?:@[^/@\s]*)*@")


class Publisher(Protocol):
    """Puts a change up for review. Implementations: ``git``, ``gitlab``.

    ``publish`` must be idempotent: called again with the same change (a retry, or a
    worker killed after the push) it makes no second commit and no second merge
    request, and answers ``unchanged=True`` when the branch already holds the files.
    """

    def publish(self, change: Change) -> PublishResult:
        """Commit ``change.files`` on ``change.branch`` and open or reuse its review."""
        ...


@contextmanager
def branch_lock(locks: LockFactory, key: str, job_uuid: str, busy: str) -> Iterator[None]:
    """Hold the lock ``key`` for ``job_uuid`` while the body publishes.

    Args:
        locks: The lock factory (Redis in production, in-process embedded).
        key: The lock's name (the publisher and branch; no credentials in it).
        job_uuid: The holder, for the lock's owner record.
        busy: The message when another job holds the branch too long.

    Raises:
        GitLabUnavailable: Another job held the lock past its blocking timeout.
    """
    try:
        with locks(key, job_uuid):
            yield
    except LockTimeout as e:
        raise GitLabUnavailable(busy) from e


def made_by_job(commit_message: str | None, job_uuid: str) -> bool:
    """True when a commit message carries the ``Tfgen-Job`` trailer of ``job_uuid``.

    Both publishers ask this of the branch head whose files already match the job's:
    it is then the job's own commit from an attempt whose worker died before it could
    report it, so the job reports that commit (``unchanged: false``), not "unchanged".
    """
    trailer = f"{JOB_TRAILER}: {job_uuid}"
    return any(line.strip() == trailer for line in (commit_message or "").splitlines())


def redact_credentials(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***``.

    ``https://user:token@host/repo.git`` -> ``https://***@host/repo.git``; a URL without
    credentials, a path and scp-like ``git@host:repo`` (an SSH user, no secret) are kept.
    """
    return _URL_USERINFO.sub(r"\1***@", text)
