"""What a job's end tells the operators: the metric, the ``job.finished`` line, the audit record.

``job_finished`` is the on-finished hook ``app/services.py`` hands to
``app.core.jobs.JobLifecycle``: core ends the job and calls it once, in whichever
process ended it (a pool child, a worker's main process, beat's sweep, the API).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.core.jobs import JobRecord
from app.logs import audit, get_logger
from app.metrics import JOBS_FINISHED

__all__ = ["job_finished"]

log = get_logger("tfgen.jobs")


def job_finished(record: JobRecord, context: Mapping[str, Any]) -> None:
    """Count, log and audit a job that just ended.

    Args:
        record: The job as it ended.
        context: What the ending path adds to the audit line (``canceled_by``).
    """
    error = record.error or {}
    code = str(error.get("code") or "none")
    JOBS_FINISHED.labels(record.status, code).inc()
    # The job's own fields, so a line written outside its task (the sweep ends many
    # jobs in one run, the API ends one on read) names the job it is about.
    job = {"job_uuid": record.uuid, "user": record.owner,
           **{k: record.request.get(k) for k in ("cloud_id", "resource_type", "request_id")}}
    log.info("job.finished", status=record.status, code=code, attempts=record.attempts,
             stage=record.stage, **job)
    if record.status == "SUCCESS" and not record.request.get("dry_run"):
        result = record.result or {}
        merge_request = result.get("merge_request") or {}
        audit("publish", "success", merge_request=merge_request.get("url"),
              merge_request_iid=merge_request.get("iid"),
              commit=(result.get("commit") or {}).get("sha"), branch=result.get("branch"),
              unchanged=result.get("unchanged"),
              files=[f.get("path") for f in result.get("files") or []], **job)
    elif record.status == "FAILURE":
        audit("failure", "failure", code=code, message=error.get("message"),
              retryable=error.get("retryable"), attempts=record.attempts, **job)
    elif record.status == "REVOKED":
        audit("cancel", "canceled", stage=record.stage, status=record.status, **job,
              **context)
