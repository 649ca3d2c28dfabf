"""Exponential backoff with full jitter: the one formula every retry in tfgen waits by.

Task retries and webhook deliveries (``retry_countdown``), GitLab reads and writes
(``publish.gitlab``) and lost compare-and-set races of the SQL job store
(``full_jitter``). Full jitter spreads the retries of many clients best (AWS
Architecture Blog, "Exponential Backoff And Jitter").
"""

from __future__ import annotations

import random

__all__ = ["full_jitter", "retry_countdown"]


def full_jitter(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retry ``attempt + 1``: uniform in ``[0, min(cap, base*2**attempt)]``.

    Args:
        attempt: Retries made so far (0 before the first retry).
        base: The first step in seconds.
        cap: The longest wait in seconds.
    """
    return random.uniform(0, min(cap, base * 2**attempt))


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
    return min(cap, max(full_jitter(retries + 1, base, cap), retry_after or 0))
