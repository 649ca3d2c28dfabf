"""``/api/v1/waivers``: admins let one denied policy rule pass for one request, until a date."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import request
from flask_restx import Namespace, Resource, fields

from app.apis.common import IDENT, INT64_MAX, ONE_LINE, Int64, body_model, require_admin, services
from app.apis.generate import error
from app.core.waivers import Waiver
from app.errors import BadRequest, NotFound
from app.logs import audit

ns = Namespace("waivers", description="Policy waivers (admins)", path="/waivers")

waiver_request = body_model("WaiverRequest", {
    "cloud_id": fields.String(required=True, pattern=IDENT, max_length=30, example="aws"),
    "resource_type": fields.String(required=True, pattern=IDENT, max_length=30, example="ec2"),
    # Int64 as on /terraform/generate: no waiver for a request no job can name, and no
    # 7.0 (flask-restx's draft 2020-12 counts a whole float as an integer).
    "request_id": Int64(required=True, min=1, max=INT64_MAX, example=7),
    "rule": fields.String(required=True, min_length=1, max_length=200, pattern=ONE_LINE,
                          example="no-world-ingress-to-admin-or-database-ports",
                          description="The denied rule (``rule`` of a violation)"),
    "reason": fields.String(required=True, min_length=3, max_length=1000,
                            example="bastion host, SSH restricted by NACL; INC-4711"),
    "expires_at": fields.String(required=True, example="2026-12-31T00:00:00Z",
                                description="ISO 8601 date or time in the future (UTC "
                                            "when no offset is given)"),
}, ns=ns, strict=True)

waiver = ns.model("Waiver", {
    "id": fields.String(required=True),
    "cloud_id": fields.String(), "resource_type": fields.String(),
    "request_id": fields.Integer(), "rule": fields.String(), "reason": fields.String(),
    "expires_at": fields.String(), "granted_by": fields.String(),
    "created_at": fields.String(), "active": fields.Boolean(),
})


def _require_admin() -> str:
    return require_admin("only admins may grant, list or revoke policy waivers")


def parse_expiry(value: str) -> dt.datetime:
    """A future instant from an ISO date or datetime; naive values are UTC."""
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as e:
        raise BadRequest("expires_at is not an ISO 8601 date or time",
                         details={"errors": {"expires_at": "not an ISO 8601 date or time"}}
                         ) from e
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    if when <= dt.datetime.now(dt.UTC):
        raise BadRequest("expires_at is in the past",
                         details={"errors": {"expires_at": "must be in the future"}})
    return when


@ns.route("")
class Waivers(Resource):
    """Every waiver."""

    @ns.expect(waiver_request, validate=True)
    @ns.response(201, "Waiver granted", waiver)
    @ns.response(400, "Bad fields, or an expiry in the past", error)
    @ns.response(403, "Not an admin", error)
    def post(self) -> tuple[dict[str, Any], int]:
        """Grant a waiver: the rule passes for this request until expires_at."""
        admin = _require_admin()
        body = request.get_json()
        granted = Waiver.new(
            cloud_id=body["cloud_id"], resource_type=body["resource_type"],
            request_id=body["request_id"], rule=body["rule"], reason=body["reason"],
            expires_at=parse_expiry(body["expires_at"]), granted_by=admin)
        services().waivers.add(granted)
        audit("waiver", "granted", waiver_id=granted.id, rule=granted.rule,
              request=granted.request_key, expires_at=granted.expires_at, granted_by=admin)
        return granted.to_dict(), 201

    @ns.response(200, "Every waiver, newest first (expired ones with active false)", [waiver])
    @ns.response(403, "Not an admin", error)
    def get(self) -> list[dict[str, Any]]:
        """List waivers, newest first."""
        _require_admin()
        return [w.to_dict() for w in services().waivers.all()]


@ns.route("/<string:waiver_id>")
@ns.param("waiver_id", "The waiver's id")
class WaiverItem(Resource):
    """One waiver."""

    @ns.response(204, "Revoked")
    @ns.response(403, "Not an admin", error)
    @ns.response(404, "No such waiver", error)
    def delete(self, waiver_id: str) -> tuple[str, int]:
        """Revoke a waiver."""
        admin = _require_admin()
        if not services().waivers.delete(waiver_id):
            raise NotFound("no such waiver")
        audit("waiver", "revoked", waiver_id=waiver_id, revoked_by=admin)
        return "", 204
