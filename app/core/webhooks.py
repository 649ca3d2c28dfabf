"""Webhooks out: subscriptions, a durable outbox beside the event log, signed delivery.

How an event reaches a subscriber, at least once:

1. ``Lifecycle`` appends the event (``app/core/events.py``) and calls its ``on_append``
   callback, which asks for a fan-out (a Celery task on ``WEBHOOK_QUEUE``).
2. ``WebhookStore.fan_out`` reads the event log after its own cursor, kept in Redis
   beside the log, and records one delivery per matching subscription: one Lua script
   writes the delivery, appends its event id to the queue of that (subscription,
   request) pair and marks the pair due, all or nothing. The cursor moves after the
   writes, and the writes are idempotent, so a fan-out that dies is simply run again
   (the beat sweep runs it too). Nothing is held only in a broker message: a lost
   message (a killed worker, a Redis restart) loses no delivery.
3. ``WebhookStore.deliver_pair`` sends a pair's queue in order, head first, one
   process at a time (a lock per pair); a failure holds the pair's later events back
   until the head is delivered or ``failed``, so events of one request arrive in order.
   The sweep re-enqueues every pair that is due.

A delivery is a POST of the event as JSON with the Standard Webhooks headers
(``standardwebhooks``): ``webhook-id`` is the event id, the same on every retry.
The target is resolved and checked (``check_target``) at registration and again before
each delivery, and the connection goes to the checked address.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import ipaddress
import json
import secrets
import socket
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urlsplit

import redis
import urllib3
from cryptography.fernet import Fernet, InvalidToken
from standardwebhooks.webhooks import Webhook

from app.core.events import RedisEventLog
from app.errors import BadRequest, DatabaseUnavailable, NotFound

__all__ = [
    "DELIVERY_TIMEOUT",
    "Attempt",
    "SecretBox",
    "TargetRefused",
    "WebhookStore",
    "check_target",
    "new_secret",
    "post_signed",
    "sign_headers",
]

#: Seconds a receiver has to answer, connection included.
DELIVERY_TIMEOUT = 10.0

EVENT_TYPES = ("job.started", "job.retry", "job.succeeded", "job.failed", "job.canceled",
               "request.*")


class TargetRefused(BadRequest):
    """A webhook URL this service will not call (scheme, or where it resolves)."""

    code = "WEBHOOK_TARGET_REFUSED"

    def __init__(self, reason: str) -> None:
        super().__init__(f"webhook url refused: {reason}", details={"errors": {"url": reason}})


# --- targets (no server-side request forgery) -------------------------------------------

def _refused_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why ``ip`` may not be called, or None when it is a public address."""
    if isinstance(ip, ipaddress.IPv6Address):
        mapped = ip.ipv4_mapped or ip.sixtofour
        if mapped is not None:
            return _refused_address(mapped)
        if ip.teredo is not None:
            return "a Teredo address"
    for name, flag in (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
                       ("link-local", ip.is_link_local), ("private", ip.is_private),
                       ("multicast", ip.is_multicast), ("reserved", ip.is_reserved)):
        if flag:
            return f"{ip} is a {name} address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


@dataclass(frozen=True)
class Target:
    """A checked webhook URL: where to connect, and what to call it."""

    scheme: str
    host: str
    port: int
    path: str
    address: str  # the resolved, checked address the connection goes to


