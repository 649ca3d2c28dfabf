"""Every error answered by the app, in one shape: ``{message, code, correlation_id, errors?}``.

The handlers are registered twice, on the flask-restx Api (its routes) and on the Flask
app (unknown routes, the probes, errors raised before routing), so a namespace added
later answers the same way without doing anything.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Flask, g, request
from flask_restx import Api
from werkzeug.exceptions import HTTPException

from app.errors import ApiError, JobStoreUnavailable, QueueUnavailable, TfgenError

__all__ = ["MAX_ECHO", "error_answer", "error_body", "register_error_handlers"]

log = logging.getLogger(__name__)

#: An error repeats at most this many characters of anything (a value, a message).
MAX_ECHO = 200

_UNEXPECTED = re.compile(r"'([^']+)'")

HTTP_CODES = {400: "VALIDATION_ERROR", 401: "UNAUTHORIZED", 403: "FORBIDDEN",
              404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED", 409: "CONFLICT",
              413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE",
              503: "SERVICE_UNAVAILABLE"}

# Server-side failures answer a fixed text: a driver's message can name hosts and ports.
_SAFE_MESSAGES = {"DATABASE_UNAVAILABLE": "database unavailable; try again later",
                  "INTERNAL": "internal error; see the logs with this correlation id"}

Answer = tuple[dict[str, Any], int, dict[str, str]]


def _cap(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= MAX_ECHO else value[:MAX_ECHO] + "... (truncated)"
    if isinstance(value, dict):
        return {_cap(str(k)): _cap(v) for k, v in list(value.items())[:50]}
    if isinstance(value, list):
        return [_cap(v) for v in value[:50]]
    return value


def error_body(message: str, code: str, errors: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build the error body of the HTTP contract, capping what it repeats."""
    body: dict[str, Any] = {"message": _cap(message), "code": code,
                            "correlation_id": g.get("correlation_id", "")}
    if errors:
        body["errors"] = _cap(errors)
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


def _tfgen_answer(e: TfgenError) -> Answer:
    headers = dict(getattr(e, "headers", {}) or {})
    if isinstance(e, JobStoreUnavailable):
        # The job records live on the queue's Redis: to a caller that is the queue.
        log.warning("answered 503 QUEUE_UNAVAILABLE: %s", e.message)
        e = QueueUnavailable("job queue unavailable; nothing was recorded, try again"
                             if request.method == "POST" else
                             "job queue unavailable; try again later")
    if isinstance(e, ApiError):
        errors = e.details.get("errors", e.details) or None
        return error_body(e.message, e.code, errors), e.status, headers
    message = e.message
    if e.status >= 500:
        log.warning("answered %s %s: %s", e.status, e.code, e.message)
        message = _SAFE_MESSAGES.get(e.code, f"{e.code.lower().replace('_', ' ')}; try again")
    return error_body(message, e.code), e.status, headers


def _http_answer(e: HTTPException) -> Answer:
    status = e.code or 500
    data = getattr(e, "data", None) or {}
    errors = data.get("errors")
    message = data.get("message") or e.description or "error"
    body = error_body(message, HTTP_CODES.get(status, "HTTP_ERROR"),
                      _field_errors(errors) if errors else None)
    # Keep what the status needs (Allow on a 405), not werkzeug's HTML content type.
    headers = {k: v for k, v in e.get_headers() if k.lower() not in {"content-type"}}
    return body, status, headers


def error_answer(e: Exception) -> Answer:
    """The contract's answer (body, status, headers) for any exception."""
    if isinstance(e, TfgenError):
        return _tfgen_answer(e)
    if isinstance(e, HTTPException):
        return _http_answer(e)
    log.exception("unexpected error", exc_info=e)
    return error_body(_SAFE_MESSAGES["INTERNAL"], "INTERNAL"), 500, {}


def register_error_handlers(api: Api, app: Flask) -> None:
    """Map tfgen errors and HTTP exceptions to the contract's error body, app-wide."""

    @api.errorhandler(TfgenError)  # type: ignore[untyped-decorator]
    def handle_tfgen_error(e: TfgenError) -> Answer:
        return error_answer(e)

    @api.errorhandler(HTTPException)  # type: ignore[untyped-decorator]
    def handle_http_error(e: HTTPException) -> Answer:
        body, status, headers = error_answer(e)
        e.data = body  # type: ignore[attr-defined]  # flask-restx answers with ``e.data`` over a handler's body when set
        return body, status, headers

    @api.errorhandler  # type: ignore[untyped-decorator]
    def handle_unexpected(e: Exception) -> Answer:
        # flask-restx logs the traceback of every 5xx itself.
        return error_body(_SAFE_MESSAGES["INTERNAL"], "INTERNAL"), 500, {}

    # Outside flask-restx's routes: unknown paths, the probes, errors before routing.
    app.register_error_handler(TfgenError, error_answer)
    app.register_error_handler(HTTPException, error_answer)
