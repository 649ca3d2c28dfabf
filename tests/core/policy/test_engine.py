"""The policy engine alone: compile once and on change, errors with file and line."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.core.policy import PolicyEngine
from app.errors import PolicyError


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

