"""Request bodies: the compiled check (app/apis/fast_check.py) says what flask-restx says.

Every model the app validates (``@ns.expect(model, validate=True)``) is found on the real
app; a corpus of bodies (valid ones, every field set to each edge value, fields missing,
unknown fields, bodies that are not objects) must get the same verdict from the compiled
check as from flask-restx's own validation with the app's registry and format checker.
A body the check accepted and flask-restx refuses would be answered 202 unchecked.
Refused bodies must still get flask-restx's 400, through the app's error handler.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from flask_restx import Api, Model, fields
from flask_restx.model import ModelBase
from werkzeug.exceptions import HTTPException

from app.apis.common import FORMAT_CHECKER, BodyModel, Int64, NullableString, body_model
from app.apis.errors import error_answer
from tests.conftest import Stack, api_only

# Values every field is set to in turn: the types JSON has, booleans beside integers,
# whole floats, int64's edges and beyond, strings at and over the usual limits,
# line breaks against the look-ahead patterns, arrays and objects.
EDGES: list[Any] = [
    None, True, False, 0, 1, -1, 7, 86400, 604800, 604801, 1.0, 42.0, 42.5, -0.0,
    2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64, 10**30, 9.2e18, 1e19, 1e300,
    "", "a", "aws", "rds", "aws\n", "aws\r", "AWS", "a" * 29, "a" * 30, "a" * 31, "x" * 128,
    "x" * 129, "x" * 500, "x" * 501, "x" * 2000, "x" * 2001, "a" * 64, "a" * 65,
    "https://apex.example.com/hooks", "job.*", "request.merged", "no tab\there", "é",
    "line\nbreak", "trailing\n", "42", "true", "null", "2026-12-31T00:00:00Z",
    [], ["job.*"], ["job.*", "request.merged"], ["job.*\n"], ["JOB"], [""], [1], [None],
    [True], ["job.*"] * 20, ["job.*"] * 21, [["job.*"]], {}, {"a": 1},
]
# Not JSON a client can send, checked in-process only.
NOT_JSON: list[Any] = [float("nan"), float("inf"), float("-inf"), "\ud800"]
NOT_OBJECTS: list[Any] = [None, [], "text", "", 42, 4.2, True, False]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, redis_client: redis.Redis) -> Iterator[Stack]:
    yield from api_only(tmp_path_factory, "body-validation")


def registry(stack: Stack) -> tuple[Api, Any]:
    """The app's flask-restx Api and the registry it validates with (built once)."""
    restx: Api = stack.app.extensions["restx_api"]
    with stack.app.test_request_context():  # the spec it is built from reads the URLs
        return restx, restx.refresolver


def validated_models(stack: Stack) -> dict[str, tuple[ModelBase, str]]:
    """Every model the app validates bodies with, and a URL that takes it (POST)."""
    restx: Api = stack.app.extensions["restx_api"]
    found: dict[str, tuple[ModelBase, str]] = {}
    for rule in stack.app.url_map.iter_rules():
        view_class = getattr(stack.app.view_functions[rule.endpoint], "view_class", None)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS", "GET"}):
            doc = getattr(getattr(view_class, method.lower(), None), "__apidoc__", {})
            if not doc.get("validate", restx._validate):
                continue
            for expected in doc.get("expect", []):
                model = expected[0] if isinstance(expected, list) else expected
                if isinstance(model, ModelBase):
                    assert method == "POST", (rule.rule, method)
                    found[model.name] = (model, re.sub(r"<[^>]+>", "x", rule.rule))
    return found


def corpus(model: ModelBase, extra: list[Any]) -> Iterator[Any]:
    """Valid bodies from the spec's examples, then each field changed, missing or added."""
    properties = model.__schema__["properties"]
    example = getattr(model, "example", None) or {
        name: prop["example"] for name, prop in properties.items() if "example" in prop}
    full = {**{n: p["example"] for n, p in properties.items() if "example" in p}, **example}
    yield from (example, full)
    for name in properties:
        for value in EDGES + extra:
            yield {**example, name: value}
        yield {key: value for key, value in example.items() if key != name}
    yield from ({**example, "unknown": 1}, {**example, "": None}, {}, [example])
    yield from NOT_OBJECTS


