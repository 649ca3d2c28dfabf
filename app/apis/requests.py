"""``/api/v1/requests``: what became of each APEX request after its merge request."""

from __future__ import annotations

from typing import Any

from flask_restx import Namespace, Resource, fields, inputs

from app.apis.common import IDENT, list_query, services
from app.apis.generate import error
from app.auth import Principal, current_principal
from app.core.requests import STATES, RequestRecord, request_key
from app.errors import NotFound

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


list_args = list_query({
    "state": {"choices": STATES, "help": "Only this state"},
    "cloud_id": {"type": inputs.regex(IDENT), "help": "Only this cloud"},
    "resource_type": {"type": inputs.regex(IDENT), "help": "Only this resource type"},
}, default=100, most=500)


@ns.route("/requests")
class Requests(Resource):
    """The caller's requests."""

    @ns.expect(list_args, validate=True)
    @ns.response(200, "Visible request records, most recently changed first", [request_document])
    @ns.response(400, "Unknown state, or a filter that is no identifier", error)
    def get(self) -> list[dict[str, Any]]:
        """List the request records the caller may see, newest first."""
        args = list_args.parse_args(strict=True)
        state, limit = args["state"], args["limit"]
        filters = {k: args[k] or None for k in ("cloud_id", "resource_type")}
        principal = current_principal()
        out: list[dict[str, Any]] = []
        # Filter after reading: ask for more than the page, visibility drops some.
        for record in services().requests.list(state=state, limit=limit * 10, **filters):
            if can_see_request(principal, record):
                out.append(record.document())
                if len(out) >= limit:
                    break
        return out