def check_target(url: str, *, https_only: bool, allowed_hosts: Collection[str],
                 resolve: Callable[..., Any] = socket.getaddrinfo) -> Target:
    """Parse ``url``, resolve its host and refuse what must not be called.

    Every address the name resolves to is checked (a name with one private address
    among public ones is refused); numeric hosts in any form the resolver accepts
    (``2130706433``, ``0177.0.0.1``, ``::ffff:127.0.0.1``) are checked as the address
    they mean. Hosts in ``allowed_hosts`` skip the address rules, not the scheme rule.

    Args:
        url: The subscriber's URL.
        https_only: Refuse ``http`` (production).
        allowed_hosts: Host names (lower case) that may resolve anywhere.
        resolve: ``socket.getaddrinfo``.

    Returns:
        The target, with the first checked address to connect to.

    Raises:
        TargetRefused: Bad scheme, no host, credentials in the URL, unresolvable, or an
            address that is not public.
    """
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise TargetRefused("not a valid URL") from e
    scheme = parts.scheme.lower()
    if scheme not in {"http", "https"}:
        raise TargetRefused("only http and https URLs")
    if https_only and scheme != "https":
        raise TargetRefused("only https URLs in production")
    host = (parts.hostname or "").lower()
    if not host:
        raise TargetRefused("no host")
    if parts.username or parts.password:
        raise TargetRefused("credentials in the URL")
    port = port or (443 if scheme == "https" else 80)
    try:
        infos = resolve(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as e:
        raise TargetRefused(f"{host} does not resolve") from e
    addresses = [ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in infos]
    if not addresses:
        raise TargetRefused(f"{host} does not resolve")
    if host not in allowed_hosts:
        for ip in addresses:
            reason = _refused_address(ip)
            if reason:
                raise TargetRefused(f"{reason} (allow the host in WEBHOOK_ALLOWED_HOSTS)")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(scheme, host, port, path, str(addresses[0]))


# --- secrets ------------------------------------------------------------------------------

def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


class SecretBox:
    """Seals secrets at rest with Fernet when a key is set; plain (marked) otherwise."""

    def __init__(self, key: str | None) -> None:
        self.fernet = Fernet(key.encode()) if key else None

    def seal(self, secret: str) -> str:
        """The stored form of ``secret``."""
        if self.fernet is None:
            return "plain:" + secret
        return "fernet:" + self.fernet.encrypt(secret.encode()).decode()

    def open(self, sealed: str) -> str:
        """The secret back; a sealed value without the key fails loudly."""
        kind, _, body = sealed.partition(":")
        if kind == "plain":
            return body
        if self.fernet is None:
            raise DatabaseUnavailable("a webhook secret is encrypted: set WEBHOOK_SECRET_KEY")
        try:
            return self.fernet.decrypt(body.encode()).decode()
        except InvalidToken as e:
            raise DatabaseUnavailable("WEBHOOK_SECRET_KEY does not open a stored secret") from e


def sign_headers(msg_id: str, body: str, secrets_: Sequence[str],
                 now: dt.datetime | None = None) -> dict[str, str]:
    """Standard Webhooks headers, one ``v1,`` signature per secret (rotation)."""
    when = now or dt.datetime.now(dt.UTC)
    signatures = " ".join(Webhook(s).sign(msg_id, when, body) for s in secrets_)
    return {"webhook-id": msg_id, "webhook-timestamp": str(int(when.timestamp())),
            "webhook-signature": signatures, "content-type": "application/json",
            "user-agent": "tfgen-webhooks"}


@dataclass
class Attempt:
    """How one POST ended: an HTTP status, or an error without one."""

    status: int | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """A 2xx answer delivers the event."""
        return self.status is not None and 200 <= self.status < 300


def post_signed(target: Target, body: str, headers: Mapping[str, str],
                timeout: float = DELIVERY_TIMEOUT) -> Attempt:
    """POST to the checked address (not a fresh lookup), redirects not followed."""
    kwargs: dict[str, Any] = {}
    pool_cls: type[urllib3.HTTPConnectionPool] = urllib3.HTTPConnectionPool
    if target.scheme == "https":
        pool_cls = urllib3.HTTPSConnectionPool
        kwargs = {"server_hostname": target.host, "assert_hostname": target.host,
                  "cert_reqs": "CERT_REQUIRED"}
    pool = pool_cls(target.address, target.port, timeout=urllib3.Timeout(total=timeout),
                    retries=False, maxsize=1, **kwargs)
    host = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
    try:
        response = pool.urlopen("POST", target.path, body=body.encode(),
                                headers={**headers, "host": host}, redirect=False,
                                retries=False, preload_content=False)
        response.read(64 * 1024, decode_content=False)
        response.release_conn()
        return Attempt(status=response.status)
    except urllib3.exceptions.HTTPError as e:
        return Attempt(error=type(e).__name__)
    finally:
        pool.close()


# --- store --------------------------------------------------------------------------------

# KEYS: deliveries hash, pair queue, due zset; ARGV: event id, document, pair, now.
_RECORD = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('RPUSH', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], 'NX', ARGV[4], ARGV[3])
  return 1
end
return 0
"""

# KEYS: pair queue, due zset; ARGV: pair. Forget the pair only when its queue is empty.
_SETTLE = """
if redis.call('LLEN', KEYS[1]) == 0 then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return 1
end
return 0
"""

# KEYS: deliveries hash, pair queue, due zset; ARGV: event id, document, pair, now.
_REQUEUE = """
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


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


def _after(event_id: str, mark: str | None) -> bool:
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


class WebhookStore:
    """Subscriptions and their deliveries in Redis, beside the event log.

    Args:
        client: The Redis holding the event log (``JOB_STORE_URL``).
        events: The event log as a Redis Stream (read from the fan-out cursor).
        prefix: Key prefix (``JOB_KEY_PREFIX``).
        box: Seals secrets at rest.
        max_attempts: After this many failed attempts a delivery is ``failed``.
        backoff: ``backoff(attempts)`` -> seconds before the next attempt.
        rotation_grace: Seconds an old secret keeps signing after a rotation.
    """

    def __init__(self, client: redis.Redis, events: RedisEventLog, *, prefix: str, box: SecretBox,
                 max_attempts: int = 8, backoff: Callable[[int], float] = lambda n: 2.0 ** n,
                 rotation_grace: float = 86400.0) -> None:
        self.client = client
        self.events = events
        self.p = f"{prefix}:webhooks"
        self.box = box
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.rotation_grace = rotation_grace
        self._record = client.register_script(_RECORD)
        self._settle = client.register_script(_SETTLE)
        self._requeue = client.register_script(_REQUEUE)

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except redis.RedisError as e:
            raise DatabaseUnavailable(f"webhook store unavailable: {e}") from e

    # --- subscriptions -------------------------------------------------------------------

    def create(self, url: str, events: Sequence[str], description: str, admin: str,
               ) -> tuple[dict[str, Any], str]:
        """Store a subscription; return its public document and its secret (shown once)."""
        secret = new_secret()
        # Events already in the log when it was made are not sent to it.
        last = self._call(self.client.xrevrange, self.events.key, count=1)
        sub = {"id": uuid.uuid4().hex, "url": url, "events": list(events),
               "description": description, "created_by": admin,
               "created_at": _iso(time.time()),
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
        out["previous_secret_until"] = _iso(max(graces)) if graces else None
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
                        if not _after(event["id"], sub.get("after")):
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
        return [{**d, "next_attempt": _iso(d["next_attempt"]) if d["status"] == "pending"
                 else None, "created_at": _iso(d["created_at"]),
                 "delivered_at": _iso(d["delivered_at"])} for d in docs]

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
        events = self.events.scan(_before(doc["event_id"]), 1)
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


def _before(event_id: str) -> str | None:
    """The cursor just before ``event_id`` (to read that one event)."""
    ms, seq = (int(p) for p in event_id.split("-", 1))
    if seq > 0:
        return f"{ms}-{seq - 1}"
    return f"{ms - 1}-{2**63 - 1}" if ms > 0 else None
