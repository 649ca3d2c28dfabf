"""What the policy stage reports: findings, the policy files evaluated, and
``result.policy`` with its MR-description and commit-trailer renderings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Finding", "PolicyReport", "PolicySource"]


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

