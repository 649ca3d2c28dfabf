"""Policies before the merge request: Rego rules over the request and its rendered HCL.

A folder of OPA Rego (v1 syntax) files (``POLICY_DIR``) is compiled once per process
with ``regopy`` (rego-cpp, in-process) and compiled again only when a file in it changes.
Every package under ``data.tfgen`` may define the sets ``deny`` and ``warn``; an entry is
a message string or ``{"msg": str, "rule": str}`` (``rule`` defaults to the message).
Files named ``*_test.rego`` are tests (``python manage.py policy test``), never loaded
for jobs.

The input document (``policy_input``)::

    {"request": {<row columns>, "cloud_id", "resource_type", "request_id", "sg_rules"},
     "files": {"<path>": <HCL as JSON, every block a list of bodies>},
     "template": {"ref", "sha256"}, "owner": "alice"}

``pygohcl`` gives a block that occurs once as an object and a repeated one as a list;
``hcl_document`` makes every block a list so one rule works for one ``ingress`` or five.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from app.core.model import RenderedFile, ResourceRequest, Template, sha256_hex
from app.errors import PolicyError

__all__ = [
    "Finding",
    "FindingSource",
    "PendingScan",
    "PolicyCheck",
    "PolicyEngine",
    "PolicyReport",
    "PolicySource",
    "TestOutcome",
    "WaiverLookup",
    "hcl_document",
    "policy_input",
]

ROOT_PACKAGE = "tfgen"
_QUERY = f"x = data.{ROOT_PACKAGE}"


@dataclass(frozen=True)
class Finding:
    """One ``deny`` or ``warn`` entry: the rule's name and its message."""

    rule: str
    msg: str
    source: str = "rego"

    def to_dict(self) -> dict[str, str]:
        """Return ``{"rule", "msg"}`` (plus ``source`` when not Rego)."""
        out = {"rule": self.rule, "msg": self.msg}
        if self.source != "rego":
            out["source"] = self.source
        return out


@dataclass(frozen=True)
class PolicySource:
    """One compiled policy file: its path relative to the folder and its digest."""

    file: str
    sha256: str
    text: str = field(repr=False, compare=False)

    def to_dict(self) -> dict[str, str]:
        """Return ``{"file", "sha256"}`` for the report."""
        return {"file": self.file, "sha256": self.sha256}


