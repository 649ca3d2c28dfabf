"""Value types that flow through a job: fetch -> render -> validate -> publish.

Plain dataclasses with no behaviour beyond naming rules, so every stage can be built and
tested alone. Nothing here imports Flask, Celery or a driver.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "JOB_TRAILER",
    "Change",
    "Check",
    "JobRequest",
    "PublishResult",
    "RenderedFile",
    "ResourceRequest",
    "Secret",
    "Template",
    "ValidationReport",
    "branch_name",
    "commit_trailers",
    "file_path",
    "sha256_hex",
    "slug",
]


def sha256_hex(text: str) -> str:
    """Return the hex SHA-256 of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# The trailer naming the job in every tfgen commit message (publish.base recognises it).
JOB_TRAILER = "Tfgen-Job"

_SLUG_DROP = re.compile(r"[^a-z0-9]+")


def slug(name: str, max_length: int = 60) -> str:
    """Turn a request name into ``[a-z0-9-]``: safe as a file name and a git ref part.

    Accents are folded to ASCII, every other run of characters becomes one ``-``, so
    ``../../etc`` or ``a b/c`` can never leave the output folder or make an odd ref.

    Args:
        name: The request's human name.
        max_length: Longest slug kept (refs and paths stay readable).

    Returns:
        The slug; ``"unnamed"`` when nothing usable is left.
    """
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    text = _SLUG_DROP.sub("-", folded.lower()).strip("-")
    return text[:max_length].rstrip("-") or "unnamed"


def file_path(cloud_id: str, resource_type: str, name: str) -> str:
    """Return ``<cloud_id>/<resource_type>/<slug(name)>.tf``."""
    return f"{cloud_id}/{resource_type}/{slug(name)}.tf"


def branch_name(cloud_id: str, resource_type: str, name: str) -> str:
    """Return ``feature/<cloud_id>-<resource_type>-<slug(name)>``."""
    return f"feature/{cloud_id}-{resource_type}-{slug(name)}"


