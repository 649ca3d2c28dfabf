"""What every namespace shares: the services accessor, the error model, the identifier
and one-line patterns, strict field types, the admin check, the list routes' query
(filters, then ``limit``) and the answers every operation can give (documented once,
for routes added later too)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from flask import current_app
from flask_restx import Model, Namespace, fields, inputs, reqparse
from jsonschema import FormatChecker
from jsonschema.validators import validator_for

from app.apis.fast_check import compile_check
from app.auth import current_principal
from app.errors import Forbidden
from app.services import Services

__all__ = ["ERROR_EXAMPLE", "FORMAT_CHECKER", "IDENT", "INT64_MAX", "ONE_LINE", "BodyModel",
           "Int64", "NullableRaw", "NullableString", "body_model", "document_common_answers",
           "error_model", "list_query", "require_admin", "services"]

# The design's identifier rule. Not ``$``, which also matches before a final newline
# ("aws\n"); the look-ahead means "end of text" in Python and in ECMA (Swagger UI) alike.
IDENT = r"^[a-z][a-z0-9_]{0,29}(?![\s\S])"

#: One line of text, no control characters: a waiver's rule goes into a commit trailer,
#: a webhook's description into logs, and neither may add a line.
ONE_LINE = r"^[^\x00-\x1f\x7f]+(?![\s\S])"

#: The largest id Oracle's NUMBER, SQLite's INTEGER and PostgreSQL's BIGINT all hold.
INT64_MAX = 2**63 - 1

#: Checks the ``format`` of request fields; ``int64`` refuses 42.0 and out-of-range ids.
FORMAT_CHECKER = FormatChecker()


@FORMAT_CHECKER.checks("int64")
def _is_int64(value: object) -> bool:
    # JSON's 42.0 is a float: jsonschema's draft 2020-12 (flask-restx's: validator_for's
    # default) calls it an integer, a store does not.
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return True  # the "type" keyword reports other kinds
    return isinstance(value, int) and -INT64_MAX - 1 <= value <= INT64_MAX


class Int64(fields.Integer):
    """A whole number that fits a 64-bit signed integer (``format: int64``)."""

    __schema_format__ = "int64"


class NullableString(fields.String):
    """A string that may be ``null`` (Swagger 2's ``x-nullable``)."""

    def schema(self) -> dict[str, Any]:
        """The field's schema, marked nullable."""
        return {**super().schema(), "x-nullable": True}


class NullableRaw(fields.Raw):
    """Any JSON object that may be ``null`` (Swagger 2's ``x-nullable``)."""

    __schema_type__ = "object"

    def schema(self) -> dict[str, Any]:
        """The field's schema, marked nullable."""
        return {**super().schema(), "x-nullable": True}


ERROR_EXAMPLE = {"message": "request_id: 0 is less than the minimum of 1",
                 "code": "VALIDATION_ERROR", "correlation_id": "3f2b9c0d5e6a4b71",
                 "errors": {"request_id": "0 is less than the minimum of 1"}}

error_model = Model("Error", {
    "message": fields.String(required=True, example=ERROR_EXAMPLE["message"]),
    "code": fields.String(required=True, example=ERROR_EXAMPLE["code"],
                          description="Stable code: VALIDATION_ERROR, UNAUTHORIZED, "
                                      "FORBIDDEN, NOT_FOUND, CONFLICT, QUEUE_UNAVAILABLE, ..."),
    "correlation_id": fields.String(required=True, example=ERROR_EXAMPLE["correlation_id"]),
    "errors": fields.Raw(example=ERROR_EXAMPLE["errors"],
                         description="Per field: what is wrong with it"),
})


class BodyModel(Model):
    """A request body's model: validated without rebuilding the validator per request,
    its valid bodies by a compiled check; optionally a schema-level example."""

    # Swagger UI fills "Try it out" from a schema-level example when there is one, so
    # optional fields (on_behalf_of) are not sent as "string".
    example: dict[str, Any] | None = None
    # (resolver, format checker, validator, compiled check): the last built, and for what.
    _checked_by: tuple[Any, Any, Any, Any] | None = None

    @property
    def _schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = super()._schema
        return schema if self.example is None else {**schema, "example": self.example}

    def validate(self, data: Any, resolver: Any = None, format_checker: Any = None) -> None:
        """flask-restx's validation, with what it builds per request built once.

        flask-restx rebuilds the schema, dumps it to look for ``$ref`` and builds a
        jsonschema validator (registry included) per request: about half of a submit's
        validation time. The validator built here is the one flask-restx builds (same
        class, schema, registry and format checker). A body the schema compiled to Python
        accepts (``app.apis.fast_check``: only where both read every keyword alike) is
        accepted at once (~1 us, the validator's ``is_valid`` ~20); then a body the
        validator accepts; any other body goes to flask-restx, which answers the 400.
        """
        _, _, validator, fast = self._built(resolver, format_checker)
        if (fast is not None and fast(data)) or (validator is not None
                                                 and validator.is_valid(data)):
            return
        super().validate(data, resolver, format_checker)  # type: ignore[no-untyped-call]

    def fast_check(self, resolver: Any, format_checker: Any) -> Any:
        """The compiled check ``validate`` uses with this resolver and format checker."""
        return self._built(resolver, format_checker)[3]

    def _built(self, resolver: Any, format_checker: Any) -> tuple[Any, Any, Any, Any]:
        checked_by = self._checked_by
        if (checked_by is None or checked_by[0] is not resolver
                or checked_by[1] is not format_checker):
            checked_by = (resolver, format_checker, *self._checks(resolver, format_checker))
            self._checked_by = checked_by
        return checked_by

    def _checks(self, resolver: Any, format_checker: Any) -> tuple[Any, Any]:
        """The validator flask-restx would build and the compiled check, or None each."""
        schema = self.__schema__
        if resolver is not None and (hasattr(resolver, "resolve")
                                     or '"$ref"' in json.dumps(schema)):
            return None, None  # an old RefResolver, or references to inline: flask-restx's
        cls = validator_for(schema)
        if resolver is not None:
            validator = cls(schema, registry=resolver, format_checker=format_checker)
        else:
            validator = cls(schema, format_checker=format_checker)
        # tfgen's checker reads int64 as _is_int64; with none, those bounds only refuse
        # more (and what they refuse goes to the validator).
        ours = format_checker is None or format_checker is FORMAT_CHECKER
        int64 = (-INT64_MAX - 1, INT64_MAX) if ours else None
        return validator, compile_check(schema, int64=int64)

    def __deepcopy__(self, memo: dict[int, Any]) -> BodyModel:
        copied: BodyModel = super().__deepcopy__(memo)
        copied.example = self.example
        return copied


def body_model(name: str, model_fields: dict[str, Any],
               example: dict[str, Any] | None = None, *, ns: Namespace | None = None,
               **kwargs: Any) -> BodyModel:
    """A request body's model (``@ns.expect(model, validate=True)``), registered in ``ns``
    when given; ``example``, when given, is the spec's example of the whole object."""
    model = BodyModel(name, model_fields, **kwargs)
    model.example = example
    if ns is not None:
        ns.add_model(name, model)
    return model


_ERROR_REF = {"$ref": "#/definitions/Error"}

# Answers any operation can give, whatever its namespace: the sign-in guard (401, 503),
# the body limits (413, 415 and 400 for bodies that are not JSON).
_GUARD_ANSWERS = {
    "401": "Not signed in: no bearer token, or one that does not verify",
    "503": "Unavailable: the identity provider, the job queue or the database "
           "(QUEUE_UNAVAILABLE, AUTH_UNAVAILABLE, DATABASE_UNAVAILABLE); try again",
}
_BODY_ANSWERS = {
    "400": "Bad JSON or fields (errors per field)",
    "413": "Body larger than MAX_CONTENT_LENGTH",
    "415": "Body is not application/json",
}


def document_common_answers(spec: dict[str, Any]) -> dict[str, Any]:
    """Add the answers every protected operation (and every one with a body) can give.

    Args:
        spec: The Swagger 2 document flask-restx built.

    Returns:
        ``spec``, changed in place.
    """
    spec.setdefault("definitions", {}).setdefault("Error", error_model._schema)
    for path_item in spec.get("paths", {}).values():
        for method, operation in path_item.items():
            if method == "parameters" or not isinstance(operation, dict):
                continue
            answers = operation.setdefault("responses", {})
            protected = operation.get("security", spec.get("security")) != []
            extra = dict(_GUARD_ANSWERS) if protected else {}
            if any(p.get("in") == "body" for p in operation.get("parameters", [])):
                extra.update(_BODY_ANSWERS)
            for status, description in extra.items():
                answers.setdefault(status, {"description": description, "schema": _ERROR_REF})
    return spec


def services() -> Services:
    """The process's domain services."""
    svc: Services = current_app.extensions["tfgen"]
    return svc


def require_admin(refusal: str) -> str:
    """The caller's username, when the caller is an admin.

    Args:
        refusal: What non-admins are told (``"only admins may manage webhooks"``).

    Raises:
        Forbidden: The caller is not in ``ADMIN_GROUP``.
    """
    principal = current_principal()
    if not principal.is_admin:
        raise Forbidden(refusal)
    return principal.username


def list_query(filters: Mapping[str, Mapping[str, Any]] | None = None, *, default: int,
              most: int) -> reqparse.RequestParser:
    """A list route's query string: its filters in order, then ``limit``.

    Args:
        filters: Name -> ``add_argument`` options of each filter (read from the query).
        default: How many items without ``limit``.
        most: The largest ``limit``.

    Returns:
        The parser, for ``@ns.expect(parser, validate=True)`` and
        ``parser.parse_args(strict=True)`` (an unknown name is a 400).
    """
    parser = reqparse.RequestParser(bundle_errors=True)
    for name, options in (filters or {}).items():
        parser.add_argument(name, location="args", **options)
    parser.add_argument("limit", type=inputs.int_range(1, most), default=default,
                        location="args", help=f"How many (default {default}, at most {most})")
    return parser
