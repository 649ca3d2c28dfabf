"""``POST /api/v1/hooks/gitlab``: GitLab's project or group webhook (merge requests,
pipelines). Answers at once; a worker applies the event (``tasks.hooks.gitlab_hook``)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

from flask import current_app, request
from flask_restx import Namespace, Resource, fields

from app.apis.common import services
from app.apis.generate import error
from app.core import gitlab_events
from app.errors import ApiError, BadRequest, NotFound, QueueUnavailable, Unauthorized
from app.logs import get_logger
from app.metrics import GITLAB_HOOKS
from tasks.hooks import submit

ns = Namespace("hooks", description="Webhooks from GitLab (secret in X-Gitlab-Token)",
               path="/")
log = get_logger("tfgen.hooks")

MAX_BODY = 1024 * 1024  # GitLab's bodies are far smaller; anything bigger is not GitLab
DELIVERY_TTL = 7 * 24 * 3600  # GitLab retries a delivery for far less than this

accepted = ns.model("HookAccepted", {
    "status": fields.String(enum=["queued", "duplicate", "ignored"], required=True),
})


class PayloadTooLarge(ApiError):
    """A webhook body over 1 MB."""

    status, code = 413, "PAYLOAD_TOO_LARGE"


def _check_secret() -> None:
    secret = current_app.config.get("GITLAB_WEBHOOK_SECRET")
    if not secret:
        raise NotFound("webhooks are not configured (GITLAB_WEBHOOK_SECRET is unset)")
    given = request.headers.get("X-Gitlab-Token", "")
    if not hmac.compare_digest(given.encode(), str(secret).encode()):
        raise Unauthorized("X-Gitlab-Token is missing or wrong")


def _body() -> bytes:
    if (request.content_length or 0) > MAX_BODY:
        raise PayloadTooLarge("webhook body over 1 MB")
    body = request.stream.read(MAX_BODY + 1)  # a chunked body has no Content-Length
    if len(body) > MAX_BODY:
        raise PayloadTooLarge("webhook body over 1 MB")
    return body


def _delivery_id() -> str | None:
    """GitLab keeps ``Idempotency-Key`` across retries of one event (17.4+); older
    versions send ``X-Gitlab-Event-UUID`` only."""
    key = request.headers.get("Idempotency-Key") or request.headers.get("X-Gitlab-Event-UUID")
    return hashlib.sha256(key.encode()).hexdigest() if key else None


@ns.route("/hooks/gitlab")
class GitLabHook(Resource):
    """GitLab's Merge Request and Pipeline events."""

    @ns.doc(security=[], params={
        "X-Gitlab-Token": {"in": "header", "description": "GITLAB_WEBHOOK_SECRET"},
        "X-Gitlab-Event": {"in": "header", "description": "Merge Request Hook, Pipeline Hook"},
        "Idempotency-Key": {"in": "header", "description": "Same on every retry of an event"},
    })
    @ns.response(202, "Accepted (queued, a duplicate, or an event tfgen does not follow)",
                 accepted)
    @ns.response(400, "Body is not JSON", error)
    @ns.response(401, "X-Gitlab-Token missing or wrong", error)
    @ns.response(404, "GITLAB_WEBHOOK_SECRET is not set", error)
    @ns.response(413, "Body over 1 MB", error)
    @ns.response(503, "Queue unreachable; GitLab will retry", error)
    def post(self) -> tuple[dict[str, Any], int]:
        """Receive a GitLab webhook delivery."""
        _check_secret()
        body = _body()
        event_name = request.headers.get("X-Gitlab-Event", "")
        try:
            payload = json.loads(body)
        except ValueError as e:
            raise BadRequest("body is not JSON",
                             details={"errors": {"body": "not valid JSON"}}) from e
        event = gitlab_events.parse(event_name, payload)
        if event is None:
            log.info("hook.ignored", gitlab_event=event_name[:64])
            GITLAB_HOOKS.labels("other", "ignored").inc()
            return {"status": "ignored"}, 202
        svc = services()
        if event["kind"] == "merge_request" and svc.requests.resolve(
                f"branch:{event['project_path']}:{event['source_branch']}") is None:
            # Not a branch of tfgen's. (A pipeline's merge commit may become known a moment
            # after its event arrives, so pipelines are always left to the worker.)
            log.info("hook.ignored", gitlab_event=event_name, reason="branch tfgen did not make")
            GITLAB_HOOKS.labels(event["kind"], "ignored").inc()
            return {"status": "ignored"}, 202
        delivery = _delivery_id()
        if delivery and not svc.requests.claim_delivery(delivery, DELIVERY_TTL):
            log.info("hook.duplicate", gitlab_event=event_name)
            GITLAB_HOOKS.labels(event["kind"], "duplicate").inc()
            return {"status": "duplicate"}, 202
        try:
            submit(event)
        except Exception as e:
            if delivery:
                svc.requests.release_delivery(delivery)
            raise QueueUnavailable("queue unavailable; GitLab will deliver again") from e
        log.info("hook.queued", gitlab_event=event_name, kind=event["kind"])
        GITLAB_HOOKS.labels(event["kind"], "queued").inc()
        return {"status": "queued"}, 202
