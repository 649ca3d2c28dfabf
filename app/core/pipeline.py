"""One job's work: fetch -> render -> validate -> policy -> publish. No Flask, no Celery.

The Celery task calls ``Pipeline.run`` with one callback, ``on_stage``, to record the
stage it enters; it raises ``Canceled`` when a cancel was requested, so a cancel takes
effect between stages, before the next stage's work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from app.core.model import (
    Change,
    JobRequest,
    RenderedFile,
    ResourceRequest,
    Template,
    ValidationReport,
    branch_name,
    commit_trailers,
    file_path,
)
from app.core.policy import PolicyCheck, PolicyEngine, PolicyReport
from app.core.publish.base import Publisher
from app.core.render import Renderer
from app.core.store import ApexStore
from app.core.validate import Validator
from app.errors import PolicyDenied

__all__ = ["STAGES", "Pipeline", "StageClock", "describe_change"]

log = logging.getLogger(__name__)

STAGES = ("queued", "fetch", "render", "validate", "policy", "publish", "done")


def describe_change(
    job_uuid: str, request: JobRequest, resource: ResourceRequest, template: Template,
    report: ValidationReport, owner: str, policy: PolicyReport | None = None,
) -> tuple[str, str, str]:
    """Return the commit message, merge-request title and description of a job."""
    policy = policy or PolicyReport()
    subject = (f"tfgen: {request.cloud_id}/{request.resource_type} {resource.name} "
               f"(request {request.request_id})")
    body = (
        f"Generated from APEX request {request.cloud_id}/{request.resource_type}/"
        f"{request.request_id} for {owner}, template {template.ref}.\n\n"
        f"Validation:\n{report.summary()}\n\n"
        f"Policy:\n{policy.markdown()}"
    )
    trailers = "\n".join((commit_trailers(job_uuid, request, template),
                          *policy.waiver_trailers()))
    message = f"{subject}\n\n{body}\n\n{trailers}\n"
    description = (
        f"| | |\n|---|---|\n"
        f"| Request | `{request.cloud_id}/{request.resource_type}/{request.request_id}` "
        f"({resource.name}) |\n"
        f"| Requested by | {owner} |\n"
        f"| Template | `{template.ref}` sha256 `{template.sha256[:12]}` |\n"
        f"| Job | `{job_uuid}` |\n\n"
        f"### Validation\n{report.summary()}\n\n"
        f"### Policy\n{policy.markdown()}\n"
    )
    return message, subject, description


class StageClock:
    """Where a job's time goes: seconds of work per stage, and in the task's callbacks.

    ``stage(name)`` calls ``on_stage(name)`` (its time is bookkeeping) and then times
    the body as the stage's work.
    ``str(clock)`` is the ``job.timings`` log line's payload: ``fetch=0.0123 ...``.
    """

    def __init__(self, on_stage: Callable[[str], None],
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self._on_stage = on_stage
        self._clock = clock
        self.work: dict[str, float] = {}
        self.bookkeeping = 0.0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Record the stage ``name`` (bookkeeping), then time the body as its work."""
        began = self._clock()
        try:
            self._on_stage(name)
        finally:
            entered = self._clock()
            self.bookkeeping += entered - began
        try:
            yield
        finally:
            self.work[name] = self.work.get(name, 0.0) + self._clock() - entered

    def __str__(self) -> str:
        parts = [f"{name}={seconds:.4f}" for name, seconds in self.work.items()]
        return " ".join([*parts, f"bookkeeping={self.bookkeeping:.4f}"])


@dataclass(frozen=True)
class _Checked:
    """A job that went through fetch, render, validate and policy."""

    resource: ResourceRequest
    template: Template
    files: tuple[RenderedFile, ...]
    report: ValidationReport
    policy: PolicyReport

    def summary(self) -> dict[str, Any]:
        """What every result carries: the validation and policy reports, the template."""
        return {"validation": self.report.to_dict(), "policy": self.policy.to_dict(),
                "template": {"ref": self.template.ref, "sha256": self.template.sha256}}

    def raise_if_denied(self) -> None:
        """Raises ``PolicyDenied`` when a policy denied the files (and no waiver did)."""
        if self.policy.denied:
            rules = ", ".join(sorted({d["rule"] for d in self.policy.denied}))
            raise PolicyDenied(f"denied by policy: {rules}", details={
                "violations": self.policy.denied, "policy": self.policy.to_dict()})


