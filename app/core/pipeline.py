"""One job's work: fetch -> render -> validate -> policy -> publish. No Flask, no Celery.

The Celery task calls ``Pipeline.run`` with two callbacks: ``on_stage`` to record the
stage it enters, and ``check_canceled`` (raises ``Canceled``) called between stages,
which is where a cancel takes effect.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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

__all__ = ["STAGES", "Pipeline", "describe_change"]

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
        check_canceled: Callable[[], None],
    ) -> Mapping[str, Any]:
        """Run one job and return its result object.

        Args:
            job_uuid: The job's UUID (commit trailer, idempotency).
            request: What to generate.
            owner: The user the job acts for (their GitLab token is used).
            on_stage: Called with each stage name as it starts.
            check_canceled: Raises ``Canceled`` when a cancel was requested.

        Returns:
            The job document's ``result``: the merge request, commit and files, or for a
            dry run the files with their content and the validation report; both with
            the policy report (``policy``).

        Raises:
            TfgenError: A job failure with its code (see ``app.errors``).
        """
        on_stage("fetch")
        resource, template = self.store.load(request)
        check_canceled()

        on_stage("render")
        content = self.renderer.render(template, resource)
        path = file_path(request.cloud_id, request.resource_type, resource.name)
        files: tuple[RenderedFile, ...] = (RenderedFile(path, content),)
        check_canceled()

        on_stage("validate")
        scans = self.policy.start_scans(files)  # checkov runs while we validate
        try:
            files, report = self.validator.validate(files)
            check_canceled()
        except BaseException:
            for scan in scans:
                scan.cancel()
            raise
        template_info = {"ref": template.ref, "sha256": template.sha256}

        on_stage("policy")
        policy = self.policy.check(resource, files, template, owner, scans)
        if request.dry_run:  # a dry run shows what would be denied instead of failing
            return {
                "dry_run": True,
                "files": [f.summary(with_content=True) for f in files],
                "validation": report.to_dict(),
                "policy": policy.to_dict(),
                "template": template_info,
            }
        if policy.denied:
            rules = ", ".join(sorted({d["rule"] for d in policy.denied}))
            raise PolicyDenied(f"denied by policy: {rules}",
                               details={"violations": policy.denied, "policy": policy.to_dict()})
        check_canceled()

        on_stage("publish")
        uses_token = getattr(self.publisher, "uses_token", True)
        token = self.store.user_token(owner) if uses_token else None
        message, title, description = describe_change(
            job_uuid, request, resource, template, report, owner, policy)
        change = Change(
            project_id=resource.gitlab_project_id,
            branch=branch_name(request.cloud_id, request.resource_type, resource.name),
            target_branch=self.target_branch,
            files=files,
            commit_message=message,
            title=title,
            description=description,
            job_uuid=job_uuid,
            token=token,
        )
        published = self.publisher.publish(change)
        result = published.to_dict()
        result["validation"] = report.to_dict()
        result["policy"] = policy.to_dict()
        result["template"] = template_info
        return result
