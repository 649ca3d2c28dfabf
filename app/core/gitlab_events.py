"""GitLab's Merge Request and Pipeline webhook events, read and applied to requests.

``parse`` keeps only what the state machine needs (a small dict that travels in a Celery
message); ``apply`` finds the request tfgen made for it and runs the step through the
lifecycle hook. Events for branches or commits tfgen did not make find no request and
are ignored. Payload shapes: GitLab's "Webhook events" documentation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.core.lifecycle import Lifecycle
from app.core.requests import RequestRecord, merge_request_step, pipeline_step

__all__ = ["HOOK_EVENTS", "apply", "parse"]

HOOK_EVENTS = ("Merge Request Hook", "Pipeline Hook")


def parse(event: str, payload: Any) -> dict[str, Any] | None:
    """The fields of a delivery tfgen acts on, or None for an event it does not follow.

    Args:
        event: The ``X-Gitlab-Event`` header.
        payload: The decoded JSON body.
    """
    if not isinstance(payload, Mapping):
        return None
    attrs = payload.get("object_attributes")
    project = payload.get("project")
    if not isinstance(attrs, Mapping) or not isinstance(project, Mapping):
        return None
    path = project.get("path_with_namespace")
    if not isinstance(path, str):
        return None
    try:
        if event == "Merge Request Hook" and payload.get("object_kind") == "merge_request":
            return {"kind": "merge_request", "project_path": path,
                    "project_id": int(project["id"]), "iid": int(attrs["iid"]),
                    "action": str(attrs.get("action") or ""),
                    "source_branch": str(attrs["source_branch"]),
                    "merge_commit_sha": attrs.get("merge_commit_sha")}
        if event == "Pipeline Hook" and payload.get("object_kind") == "pipeline":
            return {"kind": "pipeline", "project_path": path, "pipeline_id": int(attrs["id"]),
                    "ref": str(attrs["ref"]), "sha": str(attrs["sha"]),
                    "status": str(attrs["status"]), "finished_at": attrs.get("finished_at")}
    except (KeyError, TypeError, ValueError):
        return None
    return None


def apply(lifecycle: Lifecycle, event: Mapping[str, Any], *, source: str = "webhook"
          ) -> RequestRecord | None:
    """Apply a parsed event to the request it belongs to; None when it belongs to none."""
    store = lifecycle.requests
    path = event["project_path"]
    if event["kind"] == "merge_request":
        key = store.resolve(f"branch:{path}:{event['source_branch']}")
        if key is None:
            return None
        step = merge_request_step(iid=event["iid"], action=event["action"], source=source,
                                  project_id=event.get("project_id"),
                                  merge_commit_sha=event.get("merge_commit_sha"))
    else:
        key = store.resolve(f"commit:{path}:{event['sha']}")
        if key is None:
            return None
        step = pipeline_step(pipeline_id=event["pipeline_id"], status=event["status"],
                             sha=event["sha"], ref=event["ref"], source=source,
                             finished_at=event.get("finished_at"))
    return lifecycle.request_step(key, step, source=source)
