"""``POST /api/v1/terraform/generate``: accept a job, answer 202 with its UUID."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from flask import g, request
from flask_restx import Resource, fields

from app.apis.common import IDENT, INT64_MAX, Int64, body_model, error_model, services
from app.apis.terraform import ns
from app.auth import current_principal, require_cloud, resolve_owner
from app.core.jobs import JobRecord
from app.logs import audit, bind_job
from app.metrics import JOBS_SUBMITTED
from tasks.generate import submit

generate_request = body_model("GenerateRequest", {
    "cloud_id": fields.String(required=True, pattern=IDENT, max_length=30, example="aws",
                              description="Cloud of the request (a catalog pair with its type)"),
    "resource_type": fields.String(required=True, pattern=IDENT, max_length=30, example="rds"),
    "request_id": Int64(required=True, min=1, max=INT64_MAX, example=42,
                        description="Row id in v_<cloud_id>_<resource_type>_requests "
                                    "(a whole number, at most 2**63 - 1)"),
    "dry_run": fields.Boolean(default=False,
                              description="Render and validate only; return the files"),
    "on_behalf_of": fields.String(max_length=128,
                                  description="User to act for (needs tfgen.on_behalf_of; "
                                              "APEX only)"),
}, example={"cloud_id": "aws", "resource_type": "rds", "request_id": 42, "dry_run": False},
    ns=ns, strict=True)

accepted = ns.model("JobAccepted", {
    "uuid": fields.String(required=True, example="0b7e4c2a-5d1f-4e8a-9c3b-2f6d8a1e7b40"),
    "status": fields.String(required=True, example="PENDING"),
    "links": fields.Raw(example={"self": "/api/v1/uuid/0b7e4c2a-5d1f-4e8a-9c3b-2f6d8a1e7b40"}),
})

error = ns.add_model("Error", error_model)


def _idempotency_key(owner: str) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if not key:
        return None
    return hashlib.sha256(f"{owner}\0{key}".encode()).hexdigest()


@ns.route("/generate")
class Generate(Resource):
    """Generation jobs."""

    @ns.expect(generate_request, validate=True)
    @ns.response(202, "Job accepted", accepted, headers={"Location": "The job's URL"})
    @ns.response(400, "Bad JSON or fields (errors per field)", error)
    @ns.response(401, "Not signed in", error)
    @ns.response(403, "Caller may not use this cloud", error)
    @ns.response(404, "Unknown cloud_id/resource_type pair", error)
    @ns.response(503, "Queue unreachable; nothing recorded", error)
    def post(self) -> tuple[dict[str, Any], int, dict[str, str]]:
        """Submit a generation job for one APEX request row."""
        body = request.get_json()
        principal = current_principal()
        svc = services()
        # The catalog is readable by every signed-in user: 404 before 403 leaks nothing.
        svc.store.require_pair(body["cloud_id"], body["resource_type"])
        require_cloud(principal, body["cloud_id"])
        owner = resolve_owner(principal, body.get("on_behalf_of"))
        job = JobRecord(
            uuid=str(uuid.uuid4()), owner=owner, correlation_id=g.correlation_id,
            request={"cloud_id": body["cloud_id"], "resource_type": body["resource_type"],
                     "request_id": body["request_id"], "dry_run": bool(body.get("dry_run"))},
        )
        bind_job(job.uuid, owner, job.request)
        idem = _idempotency_key(owner)
        # Record and key in one atomic step: a duplicate finds both or neither.
        holder = svc.jobs.create(job, idempotency_key=idem)
        if holder.uuid != job.uuid:
            bind_job(holder.uuid, owner, holder.request)
            audit("submit", "duplicate", status=holder.status, submitted_by=principal.username)
            return self._accepted(holder.uuid, holder.status)
        try:
            submit(job.uuid, job.correlation_id or "", "{cloud_id}/{resource_type}/{request_id}"
                    .format(**job.request))
        except BaseException:
            # Nothing half-recorded: a job that is not on the queue has no record either.
            svc.jobs.delete(job.uuid)
            if idem:
                svc.jobs.release_idempotency(idem)
            raise
        audit("submit", "accepted", dry_run=job.request["dry_run"],
              submitted_by=principal.username)
        JOBS_SUBMITTED.labels(job.request["cloud_id"], job.request["resource_type"]).inc()
        return self._accepted(job.uuid, job.status)

    @staticmethod
    def _accepted(job_uuid: str, status: str = "PENDING"
                  ) -> tuple[dict[str, Any], int, dict[str, str]]:
        location = f"/api/v1/uuid/{job_uuid}"
        return ({"uuid": job_uuid, "status": status, "links": {"self": location}},
                202, {"Location": location})
