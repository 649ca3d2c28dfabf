"""Unbound singletons, bound to an application in ``create_app``."""

from __future__ import annotations

from flask_restx import Api

__all__ = ["api_v1"]


def api_v1() -> Api:
    """A new, unbound flask-restx Api for ``/api/v1`` (one per app: restx keeps state)."""
    return Api(
        version="1",
        title="tfgen",
        description=(
            "Turns APEX resource requests into Terraform and opens a GitLab merge request. "
            "Submit a job, then poll `/api/v1/uuid/{uuid}` for its stage and result."
        ),
        doc="/docs",
        validate=True,
    )
