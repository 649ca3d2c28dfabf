"""Values as the APEX schema holds them and as templates see them.

The design's identifier rule (which catalog pairs may name a view), driver values turned
into plain Python (LOBs, decimals, dates), and the stable order of security-group rules.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

__all__ = ["IDENTIFIER", "RULES_SUFFIX", "is_identifier", "plain_row", "plain_value", "rule_order"]

# The design's identifier rule. Always used with ``fullmatch``: ``$`` alone would also
# accept a trailing newline.
IDENTIFIER = re.compile(r"[a-z][a-z0-9_]{0,29}")

RULES_SUFFIX = "_sg_ingress"

def is_identifier(value: object) -> bool:
    """True when ``value`` is a string matching the design's identifier rule."""
    return isinstance(value, str) and IDENTIFIER.fullmatch(value) is not None


def plain_value(value: Any) -> Any:
    """Turn a driver value into what a template author expects.

    Args:
        value: A column value as the driver returned it.

    Returns:
        ``None``, ``bool``, ``int``, ``float`` and ``str`` as they are; LOBs (oracledb
        ``LOB`` objects) and bytes as text; dates and times as ISO strings; integral
        decimals as ``int`` (Oracle returns every ``NUMBER`` as a number type), other
        decimals as ``Decimal``.
    """
    if value is None or isinstance(value, bool | int | str | float):
        return value
    if isinstance(value, Decimal):
        if value.is_finite() and value == value.to_integral_value():
            return int(value)
        return value
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8")
    read = getattr(value, "read", None)  # oracledb LOB, when not fetched as a string
    if callable(read):
        return plain_value(read())
    return value


def plain_row(mapping: Mapping[Any, Any]) -> dict[str, Any]:
    return {str(key).lower(): plain_value(val) for key, val in mapping.items()}


def rule_order(rule: Mapping[str, Any]) -> tuple[tuple[int, Any], ...]:
    # Views promise no order; rules are sorted on every column so that the same data
    # always renders the same file (and a re-run finds nothing changed).
    key: list[tuple[int, Any]] = []
    for value in rule.values():
        if value is None:
            key.append((2, ""))
        elif isinstance(value, int | float | Decimal) and not isinstance(value, bool):
            key.append((0, value))
        else:
            key.append((1, str(value)))
    return tuple(key)
