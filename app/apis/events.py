"""``GET /api/v1/events``: one ordered feed of job and request changes, long-polled."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask_restx import Namespace, Resource, fields, inputs, reqparse

from app.apis.common import services
from app.apis.generate import error
from app.auth import can_see, current_principal
from app.core.events import CURSOR, read_events

ns = Namespace("events", description="The feed of job and request changes", path="/")

MAX_WAIT = 25

event_model = ns.model("Event", {
    "id": fields.String(required=True, description="The cursor: pass it as `after`"),
    "type": fields.String(required=True, example="request.merged",
                          description="job.started|retry|succeeded|failed|canceled, "
                                      "request.<state>"),
    "at": fields.String(),
    "owner": fields.String(),
    "cloud_id": fields.String(),
    "resource_type": fields.String(),
    "request_id": fields.Integer(),
    "job_uuid": fields.String(),
    "data": fields.Raw(),
})
page = ns.model("Events", {
    "events": fields.List(fields.Nested(event_model), required=True),
    "next": fields.String(required=True, description="Pass as `after` on the next poll"),
})


feed_args = reqparse.RequestParser(bundle_errors=True)
feed_args.add_argument("after", type=inputs.regex(CURSOR), location="args",
                       help="Cursor of the last event seen (absent: the oldest kept)")
feed_args.add_argument("limit", type=inputs.int_range(1, 500), default=100, location="args",
                       help="At most this many (1-500, default 100)")
feed_args.add_argument("wait", type=inputs.int_range(0, MAX_WAIT), default=0, location="args",
                       help="Seconds to hold the answer open until an event arrives (0-25)")


@ns.route("/events")
class Events(Resource):
    """The event feed."""

    @ns.expect(feed_args, validate=True)
    @ns.response(200, "Events after the cursor that the caller may see", page)
    @ns.response(400, "Bad cursor, limit or wait", error)
    def get(self) -> dict[str, Any]:
        """Return the events after `after`; with `wait`, hold on until one arrives."""
        args = feed_args.parse_args(strict=True)
        limit, wait = args["limit"], args["wait"]
        principal = current_principal()

        def visible(event: Mapping[str, Any]) -> bool:
            owners = (event.get("data") or {}).get("owners") or ()
            return can_see(principal, str(event.get("owner"))) or principal.username in owners

        events, cursor = read_events(services().events, after=args["after"] or None,
                                     limit=limit, wait=wait, visible=visible)
        return {"events": events, "next": cursor}
