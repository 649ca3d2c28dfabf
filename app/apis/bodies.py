"""Request bodies: a size limit and strict JSON, for every route of the app.

JSON that Python would take quietly is refused with a 400 ``VALIDATION_ERROR``: a key
given twice (the last would win, so ``on_behalf_of`` could be smuggled past a reader
that takes the first), nesting deeper than ``MAX_JSON_DEPTH``, and text that is not
UTF-8. Bodies over ``MAX_CONTENT_LENGTH`` get 413 before anything reads them.
"""

from __future__ import annotations

import json
from typing import Any, NoReturn

from flask import Flask, current_app, request
from flask.json.provider import DefaultJSONProvider
from flask.wrappers import Request
from werkzeug.exceptions import RequestEntityTooLarge

from app.errors import BadRequest

__all__ = ["MAX_JSON_DEPTH", "InvalidJSON", "StrictJSONProvider", "StrictRequest",
           "register_body_limits"]

#: Arrays and objects inside each other; tfgen's bodies need 3.
MAX_JSON_DEPTH = 32


class InvalidJSON(BadRequest, ValueError):
    """The body is not JSON tfgen accepts (a ``ValueError``, so ``silent=True`` holds)."""

    code = "VALIDATION_ERROR"

    def __init__(self, reason: str) -> None:
        super().__init__(f"request body is not valid JSON: {reason}",
                         details={"errors": {"body": reason}})


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise InvalidJSON(f"key {key[:64]!r} given more than once")
        obj[key] = value
    return obj


def _check_depth(value: Any) -> None:
    # Iterative: a recursive walk is what a deep document would break.
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(
            item, list) else ()
        if children and depth > MAX_JSON_DEPTH:
            raise InvalidJSON(f"nested deeper than {MAX_JSON_DEPTH} levels")
        stack.extend((child, depth + 1) for child in children)


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON, reading request bodies strictly (see the module docstring)."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Parse ``s``; raise ``InvalidJSON`` on duplicate keys or deep nesting."""
        kwargs.setdefault("object_pairs_hook", _refuse_duplicates)
        try:
            value = json.loads(s, **kwargs)
        except RecursionError:
            raise InvalidJSON(f"nested deeper than {MAX_JSON_DEPTH} levels") from None
        _check_depth(value)
        return value


class StrictRequest(Request):
    """A request whose JSON errors say what is wrong instead of a bare 400."""

    def on_json_loading_failed(self, e: ValueError | None) -> NoReturn:
        """Raise ``InvalidJSON`` naming the reason (never the body)."""
        if isinstance(e, InvalidJSON):
            raise e
        if isinstance(e, UnicodeDecodeError):
            raise InvalidJSON("not UTF-8") from None
        if isinstance(e, json.JSONDecodeError):
            raise InvalidJSON(f"{e.msg} at line {e.lineno} column {e.colno}") from None
        if e is None:
            super().on_json_loading_failed(e)  # 415: not application/json
        raise InvalidJSON("not JSON") from None


def register_body_limits(app: Flask) -> None:
    """Strict JSON for every route, and 413 for a body over ``MAX_CONTENT_LENGTH``."""
    app.json = StrictJSONProvider(app)
    app.request_class = StrictRequest

    @app.before_request
    def refuse_large_body() -> None:
        # Werkzeug also stops a chunked body at the limit while it is read.
        limit = current_app.config.get("MAX_CONTENT_LENGTH")
        # No Content-Length means no length to check (Werkzeug's content_length is None
        # then), and most calls (polls) have none: skip the look-ups that raise inside.
        if (limit and request.environ.get("CONTENT_LENGTH")
                and (request.content_length or 0) > limit):
            raise RequestEntityTooLarge(f"request body larger than {limit} bytes")
