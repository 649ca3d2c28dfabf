"""A body model's schema compiled to Python (fastjsonschema), for the accept path only.

A check compiled here may only say yes where flask-restx's jsonschema validator (draft
2020-12, ``validator_for``'s default, with tfgen's format checker) says yes too; anything
else goes to that validator, which answers the 400 with its errors. So a schema is
compiled only when every keyword in it means the same to both libraries:

- fastjsonschema reads it as draft 7, whose ``integer`` is 2020-12's (1.0 is one, a
  boolean is not);
- ``enum``, ``uniqueItems``, ``multipleOf`` and the exclusive bounds are left out:
  fastjsonschema's ``enum`` compares with ``==``, so it takes ``true`` for ``1``;
- a ``pattern`` with an unescaped ``$`` is left out: fastjsonschema rewrites ``$`` to
  ``\\Z``, which inside a negative look-ahead accepts more;
- of the formats only tfgen's ``int64`` on an integer field of the body: fastjsonschema
  checks formats on strings only, so the range goes into ``minimum``/``maximum`` and the
  check refuses a float there (``app.apis.common._is_int64``). Any other format, or a
  format checker that is not tfgen's, and there is no compiled check;
- annotations (``description``, ``example``, ``default``, ``x-*``) are left out of what
  is compiled: fastjsonschema would write a ``default`` into the body.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import fastjsonschema
from jsonschema import Draft7Validator, Draft201909Validator, Draft202012Validator
from jsonschema.validators import validator_for

__all__ = ["compile_check"]

# Validators whose reading of the keywords below is fastjsonschema's draft 7 reading.
_READ_AS_DRAFT7 = (Draft7Validator, Draft201909Validator, Draft202012Validator)
_CHECKED = frozenset({"type", "properties", "required", "additionalProperties", "items",
                      "minItems", "maxItems", "minLength", "maxLength", "minimum", "maximum",
                      "pattern"})
# Ignored by both libraries (Swagger's and flask-restx's annotations; ``x-*`` too).
_NOTES = frozenset({"description", "example", "default", "title", "readOnly",
                    "discriminator"})
# The ``$`` fastjsonschema turns into ``\Z`` (its DOLLAR_FINDER).
_DOLLAR = re.compile(r"(?<!\\)\$")


class _Unsupported(Exception):
    """The schema holds something the compiled check would not read as jsonschema does."""


def compile_check(schema: dict[str, Any], *,
                  int64: tuple[int, int] | None) -> Callable[[Any], bool] | None:
    """A check that accepts only bodies jsonschema accepts, or None.

    Args:
        schema: The model's schema, as flask-restx validates it.
        int64: The range the format checker holds ``format: int64`` to (a float is
            refused), or None: the schema may not use formats.

    Returns:
        ``check(body)``: True when the body is valid; False when it may not be (ask
        jsonschema). None when ``schema`` has something not read alike (module docstring).
    """
    if validator_for(schema) not in _READ_AS_DRAFT7:
        return None
    int64_fields: list[str] = []
    try:
        portable = _portable(schema, int64, int64_fields, top=True)
        compiled = fastjsonschema.compile(portable, use_default=False, use_formats=False,
                                          detailed_exceptions=False)
    except Exception:  # anything not foreseen here: no compiled check, jsonschema alone
        return None
    floats = tuple(int64_fields)

    def check(body: Any) -> bool:
        try:
            compiled(body)
            return not any(isinstance(body.get(name), float) for name in floats)
        except Exception:  # refused, or not understood: jsonschema decides
            return False

    return check


def _portable(schema: Any, int64: tuple[int, int] | None, int64_fields: list[str],
              top: bool = False, name: str | None = None) -> dict[str, Any]:
    """``schema`` with its annotations left out and ``int64`` turned into bounds."""
    if not isinstance(schema, dict):
        raise _Unsupported(schema)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _NOTES or key.startswith("x-"):
            continue
        if key == "format":
            _int64_bounds(schema, out, int64, name)
            int64_fields.append(str(name))
        elif key not in _CHECKED or not _read_alike(key, value):
            raise _Unsupported(key)
        elif key == "properties":
            out[key] = {field: _portable(sub, int64, int64_fields,
                                         name=field if top else None)
                        for field, sub in value.items()}
        elif key == "items" or (key == "additionalProperties"
                                and not isinstance(value, bool)):
            out[key] = _portable(value, int64, int64_fields)
        else:
            out.setdefault(key, value)  # int64's bounds, when set first, are the tighter
    return out


def _read_alike(key: str, value: Any) -> bool:
    """Whether both libraries read this keyword's value the same way."""
    if key == "pattern":
        return isinstance(value, str) and not _DOLLAR.search(value)
    if key == "required":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return key != "properties" or isinstance(value, dict)


def _int64_bounds(schema: dict[str, Any], out: dict[str, Any],
                  int64: tuple[int, int] | None, name: str | None) -> None:
    """``int64`` on one of the body's integer fields, as bounds (floats: ``check``)."""
    if (schema["format"] != "int64" or int64 is None or name is None
            or schema.get("type") != "integer"):
        raise _Unsupported(schema)
    low, high = int64
    out["minimum"] = max(schema.get("minimum", low), low)
    out["maximum"] = min(schema.get("maximum", high), high)