@dataclass
class PolicyReport:
    """What the policy stage found, as ``result.policy`` shows it."""

    denied: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[dict[str, Any]] = field(default_factory=list)
    waived: list[dict[str, Any]] = field(default_factory=list)
    policies: list[dict[str, str]] = field(default_factory=list)
    summary: str = "no policies"

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON-ready report."""
        return {"denied": self.denied, "warnings": self.warnings, "waived": self.waived,
                "policies": self.policies, "summary": self.summary}

    def waiver_trailers(self) -> list[str]:
        """``Tfgen-Waiver: <rule> by <admin> until <date>``, one per waived rule."""
        return list(dict.fromkeys(
            " ".join(f"Tfgen-Waiver: {w['rule']} by {w['waiver']['granted_by']} until "
                     f"{w['waiver']['expires_at']}".split()) for w in self.waived))

    def markdown(self) -> str:
        """The MR description's Policy section body: warnings and waivers, one a line.

        Messages may quote request values: each is kept to one line, so none can add a
        line (a forged ``Tfgen-Job:`` trailer) to the commit message.
        """
        lines = [f"- {self.summary}"]
        lines += [f"- warning `{w['rule']}`: {w['msg']}" for w in self.warnings]
        lines += [f"- waived `{w['rule']}`: {w['msg']} (by {w['waiver']['granted_by']} until "
                  f"{w['waiver']['expires_at']}: {w['waiver']['reason']})" for w in self.waived]
        lines += [f"- denied `{d['rule']}`: {d['msg']}" for d in self.denied]
        return "\n".join(" ".join(line.split()) for line in lines)


# --- Input -------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A JSON value for a database value (Decimal, dates, nested rows)."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    iso = getattr(value, "isoformat", None)
    return iso() if callable(iso) else str(value)


_HEADER = re.compile(
    r'^([A-Za-z_][\w-]*)((?:\s+(?:"(?:[^"\\]|\\.)*"|[A-Za-z_][\w-]*))*)\s*\{(.*?)(\}?)\s*$')
_LABEL = re.compile(r'"((?:[^"\\]|\\.)*)"|([A-Za-z_][\w-]*)')
_HEREDOC = re.compile(r"<<-?([A-Za-z_]\w*)\s*$")


def _label(match: re.Match[str]) -> str:
    if match.group(2) is not None:
        return match.group(2)
    try:
        return str(json.loads(f'"{match.group(1)}"'))
    except ValueError:
        return match.group(1)


def _block_keys(content: str) -> dict[tuple[str, ...], int]:
    """Where blocks are in a (``terraform fmt``-ed) file: key path -> number of labels.

    A key path is how pygohcl's JSON reaches the block's name, e.g. ``("resource",
    "aws_security_group", "db", "ingress")``. Attributes (``tags = {``) are not blocks.
    """
    keys: dict[tuple[str, ...], int] = {}
    stack: list[tuple[str, ...] | None] = []  # a block's body path, or None in an expression
    heredoc: str | None = None
    for raw in content.splitlines():
        line = raw.strip()
        if heredoc is not None:
            heredoc = None if line == heredoc else heredoc
            continue
        if not line or line.startswith(("#", "//")):
            continue
        parent = stack[-1] if stack else ()
        header = _HEADER.match(line) if parent is not None else None
        if header and parent is not None and (not header.group(3).strip() or header.group(4)):
            name = header.group(1)
            labels = tuple(_label(m) for m in _LABEL.finditer(header.group(2)))
            keys[(*parent, name)] = len(labels)
            if not header.group(4):  # a one-line block ``lifecycle { x = 1 }`` closes itself
                stack.append((*parent, name, *labels))
            continue
        while line[:1] in ("}", "]", ")") and line:
            if stack:
                stack.pop()
            line = line[1:].lstrip(",").strip()
        doc = _HEREDOC.search(line)
        if doc:
            heredoc = doc.group(1)
        elif line.endswith(("{", "[", "(")):
            stack.append(None)
    return keys


def _normalise(node: Any, path: tuple[str, ...], keys: Mapping[tuple[str, ...], int]) -> Any:
    if not isinstance(node, dict):
        return node
    return {k: _blocks(v, (*path, k), keys[(*path, k)], keys) if (*path, k) in keys else v
            for k, v in node.items()}


def _blocks(value: Any, path: tuple[str, ...], labels: int,
            keys: Mapping[tuple[str, ...], int]) -> Any:
    if labels and isinstance(value, dict):
        return {label: _blocks(sub, (*path, label), labels - 1, keys)
                for label, sub in value.items()}
    bodies = value if isinstance(value, list) else [value]
    if labels:
        return [_blocks(b, path, labels, keys) for b in bodies]
    return [_normalise(body, path, keys) for body in bodies]


def hcl_document(content: str) -> dict[str, Any]:
    """Parse HCL into JSON where every block, at any depth, is a list of bodies.

    Strings keep their value as stored: ``$${`` written for a literal ``${`` reads back
    as ``${``; a real interpolation (``${var.x}``) is kept as written.

    Args:
        content: One file of rendered, formatted Terraform.

    Returns:
        ``{"resource": {"aws_s3_bucket": {"logs": [{...}]}}, "locals": [{...}], ...}``.
    """
    import pygohcl  # lazily: a Go runtime (see app.core.validate)

    parsed = pygohcl.loads(content, keep_interpolations=True)
    return dict(_normalise(parsed, (), _block_keys(content)))


def policy_input(resource: ResourceRequest, files: Sequence[RenderedFile], template: Template,
                 owner: str) -> dict[str, Any]:
    """Build the document policies see as ``input`` (see the module docstring)."""
    request = {str(k): _plain(v) for k, v in resource.row.items()}
    request.update(cloud_id=resource.cloud_id, resource_type=resource.resource_type,
                   request_id=resource.request_id,
                   sg_rules=[_plain(dict(rule)) for rule in resource.sg_rules])
    return {
        "request": request,
        "files": {f.path: hcl_document(f.content) for f in files},
        "template": {"ref": template.ref, "sha256": template.sha256},
        "owner": owner,
    }


# --- Compiling and evaluating --------------------------------------------------------------

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
        """Run the ``*_test.json`` case files beside the policies, as jobs evaluate them.

        A case is ``{"name", "request"?, "hcl"?: {"<path>": "<HCL>"}, "input"?, "deny"?:
        [rule, ...], "warn"?: [rule, ...]}``: ``hcl`` files are parsed exactly as rendered
        files are; ``deny``/``warn``, when given, must equal the set of rules that fire.

        Raises:
            PolicyError: A policy does not compile, or a case file is not valid JSON.
        """
        if self.folder is None:
            return []
        outcomes = []
        for path in sorted(self.folder.rglob("*_test.json")):
            rel = path.relative_to(self.folder).as_posix()
            try:
                cases = json.loads(path.read_text(encoding="utf-8"))
            except ValueError as e:
                raise PolicyError(f"policy test {rel}: not JSON: {e}",
                                  details={"file": rel}) from e
            for case in cases:
                document = {"request": case.get("request", {}), "owner": "policy-test",
                            "template": {"ref": "test/test@0", "sha256": ""},
                            "files": {p: hcl_document(t) for p, t in case.get("hcl", {}).items()},
                            **case.get("input", {})}
                deny, warn, _ = self.evaluate(document)
                problems = []
                for kind, found in (("deny", deny), ("warn", warn)):
                    if kind in case and sorted({f.rule for f in found}) != sorted(case[kind]):
                        problems.append(f"{kind}: expected {sorted(case[kind])}, "
                                        f"got {sorted({f.rule for f in found})}")
                outcomes.append(TestOutcome(rel, str(case.get("name", "?")), problems))
        return outcomes


@dataclass(frozen=True)
class TestOutcome:
    """One policy test case: where it is, its name, and what did not match."""

    file: str
    name: str
    problems: list[str]

    @property
    def passed(self) -> bool:
        """True when every expectation held."""
        return not self.problems


# --- The policy stage ------------------------------------------------------------------------


class WaiverLookup(Protocol):
    """What the stage needs of the waiver store."""

    def for_request(self, cloud_id: str, resource_type: str, request_id: int) -> list[Any]:
        """The waivers (active or not) of one request."""


class PendingScan(Protocol):
    """A scan running in the background."""

    def collect(self) -> list[Finding]:
        """Wait for it and return its warnings."""

    def cancel(self) -> None:
        """Stop it (the job ended before the policy stage)."""


class FindingSource(Protocol):
    """An extra scanner whose findings join the report as warnings (checkov)."""

    def start(self, files: Sequence[RenderedFile]) -> PendingScan:
        """Start scanning ``files``."""


@dataclass
class PolicyCheck:
    """The ``policy`` stage: Rego rules, waivers, and optional extra scanners."""

    engine: PolicyEngine
    waivers: WaiverLookup | None = None
    scanners: Sequence[FindingSource] = ()

    def start_scans(self, files: Sequence[RenderedFile]) -> list[PendingScan]:
        """Start the extra scanners early, so they run while the job validates."""
        return [scanner.start(files) for scanner in self.scanners]

    def check(self, resource: ResourceRequest, files: Sequence[RenderedFile],
              template: Template, owner: str,
              scans: Sequence[PendingScan] | None = None) -> PolicyReport:
        """Evaluate the policies on a job's request and files.

        Args:
            resource: The request row and its rules.
            files: The validated files.
            template: The template they came from.
            owner: The job's owner.
            scans: Scans started by ``start_scans``; started now when None.

        Returns:
            The report: denied (not waived), warnings, waived, and the files evaluated.

        Raises:
            PolicyError: A policy does not compile or evaluate.
        """
        report = PolicyReport()
        if not self.engine.enabled and not self.scanners:
            return report
        scans = self.start_scans(files) if scans is None else scans
        deny: list[Finding] = []
        try:
            if self.engine.enabled:
                deny, warn, sources = self.engine.evaluate(
                    policy_input(resource, files, template, owner))
                report.policies = [s.to_dict() for s in sources]
                report.warnings = [w.to_dict() for w in warn]
        except BaseException:
            for scan in scans:
                scan.cancel()
            raise
        for scan in scans:
            report.warnings += [w.to_dict() for w in scan.collect()]
        active: dict[str, Any] = {}
        if deny and self.waivers is not None:
            for waiver in self.waivers.for_request(resource.cloud_id, resource.resource_type,
                                                   resource.request_id):
                if waiver.active():
                    active.setdefault(waiver.rule, waiver)
        for finding in deny:
            waiver = active.get(finding.rule)
            if waiver is None:
                report.denied.append(finding.to_dict())
            else:
                report.waived.append({**finding.to_dict(), "waiver": {
                    "id": waiver.id, "granted_by": waiver.granted_by,
                    "expires_at": waiver.expires_at, "reason": waiver.reason}})
        count = len(report.policies)
        report.summary = (f"{count} polic{'y' if count == 1 else 'ies'}: "
                          f"{len(report.denied)} denied, {len(report.warnings)} warning(s), "
                          f"{len(report.waived)} waived")
        return report
