"""The starter library's own cases (``policy test``), and a weakened rule failing them."""

from __future__ import annotations

import shutil
from pathlib import Path

from app.core.policy import PolicyEngine
from tests.conftest import ROOT


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

