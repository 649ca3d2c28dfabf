"""The Rego policy folder, compiled in-process with ``regopy`` (rego-cpp) and evaluated.

A folder of OPA Rego (v1 syntax) files (``POLICY_DIR``) is compiled once per process
and compiled again only when a file in it changes. Every package under ``data.tfgen``
may define the sets ``deny`` and ``warn``; an entry is a message string or
``{"msg": str, "rule": str}`` (``rule`` defaults to the message). Files named
``*_test.rego`` are tests (``python manage.py policy test``), never loaded for jobs.
rego-cpp's errors become ``PolicyError`` naming the file, line and column.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from app.core.model import sha256_hex
from app.core.policy.report import Finding, PolicySource
from app.errors import PolicyError

if TYPE_CHECKING:
    from app.core.policy.testing import TestOutcome

__all__ = ["ROOT_PACKAGE", "PolicyEngine"]

ROOT_PACKAGE = "tfgen"
_QUERY = f"x = data.{ROOT_PACKAGE}"

_PACKAGE = re.compile(r"^\s*package\s+([A-Za-z_][\w.]*)", re.MULTILINE)
_DATA_REF = re.compile(r"data\.([A-Za-z_][\w.]*)")


def _take(text: str, pos: int) -> tuple[str, int]:
    """Read a rego-cpp length-prefixed string ``N:<N chars>`` at ``pos``."""
    colon = text.index(":", pos)
    size = int(text[pos:colon])
    return text[colon + 1:colon + 1 + size], colon + 1 + size


def _compile_error(error: Exception, sources: Mapping[str, PolicySource],
                   folder: Path) -> PolicyError:
    """Turn rego-cpp's error sequence into a ``PolicyError`` naming file, line, column."""
    text = str(error)
    found = re.search(r"\(error (\d+:)", text)
    message_at = re.search(r"\(errormsg (\d+:)", text)
    message = _take(text, message_at.start(1))[0] if message_at else text.strip()
    if not found:
        return PolicyError(f"policies in {folder} do not compile: {message}",
                           details={"folder": str(folder)})
    file, end = _take(text, found.start(1))
    offset = int(text[end + 1:].split("|", 1)[0])
    source = sources.get(file)
    line = column = None
    if source is not None:
        line = source.text.count("\n", 0, offset) + 1
        column = offset - (source.text.rfind("\n", 0, offset) + 1) + 1
    where = f"{file}:{line}:{column}" if line else file
    return PolicyError(f"policy {where}: {message}",
                       details={"file": file, "line": line, "column": column,
                                "folder": str(folder)})


def _rule_line(source: PolicySource, rule: str) -> int | None:
    found = re.search(rf"^[ \t]*{re.escape(rule)}\b", source.text, re.MULTILINE)
    return source.text.count("\n", 0, found.start()) + 1 if found else None


def _as_finding(entry: Any) -> Finding:
    if isinstance(entry, str):
        return Finding(entry, entry)
    if isinstance(entry, Mapping) and isinstance(entry.get("msg"), str):
        return Finding(str(entry.get("rule") or entry["msg"]), entry["msg"])
    text = json.dumps(entry, sort_keys=True)
    return Finding(text, text)


def _interpreter() -> Any:
    """A rego-cpp interpreter that reports errors as exceptions only, not on stdout."""
    import regopy

    # Per interpreter: regopy.set_default_log_level aborts the process if called twice.
    interpreter = regopy.Interpreter()
    interpreter.log_level = regopy.LogLevel.NONE
    return interpreter


@dataclass
class _Compiled:
    fingerprint: tuple[tuple[str, int, int], ...]
    sources: dict[str, PolicySource]
    packages: dict[str, str]  # package (under tfgen) -> first file declaring it
    interpreter: Any = None
    bundle: Any = None


