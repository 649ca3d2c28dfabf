"""``python manage.py policy lint`` and ``policy test`` as an operator runs them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def manage(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "APP_ENV": "test", "TFGEN_VAR_DIR": str(tmp_path / "var"),
           "LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_lint_passes_the_starter_library_and_names_a_broken_file(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", folder)
    ok = manage(tmp_path, "policy", "lint", "--dir", str(folder))
    assert ok.returncode == 0, ok.stderr
    assert "ingress.rego: ok" in ok.stdout
    (folder / "zz.rego").write_text("package tfgen.zz\n\nwarn contains x if {\n")
    bad = manage(tmp_path, "policy", "lint", "--dir", str(folder))
    assert bad.returncode == 1
    assert bad.stdout.startswith("policy zz.rego:3:")


def test_policy_test_runs_the_cases_and_fails_on_a_broken_rule(tmp_path: Path) -> None:
    folder = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", folder)
    ok = manage(tmp_path, "policy", "test", "--dir", str(folder))
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "PASS ingress_test.json: a request rule opening SSH to the world is denied" \
        in ok.stdout
    tags = folder / "tags.rego"
    tags.write_text(tags.read_text().replace('blank(item.tags, "Name")', "false"))
    bad = manage(tmp_path, "policy", "test", "--dir", str(folder))
    assert bad.returncode == 1
    assert "FAIL tags_test.json: an instance without tags is denied and warned" in bad.stdout
