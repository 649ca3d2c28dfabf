"""The ``policy`` stage of a job: Rego rules, the waivers that let a denied rule pass,
and extra scanners (checkov) whose findings join the report as warnings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from app.core.model import RenderedFile, ResourceRequest, Template
from app.core.policy.document import policy_input
from app.core.policy.engine import PolicyEngine
from app.core.policy.report import Finding, PolicyReport

__all__ = ["FindingSource", "PendingScan", "PolicyCheck", "WaiverLookup"]


class WaiverLookup(Protocol):
    """What the stage needs of the waiver store."""

    def for_request(self, cloud_id: str, resource_type: str, request_id: int) -> list[Any]:
        """The waivers (active or not) of one request."""


class PendingScan(Protocol):
    """A scan running in the background."""

    def collect(self) -> list[Finding]:
        """Wait for it and return its warnings."""

    def cancel(self) -> None:
        """Stop it (the job ended before the policy stage)."""


class FindingSource(Protocol):
    """An extra scanner whose findings join the report as warnings (checkov)."""

    def start(self, files: Sequence[RenderedFile]) -> PendingScan:
        """Start scanning ``files``."""


@dataclass
class PolicyCheck:
    """The ``policy`` stage: Rego rules, waivers, and optional extra scanners."""

    engine: PolicyEngine
    waivers: WaiverLookup | None = None
    scanners: Sequence[FindingSource] = ()

    def start_scans(self, files: Sequence[RenderedFile]) -> list[PendingScan]:
        """Start the extra scanners early, so they run while the job validates."""
        return [scanner.start(files) for scanner in self.scanners]

    def check(self, resource: ResourceRequest, files: Sequence[RenderedFile],
              template: Template, owner: str,
              scans: Sequence[PendingScan] | None = None) -> PolicyReport:
        """Evaluate the policies on a job's request and files.

        Args:
            resource: The request row and its rules.
            files: The validated files.
            template: The template they came from.
            owner: The job's owner.
            scans: Scans started by ``start_scans``; started now when None.

        Returns:
            The report: denied (not waived), warnings, waived, and the files evaluated.

        Raises:
            PolicyError: A policy does not compile or evaluate.
        """
        report = PolicyReport()
        if not self.engine.enabled and not self.scanners:
            return report
        scans = self.start_scans(files) if scans is None else scans
        deny: list[Finding] = []
        try:
            if self.engine.enabled:
                deny, warn, sources = self.engine.evaluate(
                    policy_input(resource, files, template, owner))
                report.policies = [s.to_dict() for s in sources]
                report.warnings = [w.to_dict() for w in warn]
        except BaseException:
            for scan in scans:
                scan.cancel()
            raise
        for scan in scans:
            report.warnings += [w.to_dict() for w in scan.collect()]
        self._apply_waivers(report, resource, deny)
        count = len(report.policies)
        report.summary = (f"{count} polic{'y' if count == 1 else 'ies'}: "
                          f"{len(report.denied)} denied, {len(report.warnings)} warning(s), "
                          f"{len(report.waived)} waived")
        return report

    def _apply_waivers(self, report: PolicyReport, resource: ResourceRequest,
                       deny: Sequence[Finding]) -> None:
        """Split ``deny`` into ``report.denied`` and ``report.waived``: a finding is
        waived while a waiver of its rule for this request is active."""
        active: dict[str, Any] = {}
        if deny and self.waivers is not None:
            for waiver in self.waivers.for_request(resource.cloud_id, resource.resource_type,
                                                   resource.request_id):
                if waiver.active():
                    active.setdefault(waiver.rule, waiver)
        for finding in deny:
            waiver = active.get(finding.rule)
            if waiver is None:
                report.denied.append(finding.to_dict())
            else:
                report.waived.append({**finding.to_dict(), "waiver": {
                    "id": waiver.id, "granted_by": waiver.granted_by,
                    "expires_at": waiver.expires_at, "reason": waiver.reason}})
