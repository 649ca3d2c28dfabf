"""HCL literals from Python values, and escaping for every place a value can land.

Pure functions, no Jinja: the renderer wires them in as filters and as the output hook.
The rules follow the HCL native syntax spec (hashicorp/hcl ``hclsyntax/spec.md``) and
``hclwrite``'s ``escapeQuotedStringLit``:

- in a quoted string: ``\\``, ``"``, newline, carriage return and tab are escaped, every
  other non-printable character becomes ``\\uNNNN`` (or ``\\UNNNNNNNN``), ``${`` becomes
  ``$${`` and ``%{`` becomes ``%%{``;
- in a heredoc nothing can be backslash-escaped, so only ``${`` and ``%{`` are doubled
  and a value holding the closing marker on a line of its own is refused;
- in a comment, line breaks and ``*/`` are neutralised;
- outside any string (a "bare" position) only complete literals (numbers, ``true``,
  ``false``, ``null``, the output of ``hcl``...) and plain name tokens are accepted.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

__all__ = [
    "BoolValueError",
    "HclLiteral",
    "HclValueError",
    "escape_comment",
    "escape_heredoc",
    "escape_string",
    "hcl",
    "hcl_identifier",
    "hcl_map",
    "is_identifier",
    "list_items",
    "to_terraform_bool",
    "to_terraform_list",
    "to_terraform_string",
]

_ESCAPES = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# A bare value may only be a name-like token or a number: it cannot open or close a
# block, a string, a comment or an expression, nor add an attribute or an element.
_BARE_TOKEN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*|-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
# Words that change how a bare object key is parsed; such keys are quoted.
_KEYWORDS = frozenset({"true", "false", "null", "for", "in", "if", "else", "endif", "endfor"})
_MAX_DEPTH = 32


class HclValueError(ValueError):
    """A value cannot be written safely where the template puts it."""


class HclLiteral(str):
    """Text that is already a complete HCL expression (the output of an ``hcl`` filter).

    Printed as is in a bare position; escaped like any text inside a string.
    """

    __slots__ = ()


def _escape_char(char: str) -> str:
    known = _ESCAPES.get(char)
    if known is not None:
        return known
    if char.isprintable():
        return char
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        raise HclValueError(f"a lone surrogate (U+{code:04X}) cannot be written as UTF-8")
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _escape_chars(text: str) -> str:
    if text.isprintable() and "\\" not in text and '"' not in text:
        return text
    return "".join(_escape_char(c) for c in text)


def _escape_templates(text: str) -> str:
    return text.replace("${", "$${").replace("%{", "%%{")


def escape_string(text: str, *, guard_start: bool = False, guard_end: bool = False) -> str:
    """Escape ``text`` for the inside of an HCL quoted string.

    Args:
        text: Any text.
        guard_start: The character before the value may be ``$`` or ``%``: a leading
            ``{`` is written ``\\u007b`` so the two cannot form ``${`` or ``%{``.
        guard_end: The character after the value may be ``{``: a trailing ``$`` or
            ``%`` is written ``\\u0024`` / ``\\u0025`` for the same reason.

    Returns:
        The escaped text, without the surrounding quotes; parsing ``"<result>"`` gives
        back exactly ``text``.

    Raises:
        HclValueError: ``text`` holds a lone surrogate (not encodable in UTF-8).
    """
    body = _escape_chars(_escape_templates(text))
    if guard_start and body.startswith("{"):
        body = "\\u007b" + body[1:]
    if guard_end and body.endswith(("$", "%")):
        body = body[:-1] + ("\\u0024" if body.endswith("$") else "\\u0025")
    return body


def escape_heredoc(text: str, delimiter: str, *, guard_start: bool = False,
                   guard_end: bool = False) -> str:
    """Escape ``text`` for the inside of a heredoc closed by ``delimiter``.

    Heredocs have no backslash escapes, so what cannot be written is refused.

    Raises:
        HclValueError: A line of ``text`` would close the heredoc, or the value starts
            with ``{`` / ends with ``$`` or ``%`` next to template text that could join
            it into an interpolation.
    """
    for char in text:
        if not char.isprintable() and char not in "\n\t":
            raise HclValueError(f"U+{ord(char):04X} cannot be written in a heredoc, which "
                                "has no escapes (a quoted string can hold it)")
    if delimiter and any(line.strip() == delimiter for line in text.splitlines()):
        raise HclValueError(f"a line of the value would close the heredoc ({delimiter})")
    if guard_start and text.startswith("{"):
        raise HclValueError("a value starting with '{' cannot follow '$' or '%' in a heredoc")
    if guard_end and text.endswith(("$", "%")):
        raise HclValueError("a value ending with '$' or '%' cannot precede '{' in a heredoc")
    return _escape_templates(text)


def escape_comment(text: str) -> str:
    """Escape ``text`` for a comment: no line break and no ``*/`` can end it early."""
    return _escape_chars(text).replace("*/", "*\\/")


def is_identifier(text: str) -> bool:
    """True when ``text`` is an HCL identifier: ``ID_Start (ID_Continue | '-')*``."""
    if not text or not (text[0] == "_" or text[0].isidentifier()):
        return False
    return all(c == "-" or ("_" + c).isidentifier() for c in text[1:])


def _refuse(value: Any, message: str) -> HclValueError:
    # A template's undefined variable (Jinja's StrictUndefined) reports itself as such.
    fail = getattr(value, "_fail_with_undefined_error", None)
    if callable(fail):
        fail()
    return HclValueError(message)


def _number(value: int | float | Decimal) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise HclValueError(f"{value!r} is not a number HCL can write")
        return repr(value)
    if not value.is_finite():
        raise HclValueError(f"{value} is not a number HCL can write")
    return format(value, "f")


def scalar_text(value: Any) -> str:
    """The text of a scalar as it reads inside a string: ``None`` is empty."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float | Decimal):
        return _number(value)
    raise _refuse(value, f"a {type(value).__name__} cannot be written inside a string; "
                         "pick a field or use the hcl filter outside the quotes")


def _key(key: Any) -> str:
    text = scalar_text(key)
    if is_identifier(text) and text not in _KEYWORDS:
        return text
    return f'"{escape_string(text)}"'


def _literal(value: Any, depth: int) -> str:
    if depth > _MAX_DEPTH:
        raise HclValueError(f"value nested deeper than {_MAX_DEPTH} levels")
    if isinstance(value, HclLiteral):
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, str):
        return f'"{escape_string(value)}"'
    if isinstance(value, bool | int | float | Decimal):
        return _number(value)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = "".join(f"{_key(k)} = {_literal(v, depth + 1)}\n" for k, v in value.items())
        return "{\n" + items + "}"
    if isinstance(value, list | tuple):
        parts = [_literal(v, depth + 1) for v in value]
        if any("\n" in p for p in parts):
            return "[\n" + "".join(f"{p},\n" for p in parts) + "]"
        return "[" + ", ".join(parts) + "]"
    raise _refuse(value, f"a {type(value).__name__} has no HCL literal")


def hcl(value: Any) -> HclLiteral:
    """Any plain Python value as an HCL literal.

    ``str`` -> quoted and escaped, ``int``/``float``/``Decimal`` -> number, ``bool`` ->
    ``true``/``false``, ``None`` -> ``null``, ``list``/``tuple`` -> tuple, ``dict`` ->
    object (nested as deep as 32 levels). Object keys stay bare when they are plain
    identifiers, and are quoted otherwise.

    Raises:
        HclValueError: The value (or something inside it) has no HCL literal.
    """
    return HclLiteral(_literal(value, 0))


def hcl_map(value: Any, key: str | None = None, value_field: str | None = None) -> HclLiteral:
    """A mapping as an HCL object, or rows as one: ``rules | hcl_map("name", "cidr")``.

    Args:
        value: A mapping, or a list of mappings when ``key`` and ``value_field`` are given.
        key: Field of each row that becomes the object key.
        value_field: Field of each row that becomes the value.

    Raises:
        HclValueError: ``value`` is not a mapping (or rows of them).
    """
    if key is not None:
        if value_field is None:
            raise HclValueError("hcl_map(key, value) needs both field names")
        if not isinstance(value, list | tuple):
            raise HclValueError("hcl_map with field names expects a list of rows")
        value = {row[key]: row[value_field] for row in value}
    if not isinstance(value, Mapping):
        raise HclValueError(f"hcl_map expects a mapping, got a {type(value).__name__}")
    return hcl(dict(value))


def hcl_identifier(value: Any) -> HclLiteral:
    """``value`` unchanged when it is an HCL identifier; refuses anything else.

    Raises:
        HclValueError: ``value`` is not an identifier (identifiers cannot be escaped).
    """
    text = scalar_text(value)
    if not is_identifier(text):
        raise HclValueError(f"{text[:80]!r} is not an HCL identifier "
                            "(a letter or _, then letters, digits, _ or -)")
    return HclLiteral(text)


def to_terraform_string(value: Any) -> HclLiteral:
    """The value's text as a quoted, escaped HCL string (``None`` -> ``null``).

    Kept for the templates already in the APEX database; ``hcl`` is the general form.

    Raises:
        HclValueError: The text holds a lone surrogate (not encodable in UTF-8).
    """
    if value is None:
        return HclLiteral("null")
    return HclLiteral(f'"{escape_string(value if isinstance(value, str) else str(value))}"')


def _is_empty(item: Any) -> bool:
    return item is None or (isinstance(item, str) and not item.strip())


def list_items(value: Any) -> list[Any]:
    """The items ``to_terraform_list`` writes, as the APEX team's generator reads them.

    A falsy value is no item; a string written ``[a, b]`` (how a VARCHAR2 column holds a
    list) is split on commas and each item stripped; any other string or scalar is one
    item; a list or tuple gives its items. Empty items (``None``, blank) are dropped.

    Raises:
        HclValueError: ``value`` is a mapping (no list reading of it is obvious).
    """
    if not value:
        return []
    if isinstance(value, Mapping):
        raise HclValueError("to_terraform_list expects a list or a string, got a mapping")
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("[") and text.endswith("]"):
            items: list[Any] = [item.strip() for item in text[1:-1].split(",")]
        else:
            items = [value]
    elif isinstance(value, list | tuple):
        items = list(value)
    else:
        items = [value]
    return [item for item in items if not _is_empty(item)]


def to_terraform_list(value: Any) -> HclLiteral:
    """A list of quoted, escaped HCL strings (see ``list_items`` for what an item is).

    ``None``/``""``/``[]`` -> ``[]``; ``"[a, b]"`` -> ``["a", "b"]``; ``"a"`` or ``5``
    -> ``["a"]`` / ``["5"]``; ``["a", None, ""]`` -> ``["a"]``.

    Raises:
        HclValueError: ``value`` is a mapping, or an item cannot be written.
    """
    return HclLiteral("[" + ", ".join(to_terraform_string(v) for v in list_items(value)) + "]")


class BoolValueError(HclValueError):
    """A value ``to_terraform_bool`` cannot read as true, false or null."""

    def __init__(self, value: Any, variable: str | None) -> None:
        shown = repr(value)[:80] if isinstance(value, str | bool | int | float | Decimal) \
            else f"a {type(value).__name__}"
        super().__init__(
            f"{variable or 'value'} is {shown}, which is not a flag "
            "(to_terraform_bool reads 1/0, Y/N, yes/no, true/false or null)")
        self.variable = variable


_TRUE_WORDS = frozenset({"1", "y", "yes", "true"})
_FALSE_WORDS = frozenset({"0", "n", "no", "false"})


def to_terraform_bool(value: Any, variable: str | None = None) -> HclLiteral:
    """A flag as Oracle holds one (NUMBER(1), CHAR(1) ``'Y'/'N'``...) as an HCL bool.

    ``True``, ``1`` and the words ``1``/``Y``/``yes``/``true`` (any case, blanks around
    ignored) -> ``true``; ``False``, ``0`` and ``0``/``N``/``no``/``false`` -> ``false``;
    ``None`` -> ``null``.

    Args:
        value: The column's value.
        variable: The expression the filter is applied to, for the error message (the
            renderer fills it in from the template's source).

    Raises:
        HclValueError: Any other value, naming ``variable``.
    """
    if value is None:
        return HclLiteral("null")
    if isinstance(value, bool | int | float | Decimal) and value in (0, 1):
        return HclLiteral("true" if value == 1 else "false")
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return HclLiteral("true")
        if word in _FALSE_WORDS:
            return HclLiteral("false")
    raise BoolValueError(value, variable)


def bare_text(value: Any) -> str:
    """Text for a value printed outside any string.

    Raises:
        HclValueError: A string that is not a plain name or number token.
    """
    if isinstance(value, HclLiteral):
        return str(value)
    if isinstance(value, str):
        if _BARE_TOKEN.fullmatch(value):
            return value
        raise HclValueError(
            f"{value[:80]!r} is printed outside quotes; only names and numbers may be "
            "(the template should use the hcl filter here)")
    return _literal(value, 0)
