"""The one bounded LRU map: eviction order, size 0, and many threads at once."""

from __future__ import annotations

import threading

from app.core.lru import BoundedLRU


def test_the_least_recently_used_goes_first() -> None:
    cache: BoundedLRU[str, int] = BoundedLRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recently used
    cache.put("c", 3)
    assert list(cache) == ["a", "c"]
    assert cache.get("b") is None
    cache.pop("a")
    cache.pop("missing")
    assert list(cache) == ["c"]


def test_size_zero_keeps_nothing() -> None:
    cache: BoundedLRU[str, int] = BoundedLRU(0)
    cache.put("a", 1)
    assert cache.get("a") is None
    assert len(cache) == 0


def test_threads_writing_and_evicting_at_once_stay_within_size() -> None:
    cache: BoundedLRU[int, int] = BoundedLRU(16)
    errors: list[BaseException] = []

    def hammer(offset: int) -> None:
        try:
            for i in range(5_000):
                cache.put(offset + i % 64, i)
                cache.get(offset + (i * 7) % 64)
                if i % 5 == 0:
                    cache.pop(offset + (i * 3) % 64)
                list(cache)
        except BaseException as e:  # reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=hammer, args=(n * 1000,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cache) <= 16
