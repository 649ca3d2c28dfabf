"""The outbox's Redis scripts and the event-cursor arithmetic the webhook store uses.

A delivery is recorded, queued on its (subscription, request) pair and the pair marked
due all or nothing (``RECORD``); a pair is forgotten only when its queue is empty
(``SETTLE``); a redelivery queues an event again unless it is still queued (``REQUEUE``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RECORD", "REQUEUE", "SETTLE", "Outcome", "comes_after", "cursor_before",
           "iso_seconds", "request_pair"]

# KEYS: deliveries hash, pair queue, due zset; ARGV: event id, document, pair, now.
RECORD = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], 'NX', ARGV[4], ARGV[3])
  return 1
end
return 0
"""

# KEYS: pair queue, due zset; ARGV: pair. Forget the pair only when its queue is empty.
SETTLE = """
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

# KEYS: deliveries hash, pair queue, due zset; ARGV: event id, document, pair, now.
REQUEUE = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
local queued = redis.call('LRANGE', KEYS[2], 0, -1)
for _, id in ipairs(queued) do
  if id == ARGV[1] then
    redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
    return 0
  end
end
redis.call('RPUSH', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[3])
return 1
"""


def iso_seconds(ts: float | None) -> str | None:
    """A Unix time as ISO 8601 UTC to the second (``...Z``); None stays None."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def comes_after(event_id: str, mark: str | None) -> bool:
    """True when the cursor ``event_id`` comes after ``mark``."""
    if not mark:
        return True
    a, b = (tuple(int(p) for p in c.split("-", 1)) for c in (event_id, mark))
    return a > b


def request_pair(event: Mapping[str, Any]) -> str:
    """The ordering key of an event: its request (events of one request keep order)."""
    return f"{event.get('cloud_id')}/{event.get('resource_type')}/{event.get('request_id')}"


@dataclass
class Outcome:
    """What ``deliver_pair`` did: events delivered, failed for good, and when to look again."""

    delivered: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    retry_in: float | None = None
    busy: bool = False


def cursor_before(event_id: str) -> str | None:
    """The cursor just before ``event_id`` (to read that one event)."""
    ms, seq = (int(p) for p in event_id.split("-", 1))
    if seq > 0:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-{2**63 - 1}" if ms > 0 else None