class Secret:
    """A credential that never shows itself in ``repr``, ``str``, logs or JSON."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value; call only where it is handed to its consumer."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)


@dataclass(frozen=True)
class JobRequest:
    """What a caller asked for: one APEX request row to turn into Terraform."""

    cloud_id: str
    resource_type: str
    request_id: int
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return the request as the job document's ``request`` object."""
        return {
            "cloud_id": self.cloud_id,
            "resource_type": self.resource_type,
            "request_id": self.request_id,
            "dry_run": self.dry_run,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> JobRequest:
        """Build from the job document's ``request`` object."""
        return cls(
            cloud_id=str(data["cloud_id"]),
            resource_type=str(data["resource_type"]),
            request_id=int(data["request_id"]),
            dry_run=bool(data.get("dry_run", False)),
        )


@dataclass(frozen=True)
class Template:
    """One Jinja template from ``tf_template``."""

    cloud_id: str
    resource_type: str
    module_version: str
    text: str

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the template text (cache key part, commit trailer)."""
        return sha256_hex(self.text)

    @property
    def ref(self) -> str:
        """``<cloud>/<type>@<module_version>``, as named in commit trailers and errors."""
        return f"{self.cloud_id}/{self.resource_type}@{self.module_version}"


@dataclass(frozen=True)
class ResourceRequest:
    """A request row with its security-group rules, as the template will see it.

    ``row`` holds lower-cased column names with plain Python values (str, int,
    Decimal, bool, None, ISO date strings); ``sg_rules`` is a list of such dicts.
    """

    cloud_id: str
    resource_type: str
    request_id: int
    row: Mapping[str, Any]
    sg_rules: Sequence[Mapping[str, Any]] = ()

    @property
    def name(self) -> str:
        """The request's human name (``name`` column)."""
        return str(self.row.get("name") or f"request-{self.request_id}")

    @property
    def module_version(self) -> str:
        """The module version picking the template (``module_version`` column)."""
        return str(self.row.get("module_version") or "")

    @property
    def gitlab_project_id(self) -> str | None:
        """The GitLab project (id or path) the Terraform goes to, if any."""
        value = self.row.get("gitlab_project_id")
        return None if value is None else str(value)

    def context(self) -> dict[str, Any]:
        """Return the template context: every column, plus ``sg_rules``."""
        ctx = dict(self.row)
        ctx["sg_rules"] = [dict(rule) for rule in self.sg_rules]
        ctx.setdefault("request_id", self.request_id)
        ctx.setdefault("cloud_id", self.cloud_id)
        ctx.setdefault("resource_type", self.resource_type)
        return ctx


@dataclass(frozen=True)
class RenderedFile:
    """A file of generated Terraform, relative to the repository root."""

    path: str
    content: str

    @property
    def sha256(self) -> str:
        """Hex SHA-256 of the content."""
        return sha256_hex(self.content)

    def summary(self, with_content: bool = False) -> dict[str, Any]:
        """Return ``{"path", "sha256"}`` (and ``content`` when asked)."""
        out: dict[str, Any] = {"path": self.path, "sha256": self.sha256}
        if with_content:
            out["content"] = self.content
        return out


CheckStatus = Literal["passed", "failed", "skipped"]


@dataclass(frozen=True)
class Check:
    """One validation step's outcome (``hcl-parse``, ``terraform-fmt``, ...)."""

    name: str
    status: CheckStatus
    message: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return the check as a JSON-ready dict."""
        return {"name": self.name, "status": self.status, "message": self.message}


@dataclass(frozen=True)
class ValidationReport:
    """Every check run on a set of files."""

    checks: tuple[Check, ...] = ()

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return all(check.status != "failed" for check in self.checks)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""
        return {"ok": self.ok, "checks": [check.to_dict() for check in self.checks]}

    def summary(self) -> str:
        """One line per check, for commit and merge-request descriptions."""
        return "\n".join(
            f"- {c.name}: {c.status}" + (f" ({c.message})" if c.message else "")
            for c in self.checks
        )


def commit_trailers(job_uuid: str, request: JobRequest, template: Template) -> str:
    """Return the trailers every tfgen commit message ends with."""
    return (
        f"{JOB_TRAILER}: {job_uuid}\n"
        f"Tfgen-Request: {request.cloud_id}/{request.resource_type}/{request.request_id}\n"
        f"Tfgen-Template: {template.ref} sha256:{template.sha256[:12]}"
    )


@dataclass(frozen=True)
class Change:
    """Everything a publisher needs to put one job's files up for review.

    ``token`` is the GitLab credential to act with; it stays in memory in the worker.
    ``earlier_attempt``: an earlier attempt of this job may have published (it entered
    the publish stage, then its worker died or it was retried), so a branch already
    holding these files may hold this job's own commit: the publisher then reads the
    head's ``Tfgen-Job`` trailer (one more GitLab call) instead of assuming "unchanged".
    """

    project_id: str | None
    branch: str
    target_branch: str
    files: tuple[RenderedFile, ...]
    commit_message: str
    title: str
    description: str
    job_uuid: str
    token: Secret | None = field(default=None, repr=False, compare=False)
    earlier_attempt: bool = True


@dataclass(frozen=True)
class PublishResult:
    """What a publisher did: the commit (if any) and the merge request (if any)."""

    commit_sha: str | None
    files: tuple[RenderedFile, ...]
    unchanged: bool
    merge_request: Mapping[str, Any] | None = None
    remote: str | None = None
    branch: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the job document's ``result`` object."""
        return {
            "merge_request": dict(self.merge_request) if self.merge_request else None,
            "commit": {"sha": self.commit_sha} if self.commit_sha else None,
            "branch": self.branch,
            "remote": self.remote,
            "files": [f.summary() for f in self.files],
            "unchanged": self.unchanged,
        }
