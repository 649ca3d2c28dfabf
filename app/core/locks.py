"""Named mutual-exclusion locks: one job at a time per key (e.g. project and branch).

A lock factory is any callable ``(key) -> context manager``; the publisher holds the
lock for the whole read-decide-write sequence, so two jobs for the same branch never
interleave and the second one sees the first one's commit.

- ``RedisLocks``: across processes and hosts (Celery workers), on redis-py's ``Lock``,
  which expires after ``timeout`` seconds so a killed worker cannot wedge a branch.
- ``LocalLocks``: within one process (embedded mode, tests, no Redis).

Waiting longer than ``blocking_timeout`` raises ``LockTimeout``; callers decide whether
that is worth a retry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import redis

__all__ = ["LocalLocks", "LockFactory", "LockTimeout", "RedisLocks"]

log = logging.getLogger(__name__)

LockFactory = Callable[[str], AbstractContextManager[Any]]
"""``factory(key)`` returns a context manager holding the lock named ``key``."""


class LockTimeout(TimeoutError):
    """The lock stayed taken for longer than the caller was willing to wait."""

    def __init__(self, key: str, waited: float | None) -> None:
        super().__init__(f"lock {key!r} still held by another job after {waited}s")
        self.key = key
        self.waited = waited


class _RedisLock(Protocol):
    def acquire(self, *, blocking: bool | None = None) -> bool: ...

    def release(self) -> None: ...


class RedisLocks:
    """Lock factory on Redis (redis-py ``Lock``: ``SET NX PX`` plus a token-checked release).

    Args:
        client: A ``redis.Redis`` client.
        prefix: Prepended to every key, to keep tfgen's locks apart (and tests' runs).
        timeout: Seconds after which Redis drops a lock whose holder died. Keep it above
            the longest publish (the publisher's retry time bound).
        blocking_timeout: Seconds to wait for a taken lock before ``LockTimeout``.
        sleep: Seconds between attempts while waiting.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "tfgen:lock:",
        timeout: float = 300.0,
        blocking_timeout: float = 60.0,
        sleep: float = 0.05,
    ) -> None:
        self._client = client
        self.prefix = prefix
        self.timeout = timeout
        self.blocking_timeout = blocking_timeout
        self.sleep = sleep

    def __call__(self, key: str) -> AbstractContextManager[None]:
        """Return a context manager holding the Redis lock ``prefix + key``."""
        return self._hold(self.prefix + key)

    @contextmanager
    def _hold(self, name: str) -> Iterator[None]:
        lock: _RedisLock = self._client.lock(
            name,
            timeout=self.timeout,
            sleep=self.sleep,
            blocking_timeout=self.blocking_timeout,
            thread_local=False,
        )
        if not lock.acquire(blocking=True):
            raise LockTimeout(name, self.blocking_timeout)
        try:
            yield
        finally:
            try:
                lock.release()
            except Exception as e:  # redis LockNotOwnedError, connection errors
                # The work is done; a lock that expired meanwhile is worth a warning, not
                # a failed job.
                log.warning("could not release lock %s: %s", name, type(e).__name__)


class LocalLocks:
    """Lock factory for one process: a ``threading.Lock`` per key, dropped when unused.

    Args:
        blocking_timeout: Seconds to wait for a taken lock before ``LockTimeout``;
            ``None`` waits forever.
    """

    def __init__(self, *, blocking_timeout: float | None = 60.0) -> None:
        self.blocking_timeout = blocking_timeout
        self._guard = threading.Lock()
        self._locks: dict[str, tuple[threading.Lock, int]] = {}

    def __call__(self, key: str) -> AbstractContextManager[None]:
        """Return a context manager holding the in-process lock ``key``."""
        return self._hold(key)

    @contextmanager
    def _hold(self, key: str) -> Iterator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (threading.Lock(), 0))
            self._locks[key] = (lock, users + 1)
        try:
            timeout = -1.0 if self.blocking_timeout is None else self.blocking_timeout
            if not lock.acquire(timeout=timeout):
                raise LockTimeout(key, self.blocking_timeout)
            try:
                yield
            finally:
                lock.release()
        finally:
            with self._guard:
                lock, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)
