"""Render Jinja templates into HCL that no request value can reshape.

Templates come from platform admins (``tf_template``); values come from people typing
into APEX. So:

- templates run in Jinja's ``ImmutableSandboxedEnvironment`` with ``StrictUndefined``:
  no dunder access, no ``str.format`` or ``|attr`` tricks, no mutation of the context,
  a missing variable is an error rather than an empty string;
- every printed expression is escaped for the exact place it lands (``escaping``):
  inside a quoted string, a heredoc or a comment it is escaped by HCL's rules, in a bare
  position only complete literals (``| hcl``) and plain name or number tokens pass;
- the filters ``hcl``, ``hcl_map``, ``hcl_identifier`` (and the APEX team's
  ``to_terraform_string`` / ``to_terraform_list`` / ``to_terraform_bool``) turn values
  into HCL literals; ``to_terraform_bool`` is given the source of the expression it is
  applied to (``escaping.NAMED_FILTERS``) so a value it refuses is named;
- compiled templates are cached by (cloud, type, module version, sha256 of the text).

Errors: a missing variable or a value that cannot be written where the template puts
it fails the job with ``INVALID_REQUEST_DATA``; anything wrong with the template itself
(syntax, a sandbox violation, a runtime error) with ``RENDER_ERROR``; both name the
template and the line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from app.core.lru import BoundedLRU
from app.core.model import ResourceRequest, Template
from app.core.render import hcl_writer as hcl_
from app.core.render.escaping import EMIT_FILTER, Placement, annotate
from app.errors import InvalidRequestData, RenderError, TfgenError

__all__ = ["CompiledTemplate", "HclEnvironment", "Renderer"]

# Largest string or list a template may build with ``*``, and largest ``**`` exponent:
# the sandbox stops escapes, not a template (or a value) that eats the worker's memory.
MAX_REPEAT_LENGTH = 1_000_000
MAX_EXPONENT = 128


class _Emitted(str):
    """Text the output hook produced; ``finalize`` lets only this through unchanged."""

    __slots__ = ()


class _PlacedValueError(hcl_.HclValueError):
    def __init__(self, message: str, line: int, label: str) -> None:
        super().__init__(message)
        self.line = line
        self.label = label


def _emit(value: Any, kind: str, line: int, label: str, guard_start: bool,
          guard_end: bool, delimiter: str) -> _Emitted:
    """The output hook every ``{{ ... }}`` goes through (added by ``escaping``)."""
    if isinstance(value, jinja2.Undefined):
        value._fail_with_undefined_error()  # StrictUndefined (or a sandbox refusal)
    try:
        if kind == "bare":
            text = hcl_.bare_text(value)
        elif kind == "fragment":  # a macro's output, built from escaped pieces
            text = str(value)
        elif kind == "text":  # captured by {% set %}: escaped when printed
            text = hcl_.scalar_text(value)
        elif kind == "comment":
            text = hcl_.escape_comment(hcl_.scalar_text(value))
        elif kind == "heredoc":
            text = hcl_.escape_heredoc(hcl_.scalar_text(value), delimiter,
                                       guard_start=guard_start, guard_end=guard_end)
        else:
            text = hcl_.escape_string(hcl_.scalar_text(value),
                                      guard_start=guard_start, guard_end=guard_end)
    except hcl_.HclValueError as e:
        raise _PlacedValueError(str(e), line, label) from e
    return _Emitted(text)


def _finalize(value: Any) -> Any:
    # Every output is wrapped by _emit; anything else reaching here is escaped as text
    # of a string, the safe default, so a missed case can never emit raw HCL.
    if isinstance(value, _Emitted):
        return value
    return hcl_.escape_string(hcl_.scalar_text(value), guard_start=True, guard_end=True)


class HclEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox templates run in: HCL output hook, filters, bounded ``*`` and ``**``."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self) -> None:
        super().__init__(undefined=jinja2.StrictUndefined, finalize=_finalize,
                         autoescape=False, keep_trailing_newline=True)
        self.filters.update(
            hcl=hcl_.hcl,
            hcl_map=hcl_.hcl_map,
            hcl_identifier=hcl_.hcl_identifier,
            to_terraform_string=hcl_.to_terraform_string,
            to_terraform_list=hcl_.to_terraform_list,
            to_terraform_bool=hcl_.to_terraform_bool,
        )
        self.filters[EMIT_FILTER] = _emit
        # HTML escaping makes no sense in HCL, and |safe would skip the output hook's
        # checks in spirit: neither is offered.
        for name in ("safe", "escape", "e", "forceescape", "xmlattr", "urlize"):
            self.filters.pop(name, None)

    def call_binop(self, context: jinja2.runtime.Context, operator: str, left: Any,
                   right: Any) -> Any:
        """Refuse ``*`` and ``**`` results big enough to exhaust the worker."""
        if operator == "**":
            if isinstance(right, int | float) and abs(right) > MAX_EXPONENT:
                raise SecurityError(f"exponent {right} is above {MAX_EXPONENT}")
            return left**right
        sized, times = (left, right) if isinstance(right, int) else (right, left)
        if (isinstance(sized, str | list | tuple) and isinstance(times, int)
                and len(sized) * times > MAX_REPEAT_LENGTH):
            raise SecurityError(f"repetition longer than {MAX_REPEAT_LENGTH} items")
        return left * right


@dataclass(frozen=True)
class CompiledTemplate:
    """A template compiled once, with where each of its expressions lands."""

    ref: str
    jinja: jinja2.Template
    placements: tuple[Placement, ...]


_UNDEFINED_NAME = re.compile(r"^'([^']+)' is undefined|has no attribute '([^']+)'")


def _template_line(tb: TracebackType | None, filename: str) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


class Renderer:
    """Compiles (with a bounded cache) and renders templates for resource requests."""

    def __init__(self, cache_size: int = 256) -> None:
        """Create a renderer.

        Args:
            cache_size: Compiled templates kept (least recently used go first); 0 turns
                the cache off.
        """
        self.environment = HclEnvironment()
        self.cache_size = cache_size
        self._cache: BoundedLRU[tuple[str, str, str, str], CompiledTemplate] = (
            BoundedLRU(cache_size))

    @staticmethod
    def _filename(template: Template) -> str:
        return f"<template {template.ref}>"

    def compile(self, template: Template) -> CompiledTemplate:
        """Compile ``template`` (or take it from the cache).

        Raises:
            RenderError: The template does not parse, naming the template and line.
        """
        key = (template.cloud_id, template.resource_type, template.module_version,
               template.sha256)
        found = self._cache.get(key)
        if found is not None:
            return found
        compiled = self._compile(template)
        self._cache.put(key, compiled)
        return compiled

    def _compile(self, template: Template) -> CompiledTemplate:
        env = self.environment
        filename = self._filename(template)
        try:
            tree: nodes.Template = env.parse(template.text, template.ref, filename)
            placements = annotate(tree, env)
            code = env.compile(tree, template.ref, filename)
        except jinja2.TemplateSyntaxError as e:
            raise RenderError(
                f"template {template.ref} line {e.lineno}: {e.message}",
                details={"template": template.ref, "line": e.lineno},
            ) from e
        jinja = env.template_class.from_code(env, code, env.make_globals(None))
        return CompiledTemplate(template.ref, jinja, tuple(placements))

    def render(self, template: Template, request: ResourceRequest) -> str:
        """Render ``template`` for one request.

        Args:
            template: The template for the request's (cloud, type, module version).
            request: The request row and its security-group rules.

        Returns:
            The HCL text.

        Raises:
            InvalidRequestData: A variable the template uses is missing, or a value
                cannot be written where the template puts it.
            RenderError: The template is broken or broke the sandbox's rules.
        """
        return self.render_context(template, request.context())

    def render_context(self, template: Template, context: Mapping[str, Any]) -> str:
        """Render ``template`` with an explicit context (``render`` and lint use it)."""
        compiled = self.compile(template)
        ref, filename = template.ref, self._filename(template)
        try:
            return compiled.jinja.render(dict(context))
        except _PlacedValueError as e:
            raise InvalidRequestData(
                f"template {ref} line {e.line}: {e.label}: {e}",
                details={"template": ref, "line": e.line, "variable": e.label},
            ) from e
        except (hcl_.HclValueError, jinja2.UndefinedError) as e:
            line = _template_line(e.__traceback__, filename)
            found = _UNDEFINED_NAME.search(str(e))
            name = (found.group(1) or found.group(2)) if found else None
            if isinstance(e, hcl_.BoolValueError):
                name = e.variable
            message = (f"template {ref} line {line} uses {name!r}, which the request "
                       "does not have" if isinstance(e, jinja2.UndefinedError) and name
                       else f"template {ref} line {line}: {e}")
            details: dict[str, Any] = {"template": ref, "line": line}
            if name:
                details["variable"] = name
            raise InvalidRequestData(message, details=details) from e
        except TfgenError:
            raise
        except Exception as e:  # the template's own fault: syntax at runtime, sandbox, bugs
            line = _template_line(e.__traceback__, filename)
            kind = "sandbox" if isinstance(e, SecurityError) else type(e).__name__
            raise RenderError(
                f"template {ref} line {line}: {kind}: {e}",
                details={"template": ref, "line": line},
            ) from e
