"""Context-aware escaping: where each ``{{ ... }}`` of a template lands in the HCL it produces.

Jinja knows nothing of HCL, so a value printed inside ``"..."`` and one printed bare
would otherwise be treated alike. ``annotate`` walks a parsed template in source order,
follows the HCL lexical state through the template's own text (strings, ``${ }``
interpolations, heredocs, comments) and wraps every printed expression in the
``_hcl_emit`` filter with the position it found, so each value is escaped for exactly
the place it lands. The same walk tells ``templates lint`` which bare expressions
lack an ``hcl`` filter.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from jinja2 import nodes
from jinja2.environment import Environment

__all__ = ["EMIT_FILTER", "NAMED_FILTERS", "SAFE_FILTERS", "HclScanner", "Placement", "annotate"]

EMIT_FILTER = "_hcl_emit"
# Filters whose result is a complete HCL literal: fine in a bare position.
SAFE_FILTERS = frozenset({"hcl", "hcl_map", "hcl_identifier", "to_terraform_string",
                          "to_terraform_list", "to_terraform_bool"})
# Filters told the source of the expression they are applied to, as their last argument,
# so that a value they refuse is named in the job's error.
NAMED_FILTERS = frozenset({"to_terraform_bool"})

Kind = Literal["bare", "string", "heredoc", "comment", "text", "fragment"]

_HEREDOC = re.compile(r"<<-?([A-Za-z_][A-Za-z0-9_-]*)\r?\n")


@dataclass
class _Frame:
    kind: Literal["bare", "string", "heredoc", "line_comment", "block_comment"]
    interpolation: bool = False  # a bare frame opened by ${ or %{ inside a template
    depth: int = 0  # open braces inside a bare frame
    delimiter: str = ""  # heredoc closing marker
    line: str = ""  # heredoc: the current line so far


@dataclass
class HclScanner:
    """The HCL lexical state after the text fed so far (enough to place values)."""

    stack: list[_Frame] = field(default_factory=lambda: [_Frame("bare")])
    prev: str = ""  # previous character within the current frame
    run: int = 0  # how many '$' or '%' in a row end the text of a string or heredoc
    escape: bool = False  # a backslash inside a quoted string awaits its character

    @property
    def position(self) -> tuple[str, str]:
        """``(kind, heredoc delimiter)`` of the current position."""
        top = self.stack[-1]
        kind = "comment" if top.kind.endswith("comment") else top.kind
        return kind, top.delimiter

    def printed(self) -> None:
        """Account for a value printed at the current position."""
        self.prev, self.run, self.escape = "x", 0, False
        if self.stack[-1].kind == "heredoc":
            self.stack[-1].line += "x"

    def _push(self, frame: _Frame) -> None:
        self.stack.append(frame)
        self.prev, self.run = "", 0

    def _pop(self) -> None:
        if len(self.stack) > 1:
            self.stack.pop()
        self.prev, self.run = "", 0

    def feed(self, text: str) -> None:
        """Advance over template text."""
        i = 0
        while i < len(text):
            i = self._step(text, i)

    def _step(self, text: str, i: int) -> int:
        char = text[i]
        top = self.stack[-1]
        nxt = text[i + 1] if i + 1 < len(text) else ""
        if top.kind == "line_comment":
            if char == "\n":
                self._pop()
        elif top.kind == "block_comment":
            if char == "*" and nxt == "/":
                self._pop()
                return i + 2
        elif top.kind == "bare":
            return self._bare(text, i, char, nxt, top)
        else:  # string or heredoc: a template
            return self._template(i, char, top)
        return i + 1

    def _bare(self, text: str, i: int, char: str, nxt: str, top: _Frame) -> int:
        if char == '"':
            self._push(_Frame("string"))
        elif char == "{":
            top.depth += 1
        elif char == "}":
            if top.depth == 0 and top.interpolation:
                self._pop()
            else:
                top.depth = max(0, top.depth - 1)
        elif char == "#" or (char == "/" and nxt == "/"):
            self._push(_Frame("line_comment"))
        elif char == "/" and nxt == "*":
            self._push(_Frame("block_comment"))
            return i + 2
        elif char == "<" and nxt == "<":
            found = _HEREDOC.match(text, i)
            if found:
                self._push(_Frame("heredoc", delimiter=found.group(1)))
                return found.end()
        return i + 1

    def _template(self, i: int, char: str, top: _Frame) -> int:
        if top.kind == "string" and self.escape:
            self.escape, self.prev, self.run = False, "x", 0
            return i + 1
        if top.kind == "string" and char == "\\":
            self.escape = True
        elif top.kind == "string" and char == '"':
            self._pop()
            return i + 1
        elif char == "{" and self.prev in ("$", "%") and self.run == 1:
            self._push(_Frame("bare", interpolation=True))
            return i + 1
        if top.kind == "heredoc":
            if char == "\n":
                if top.line.strip() == top.delimiter:
                    self._pop()
                    return i + 1
                top.line = ""
            else:
                top.line += char
        self.run = self.run + 1 if char in ("$", "%") and char == self.prev else (
            1 if char in ("$", "%") else 0)
        self.prev = char
        return i + 1


@dataclass(frozen=True)
class Placement:
    """One printed expression: its line, where it lands, and whether it is pre-escaped."""

    line: int
    kind: Kind
    label: str
    literal: bool  # ends in an hcl-family filter (or is a constant number/bool/None)


def describe(node: nodes.Node) -> str:
    """A short source-like name for an expression, for error messages."""
    if isinstance(node, nodes.Name):
        return node.name
    if isinstance(node, nodes.Getattr):
        return f"{describe(node.node)}.{node.attr}"
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        return f"{describe(node.node)}[{node.arg.value!r}]"
    if isinstance(node, nodes.Filter) and node.node is not None:
        return f"{describe(node.node)} | {node.name}"
    if isinstance(node, nodes.Call):
        return f"{describe(node.node)}(...)"
    if isinstance(node, nodes.Const):
        return repr(node.value)
    return "expression"


def _is_literal(node: nodes.Expr) -> bool:
    if isinstance(node, nodes.Filter):
        return node.name in SAFE_FILTERS
    if isinstance(node, nodes.Const):
        return node.value is None or isinstance(node.value, bool | int | float)
    return False


class _Annotator:
    def __init__(self, environment: Environment, macros: set[str]) -> None:
        self.environment = environment
        self.macros = macros | {"caller"}
        self.placements: list[Placement] = []

    def walk(self, body: Iterable[nodes.Node], scanner: HclScanner | None) -> None:
        for node in body:
            self.visit(node, scanner)

    def visit(self, node: nodes.Node, scanner: HclScanner | None) -> None:
        if isinstance(node, nodes.Output):
            self.output(node, scanner)
        elif isinstance(node, nodes.If):
            self.branches(scanner, [node.body, *[e.body for e in node.elif_], node.else_])
        elif isinstance(node, nodes.For):
            self.branches(scanner, [node.body, node.else_])
        elif isinstance(node, nodes.Macro | nodes.CallBlock):
            # The body's text goes wherever the macro is called: place it on its own.
            self.walk(node.body, HclScanner())
        elif isinstance(node, nodes.AssignBlock):
            self.walk(node.body, None)  # captured into a variable, escaped when printed
        elif hasattr(node, "body") and isinstance(node.body, list):
            self.walk(node.body, scanner)  # With, Scope, FilterBlock, Block, ...

    def branches(self, scanner: HclScanner | None, bodies: list[list[nodes.Node]]) -> None:
        if scanner is None:
            for body in bodies:
                self.walk(body, None)
            return
        start = copy.deepcopy(scanner)
        self.walk(bodies[0], scanner)
        for body in bodies[1:]:
            self.walk(body, copy.deepcopy(start))

    def output(self, node: nodes.Output, scanner: HclScanner | None) -> None:
        children = node.nodes
        for index, child in enumerate(children):
            if isinstance(child, nodes.TemplateData):
                if scanner is not None:
                    scanner.feed(child.data)
                continue
            before = children[index - 1] if index > 0 else None
            after = children[index + 1] if index + 1 < len(children) else None
            # Guard the edges unless the neighbour is known template text that cannot
            # join the value into ${ or %{ (a tag, a loop or another value might).
            guard_start = not (isinstance(before, nodes.TemplateData)
                               and not before.data.endswith(("$", "%")))
            guard_end = not (isinstance(after, nodes.TemplateData)
                             and not after.data.startswith("{"))
            kind, delimiter = scanner.position if scanner is not None else ("text", "")
            if kind == "bare" and self._is_macro_call(child):
                kind = "fragment"
            label = describe(child)
            self.placements.append(Placement(child.lineno, kind,  # type: ignore[arg-type]
                                             label, _is_literal(child)))
            args: list[nodes.Expr] = [nodes.Const(v) for v in (
                kind, child.lineno, label, guard_start, guard_end, delimiter)]
            wrapped = nodes.Filter(child, EMIT_FILTER, args, [], None, None,
                                   lineno=child.lineno)
            wrapped.set_environment(self.environment)
            children[index] = wrapped
            if scanner is not None:
                scanner.printed()

    def _is_macro_call(self, node: nodes.Node) -> bool:
        return (isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name)
                and node.node.name in self.macros)


def annotate(template: nodes.Template, environment: Environment) -> list[Placement]:
    """Wrap every printed expression of ``template`` (in place) with its HCL position.

    Args:
        template: A template parsed by ``environment.parse``.
        environment: The environment that will compile it (it has ``_hcl_emit``).

    Returns:
        Every printed expression's placement, in source order.
    """
    macros = {m.name for m in template.find_all(nodes.Macro)}
    annotator = _Annotator(environment, macros)
    annotator.walk(template.body, HclScanner())
    for node in template.find_all(nodes.Filter):
        if node.name in NAMED_FILTERS and node.node is not None and not node.args \
                and not node.kwargs:
            node.args = [nodes.Const(describe(node.node), lineno=node.lineno)]
    return annotator.placements
