"""Optional checkov scan of the rendered files, as a separate process (``CHECKOV_BIN``).

Checkov cannot live in tfgen's environment (checkov 3.3 pins ``packaging<24``, kombu 5.7
needs newer), so it runs from its own virtualenv or image. A run costs seconds, mostly
its start-up: the scan starts as soon as the files are rendered and runs while they are
validated and the Rego policies evaluated; the policy stage then collects it. Its failed
checks join the policy report as warnings (``source: checkov``); a scan that fails or
times out is one warning, never a failed job. Checkov sees only the plain resources in
the files, not what a remote module does with its inputs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from app.core.model import RenderedFile
from app.core.policy import Finding

__all__ = ["Checkov", "Scan", "parse_report"]

# Only what checkov needs: no tfgen setting, and no token, reaches the process.
_ENV_KEEP = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")


class Checkov:
    """Runs ``checkov -d <dir> -o json`` on a job's rendered files."""

    def __init__(self, binary: str, timeout: float = 60.0) -> None:
        """Create the scanner.

        Args:
            binary: The checkov executable (in its own virtualenv or image).
            timeout: Seconds a scan may take before it is abandoned (one warning).
        """
        self.binary = binary
        self.timeout = timeout

    def start(self, files: Sequence[RenderedFile]) -> Scan:
        """Start scanning ``files`` in the background; ``collect()`` the findings later."""
        folder = Path(tempfile.mkdtemp(prefix="tfgen-checkov-"))
        for f in files:
            target = folder.joinpath(*PurePosixPath(f.path).parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(f.content, encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if k in _ENV_KEEP}
        try:
            proc = subprocess.Popen(
                [self.binary, "-d", str(folder), "-o", "json", "--quiet", "--compact",
                 "--framework", "terraform", "--skip-download"],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
        except OSError as e:
            shutil.rmtree(folder, ignore_errors=True)
            return Scan(None, folder, self.timeout, f"checkov did not run: {e}")
        return Scan(proc, folder, self.timeout)

    def scan(self, files: Sequence[RenderedFile]) -> list[Finding]:
        """Scan ``files`` and wait for the findings."""
        return self.start(files).collect()


class Scan:
    """One running checkov process and the folder it reads."""

    def __init__(self, proc: subprocess.Popen[str] | None, folder: Path, timeout: float,
                 failure: str | None = None) -> None:
        self.proc, self.folder, self.timeout, self.failure = proc, folder, timeout, failure

    def collect(self) -> list[Finding]:
        """Wait for the scan (at most the timeout) and return its warnings."""
        if self.proc is None:
            return [Finding("checkov", self.failure or "checkov did not run", "checkov")]
        try:
            out, err = self.proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            self.cancel()
            return [Finding("checkov", f"checkov took longer than {self.timeout:g} s",
                            "checkov")]
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)
        return parse_report(out, err, self.proc.returncode)

    def cancel(self) -> None:
        """Stop the scan (the job ended before the policy stage) and clean up."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        shutil.rmtree(self.folder, ignore_errors=True)


def parse_report(out: str, err: str, returncode: int) -> list[Finding]:
    """Turn checkov's JSON (one report, or a list of them) into warnings."""
    try:
        data: Any = json.loads(out) if out.strip() else None
    except ValueError:
        data = None
    if data is None or returncode not in (0, 1):
        detail = (err.strip().splitlines() or [f"exit status {returncode}"])[-1]
        return [Finding("checkov", f"checkov failed: {detail[:300]}", "checkov")]
    reports = data if isinstance(data, list) else [data]
    findings = []
    for report in reports:
        for check in (report.get("results") or {}).get("failed_checks", []):
            lines = check.get("file_line_range") or [0, 0]
            where = f"{str(check.get('file_path', '')).lstrip('/')}:{lines[0]}-{lines[-1]}"
            findings.append(Finding(
                str(check.get("check_id")),
                f"{check.get('check_name')} ({check.get('resource')}, {where})", "checkov"))
    return findings
