"""Reading a process tree's figures from ``/proc`` (the benchmarks' CPU and memory columns)."""

from __future__ import annotations

import contextlib
from pathlib import Path

__all__ = ["children", "proc_stat"]


def proc_stat(pid: int | str) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` from the 3rd on (state, ppid, ...)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2:].split()


def children(pid: int) -> dict[int, list[str]]:
    """Each live child of ``pid``: its ``proc_stat`` fields."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                fields = proc_stat(entry.name)
                if int(fields[1]) == pid:
                    found[int(entry.name)] = fields
    return found
