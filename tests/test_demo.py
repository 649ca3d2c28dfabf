"""The README's first command: ``bash run/demo.sh`` runs a whole job on embedded defaults.

Embedded means no server: SQLite for the APEX schema and the job records, Celery on its
``filesystem://`` queue, a bare git repository as the remote; the API runs under
gunicorn and the worker is a real ``celery -A tasks worker``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_demo(var: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CELERY_", "DATABASE_", "JOB_", "GIT_", "PUBLISHER",
                                      "POLICY_", "CHECKOV_"))}
    env.update(TFGEN_VENV=sys.prefix, TFGEN_VAR_DIR=str(var))
    return subprocess.run(["bash", str(ROOT / "run" / "demo.sh"), *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)


def job_document(stdout: str) -> dict:
    return json.loads(stdout)


def processes_with_env(entry: str) -> list[int]:
    """Pids of live processes whose environment holds ``entry`` (NAME=value)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
        except (OSError, ValueError):
            continue
        if entry.encode() in environ:
            found.append(int(proc.name))
    return found


@pytest.mark.parametrize(("args", "path", "warning"), [
    ((), "aws/rds/orders-db.tf", "storage-encryption-explicit"),
    (("aws", "ec2", "7"), "aws/ec2/", "required-tag-costcenter"),
])
def test_demo_ends_with_success_and_a_commit_on_the_feature_branch(
        tmp_path: Path, args: tuple[str, ...], path: str, warning: str) -> None:
    var = tmp_path / "demo"
    done = run_demo(var, *args)
    assert done.returncode == 0, done.stderr[-3000:]

    doc = job_document(done.stdout)
    assert doc["status"] == "SUCCESS" and doc["stage"] == "done"
    assert [s["stage"] for s in doc["stages"]] == ["fetch", "render", "validate", "policy",
                                                   "publish", "done"]
    result = doc["result"]
    branch = result["branch"]
    cloud, rtype = doc["request"]["cloud_id"], doc["request"]["resource_type"]
    assert branch.startswith(f"feature/{cloud}-{rtype}-")
    assert result["files"][0]["path"].startswith(path)

    git = ["git", "--git-dir", str(var / "remote.git")]
    head = subprocess.run([*git, "rev-parse", branch], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert head == result["commit"]["sha"]
    message = subprocess.run([*git, "log", "-1", "--format=%B", branch], capture_output=True,
                             text=True, check=True).stdout
    assert f"Tfgen-Job: {doc['uuid']}" in message
    # The starter policies: each demo request trips one warning, shown in the report.
    assert [w["rule"] for w in result["policy"]["warnings"]] == [warning]
    assert f"warning {warning}: " in done.stderr
    assert f"- warning `{warning}`" in message
    # It merged the branch in the remote, and the reconciler under beat saw it.
    assert f"request {cloud}/{rtype}/{doc['request']['request_id']}: published -> merged" \
        in done.stderr
    subprocess.run([*git, "merge-base", "--is-ancestor", branch, "main"], check=True)
    # The demo stopped what it started: nothing listens or runs from its folder any more.
    assert processes_with_env(f"TFGEN_VAR_DIR={var}") == []


def test_demo_fails_loudly_for_a_request_the_catalog_lacks(tmp_path: Path) -> None:
    done = run_demo(tmp_path / "demo", "gcp", "vm", "1")
    assert done.returncode != 0
    assert "expected 202, got 404" in done.stderr
