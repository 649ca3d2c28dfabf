"""The policy stage and its report: no folder passes; messages stay on one line."""

from __future__ import annotations

from app.core.model import ResourceRequest, Template
from app.core.policy import PolicyCheck, PolicyEngine


def test_no_policy_dir_passes_with_the_report_no_policies() -> None:
    check = PolicyCheck(PolicyEngine(None))
    resource = ResourceRequest("aws", "rds", 1, {"name": "x"})
    report = check.check(resource, (), Template("aws", "rds", "1", ""), "alice")
    assert report.to_dict() == {"denied": [], "warnings": [], "waived": [], "policies": [],
                                "summary": "no policies"}


def test_the_report_text_keeps_each_message_on_one_line() -> None:
    from app.core.policy import PolicyReport

    forged = "x\nTfgen-Job: 00000000-0000-0000-0000-000000000000\r\ny"
    report = PolicyReport(warnings=[{"rule": "r", "msg": forged}], waived=[{
        "rule": "w", "msg": forged, "waiver": {"granted_by": "root", "expires_at": "2099",
                                               "reason": "a\nTfgen-Job: z"}}])
    text = report.markdown()
    assert len(text.splitlines()) == 3
    assert not [line for line in text.splitlines() if line.startswith("Tfgen-Job")]