@dataclass
class Pipeline:
    """The domain parts a job runs through."""

    store: ApexStore
    renderer: Renderer
    validator: Validator
    publisher: Publisher
    target_branch: str = "main"
    policy: PolicyCheck = field(default_factory=lambda: PolicyCheck(PolicyEngine(None)))

    def run(
        self,
        job_uuid: str,
        request: JobRequest,
        owner: str,
        *,
        on_stage: Callable[[str], None],
        earlier_attempt: bool = True,
    ) -> Mapping[str, Any]:
        """Run one job and return its result object.

        Logs ``job.timings``: seconds of work per stage and in the callbacks.

        Args:
            job_uuid: The job's UUID (commit trailer, idempotency).
            request: What to generate.
            owner: The user the job acts for (their GitLab token is used).
            on_stage: Called with each stage name as it starts; raises ``Canceled``
                when a cancel was requested (the job stops there, before the stage's work).
            earlier_attempt: An earlier attempt of this job may have published (it
                entered ``publish`` and then died or was retried); see ``Change``.

        Returns:
            The job document's ``result``: the merge request, commit and files, or for a
            dry run the files with their content and the validation report; both with
            the policy report (``policy``).

        Raises:
            TfgenError: A job failure with its code (see ``app.errors``).
        """
        clock = StageClock(on_stage)
        try:
            job = self._check(request, owner, clock)
            if request.dry_run:  # a dry run shows what would be denied instead of failing
                return {"dry_run": True,
                        "files": [f.summary(with_content=True) for f in job.files],
                        **job.summary()}
            job.raise_if_denied()
            with clock.stage("publish"):
                change = self._change(job_uuid, request, owner, job, earlier_attempt)
                published = self.publisher.publish(change)
            return {**published.to_dict(), **job.summary()}
        finally:
            log.info("job.timings %s", clock)

    def _check(self, request: JobRequest, owner: str, clock: StageClock) -> _Checked:
        """fetch, render, validate and policy (a cancel is seen as each stage is entered)."""
        with clock.stage("fetch"):
            resource, template = self.store.load(request)
        with clock.stage("render"):
            content = self.renderer.render(template, resource)
            path = file_path(request.cloud_id, request.resource_type, resource.name)
            files: tuple[RenderedFile, ...] = (RenderedFile(path, content),)
        scans: list[Any] = []
        handed = False  # the policy stage owns the scans once its work begins
        try:
            with clock.stage("validate"):
                scans = self.policy.start_scans(files)  # checkov runs while we validate
                files, report = self.validator.validate(files)
            with clock.stage("policy"):
                handed = True
                policy = self.policy.check(resource, files, template, owner, scans)
        except BaseException:
            for scan in scans if not handed else ():
                scan.cancel()
            raise
        return _Checked(resource, template, files, report, policy)

    def _change(self, job_uuid: str, request: JobRequest, owner: str, job: _Checked,
                earlier_attempt: bool) -> Change:
        """The change to publish: files, branch, messages and the owner's token."""
        uses_token = getattr(self.publisher, "uses_token", True)
        token = self.store.user_token(owner) if uses_token else None
        message, title, description = describe_change(
            job_uuid, request, job.resource, job.template, job.report, owner, job.policy)
        return Change(
            project_id=job.resource.gitlab_project_id,
            branch=branch_name(request.cloud_id, request.resource_type, job.resource.name),
            target_branch=self.target_branch,
            files=job.files,
            commit_message=message,
            title=title,
            description=description,
            job_uuid=job_uuid,
            token=token,
            earlier_attempt=earlier_attempt,
        )
