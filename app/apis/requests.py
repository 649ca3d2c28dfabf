"""``/api/v1/requests``: what became of each APEX request after its merge request."""

from __future__ import annotations

import re
from typing import Any

from flask import request
from flask_restx import Namespace, Resource, fields

from app.apis.generate import IDENT, error, services
from app.auth import Principal, current_principal
from app.core.requests import STATES, RequestRecord, request_key
from app.errors import BadRequest, NotFound

ns = Namespace("requests", description="Request records: merge request, merge, pipeline",
               path="/")

request_document = ns.model("Request", {
    "cloud_id": fields.String(required=True),
    "resource_type": fields.String(required=True),
    "request_id": fields.Integer(required=True),
    "state": fields.String(enum=list(STATES), required=True),
    "merge_request": fields.Raw(description="project_id, project_path, iid, url, source_branch, "
                                            "target_branch, merge_commit_sha, state, pipeline"),
    "branch": fields.Raw(description="git publisher: name, target_branch, commit_sha, remote"),
    "owner": fields.String(description="Owner of the last job"),
    "owners": fields.List(fields.String, description="Owners of its jobs"),
    "last_job": fields.String(),
    "jobs": fields.List(fields.String),
    "history": fields.Raw(description="[{at, state, source: job|webhook|reconcile, detail}]"),
    "updated_at": fields.String(),
})


def can_see_request(principal: Principal, record: RequestRecord) -> bool:
    """Owners of its jobs, admins, and ``on_behalf_of`` clients within their clouds."""
    if principal.username in record.owners or principal.is_admin:
        return True
    return principal.may_act_for_others and (
        "*" in principal.clouds or record.cloud_id in principal.clouds)


@ns.route("/requests/<string:cloud_id>/<string:resource_type>/<int:request_id>")
class Request(Resource):
    """One request."""

    @ns.response(200, "The request record", request_document)
    @ns.response(404, "No job ever ran for it, or the caller may not see it", error)
    def get(self, cloud_id: str, resource_type: str, request_id: int) -> dict[str, Any]:
        """Return the request's state, merge request and history."""
        record = services().requests.get(request_key(cloud_id, resource_type, request_id))
        if record is None or not can_see_request(current_principal(), record):
            raise NotFound("no such request")
        return record.document()


@ns.route("/requests")
class Requests(Resource):
    """The caller's requests."""

    @ns.doc(params={"state": f"One of {', '.join(STATES)}", "cloud_id": "Filter",
                    "resource_type": "Filter", "limit": "How many (default 100, at most 500)"})
    @ns.response(200, "Visible request records, most recently changed first", [request_document])
    @ns.response(400, "Unknown state", error)
    def get(self) -> list[dict[str, Any]]:
        """List the request records the caller may see, newest first."""
        state = request.args.get("state") or None
        if state is not None and state not in STATES:
            raise BadRequest(f"state must be one of {', '.join(STATES)}",
                             details={"errors": {"state": "unknown state"}})
        filters = {k: request.args.get(k) or None for k in ("cloud_id", "resource_type")}
        for name, value in filters.items():
            if value is not None and not re.match(IDENT, value):
                raise BadRequest(f"{name} is not an identifier",
                                 details={"errors": {name: "not an identifier"}})
        limit = max(1, min(request.args.get("limit", 100, type=int) or 100, 500))
        principal = current_principal()
        out: list[dict[str, Any]] = []
        # Filter after reading: ask for more than the page, visibility drops some.
        for record in services().requests.list(state=state, limit=limit * 10, **filters):
            if can_see_request(principal, record):
                out.append(record.document())
                if len(out) >= limit:
                    break
        return out
