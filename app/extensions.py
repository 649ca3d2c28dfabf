"""Unbound singletons, bound to an application in ``create_app``."""

from __future__ import annotations

from typing import Any

from flask_restx import Api
from flask_restx.swagger import Swagger
from werkzeug.utils import cached_property

from app.apis.common import FORMAT_CHECKER, document_common_answers

__all__ = ["TfgenApi", "api_v1"]


class TfgenApi(Api):  # type: ignore[misc]
    """flask-restx's Api whose spec also documents the answers every route can give."""

    @cached_property
    def __schema__(self) -> dict[str, Any]:
        """The Swagger document, with the guard's and the body limits' answers."""
        with self._schema_lock:
            spec: dict[str, Any] = document_common_answers(Swagger(self).as_dict())
        return spec


def api_v1() -> Api:
    """A new, unbound flask-restx Api for ``/api/v1`` (one per app: restx keeps state)."""
    return TfgenApi(
        version="1",
        title="tfgen",
        description=(
            "Turns APEX resource requests into Terraform and opens a GitLab merge request. "
            "Submit a job, then poll `/api/v1/uuid/{uuid}` for its stage and result."
        ),
        doc="/docs",
        validate=True,
        format_checker=FORMAT_CHECKER,
    )
