"""Bad input, as an attacker sends it: a clear small JSON 4xx, never a 500 or a huge answer."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from app import create_app
from app.apis.errors import MAX_ECHO
from tests.conftest import REDIS_URL, Stack, api_only, free_port, sqlite_apex, stack_env
from tests.stubs.idp import IdentityProvider

URL = "/api/v1/terraform/generate"
BODY = {"cloud_id": "aws", "resource_type": "rds", "request_id": 42}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, redis_client: redis.Redis) -> Iterator[Stack]:
    yield from api_only(tmp_path_factory, "bad-input")


def post_raw(api: Stack, data: str | bytes, **headers: str) -> Any:
    return api.client.post(URL, data=data, content_type="application/json",
                           headers={**api.auth("alice"), **headers})


def assert_error(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.get_data(as_text=True)[:500]
    assert r.mimetype == "application/json"
    body: dict[str, Any] = r.json
    assert body["code"] == code
    assert body["correlation_id"] == r.headers["X-Correlation-ID"]
    assert body["message"]
    return body


@pytest.mark.parametrize("opener,closer", [("[", "]"), ('{"a":', "}")])
def test_deeply_nested_json_is_a_400_not_a_recursion_error(
        api: Stack, opener: str, closer: str, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        r = post_raw(api, opener * 10_000 + "1" + closer * 10_000)
    body = assert_error(r, 400, "VALIDATION_ERROR")
    assert "nested deeper" in body["errors"]["body"]
    assert "RecursionError" not in caplog.text


def test_moderately_deep_json_is_refused_too(api: Stack) -> None:
    # Under Python's recursion limit, still far deeper than any tfgen body.
    deep: Any = "x"
    for _ in range(100):
        deep = [deep]
    r = post_raw(api, json.dumps({**BODY, "cloud_id": deep}))
    body = assert_error(r, 400, "VALIDATION_ERROR")
    assert "nested deeper" in body["errors"]["body"]


def test_body_over_the_limit_answers_413(api: Stack) -> None:
    huge = json.dumps({**BODY, "cloud_id": "a" * (2 * 1024 * 1024)})
    r = post_raw(api, huge)
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert len(r.get_data()) < 1000


def test_body_over_the_limit_is_refused_before_auth_reads_it(api: Stack) -> None:
    r = api.client.post(URL, data="[" * (2 * 1024 * 1024), content_type="application/json",
                        headers=api.auth("alice"))
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")


@pytest.mark.parametrize("value", ["a" * 900_000, ["a"] * 150_000])
def test_an_error_repeats_at_most_a_short_piece_of_the_value(api: Stack, value: Any) -> None:
    r = post_raw(api, json.dumps({**BODY, "cloud_id": value}))
    body = assert_error(r, 400, "VALIDATION_ERROR")
    assert "cloud_id" in body["errors"]
    assert len(r.get_data()) < 4 * MAX_ECHO + 500


@pytest.mark.parametrize("raw", ["42.0", "1e2", str(2**63), str(2**70), str(-(2**63))])
def test_request_id_must_be_a_whole_number_a_store_holds(api: Stack, raw: str) -> None:
    r = post_raw(api, '{"cloud_id": "aws", "resource_type": "rds", "request_id": ' + raw + "}")
    body = assert_error(r, 400, "VALIDATION_ERROR")
    assert "request_id" in body["errors"]


def test_the_largest_request_id_is_accepted_and_ends_with_a_documented_code(
        stack: Stack) -> None:
    r = stack.submit({**BODY, "request_id": 2**63 - 1})
    assert r.status_code == 202, r.json
    doc = stack.wait(r.json["uuid"])
    assert doc["status"] == "FAILURE"
    assert doc["error"]["code"] == "REQUEST_NOT_FOUND", doc["error"]
    assert doc["request"]["request_id"] == 2**63 - 1


def test_duplicate_keys_are_refused(api: Stack) -> None:
    raw = ('{"cloud_id": "aws", "resource_type": "rds", "request_id": 42, '
           '"on_behalf_of": "alice", "on_behalf_of": "bob"}')
    body = assert_error(post_raw(api, raw), 400, "VALIDATION_ERROR")
    assert "on_behalf_of" in body["errors"]["body"]
    nested = '{"cloud_id": "aws", "resource_type": "rds", "request_id": {"a": 1, "a": 2}}'
    assert_error(post_raw(api, nested), 400, "VALIDATION_ERROR")


def test_body_that_is_not_utf8_is_a_400(api: Stack) -> None:
    body = assert_error(post_raw(api, b'{"cloud_id": "\xff\xfe"}'), 400, "VALIDATION_ERROR")
    assert "body" in body["errors"]


@pytest.mark.parametrize("path", ["/api/v1/nope", "/api/v1/terraform/nope", "/api/v1/uuid"])
def test_unknown_route_under_the_api_is_a_json_404(api: Stack, path: str) -> None:
    assert_error(api.client.get(path, headers=api.auth("alice")), 404, "NOT_FOUND")


def test_unknown_route_without_a_token_is_a_json_401(api: Stack) -> None:
    assert_error(api.client.get("/api/v1/nope"), 401, "UNAUTHORIZED")


def test_wrong_method_is_a_json_405_with_allow(api: Stack) -> None:
    r = api.client.put(URL, json=BODY, headers=api.auth("alice"))
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
    assert "POST" in r.headers["Allow"]


def test_refused_cloud_names_the_field_in_errors(api: Stack) -> None:
    r = api.client.post(URL, json={"cloud_id": "azure", "resource_type": "vm",
                                   "request_id": 101},
                        headers=api.auth("bob", groups="aws-admins"))
    body = assert_error(r, 403, "FORBIDDEN")
    assert set(body["errors"]) == {"cloud_id"}


def test_on_behalf_of_without_the_role_names_the_field_in_errors(api: Stack) -> None:
    body = assert_error(api.submit({**BODY, "on_behalf_of": "carol"}), 403, "FORBIDDEN")
    assert set(body["errors"]) == {"on_behalf_of"}


def test_guard_401_keeps_the_callers_correlation_id(api: Stack) -> None:
    r = api.client.get("/api/v1/jobs", headers={"X-Correlation-ID": "apex-401"})
    body = assert_error(r, 401, "UNAUTHORIZED")
    assert r.headers["X-Correlation-ID"] == body["correlation_id"] == "apex-401"


@pytest.fixture
def redis_down(tmp_path: Path) -> Iterator[tuple[Stack, int]]:
    """The API with its broker and job store on a Redis port nobody listens on."""
    port = free_port()
    env = stack_env(tmp_path, sqlite_apex(tmp_path / "apex.sqlite"), "down")
    down = REDIS_URL.replace(":6379/", f":{port}/")
    env.update(CELERY_BROKER_URL=down, CELERY_RESULT_BACKEND=down, JOB_STORE_URL=down)
    s = Stack(env)
    yield s, port
    s.close()


def test_redis_down_answers_queue_unavailable_naming_no_host_or_port(
        redis_down: tuple[Stack, int]) -> None:
    api, port = redis_down
    answers = [api.submit(BODY), api.get("00000000-0000-4000-8000-000000000000"),
               api.client.get("/api/v1/jobs", headers=api.auth("alice"))]
    for r in answers:
        assert_error(r, 503, "QUEUE_UNAVAILABLE")
        text = r.get_data(as_text=True)
        assert str(port) not in text and "127.0.0.1" not in text, text
    assert "nothing was recorded" in answers[0].json["message"]
    ready = api.client.get("/ready")
    assert ready.status_code == 503
    assert str(port) not in ready.get_data(as_text=True)


def test_tracebacks_in_logs_carry_no_frame_locals_outside_dev(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    for fmt in ("json", "console"):
        env = {**stack_env(tmp_path / fmt, sqlite_apex(tmp_path / f"{fmt}.sqlite"), fmt),
               "LOG_FORMAT": fmt}
        create_app(env)
        capfd.readouterr()

        def fail(token: str) -> None:
            secret_local = f"{token}-in-a-local"  # noqa: F841 - what must not be logged
            raise RuntimeError("boom")

        try:
            fail("-".join(["tok", "3f9a"]))  # the source line must not spell the value
        except RuntimeError:
            logging.getLogger("tfgen.test").exception("failed")
        err = capfd.readouterr().err
        assert "RuntimeError" in err and "boom" in err, err
        assert "tok-3f9a" not in err, err


def test_guard_503_keeps_the_callers_correlation_id(tmp_path: Path) -> None:
    with IdentityProvider() as idp:
        env = {**stack_env(tmp_path, sqlite_apex(tmp_path / "apex.sqlite"), "oidc"),
               "AUTH_MODE": "oidc", "OIDC_ISSUER": idp.issuer, "OIDC_AUDIENCE": idp.audience,
               "OIDC_JWKS_URL": idp.jwks_url}
        app = create_app(env)
        idp.jwks_status = 503
        r = app.test_client().get("/api/v1/jobs", headers={
            "Authorization": f"Bearer {idp.mint()}", "X-Correlation-ID": "apex-503"})
    body = assert_error(r, 503, "AUTH_UNAVAILABLE")
    assert r.headers["X-Correlation-ID"] == body["correlation_id"] == "apex-503"


def test_spec_examples_are_usable_as_they_are(api: Stack) -> None:
    spec = api.client.get("/api/v1/swagger.json").json
    # Swagger UI's "Try it out" body: the schema's example, without on_behalf_of.
    example = spec["definitions"]["GenerateRequest"]["example"]
    assert "on_behalf_of" not in example
    assert api.submit(example).status_code == 202
    error = spec["definitions"]["Error"]["properties"]
    assert all(field.get("example") not in (None, "string") for field in error.values())
    (limit,) = [p for p in spec["paths"]["/jobs"]["get"]["parameters"] if p["name"] == "limit"]
    assert limit["type"] == "integer"
