"""Named mutual-exclusion locks: one job at a time per key (e.g. project and branch).

A lock factory is any callable ``(key) -> context manager``; the publisher holds the
lock for the whole read-decide-write sequence, so two jobs for the same branch never
interleave and the second one sees the first one's commit.

- ``RedisLocks``: across processes and hosts (Celery workers), on redis-py's ``Lock``
  held as a short lease (``lease`` seconds) that a thread renews while the holder
  works. A holder that dies, or whose release fails (Redis restarting), leaves a lock
  that expires within one lease, not after the longest publish: a stale lock cannot
  stall a branch for minutes. ``timeout`` still bounds how long one holder may keep it.
  A lock taken for an ``owner`` (the job's UUID) is taken over at once by that same
  owner: a job re-run after its worker was killed mid-publish must not wait out the
  dead attempt's lock. Celery runs one delivery of a job at a time (the visibility
  timeout is above the hard time limit), so the earlier holder is gone.
- ``LocalLocks``: within one process (embedded mode, tests, no Redis).

Waiting longer than ``blocking_timeout`` raises ``LockTimeout``; callers decide whether
that is worth a retry.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from redis import exceptions as redis_exceptions

if TYPE_CHECKING:
    import redis

__all__ = ["LocalLocks", "LockFactory", "LockTimeout", "RedisLocks"]

log = logging.getLogger(__name__)

LockFactory = Callable[[str, str | None], AbstractContextManager[Any]]
"""``factory(key, owner)`` returns a context manager holding the lock named ``key``.

``owner`` (or None) names who holds it; the same owner may take over its own lock."""


class LockTimeout(TimeoutError):
    """The lock stayed taken for longer than the caller was willing to wait."""

    def __init__(self, key: str, waited: float | None) -> None:
        super().__init__(f"lock {key!r} still held by another job after {waited}s")
        self.key = key
        self.waited = waited


class _RedisLock(Protocol):
    def acquire(self, *, blocking: bool | None = None, token: str | None = None) -> bool: ...

    def reacquire(self) -> bool: ...

    def extend(self, additional_time: float, replace_ttl: bool = False) -> bool: ...

    def release(self) -> None: ...

    @property
    def local(self) -> Any: ...


class RedisLocks:
    """Lock factory on Redis (redis-py ``Lock``: ``SET NX PX`` plus a token-checked release).

    Args:
        client: A ``redis.Redis`` client.
        prefix: Prepended to every key, to keep tfgen's locks apart (and tests' runs).
        timeout: Longest time one holder keeps the lock, renewals included. Keep it
            above the longest publish (the job's hard time limit).
        blocking_timeout: Seconds to wait for a taken lock before ``LockTimeout``.
        sleep: Seconds between attempts while waiting.
        lease: Seconds the lock lives in Redis without a renewal: the longest a lock
            left by a dead holder (or a failed release) blocks its key. Renewed every
            third of it while held.
    """

    def __init__(
        self,
        client: redis.Redis,
        *,
        prefix: str = "tfgen:lock:",
        timeout: float = 300.0,
        blocking_timeout: float = 60.0,
        sleep: float = 0.05,
        lease: float = 15.0,
    ) -> None:
        self._client = client
        self.prefix = prefix
        self.timeout = timeout
        self.blocking_timeout = blocking_timeout
        self.sleep = sleep
        self.lease = min(lease, timeout)

    def __call__(self, key: str, owner: str | None = None) -> AbstractContextManager[None]:
        """Return a context manager holding the Redis lock ``prefix + key`` for ``owner``."""
        return self._hold(self.prefix + key, owner)

    @contextmanager
    def _hold(self, name: str, owner: str | None) -> Iterator[None]:
        lock: _RedisLock = self._client.lock(
            name,
            timeout=self.lease,
            sleep=self.sleep,
            blocking_timeout=self.blocking_timeout,
            thread_local=False,
        )
        if not (owner and self._take_over(lock, name, owner)) \
                and not lock.acquire(blocking=True, token=owner):
            raise LockTimeout(name, self.blocking_timeout)
        done = threading.Event()
        renewer = threading.Thread(target=self._renew, args=(lock, name, done),
                                   name=f"lock-renew:{name}", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            done.set()
            renewer.join()
            try:
                lock.release()
            except Exception as e:  # redis LockNotOwnedError, connection errors
                # The work is done; a lock that expired meanwhile is worth a warning, not
                # a failed job.
                log.warning("could not release lock %s: %s", name, type(e).__name__)

    def _renew(self, lock: _RedisLock, name: str, done: threading.Event) -> None:
        """Reset the lease every third of it until ``done`` or ``timeout`` has passed."""
        until = time.monotonic() + self.timeout
        while not done.wait(self.lease / 3):
            if time.monotonic() >= until:
                log.warning("lock %s held past its %ss bound; no longer renewed",
                            name, self.timeout)
                return
            try:
                lock.extend(self.lease, replace_ttl=True)
            except Exception as e:  # Redis away for a moment, or the lease already lost
                log.warning("could not renew lock %s: %s", name, type(e).__name__)

    @staticmethod
    def _take_over(lock: _RedisLock, name: str, owner: str) -> bool:
        # Atomically (redis-py's Lua): when the key holds this owner's token, renew it.
        lock.local.token = owner.encode()
        try:
            taken = bool(lock.reacquire())
        except redis_exceptions.LockError:
            taken = False
        if taken:
            log.warning("took over lock %s left by an earlier attempt of %s", name, owner)
        else:
            lock.local.token = None
        return taken


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

    def __call__(self, key: str, owner: str | None = None) -> AbstractContextManager[None]:
        """Return a context manager holding the in-process lock ``key``.

        ``owner`` is accepted for the factory's signature: within one process no holder
        can die and leave the lock behind.
        """
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
