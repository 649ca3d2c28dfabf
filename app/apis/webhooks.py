"""``/api/v1/webhooks``: admins subscribe receivers (APEX/ORDS, ...) to signed events."""

from __future__ import annotations

from typing import Any

from flask import current_app, request
from flask_restx import Namespace, Resource, fields

from app.apis.common import ONE_LINE, Int64, body_model, require_admin, services
from app.apis.generate import error
from app.core.events import CURSOR
from app.core.webhooks import WebhookStore, check_target
from app.errors import ApiError
from app.logs import audit
from tasks.deliver import submit_pair

ns = Namespace("webhooks", description="Webhooks out (admins)", path="/webhooks")

PATTERN = r"^[a-z*][a-z.*_]{0,63}(?![\s\S])"

webhook_request = body_model("WebhookRequest", {
    "url": fields.String(required=True, min_length=8, max_length=2000,
                         example="https://apex.example.com/ords/tfgen/hooks/events"),
    "events": fields.List(fields.String(pattern=PATTERN), required=True, min_items=1,
                          max_items=20, example=["job.*", "request.merged"],
                          description="Event types; * matches any part (job.*, request.*)"),
    "description": fields.String(max_length=500, pattern=ONE_LINE, example="APEX requests"),
}, ns=ns, strict=True)

webhook = ns.model("Webhook", {
    "id": fields.String(required=True), "url": fields.String(required=True),
    "events": fields.List(fields.String), "description": fields.String(),
    "created_by": fields.String(), "created_at": fields.String(),
    "previous_secret_until": fields.String(
        description="Until then the secret before the last rotation still signs too"),
})
webhook_secret = ns.inherit("WebhookWithSecret", webhook, {
    "secret": fields.String(required=True, example="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                            description="Shown only here: keep it for verification"),
})
rotate_request = body_model("RotateRequest", {
    "grace_seconds": Int64(min=0, max=7 * 86400, example=86400,
                           description="How long the old secret keeps signing, whole "
                                       "seconds (default WEBHOOK_ROTATION_GRACE)"),
}, ns=ns, strict=True)
delivery = ns.model("Delivery", {
    "event_id": fields.String(required=True), "type": fields.String(),
    "request": fields.String(description="cloud_id/resource_type/request_id"),
    "status": fields.String(enum=["pending", "delivered", "failed"]),
    "attempts": fields.Integer(), "last_status": fields.Integer(description="HTTP status"),
    "last_error": fields.String(), "next_attempt": fields.String(),
    "created_at": fields.String(), "delivered_at": fields.String(),
})


class WebhooksUnavailable(ApiError):
    """Webhooks keep their outbox beside a Redis event log."""

    status, code = 501, "WEBHOOKS_UNAVAILABLE"


def _admin_store() -> tuple[str, WebhookStore]:
    admin = require_admin("only admins may manage webhooks")
    store = services().webhooks
    if store is None:
        raise WebhooksUnavailable("webhooks need JOB_STORE_URL on Redis")
    return admin, store


def _check(url: str) -> None:
    config = current_app.config
    check_target(url, https_only=config["APP_ENV"] == "prod",
                 allowed_hosts=config["WEBHOOK_ALLOWED_HOSTS"])


@ns.route("")
class Webhooks(Resource):
    """Every subscription."""

    @ns.expect(webhook_request, validate=True)
    @ns.response(201, "Subscribed; the secret is shown this once", webhook_secret)
    @ns.response(400, "Bad fields, or a URL that may not be called", error)
    @ns.response(403, "Not an admin", error)
    def post(self) -> tuple[dict[str, Any], int]:
        """Subscribe a URL to event types."""
        admin, store = _admin_store()
        body = request.get_json()
        _check(body["url"])
        sub, secret = store.create(body["url"], body["events"], body.get("description", ""),
                                   admin)
        audit("webhook", "created", webhook_id=sub["id"], url=sub["url"], by=admin)
        return {**sub, "secret": secret}, 201

    @ns.response(200, "Every subscription (no secrets)", [webhook])
    @ns.response(403, "Not an admin", error)
    def get(self) -> list[dict[str, Any]]:
        """List subscriptions."""
        _, store = _admin_store()
        return [store.public(s) for s in store.all()]


@ns.route("/<string:webhook_id>")
@ns.param("webhook_id", "The subscription's id")
class WebhookItem(Resource):
    """One subscription."""

    @ns.response(200, "The subscription (no secret)", webhook)
    @ns.response(403, "Not an admin", error)
    @ns.response(404, "No such webhook", error)
    def get(self, webhook_id: str) -> dict[str, Any]:
        """Read a subscription."""
        _, store = _admin_store()
        return store.public(store.get(webhook_id))

    @ns.response(204, "Deleted, with its delivery log")
    @ns.response(403, "Not an admin", error)
    @ns.response(404, "No such webhook", error)
    def delete(self, webhook_id: str) -> tuple[str, int]:
        """Delete a subscription."""
        admin, store = _admin_store()
        store.delete(webhook_id)
        audit("webhook", "deleted", webhook_id=webhook_id, by=admin)
        return "", 204


@ns.route("/<string:webhook_id>/rotate")
@ns.param("webhook_id", "The subscription's id")
class WebhookRotate(Resource):
    """A new secret for one subscription."""

    @ns.expect(rotate_request, validate=True)
    @ns.response(200, "The new secret, shown this once; the old one signs until "
                      "previous_secret_until", webhook_secret)
    @ns.response(403, "Not an admin", error)
    @ns.response(404, "No such webhook", error)
    def post(self, webhook_id: str) -> dict[str, Any]:
        """Rotate the secret: both sign during the grace period."""
        admin, store = _admin_store()
        grace = (request.get_json(silent=True) or {}).get("grace_seconds")
        sub, secret = store.rotate(webhook_id, grace)
        audit("webhook", "rotated", webhook_id=webhook_id, by=admin)
        return {**sub, "secret": secret}


@ns.route("/<string:webhook_id>/deliveries")
@ns.param("webhook_id", "The subscription's id")
class WebhookDeliveries(Resource):
    """The delivery log of one subscription."""

    @ns.response(200, "Deliveries, newest event first", [delivery])
    @ns.response(403, "Not an admin", error)
    @ns.response(404, "No such webhook", error)
    def get(self, webhook_id: str) -> list[dict[str, Any]]:
        """List deliveries: attempts, last HTTP status, next attempt, status."""
        _, store = _admin_store()
        return store.deliveries(webhook_id)


@ns.route("/<string:webhook_id>/deliveries/<string:event_id>/redeliver")
@ns.param("webhook_id", "The subscription's id")
@ns.param("event_id", "The event's id (its cursor)", pattern=CURSOR)
class WebhookRedeliver(Resource):
    """Send one event again."""

    @ns.response(202, "Queued again, attempts from zero")
    @ns.response(403, "Not an admin", error)
    @ns.response(404, "No such webhook or delivery", error)
    def post(self, webhook_id: str, event_id: str) -> tuple[dict[str, Any], int]:
        """Redeliver an event (delivered or failed) with the same webhook-id."""
        admin, store = _admin_store()
        pair = store.redeliver(webhook_id, event_id)
        submit_pair(pair)
        audit("webhook", "redeliver", webhook_id=webhook_id, event_id=event_id, by=admin)
        return {"event_id": event_id, "status": "pending"}, 202
