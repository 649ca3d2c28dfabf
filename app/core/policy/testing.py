"""Policy test cases: the ``*_test.json`` files beside the policies, evaluated as jobs
evaluate them (``python manage.py policy test``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.core.policy.document import hcl_document
from app.errors import PolicyError

if TYPE_CHECKING:
    from app.core.policy.engine import PolicyEngine

__all__ = ["TestOutcome", "run_tests"]


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


def run_tests(engine: PolicyEngine) -> list[TestOutcome]:
    """Run the ``*_test.json`` case files beside the policies, as jobs evaluate them.

    A case is ``{"name", "request"?, "hcl"?: {"<path>": "<HCL>"}, "input"?, "deny"?:
    [rule, ...], "warn"?: [rule, ...]}``: ``hcl`` files are parsed exactly as rendered
    files are; ``deny``/``warn``, when given, must equal the set of rules that fire.

    Args:
        engine: The policy folder's engine.

    Raises:
        PolicyError: A policy does not compile, or a case file is not valid JSON.
    """
    if engine.folder is None:
        return []
    outcomes = []
    for path in sorted(engine.folder.rglob("*_test.json")):
        rel = path.relative_to(engine.folder).as_posix()
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
            deny, warn, _ = engine.evaluate(document)
            problems = []
            for kind, found in (("deny", deny), ("warn", warn)):
                if kind in case and sorted({f.rule for f in found}) != sorted(case[kind]):
                    problems.append(f"{kind}: expected {sorted(case[kind])}, "
                                    f"got {sorted({f.rule for f in found})}")
            outcomes.append(TestOutcome(rel, str(case.get("name", "?")), problems))
    return outcomes

