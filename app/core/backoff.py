"""Backoff for retries: exponential, full jitter, capped (jobs and webhook deliveries)."""

from __future__ import annotations

import random

__all__ = ["retry_countdown"]


def retry_countdown(retries: int, cap: float, retry_after: float | None = None, *,
                    base: float = 1.0) -> float:
    """Exponential backoff with full jitter, at least ``retry_after`` when the service said so.

    Args:
        retries: Retries so far (0 before the first retry).
        cap: The longest wait in seconds.
        retry_after: What the service asked for, if anything.
        base: Seconds of the first step (the step doubles per retry).

    Returns:
        Seconds to wait: uniform in ``[0, min(cap, base * 2 ** (retries + 1))]``.
    """
    backoff = random.uniform(0, min(cap, base * 2 ** (retries + 1)))
    return min(cap, max(backoff, retry_after or 0))
