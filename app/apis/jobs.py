"""``/api/v1/uuid/<uuid>`` and ``/api/v1/jobs``: poll, cancel and list jobs."""

from __future__ import annotations

from typing import Any

from flask import current_app
from flask_restx import Namespace, Resource, fields

from app.apis.common import NullableRaw, NullableString, list_query, services
from app.apis.generate import error
from app.auth import can_see, current_principal
from app.core.jobs import STATUSES, JobRecord, expire_overdue
from app.core.pipeline import STAGES
from app.errors import Conflict, NotFound
from app.logs import audit, bind_job

ns = Namespace("jobs", description="Poll, cancel and list generation jobs", path="/")

stage_entry = ns.model("StageEntry", {
    "stage": fields.String(required=True, example="render",
                           description="A stage entered, or retry (with its reason)"),
    "at": fields.String(required=True, example="2026-12-01T14:30:02.120000+00:00"),
    "attempt": fields.Integer(example=1),
})

job_document = ns.model("Job", {
    "uuid": fields.String(required=True),
    "status": fields.String(enum=list(STATUSES), required=True),
    "stage": fields.String(enum=list(STAGES)),
    "owner": fields.String(),
    "request": fields.Raw(example={"cloud_id": "aws", "resource_type": "rds",
                                   "request_id": 42, "dry_run": False}),
    "submitted_at": fields.String(),
    "started_at": NullableString(description="null until a worker starts it"),
    "finished_at": NullableString(description="null until it ends"),
    "attempts": fields.Integer(),
    "result": NullableRaw(description="merge_request, commit, files, unchanged (dry run: "
                                      "files with content and the validation report); null "
                                      "until SUCCESS"),
    "error": NullableRaw(description="{code, message, retryable}; null unless it failed"),
    "correlation_id": NullableString(),
    "cancel_requested": fields.Boolean(),
    "stages": fields.List(fields.Nested(stage_entry),
                          description="Each stage entered, with its time and attempt"),
})


def _visible_job(job_uuid: str) -> JobRecord:
    """The job if it exists and the caller may see it; unknown and foreign look alike."""
    principal = current_principal()
    record = services().jobs.get(job_uuid)
    if record is None or not can_see(principal, record.owner):
        raise NotFound("no such job")
    return expire_overdue(services().job_lifecycle, record, current_app.config)


@ns.route("/uuid/<string:job_uuid>")
@ns.param("job_uuid", "The job's UUID, as answered by POST /terraform/generate")
class Job(Resource):
    """One job."""

    @ns.response(200, "The job document", job_document)
    @ns.response(404, "Unknown, expired, or another user's job", error)
    def get(self, job_uuid: str) -> dict[str, Any]:
        """Return the job's status, stage and result or error."""
        return _visible_job(job_uuid).document()

    @ns.response(202, "Cancel requested", job_document)
    @ns.response(404, "Unknown, expired, or another user's job", error)
    @ns.response(409, "Already finished", error)
    def delete(self, job_uuid: str) -> tuple[dict[str, Any], int]:
        """Cancel a job: at once if queued, at the next stage if running."""
        record = _visible_job(job_uuid)
        bind_job(record.uuid, record.owner, record.request)
        canceled_by = current_principal().username
        # Ended at once (queued) is audited as the job's end, by the lifecycle's hook.
        canceled = services().job_lifecycle.cancel(
            record.uuid, revoke=current_app.extensions["celery"].control.revoke,
            canceled_by=canceled_by)
        if canceled is None:
            audit("cancel", "refused", status=record.status, canceled_by=canceled_by)
            raise Conflict(f"job already finished ({record.status})")
        if not canceled.final:
            audit("cancel", "requested", status=canceled.status, canceled_by=canceled_by)
        return canceled.document(), 202


list_args = list_query({
    "user": {"help": "Admins only: list this user's jobs (default: everyone's)"},
}, default=50, most=200)


@ns.route("/jobs")
class Jobs(Resource):
    """The caller's jobs."""

    @ns.expect(list_args, validate=True)
    @ns.response(200, "Recent jobs, newest first", [job_document])
    @ns.response(400, "limit is not a whole number from 1 to 200", error)
    def get(self) -> list[dict[str, Any]]:
        """List recent jobs, newest first."""
        principal = current_principal()
        args = list_args.parse_args(strict=True)
        owner = (args["user"] or None) if principal.is_admin else principal.username
        records = services().jobs.list(owner, args["limit"])
        return [r.document() for r in records]
