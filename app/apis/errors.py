"""Every error answered by the API, in one shape: ``{message, code, correlation_id, errors?}``."""

from __future__ import annotations

import re
from typing import Any

from flask import g, request
from flask_restx import Api
from werkzeug.exceptions import HTTPException

from app.errors import TfgenError

__all__ = ["error_body", "register_error_handlers"]

_UNEXPECTED = re.compile(r"'([^']+)'")

HTTP_CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND",
              405: "METHOD_NOT_ALLOWED", 409: "CONFLICT", 413: "PAYLOAD_TOO_LARGE",
              415: "UNSUPPORTED_MEDIA_TYPE", 503: "SERVICE_UNAVAILABLE"}


def error_body(message: str, code: str, errors: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the error body of the HTTP contract."""
    body: dict[str, Any] = {"message": message, "code": code,
                            "correlation_id": g.get("correlation_id", "")}
    if errors:
        body["errors"] = errors
    return body


def _field_errors(errors: dict[str, Any]) -> dict[str, Any]:
    # flask-restx files "additionalProperties" errors under "": name each unknown field.
    out: dict[str, Any] = {}
    for key, message in errors.items():
        if key == "" and "Additional properties" in str(message):
            for name in _UNEXPECTED.findall(str(message)):
                out[name] = "unknown field"
        else:
            out[key or "body"] = message
    return out


def register_error_handlers(api: Api) -> None:
    """Map tfgen errors and HTTP exceptions to the contract's error body."""

    @api.errorhandler(TfgenError)  # type: ignore[untyped-decorator]
    def handle_tfgen_error(e: TfgenError) -> tuple[dict[str, Any], int, dict[str, str]]:
        headers = dict(getattr(e, "headers", {}) or {})
        return error_body(e.message, e.code, e.details.get("errors")), e.status, headers

    @api.errorhandler(HTTPException)  # type: ignore[untyped-decorator]
    def handle_http_error(e: HTTPException) -> tuple[dict[str, Any], int]:
        status = e.code or 500
        data = getattr(e, "data", None) or {}
        errors = data.get("errors")
        message = data.get("message") or e.description or "error"
        if status == 400 and not errors and request.is_json \
                and request.get_json(silent=True) is None:
            message, errors = "request body is not valid JSON", {"body": "not valid JSON"}
        code = "VALIDATION_ERROR" if status == 400 else HTTP_CODES.get(status, "HTTP_ERROR")
        body = error_body(message, code, _field_errors(errors) if errors else None)
        e.data = body  # type: ignore[attr-defined]  # flask-restx answers with ``e.data`` over a handler's body when set
        return body, status

    @api.errorhandler  # type: ignore[untyped-decorator]
    def handle_unexpected(e: Exception) -> tuple[dict[str, Any], int]:
        return error_body("internal error; see the logs with this correlation id",
                          "INTERNAL"), 500
