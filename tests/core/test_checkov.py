"""Optional checkov: a separate process whose failed checks join the report as warnings.

The real-checkov test needs CHECKOV_BIN (checkov lives in its own virtualenv: it pins
packaging<24, which kombu 5.7 cannot use); it is skipped, saying so, when that is unset.
"""

from __future__ import annotations

import pytest

from app.core.checkov import Checkov
from app.core.model import RenderedFile, ResourceRequest, Template
from app.core.policy import PolicyCheck, PolicyEngine
from tests.conftest import CHECKOV_BIN

OPEN_SSH = RenderedFile("aws/ec2/vm.tf", '''resource "aws_security_group" "vm" {
  name = "vm"
  ingress {
    protocol    = "tcp"
    from_port   = 22
    to_port     = 22
    cidr_blocks = ["0.0.0.0/0"]
  }
}
''')


def check_with(scanner: Checkov) -> list[dict[str, str]]:
    check = PolicyCheck(PolicyEngine(None), scanners=[scanner])
    report = check.check(ResourceRequest("aws", "ec2", 1, {"name": "vm"}), [OPEN_SSH],
                         Template("aws", "ec2", "1", ""), "alice")
    assert report.denied == []
    return report.warnings


def test_a_checkov_that_cannot_run_is_one_warning_not_a_failed_job(tmp_path: object) -> None:
    warnings = check_with(Checkov("/nonexistent/checkov", timeout=5))
    assert len(warnings) == 1
    assert warnings[0]["rule"] == "checkov" and warnings[0]["source"] == "checkov"
    assert "checkov did not run" in warnings[0]["msg"]


@pytest.mark.skipif(not CHECKOV_BIN, reason="CHECKOV_BIN is unset: no checkov to run "
                    "(install it in its own venv, e.g. /work/checkov-venv/bin/checkov)")
def test_checkov_findings_join_the_report_as_warnings() -> None:
    assert CHECKOV_BIN is not None
    warnings = check_with(Checkov(CHECKOV_BIN, timeout=120))
    by_rule = {w["rule"]: w for w in warnings}
    assert "CKV_AWS_24" in by_rule, warnings  # "no ingress from 0.0.0.0:0 to port 22"
    assert by_rule["CKV_AWS_24"]["source"] == "checkov"
    assert "aws_security_group.vm, aws/ec2/vm.tf:1-9" in by_rule["CKV_AWS_24"]["msg"]
