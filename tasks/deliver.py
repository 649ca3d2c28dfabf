"""Webhooks out on their own queue (``WEBHOOK_QUEUE``): fan-out, delivery, the beat sweep.

Thin: the outbox and the HTTP call are ``app/core/webhooks.py``. A message lost here (a
killed worker, a Redis restart) loses nothing: the deliveries are recorded in Redis
beside the event log, and ``tfgen.webhooks.sweep`` re-sends what is due.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, shared_task
from flask import current_app

from app.core.webhooks import WebhookStore
from app.logs import get_logger
from app.services import Services

log = get_logger("tfgen.webhooks")

# A retry this close is sent as a countdown; later ones wait for the sweep (a countdown
# longer than the broker's visibility timeout would duplicate the message).
COUNTDOWN_MAX = 300.0


def _store() -> WebhookStore:
    svc: Services = current_app.extensions["tfgen"]
    store = svc.webhooks
    assert store is not None, "webhooks need a Redis JOB_STORE_URL"
    return store


def enqueue_pairs(pairs: list[str], countdown: float | None = None) -> None:
    """One delivery task per (subscription, request) pair."""
    queue = current_app.config["WEBHOOK_QUEUE"]
    for pair in pairs:
        deliver.apply_async((pair,), queue=queue, countdown=countdown)


def submit_fan_out(celery: Celery, queue: str) -> None:
    """Ask ``queue`` for a fan-out (after an event is appended)."""
    # Time limits None: the worker's own settings govern (see tasks.generate.submit).
    celery.send_task(fan_out.name, queue=queue, time_limit=None, soft_time_limit=None)


def submit_pair(pair: str) -> None:
    """Ask for one pair's delivery now (the admin API's re-send)."""
    celery: Celery = current_app.extensions["celery"]
    celery.send_task(deliver.name, (pair,), queue=current_app.config["WEBHOOK_QUEUE"],
                     time_limit=None, soft_time_limit=None)


@shared_task(name="tfgen.webhooks.fan_out", ignore_result=True, acks_late=True)
def fan_out() -> int:
    """Record deliveries for new events and send them."""
    pairs = _store().fan_out()
    enqueue_pairs(sorted(set(pairs)))
    return len(pairs)


@shared_task(name="tfgen.webhooks.deliver", ignore_result=True, acks_late=True)
def deliver(pair: str) -> dict[str, Any]:
    """Send one pair's queued events in order; come back when the head must wait."""
    config = current_app.config
    outcome = _store().deliver_pair(pair, https_only=config["APP_ENV"] == "prod",
                                    allowed_hosts=config["WEBHOOK_ALLOWED_HOSTS"])
    for event_id in outcome.failed:
        log.warning("webhook.failed", pair=pair, event_id=event_id)
    if outcome.retry_in is not None and outcome.retry_in <= COUNTDOWN_MAX:
        enqueue_pairs([pair], countdown=outcome.retry_in)
    return {"delivered": len(outcome.delivered), "failed": len(outcome.failed),
            "busy": outcome.busy}


@shared_task(name="tfgen.webhooks.sweep", ignore_result=True)
def sweep() -> int:
    """Beat: fan out what no fan-out message carried, re-send every due pair."""
    svc: Services = current_app.extensions["tfgen"]
    store = svc.webhooks
    if store is None or not store.any():  # embedded store, or no subscription yet
        return 0
    store.fan_out()
    pairs = store.due_pairs()
    enqueue_pairs(pairs)
    return len(pairs)
