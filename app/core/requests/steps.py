"""The request state machine: one step function per source that moves a record.

- jobs: started -> ``generating``; SUCCESS -> ``mr_open`` (a merge request) or
  ``published`` (the git publisher); FAILURE/REVOKED -> ``failed``, unless the merge
  request is still open (the state stays ``mr_open``, ``history`` says why);
- GitLab's webhooks and the reconciler: merge request ``merge`` -> ``merged``, ``close``
  -> ``closed``, ``open``/``reopen`` -> ``mr_open``; the target branch's pipeline for the
  merge commit ``success`` -> ``applied``, ``failed`` -> ``apply_failed``; with the git
  publisher a branch whose tip reached the target -> ``merged``.

Webhooks and the reconciler never move a record backwards: each state has a rank
(``RANK``) and an event may only raise it (close and reopen trade places at one rank),
only for the merge request the record knows (its ``iid``), and a pipeline only for the
merge commit, newer than the last one taken. A ``merge`` followed by a late ``update``
or ``close`` stays ``merged``. Only a new job starts a record's life again.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from typing import Any

from app.core.requests.record import JOBS_KEPT, RANK, RequestRecord, Step

__all__ = ["branch_merged_step", "job_step", "merge_request_step", "pipeline_step"]


def _stamp(value: str | None) -> str:
    """A GitLab timestamp (``2016-08-12 15:26:29 UTC`` in hooks, ISO 8601 in the API) as
    ISO 8601 UTC, so that the two compare; empty when absent or unreadable."""
    if not value:
        return ""
    text = value.strip().replace(" UTC", "+00:00").replace("Z", "+00:00")
    try:
        parsed = dt.datetime.fromisoformat(text)
    except ValueError:
        return ""
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.astimezone(dt.UTC).isoformat(timespec="milliseconds")


def job_step(job: Mapping[str, Any], *, target_branch: str,
             project_path: Callable[[str | None], str | None]) -> Step:
    """The step for a job's status change (``job`` is its document).

    Args:
        job: The job document after the change.
        target_branch: Where the git publisher's branches are meant to land.
        project_path: Turns the result's ``remote`` (the project's web URL) into the
            project's path, the key GitLab's webhooks name it by.
    """
    request = job["request"]
    status = job["status"]

    def step(current: RequestRecord | None) -> tuple[RequestRecord, bool] | None:
        if current is None and status != "STARTED" and not job.get("started_at"):
            return None  # canceled or expired in the queue: tfgen never worked on it
        record = current or RequestRecord(request["cloud_id"], request["resource_type"],
                                          int(request["request_id"]), owner=job["owner"])
        record.owner = job["owner"]
        if job["owner"] not in record.owners:
            record.owners = [*record.owners, job["owner"]]
        if job["uuid"] not in record.jobs:
            record.jobs = [*record.jobs, job["uuid"]][-JOBS_KEPT:]
        record.last_job = job["uuid"]
        tag = f"job {job['uuid']}"
        if status == "STARTED":
            if current is not None and current.state == "generating":
                return record, False  # another job of a request already generating
            changed = record.move("generating", "job", f"{tag} started")
        elif status == "SUCCESS":
            changed = _job_succeeded(record, job, tag, target_branch, project_path)
        else:  # FAILURE or REVOKED
            error = job.get("error") or {}
            what = f"{tag} ended {status} ({error.get('code', 'INTERNAL')})"
            mr = record.merge_request or {}
            if mr.get("state") == "opened":
                record.note("job", f"{what}; merge request !{mr.get('iid')} is still open")
                changed = record.move("mr_open", "job", "merge request still open")
            else:
                changed = record.move("failed", "job", what)
        return record, changed or current is None  # a new record is news too

    return step


def _job_succeeded(record: RequestRecord, job: Mapping[str, Any], tag: str,
                   target_branch: str, project_path: Callable[[str | None], str | None]
                   ) -> bool:
    result = job.get("result") or {}
    commit = (result.get("commit") or {}).get("sha")
    mr = result.get("merge_request")
    if mr:
        known = record.merge_request or {}
        same = known.get("iid") == mr["iid"] and known.get("source_branch") == mr["source_branch"]
        record.merge_request = {
            "project_id": known.get("project_id") if same else None,
            "project_path": project_path(result.get("remote")),
            "iid": mr["iid"], "url": mr["url"], "source_branch": mr["source_branch"],
            "target_branch": mr["target_branch"],
            "merge_commit_sha": known.get("merge_commit_sha") if same else None,
            "state": known.get("state", "opened") if same else "opened",
            "pipeline": known.get("pipeline") if same else None,
        }
        record.branch = None
        if same and RANK[record.state] > RANK["mr_open"]:
            record.note("job", f"{tag} succeeded; merge request !{mr['iid']} already "
                        f"{record.state}")
            return False
        return record.move("mr_open", "job", f"{tag} succeeded: merge request !{mr['iid']}")
    record.merge_request = None
    record.branch = {"name": result.get("branch"), "target_branch": target_branch,
                     "commit_sha": commit, "remote": result.get("remote")}
    return record.move("published", "job", f"{tag} succeeded: {result.get('branch')} "
                       f"at {str(commit)[:12]}")


def merge_request_step(*, iid: int, action: str, source: str, project_id: int | None = None,
                       merge_commit_sha: str | None = None) -> Step:
    """The step for a merge request event (a webhook's ``action``, or the reconciler's
    reading of the MR's ``state`` turned into ``merge``/``close``/``reopen``)."""
    targets = {"merge": "merged", "close": "closed", "reopen": "mr_open", "open": "mr_open"}
    mr_states = {"merge": "merged", "close": "closed", "reopen": "opened", "open": "opened"}

    def step(current: RequestRecord | None) -> tuple[RequestRecord, bool] | None:
        if current is None or not current.merge_request:
            return None
        mr = dict(current.merge_request)
        if mr.get("iid") != iid:
            return None  # an older merge request of this branch, or one tfgen did not open
        target = targets.get(action)
        if target is None:
            return None  # update, approved, ...: nothing that moves the request
        if project_id is not None:
            mr["project_id"] = project_id
        rank, now = RANK[target], RANK[current.state]
        if mr.get("state") == "merged" or rank < now or (
                rank == now and current.state not in {"mr_open", "closed"}):
            return None  # late or replayed: never backwards
        if target == current.state:
            return None
        mr["state"] = mr_states[action]
        if action == "merge":
            mr["merge_commit_sha"] = merge_commit_sha or mr.get("merge_commit_sha")
        current.merge_request = mr
        detail = f"merge request !{iid} {action}"
        if action == "merge" and mr["merge_commit_sha"]:
            detail += f" as {mr['merge_commit_sha'][:12]}"
        return current, current.move(target, source, detail)

    return step


def pipeline_step(*, pipeline_id: int, status: str, sha: str, ref: str, source: str,
                  finished_at: str | None = None) -> Step:
    """The step for the target branch's pipeline on the merge commit."""
    target = {"success": "applied", "failed": "apply_failed"}.get(status)

    def step(current: RequestRecord | None) -> tuple[RequestRecord, bool] | None:
        if target is None or current is None or not current.merge_request:
            return None
        mr = dict(current.merge_request)
        if current.state not in {"merged", "applied", "apply_failed"} \
                or mr.get("merge_commit_sha") != sha or mr.get("target_branch") != ref:
            return None
        seen = mr.get("pipeline") or {}
        finished = _stamp(finished_at)
        newer = (pipeline_id, finished) > (int(seen.get("id") or 0),
                                           seen.get("finished_at") or "")
        if not newer:
            return None  # an older pipeline, or this one's earlier news arriving late
        mr["pipeline"] = {"id": pipeline_id, "status": status, "finished_at": finished}
        current.merge_request = mr
        return current, current.move(target, source,
                                     f"pipeline {pipeline_id} on {ref} {status}")

    return step


def branch_merged_step(*, target_sha: str, source: str) -> Step:
    """The step for the git publisher's branch found inside its target branch."""

    def step(current: RequestRecord | None) -> tuple[RequestRecord, bool] | None:
        if current is None or current.state != "published" or not current.branch:
            return None
        current.branch = {**current.branch, "merged_into": target_sha}
        name, target = current.branch.get("name"), current.branch.get("target_branch")
        return current, current.move("merged", source, f"{name} merged into {target} "
                                     f"(at {target_sha[:12]})")

    return step
