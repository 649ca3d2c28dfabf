"""tfgen's error hierarchy: one base class carrying HTTP status, stable code and details.

Domain code raises these; the HTTP layer maps them to error bodies in one place
(``app/apis/errors.py``) and the Celery task stores job failures by their ``code``.
Nothing here imports Flask or Celery.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "JOB_FAILURE_CODES",
    "ApiError",
    "BadRequest",
    "Canceled",
    "Conflict",
    "DatabaseUnavailable",
    "Forbidden",
    "GitLabAuth",
    "GitLabNotFound",
    "GitLabUnavailable",
    "InternalError",
    "InvalidRequestData",
    "JobFailure",
    "JobStoreUnavailable",
    "JobTimeout",
    "NotFound",
    "PolicyDenied",
    "PolicyError",
    "QueueUnavailable",
    "RenderError",
    "RequestNotFound",
    "TemplateNotFound",
    "TfgenError",
    "Unauthorized",
    "ValidationFailed",
]


class TfgenError(Exception):
    """Base of every error tfgen raises on purpose.

    Attributes:
        status: HTTP status the API answers with when this reaches a request.
        code: Stable machine-readable code (documented; APEX switches on it).
        retryable: Whether the job may succeed if simply tried again later.
        details: Extra structured data (per-field errors, line and column...).
    """

    status: int = 500
    code: str = "INTERNAL"
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        retryable: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}
        if retryable is not None:
            self.retryable = retryable

    def to_dict(self) -> dict[str, Any]:
        """Return the error as the job document's ``error`` object."""
        body: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
        }
        if self.details:
            body["details"] = self.details
        return body


# --- Errors answered by the HTTP API --------------------------------------------------


class ApiError(TfgenError):
    """An error that only makes sense as an HTTP answer."""


class BadRequest(ApiError):
    status, code = 400, "BAD_REQUEST"


class Unauthorized(ApiError):
    status, code = 401, "UNAUTHORIZED"


class Forbidden(ApiError):
    status, code = 403, "FORBIDDEN"


class NotFound(ApiError):
    status, code = 404, "NOT_FOUND"


class Conflict(ApiError):
    status, code = 409, "CONFLICT"


class QueueUnavailable(ApiError):
    status, code, retryable = 503, "QUEUE_UNAVAILABLE", True


# --- Job failures: the fixed list of codes in the job document -------------------------


class JobFailure(TfgenError):
    """A reason a job ended in FAILURE; ``code`` is one of ``JOB_FAILURE_CODES``."""


class RequestNotFound(JobFailure):
    status, code = 404, "REQUEST_NOT_FOUND"


class TemplateNotFound(JobFailure):
    status, code = 404, "TEMPLATE_NOT_FOUND"


class InvalidRequestData(JobFailure):
    status, code = 422, "INVALID_REQUEST_DATA"


class RenderError(JobFailure):
    status, code = 422, "RENDER_ERROR"


class ValidationFailed(JobFailure):
    status, code = 422, "VALIDATION_FAILED"


class GitLabAuth(JobFailure):
    status, code = 502, "GITLAB_AUTH"


class GitLabNotFound(JobFailure):
    status, code = 502, "GITLAB_NOT_FOUND"


class GitLabUnavailable(JobFailure):
    status, code, retryable = 503, "GITLAB_UNAVAILABLE", True


class DatabaseUnavailable(JobFailure):
    status, code, retryable = 503, "DATABASE_UNAVAILABLE", True


class JobStoreUnavailable(DatabaseUnavailable):
    """The job records' store (Redis beside the broker, or SQLite) does not answer.

    A job failure like any database outage; the API answers it as ``QUEUE_UNAVAILABLE``.
    """


class JobTimeout(JobFailure):
    status, code = 504, "TIMEOUT"


class Canceled(JobFailure):
    status, code = 409, "CANCELED"


class PolicyDenied(JobFailure):
    """A policy denied the change; ``details["violations"]`` lists ``{rule, msg}``."""

    status, code = 422, "POLICY_DENIED"

    def to_dict(self) -> dict[str, Any]:
        """The error object, with ``violations`` beside ``code`` as the contract shows it."""
        body = super().to_dict()
        body["violations"] = self.details.get("violations", [])
        return body


class PolicyError(JobFailure):
    """A policy file does not compile or evaluate; ``details`` names file and line."""

    status, code = 500, "POLICY_ERROR"


class InternalError(JobFailure):
    status, code = 500, "INTERNAL"


JOB_FAILURE_CODES: tuple[str, ...] = (
    "REQUEST_NOT_FOUND",
    "TEMPLATE_NOT_FOUND",
    "INVALID_REQUEST_DATA",
    "RENDER_ERROR",
    "VALIDATION_FAILED",
    "GITLAB_AUTH",
    "GITLAB_NOT_FOUND",
    "GITLAB_UNAVAILABLE",
    "DATABASE_UNAVAILABLE",
    "TIMEOUT",
    "CANCELED",
    "INTERNAL",
    "POLICY_DENIED",
    "POLICY_ERROR",
)