def restx_accepts(model: ModelBase, body: Any, restx: Api, resolver: Any) -> bool:
    """flask-restx's own verdict (its ``Model.validate``, not tfgen's)."""
    try:
        Model.validate(model, body, resolver, restx.format_checker)
    except HTTPException:
        return False
    return True


def test_every_validated_model_has_a_compiled_check(api: Stack) -> None:
    restx, resolver = registry(api)
    models = validated_models(api)
    assert {"GenerateRequest", "WaiverRequest", "WebhookRequest", "RotateRequest"} <= set(
        models)
    for name, (model, _) in models.items():
        # A plain ns.model validates through flask-restx alone, ~25 us a request.
        assert isinstance(model, BodyModel), f"{name}: declare it with body_model()"
        assert model.fast_check(resolver, restx.format_checker) is not None, (
            f"{name}: its schema has a keyword app/apis/fast_check.py does not compile")


def test_the_compiled_check_and_flask_restx_agree_on_every_body(api: Stack) -> None:
    restx, resolver = registry(api)
    checked = 0
    for name, (model, _) in validated_models(api).items():
        fast = model.fast_check(resolver, restx.format_checker)
        for body in corpus(model, NOT_JSON):
            before = copy.deepcopy(body)
            expected = restx_accepts(model, body, restx, resolver)
            assert fast(body) == expected, (name, body, "accepted" if expected else "refused")
            assert repr(body) == repr(before), (name, "the check changed the body")
            checked += 1
    assert checked > 1000


def test_a_refused_body_gets_flask_restx_400_and_a_valid_one_passes(api: Stack) -> None:
    restx, resolver = registry(api)
    refused = 0
    # No groups: a valid body stops at the catalog or the admin check (nothing recorded),
    # after validation.
    headers = api.auth("carol", groups="")
    for name, (model, url) in validated_models(api).items():
        for body in corpus(model, []):
            r = api.client.post(url, data=json.dumps(body), content_type="application/json",
                                headers=headers)
            if restx_accepts(model, body, restx, resolver):
                assert r.status_code in (403, 404), (name, body, r.json)
                continue
            with api.app.test_request_context():
                try:
                    Model.validate(model, body, resolver, restx.format_checker)
                except HTTPException as e:
                    expected, status, _ = error_answer(e)
            assert r.status_code == status == 400, (name, body, r.json)
            assert r.json["code"] == "VALIDATION_ERROR"
            assert r.json["correlation_id"] == r.headers["X-Correlation-ID"]
            assert {**r.json, "correlation_id": ""} == expected, (name, body)
            refused += 1
    assert refused > 500


@pytest.mark.parametrize(("field", "compiled"), [
    (fields.String(enum=["a", "b"]), False),  # fastjsonschema's enum takes true for 1
    (fields.Integer(multiple=5), False),
    (fields.String(pattern=r"^[a-z]+$"), False),  # its $ -> \Z would differ
    (fields.String(pattern=r"^a(?![\s\S])"), True),
    (fields.DateTime(), False),  # a format other than int64
    (fields.Integer(min=1, exclusiveMin=True), False),
    (fields.List(fields.String, unique=True), False),
    (fields.List(Int64), False),  # int64 below the body's own fields
    (NullableString(max_length=3), True),  # x-nullable: null is refused all the same
    (Int64(), True),
    (fields.Float(min=0.5, max=2), True),
    (fields.Arbitrary(), True),
])
def test_schemas_the_check_does_not_read_alike_are_not_compiled(
        field: Any, compiled: bool) -> None:
    model = body_model("Probe", {"value": field, "other": fields.String()}, strict=True)
    fast = model.fast_check(None, FORMAT_CHECKER)
    assert (fast is not None) is compiled, model.__schema__
    if fast is None:
        return
    validator = model._built(None, FORMAT_CHECKER)[2]
    for body in corpus(model, NOT_JSON):
        assert fast(body) == validator.is_valid(body), body
