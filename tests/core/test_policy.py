"""The policy engine alone: HCL as policy input, compile once and on change, errors with
file and line, and the starter library's own cases."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from app.core.model import RenderedFile, ResourceRequest, Template
from app.core.policy import PolicyCheck, PolicyEngine, hcl_document, policy_input
from app.errors import PolicyError
from tests.conftest import ROOT

TWO_GROUPS = '''resource "aws_security_group" "one" {
  name = "one"
  tags = {
    Name = "one"
  }
  ingress {
    from_port = 22
  }
  lifecycle { create_before_destroy = true }
}

resource "aws_security_group" "five" {
  ingress {
    from_port = 1
  }
  ingress {
    from_port = 2
  }
  dynamic "egress" {
    for_each = var.x
    content {
      from_port = 3
    }
  }
  user_data = <<EOT
ingress {
EOT
}

locals {
  rules = [{
    port = 1
  }]
}

module "m" {
  source  = "x"
  ingress = { from_port = 9 }
}
'''


def test_every_block_is_a_list_whatever_its_count_and_attributes_stay_as_written() -> None:
    doc = hcl_document(TWO_GROUPS)
    (one,) = doc["resource"]["aws_security_group"]["one"]
    assert one["ingress"] == [{"from_port": 22}]
    assert one["lifecycle"] == [{"create_before_destroy": True}]
    assert one["tags"] == {"Name": "one"}  # an attribute object, not a block
    (five,) = doc["resource"]["aws_security_group"]["five"]
    assert five["ingress"] == [{"from_port": 1}, {"from_port": 2}]
    assert five["dynamic"]["egress"][0]["content"] == [{"from_port": 3}]
    assert five["user_data"] == "ingress {\n"
    assert doc["locals"] == [{"rules": [{"port": 1}]}]
    assert doc["module"]["m"] == [{"source": "x", "ingress": {"from_port": 9}}]


def test_strings_read_back_as_stored() -> None:
    doc = hcl_document('locals {\n  a = "q\\"uote $${x} %%{y}\\nz \\\\"\n}\n')
    assert doc["locals"][0]["a"] == 'q"uote ${x} %{y}\nz \\'


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


GOOD = 'package tfgen.a\n\ndeny contains "no" if { input.request.x == 1 }\n'


def test_compiles_once_and_again_only_when_a_file_changes(tmp_path: Path) -> None:
    path = write(tmp_path, "a.rego", GOOD)
    engine = PolicyEngine(tmp_path)
    for _ in range(3):
        deny, _, _ = engine.evaluate({"request": {"x": 1}})
        assert [d.rule for d in deny] == ["no"]
    assert engine.compilations == 1
    path.write_text(GOOD.replace('"no"', '"changed"'))
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    deny, _, _ = engine.evaluate({"request": {"x": 1}})
    assert [d.rule for d in deny] == ["changed"]
    assert engine.compilations == 2
    write(tmp_path, "b.rego", 'package tfgen.b\n\nwarn contains {"msg": "m", "rule": "r"}\n')
    _, warn, sources = engine.evaluate({"request": {}})
    assert [(w.rule, w.msg) for w in warn] == [("r", "m")]
    assert [s.file for s in sources] == ["a.rego", "b.rego"]
    assert engine.compilations == 3


def test_a_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    write(tmp_path, "a.rego", GOOD)
    write(tmp_path, "sub/bad.rego", "package tfgen.bad\n\ndeny contains msg if {\n  msg := \n}\n")
    with pytest.raises(PolicyError) as caught:
        PolicyEngine(tmp_path).check()
    assert caught.value.code == "POLICY_ERROR"
    assert caught.value.details["file"] == "sub/bad.rego"
    assert caught.value.details["line"] == 4
    assert caught.value.message.startswith("policy sub/bad.rego:4:")


def test_a_deny_written_in_rego_v0_is_refused_with_its_line(tmp_path: Path) -> None:
    write(tmp_path, "old.rego", 'package tfgen.old\n\ndeny[msg] {\n  msg := "x"\n}\n')
    with pytest.raises(PolicyError) as caught:
        PolicyEngine(tmp_path).evaluate({})
    assert caught.value.details == {"file": "old.rego", "line": 3, "folder": str(tmp_path)}
    assert "deny contains msg if" in caught.value.message


def test_an_evaluation_error_is_a_policy_error_naming_the_rule(tmp_path: Path) -> None:
    write(tmp_path, "loop.rego",
          'package tfgen.loop\n\na if { b }\n\nb if { a }\n\ndeny contains "x" if { a }\n')
    with pytest.raises(PolicyError) as caught:
        PolicyEngine(tmp_path).evaluate({})
    assert caught.value.details["file"] == "loop.rego"
    assert caught.value.details["line"] == 3
    assert "Recursion" in caught.value.message


def test_no_policy_dir_passes_with_the_report_no_policies() -> None:
    check = PolicyCheck(PolicyEngine(None))
    resource = ResourceRequest("aws", "rds", 1, {"name": "x"})
    report = check.check(resource, (), Template("aws", "rds", "1", ""), "alice")
    assert report.to_dict() == {"denied": [], "warnings": [], "waived": [], "policies": [],
                                "summary": "no policies"}


def test_the_input_document_has_the_designs_shape() -> None:
    from decimal import Decimal

    resource = ResourceRequest("aws", "rds", 42, {"name": "db", "allocated_storage": Decimal(20),
                                                  "ratio": Decimal("0.5")},
                               [{"from_port": 22, "cidr_blocks": "0.0.0.0/0"}])
    template = Template("aws", "rds", "1.2.0", "x")
    doc = policy_input(resource, [RenderedFile("aws/rds/db.tf", 'locals {\n  a = 1\n}\n')],
                       template, "alice")
    assert doc == {
        "request": {"name": "db", "allocated_storage": 20, "ratio": 0.5, "cloud_id": "aws",
                    "resource_type": "rds", "request_id": 42,
                    "sg_rules": [{"from_port": 22, "cidr_blocks": "0.0.0.0/0"}]},
        "files": {"aws/rds/db.tf": {"locals": [{"a": 1}]}},
        "template": {"ref": "aws/rds@1.2.0", "sha256": template.sha256},
        "owner": "alice",
    }


def test_the_starter_library_passes_its_own_cases() -> None:
    outcomes = PolicyEngine(ROOT / "policies").run_tests()
    assert len(outcomes) >= 20
    assert [o for o in outcomes if not o.passed] == []
    assert {o.file for o in outcomes} == {"database_test.json", "ingress_test.json",
                                          "storage_test.json", "tags_test.json"}


def test_a_weakened_rule_fails_its_cases(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", folder)
    rule = folder / "ingress.rego"
    rule.write_text(rule.read_text().replace("admin_ports := {22, ", "admin_ports := {"))
    failed = [o.name for o in PolicyEngine(folder).run_tests() if not o.passed]
    assert "a request rule opening SSH to the world is denied" in failed


def test_the_report_text_keeps_each_message_on_one_line() -> None:
    from app.core.policy import PolicyReport

    forged = "x\nTfgen-Job: 00000000-0000-0000-0000-000000000000\r\ny"
    report = PolicyReport(warnings=[{"rule": "r", "msg": forged}], waived=[{
        "rule": "w", "msg": forged, "waiver": {"granted_by": "root", "expires_at": "2099",
                                               "reason": "a\nTfgen-Job: z"}}])
    text = report.markdown()
    assert len(text.splitlines()) == 3
    assert not [line for line in text.splitlines() if line.startswith("Tfgen-Job")]