class PolicyEngine:
    """The policy folder, compiled once per process and again when a file changes."""

    def __init__(self, folder: str | Path | None) -> None:
        """Create the engine; nothing is read until first use.

        Args:
            folder: The ``POLICY_DIR``; ``None`` means no policies (every job passes).
        """
        self.folder = Path(folder) if folder else None
        self._compiled: _Compiled | None = None
        self._lock = threading.Lock()
        self.compilations = 0

    @property
    def enabled(self) -> bool:
        """True when a policy folder is configured."""
        return self.folder is not None

    def _paths(self, tests: bool = False) -> list[Path]:
        assert self.folder is not None
        if not self.folder.is_dir():
            raise PolicyError(f"POLICY_DIR {self.folder} is not a folder",
                              details={"folder": str(self.folder)})
        return sorted(p for p in self.folder.rglob("*.rego")
                      if p.is_file() and p.name.endswith("_test.rego") == tests)

    def _fingerprint(self, paths: Iterable[Path]) -> tuple[tuple[str, int, int], ...]:
        out = []
        for p in paths:
            stat = p.stat()
            out.append((str(p), stat.st_mtime_ns, stat.st_size))
        return tuple(out)

    def _read(self, paths: Iterable[Path]) -> dict[str, PolicySource]:
        assert self.folder is not None
        sources = {}
        for p in paths:
            text = p.read_text(encoding="utf-8")
            rel = p.relative_to(self.folder).as_posix()
            sources[rel] = PolicySource(rel, sha256_hex(text), text)
        return sources

    def _build(self, sources: Mapping[str, PolicySource]) -> tuple[Any, Any]:
        """Compile ``sources`` into an interpreter and a bundle for the tfgen query."""
        import regopy

        assert self.folder is not None
        interpreter = _interpreter()
        try:
            for name, source in sources.items():
                interpreter.add_module(name, source.text)
            bundle = interpreter.build(_QUERY)
        except regopy.RegoError as e:
            raise _compile_error(e, sources, self.folder) from e
        if not bundle.ok():
            raise PolicyError(f"policies in {self.folder} do not compile",
                              details={"folder": str(self.folder)})
        return interpreter, bundle

    def load(self) -> _Compiled | None:
        """The compiled policies, compiled again when a file was added, changed or removed.

        Raises:
            PolicyError: A file does not compile (file, line and column named).
        """
        if self.folder is None:
            return None
        with self._lock:
            paths = self._paths()
            fingerprint = self._fingerprint(paths)
            if self._compiled is not None and self._compiled.fingerprint == fingerprint:
                return self._compiled
            sources = self._read(paths)
            interpreter, bundle = self._build(sources)
            packages: dict[str, str] = {}
            for name, source in sources.items():
                for package in _PACKAGE.findall(source.text):
                    if package == ROOT_PACKAGE or package.startswith(ROOT_PACKAGE + "."):
                        packages.setdefault(package, name)
            self._compiled = _Compiled(fingerprint, sources, packages, interpreter, bundle)
            self.compilations += 1
            return self._compiled

    def check(self) -> list[PolicySource]:
        """Compile the folder (``policy lint``, ``/ready``); return the files compiled.

        Raises:
            PolicyError: A file does not compile.
        """
        compiled = self.load()
        return list(compiled.sources.values()) if compiled else []

    def evaluate(self, document: Mapping[str, Any]) -> tuple[list[Finding], list[Finding],
                                                             list[PolicySource]]:
        """Evaluate every package under ``data.tfgen`` against ``document``.

        Returns:
            The ``deny`` findings, the ``warn`` findings and the files evaluated.

        Raises:
            PolicyError: The folder does not compile, or evaluation failed (conflicting
                values, recursion): the file and line of the rule when it can be told.
        """
        compiled = self.load()
        if compiled is None:
            return [], [], []
        with self._lock:
            tree = self._query(compiled, document)
        deny: list[Finding] = []
        warn: list[Finding] = []
        for package, file in sorted(compiled.packages.items()):
            node: Any = tree
            for part in package.split(".")[1:]:
                node = node.get(part) if isinstance(node, Mapping) else None
            if not isinstance(node, Mapping):
                continue
            for name, out in (("deny", deny), ("warn", warn)):
                entries = node.get(name, [])
                if not isinstance(entries, list):
                    source = compiled.sources[file]
                    raise PolicyError(
                        f"policy {file}: {package}.{name} must be a set of messages "
                        f"(write `{name} contains msg if {{ ... }}`)",
                        details={"file": file, "line": _rule_line(source, name),
                                 "folder": str(self.folder)})
                out.extend(f for f in map(_as_finding, entries) if f not in out)
        return deny, warn, list(compiled.sources.values())

    def _query(self, compiled: _Compiled, document: Mapping[str, Any]) -> Mapping[str, Any]:
        from regopy import rego_shared as rs

        interpreter = compiled.interpreter
        interpreter.set_input_term(json.dumps(document))
        # The low-level calls: regopy's Output class fails on some error outputs.
        output = rs.rego_bundle_query(interpreter._impl, compiled.bundle._impl)
        try:
            ok = rs.rego_output_ok(output)
            text = rs.rego_output_string(output)
        finally:
            rs.rego_free_output(output)
        if ok and text.strip() == "undefined":
            return {}
        if ok and not text.lstrip().startswith("("):
            try:
                result = json.loads(text)
            except ValueError as e:
                raise PolicyError(
                    f"policies in {self.folder} gave output that is not JSON ({e}): build "
                    "messages from computed strings with concat, not sprintf",
                    details={"file": None, "line": None, "folder": str(self.folder)}) from e
            results = result if isinstance(result, list) else [result]
            tree = results[0].get("bindings", {}).get("x", {}) if results else {}
            return tree if isinstance(tree, Mapping) else {}
        raise self._evaluation_error(compiled, text)

    def _evaluation_error(self, compiled: _Compiled, text: str) -> PolicyError:
        message_at = re.search(r"\(errormsg (\d+:)", text)
        message = _take(text, message_at.start(1))[0] if message_at else (
            "evaluation failed (a rule with conflicting values, or a runtime error)")
        file = line = None
        for ref in _DATA_REF.findall(message):
            package, _, rule = ref.rpartition(".")
            if package in compiled.packages:
                file = compiled.packages[package]
                line = _rule_line(compiled.sources[file], rule)
                break
        where = f"{file}:{line}" if file and line else (file or str(self.folder))
        return PolicyError(f"policy {where}: {message}",
                           details={"file": file, "line": line, "folder": str(self.folder)})

    def run_tests(self) -> list[TestOutcome]:
        """Run the ``*_test.json`` cases beside the policies (``policy.testing``)."""
        from app.core.policy.testing import run_tests

        return run_tests(self)
