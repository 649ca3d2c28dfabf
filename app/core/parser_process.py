"""HashiCorp's HCL parser in a kept child process (``app/core/hclparse.py``).

``pygohcl`` runs Go inside Python, and Go ends the whole process on a fatal error (a file
nested ~100,000 levels deep overflows its stack): the parser therefore runs in a child
process kept between parses, one per process that parses (never inherited across a
fork). A crash ends the child, never the worker, and the next parse starts a new one.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import weakref
from pathlib import Path
from typing import IO, Any

from app.errors import InternalError, JobTimeout

__all__ = ["ParserProcess", "timed_out"]

_PARSER = Path(__file__).with_name("hclparse.py")


class ParserProcess:
    """HashiCorp's HCL parser in a long-lived child process (``app/core/hclparse.py``).

    Started on first use in the process that parses (never inherited across a fork),
    kept for the next parse (a child costs ~35-75 ms to start, a parse ~0.3 ms), and
    replaced after it crashed, timed out or was interrupted mid-request.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: IO[str] | None = None
        self._pid = 0
        self._finalizer: weakref.finalize[Any, Any] | None = None

    def request(self, contents: list[str], timeout: float) -> dict[str, Any]:
        """Parse ``contents`` in the child and return its report.

        Raises:
            InternalError: The parser process died (a fatal Go error: SIGABRT).
            JobTimeout: No answer within ``timeout`` seconds.
        """
        with self._lock:
            proc = self._ensure()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(json.dumps(contents) + "\n")
                proc.stdin.flush()
                ready, _, _ = select.select([proc.stdout], [], [], timeout)
                line = proc.stdout.readline() if ready else None
            except BrokenPipeError:
                line = ""
            except BaseException:  # a soft time limit mid-request: the child is out of step
                self._stop()
                raise
            if line is None:
                self._stop()
                raise timed_out("hcl-parse", timeout)
            if not line:
                raise self._crashed()
            answer: dict[str, Any] = json.loads(line)
            return answer

    def _ensure(self) -> subprocess.Popen[str]:
        if self._proc is not None and self._proc.poll() is None and self._pid == os.getpid():
            return self._proc
        self._proc = None  # dead, or a forked parent's: never share its pipes
        self._stderr = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115
        self._proc = subprocess.Popen(
            [sys.executable, "-I", str(_PARSER)], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=self._stderr, text=True, encoding="utf-8")
        self._pid = os.getpid()
        # Ends the child when this object goes away or the process exits.
        self._finalizer = weakref.finalize(self, _end_child, self._proc, self._stderr,
                                           self._pid)
        return self._proc

    def _crashed(self) -> InternalError:
        assert self._proc is not None and self._stderr is not None
        code = self._proc.wait()
        self._stderr.seek(0)
        fatal = _fatal_line(self._stderr.read())
        self._stop()
        return InternalError(
            f"the HCL parser crashed ({_exit_reason(code)}): {fatal}; "
            "is the output nested too deeply?", details={"check": "hcl-parse"})

    def _stop(self) -> None:
        if self._finalizer is not None:
            self._finalizer()
        self._proc, self._stderr, self._finalizer = None, None, None


def _end_child(proc: subprocess.Popen[str], stderr: IO[str], pid: int) -> None:
    if pid != os.getpid():
        return  # a forked copy: the child belongs to the parent
    proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout, stderr):
        if stream is not None:
            stream.close()



def _exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            return signal.Signals(-returncode).name
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


def _fatal_line(stderr: str) -> str:
    # Go prints "fatal error: stack overflow" then thousands of goroutine frames.
    for line in stderr.splitlines():
        if line.startswith(("fatal error:", "panic:")):
            return line.strip()
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no message"




def timed_out(check: str, timeout: float, command: str | None = None) -> JobTimeout:
    """The ``TIMEOUT`` error of a check (or terraform command) that ran past ``timeout``."""
    what = f"terraform {command}" if command else check
    return JobTimeout(f"{what} did not finish within {timeout:g} s (TERRAFORM_TIMEOUT)",
                      details={"check": check})
