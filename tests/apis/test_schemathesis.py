"""The spec tells the truth: schemathesis drives the live API through WSGI, every check on.

A fixed example budget per operation and a fixed seed keep the run bounded and
repeatable; any finding (5xx, an undocumented status, a body or header that does not
match the spec, a bad input accepted, ...) fails the test.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.core.parameters import ParameterLocation

from tests.conftest import Stack, sqlite_apex, stack_env

EXAMPLES_PER_OPERATION = 30
# The feed's long poll holds an answer up to `wait` seconds when nothing arrives: valid
# waits are kept short so the run stays bounded (invalid ones are still sent as made).
LONGEST_WAIT = 1


# Built at collection: schemathesis' eager loader parametrizes from the live spec (its
# lazy ``from_fixture`` loader does not run under pytest 9). No worker reads the queue.
_BASE = Path(tempfile.mkdtemp(prefix="tfgen-schemathesis-"))
API = Stack(stack_env(_BASE, sqlite_apex(_BASE / "apex.sqlite"), "schemathesis"))
schema = schemathesis.openapi.from_wsgi("/api/v1/swagger.json", API.app)


@pytest.fixture(scope="module", autouse=True)
def _cleanup(redis_client: redis.Redis) -> Iterator[None]:
    """Release the stack afterwards; ``redis_client`` removes this run's keys."""
    yield
    API.close()
    shutil.rmtree(_BASE, ignore_errors=True)


@schema.parametrize()
@settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_spec(case: Any) -> None:
    """Every answer to generated (valid and invalid) calls matches the spec."""
    meta = case.meta
    headers = case.headers or {}
    if meta is not None and meta.is_negative_at(ParameterLocation.HEADER) \
            and "Authorization" not in headers:
        # The case leaves the token out on purpose: adding ours back would turn it into a
        # valid call that schemathesis still expects refused.
        case.call_and_validate()
        return
    wait = (case.query or {}).get("wait")
    if meta is not None and not meta.is_negative_at(ParameterLocation.QUERY) \
            and isinstance(wait, int | str) and str(wait).isdigit():
        case.query["wait"] = min(int(wait), LONGEST_WAIT)
    case.call_and_validate(headers=API.auth("alice"))
