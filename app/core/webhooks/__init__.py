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

The modules: ``targets`` (URL checks), ``signing`` (secrets, Fernet at rest, headers),
``sender`` (one POST), ``outbox`` (the Lua scripts, cursor arithmetic), ``store``
(``WebhookStore``: subscriptions, fan-out, ordered delivery).
"""

from app.core.webhooks.sender import DELIVERY_TIMEOUT, Attempt, post_signed
from app.core.webhooks.signing import SecretBox, new_secret, sign_headers
from app.core.webhooks.store import WebhookStore
from app.core.webhooks.targets import Target, TargetRefused, check_target

__all__ = [
    "DELIVERY_TIMEOUT",
    "Attempt",
    "SecretBox",
    "Target",
    "TargetRefused",
    "WebhookStore",
    "check_target",
    "new_secret",
    "post_signed",
    "sign_headers",
]
