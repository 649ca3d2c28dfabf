"""Webhook subscriptions and their outbox in Redis, beside the event log: the fan-out
that records deliveries, and the ordered sending of one (subscription, request) pair.
Every Redis error leaves the store as ``DatabaseUnavailable`` (``RedisCalls``)."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from fnmatch import fnmatchcase
from typing import Any

import redis

from app.core.boundary import RedisCalls
from app.core.events import RedisEventLog
from app.core.webhooks.outbox import (
    RECORD,
    REQUEUE,
    SETTLE,
    Outcome,
    comes_after,
    cursor_before,
    iso_seconds,
    request_pair,
)
from app.core.webhooks.sender import DELIVERY_TIMEOUT, Attempt, post_signed
from app.core.webhooks.signing import SecretBox, new_secret, sign_headers
from app.core.webhooks.targets import Target, TargetRefused, check_target
from app.errors import DatabaseUnavailable, NotFound

__all__ = ["WebhookStore"]


class WebhookStore:
    """Subscriptions and their deliveries in Redis, beside the event log.

    Args:
        client: The Redis holding the event log (``JOB_STORE_URL``).
        events: The event log as a Redis Stream (read from the fan-out cursor).
        prefix: Key prefix (``JOB_KEY_PREFIX``).
        box: Seals secrets at rest.
        backoff: ``backoff(attempts)`` -> seconds before the next attempt (the one
            formula of ``app.core.backoff``, given by the caller).
        max_attempts: After this many failed attempts a delivery is ``failed``.
        rotation_grace: Seconds an old secret keeps signing after a rotation.
    """

    def __init__(self, client: redis.Redis, events: RedisEventLog, *, prefix: str, box: SecretBox,
                 backoff: Callable[[int], float], max_attempts: int = 8,
                 rotation_grace: float = 86400.0) -> None:
        self.client = client
        self.events = events
        self.p = f"{prefix}:webhooks"
        self.box = box
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.rotation_grace = rotation_grace
        self._record = client.register_script(RECORD)
        self._settle = client.register_script(SETTLE)
        self._requeue = client.register_script(REQUEUE)
        self._call = RedisCalls(client, "webhook store", DatabaseUnavailable)

    # --- subscriptions -------------------------------------------------------------------

    def create(self, url: str, events: Sequence[str], description: str, admin: str,
               ) -> tuple[dict[str, Any], str]:
        """Store a subscription; return its public document and its secret (shown once)."""
        secret = new_secret()
        # Events already in the log when it was made are not sent to it.
        last = self._call(self.client.xrevrange, self.events.key, count=1)
        sub = {"id": uuid.uuid4().hex, "url": url, "events": list(events),
               "description": description, "created_by": admin,
               "created_at": iso_seconds(time.time()),
               "after": (last[0][0].decode() if last else None),
               "secrets": [{"sealed": self.box.seal(secret), "until": None}]}
        self._call(self.client.hset, f"{self.p}:subs", sub["id"], json.dumps(sub))
        if sub["after"]:  # the first fan-out starts here, not at the oldest event kept
            self._call(self.client.set, f"{self.p}:cursor", sub["after"], nx=True)
        return self.public(sub), secret

    def rotate(self, sub_id: str, grace: float | None = None) -> tuple[dict[str, Any], str]:
        """A new secret; the current ones keep signing ``grace`` seconds more."""
        sub = self.get(sub_id)
        secret = new_secret()
        until = time.time() + (self.rotation_grace if grace is None else grace)
        kept = [dict(s, until=min(s["until"] or until, until)) for s in self._live(sub)]
        sub["secrets"] = [{"sealed": self.box.seal(secret), "until": None}, *kept]
        self._call(self.client.hset, f"{self.p}:subs", sub_id, json.dumps(sub))
        return self.public(sub), secret

    @staticmethod
    def _live(sub: Mapping[str, Any]) -> list[dict[str, Any]]:
        now = time.time()
        return [s for s in sub["secrets"] if s["until"] is None or s["until"] > now]

    def signing_secrets(self, sub: Mapping[str, Any]) -> list[str]:
        """The secrets that sign now: the newest, and older ones still in their grace."""
        return [self.box.open(s["sealed"]) for s in self._live(sub)]

    @staticmethod
    def public(sub: Mapping[str, Any]) -> dict[str, Any]:
        """The document admins see: no secret, sealed or not."""
        out = {k: sub[k] for k in ("id", "url", "events", "description", "created_by",
                                   "created_at")}
        graces = [s["until"] for s in sub["secrets"] if s["until"]]
        out["previous_secret_until"] = iso_seconds(max(graces)) if graces else None
        return out

    def get(self, sub_id: str) -> dict[str, Any]:
        """The stored subscription.

        Raises:
            NotFound: No such subscription.
        """
        raw = self._call(self.client.hget, f"{self.p}:subs", sub_id)
        if raw is None:
            raise NotFound(f"no webhook {sub_id}")
        sub: dict[str, Any] = json.loads(raw)
        return sub

    def all(self) -> list[dict[str, Any]]:
        """Every subscription, stored form, oldest first."""
        raw = self._call(self.client.hvals, f"{self.p}:subs")
        return sorted((json.loads(r) for r in raw), key=lambda s: s["created_at"])

    def delete(self, sub_id: str) -> None:
        """Remove a subscription and its delivery log.

        Raises:
            NotFound: No such subscription.
        """
        if not self._call(self.client.hdel, f"{self.p}:subs", sub_id):
            raise NotFound(f"no webhook {sub_id}")
        self._call(self.client.delete, f"{self.p}:d:{sub_id}")

    def any(self) -> bool:
        """True when at least one subscription exists (else a fan-out has nothing to do)."""
        return bool(self._call(self.client.exists, f"{self.p}:subs"))

    # --- outbox --------------------------------------------------------------------------

    def fan_out(self, batch: int = 500) -> list[str]:
        """Record a delivery per matching subscription for events after the cursor.

        Returns:
            The pairs (``<sub>|<request>``) that got a new delivery.
        """
        lock = self.client.lock(f"{self.p}:fanout-lock", timeout=60, blocking_timeout=30)
        touched: list[str] = []
        if not self._call(lock.acquire):
            return touched
        try:
            subs = self.all()
            while True:
                cursor = self._call(self.client.get, f"{self.p}:cursor")
                cursor = cursor.decode() if isinstance(cursor, bytes) else cursor
                events = self.events.scan(cursor, batch)
                if not events:
                    return touched
                now = time.time()
                for event in events:
                    for sub in subs:
                        if not comes_after(event["id"], sub.get("after")):
                            continue
                        if not any(fnmatchcase(event["type"], p) for p in sub["events"]):
                            continue
                        pair = f"{sub['id']}|{request_pair(event)}"
                        doc = {"event_id": event["id"], "type": event["type"],
                               "request": request_pair(event), "status": "pending",
                               "attempts": 0, "last_status": None, "last_error": None,
                               "next_attempt": now, "created_at": now, "delivered_at": None}
                        if self._call(self._record, keys=[
                                f"{self.p}:d:{sub['id']}", f"{self.p}:q:{pair}",
                                f"{self.p}:due"], args=[event["id"], json.dumps(doc), pair, now]):
                            touched.append(pair)
                self._call(self.client.set, f"{self.p}:cursor", events[-1]["id"])
        finally:
            with contextlib.suppress(redis.exceptions.LockError):
                lock.release()

    def due_pairs(self, now: float | None = None, limit: int = 1000) -> list[str]:
        """Pairs with a delivery whose next attempt is due (the sweep's list)."""
        raw = self._call(self.client.zrangebyscore, f"{self.p}:due", "-inf",
                         now or time.time(), start=0, num=limit)
        return [r.decode() for r in raw]

    def deliveries(self, sub_id: str) -> list[dict[str, Any]]:
        """The delivery log of one subscription, newest event first."""
        self.get(sub_id)
        raw = self._call(self.client.hvals, f"{self.p}:d:{sub_id}")
        docs = [json.loads(r) for r in raw]
        docs.sort(key=lambda d: tuple(int(p) for p in d["event_id"].split("-", 1)),
                  reverse=True)
        return [{**d, "next_attempt": iso_seconds(d["next_attempt"]) if d["status"] == "pending"
                 else None, "created_at": iso_seconds(d["created_at"]),
                 "delivered_at": iso_seconds(d["delivered_at"])} for d in docs]

    def redeliver(self, sub_id: str, event_id: str) -> str:
        """Send an event again (any status), attempts from zero; return its pair.

        Raises:
            NotFound: No such subscription, or no delivery of that event to it.
        """
        self.get(sub_id)
        raw = self._call(self.client.hget, f"{self.p}:d:{sub_id}", event_id)
        if raw is None:
            raise NotFound(f"no delivery of event {event_id} to webhook {sub_id}")
        doc = json.loads(raw)
        now = time.time()
        doc.update(status="pending", attempts=0, next_attempt=now, delivered_at=None)
        pair = f"{sub_id}|{doc['request']}"
        self._call(self._requeue, keys=[f"{self.p}:d:{sub_id}", f"{self.p}:q:{pair}",
                                        f"{self.p}:due"],
                   args=[event_id, json.dumps(doc), pair, now])
        return pair

    def deliver_pair(self, pair: str, *, https_only: bool, allowed_hosts: Collection[str],
                     send: Callable[[Target, str, Mapping[str, str]], Attempt] = post_signed,
                     ) -> Outcome:
        """Send the pair's queued events in order until one must wait or none is left."""
        outcome = Outcome()
        sub_id = pair.split("|", 1)[0]
        queue, dkey, due = f"{self.p}:q:{pair}", f"{self.p}:d:{sub_id}", f"{self.p}:due"
        lock = self.client.lock(f"{self.p}:lock:{pair}", timeout=DELIVERY_TIMEOUT + 20,
                                blocking=False)
        if not self._call(lock.acquire):
            outcome.busy = True
            return outcome
        try:
            try:
                sub = self.get(sub_id)
            except NotFound:  # deleted: drop what it still had queued
                self._call(self.client.delete, queue)
                self._call(self.client.zrem, due, pair)
                return outcome
            while True:
                head = self._call(self.client.lindex, queue, 0)
                if head is None:
                    if self._call(self._settle, keys=[queue, due], args=[pair]):
                        return outcome
                    continue
                event_id = head.decode()
                raw = self._call(self.client.hget, dkey, event_id)
                doc = json.loads(raw) if raw else None
                if doc is None or doc["status"] != "pending":
                    self._call(self.client.lrem, queue, 1, event_id)
                    continue
                wait = doc["next_attempt"] - time.time()
                if wait > 0:
                    self._call(self.client.zadd, due, {pair: doc["next_attempt"]})
                    outcome.retry_in = wait
                    return outcome
                self._attempt(sub, doc, https_only, allowed_hosts, send)
                self._call(self.client.hset, dkey, event_id, json.dumps(doc))
                if doc["status"] == "pending":
                    self._call(self.client.zadd, due, {pair: doc["next_attempt"]})
                    outcome.retry_in = max(0.0, doc["next_attempt"] - time.time())
                    return outcome
                self._call(self.client.lrem, queue, 1, event_id)
                (outcome.delivered if doc["status"] == "delivered" else outcome.failed
                 ).append(event_id)
        finally:
            with contextlib.suppress(redis.exceptions.LockError):
                lock.release()

    def _attempt(self, sub: Mapping[str, Any], doc: dict[str, Any], https_only: bool,
                 allowed_hosts: Collection[str],
                 send: Callable[[Target, str, Mapping[str, str]], Attempt]) -> None:
        """One attempt at ``doc``'s event; updates ``doc`` in place."""
        events = self.events.scan(cursor_before(doc["event_id"]), 1)
        event = events[0] if events and events[0]["id"] == doc["event_id"] else None
        doc["attempts"] += 1
        if event is None:  # trimmed from the log: nothing left to send
            doc.update(status="failed", last_error="event no longer in the log")
            return
        try:
            target = check_target(sub["url"], https_only=https_only,
                                  allowed_hosts=allowed_hosts)
        except TargetRefused as e:
            result = Attempt(error=str(e.details["errors"]["url"]))
        else:
            body = json.dumps(event, separators=(",", ":"))
            result = send(target, body, sign_headers(event["id"], body,
                                                     self.signing_secrets(sub)))
        doc.update(last_status=result.status, last_error=result.error)
        if result.ok:
            doc.update(status="delivered", delivered_at=time.time())
        elif doc["attempts"] >= self.max_attempts:
            doc["status"] = "failed"
        else:
            doc["next_attempt"] = time.time() + self.backoff(doc["attempts"])

