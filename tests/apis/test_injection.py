"""SQL injection through ``cloud_id`` / ``resource_type``: refused before any SQL.

The API runs in this process (Flask's test client), so a SQLAlchemy event listener on
its store's engine sees every statement and parameter the request caused.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from app.core.store import ApexStore
from tests.conftest import Stack

ATTEMPTS = [
    "aws'; DROP TABLE tf_template;--",  # quote, semicolon, comment
    "aws' OR '1'='1",
    'aws" --',
    "aws/**/union/**/select",
    "aws;",
    "aws--",
    "aws\n",  # passes a "^...$" pattern, which also matches before a final newline
    "aws\nrds",
    "aws\x00",
    "\u0430ws",  # Cyrillic a
    "\uff41\uff57\uff53",  # fullwidth aws
    "aws\u200b",  # zero-width space
    "AWS",
    "aws rds",
    "a" * 31,  # one over the identifier limit
    "a" * 10_000,
    "_aws",
    "1aws",
    "",
]


@pytest.fixture
def statements(stack: Stack) -> Iterator[list[tuple[str, Any]]]:
    """Every statement (and its parameters) the API's store sends during the test."""
    store: ApexStore = stack.app.extensions["tfgen"].store
    sent: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
               executemany: bool) -> None:
        sent.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", record)
    yield sent
    sa.event.remove(store.engine, "before_cursor_execute", record)


def _reaches_sql(value: str, sent: list[tuple[str, Any]]) -> bool:
    return any(value in statement or value in repr(params) for statement, params in sent)


@pytest.mark.parametrize("value", ATTEMPTS, ids=lambda v: repr(v[:40]))
@pytest.mark.parametrize("field", ["cloud_id", "resource_type"])
def test_injection_attempts_answer_400_or_404_and_never_reach_sql(
    stack: Stack, statements: list[tuple[str, Any]], field: str, value: str
) -> None:
    store: ApexStore = stack.app.extensions["tfgen"].store
    store.invalidate()  # the catalog is read again: whatever the request causes is logged
    body: dict[str, Any] = {"cloud_id": "aws", "resource_type": "rds", "request_id": 42}
    body[field] = value
    r = stack.submit(body)
    assert r.status_code in (400, 404), r.json
    assert r.json["code"] in ("VALIDATION_ERROR", "NOT_FOUND")
    if value:
        assert not _reaches_sql(value, statements), statements


def test_a_valid_but_unknown_pair_reads_the_catalog_and_sends_no_value(
    stack: Stack, statements: list[tuple[str, Any]]
) -> None:
    stack.app.extensions["tfgen"].store.invalidate()
    r = stack.submit({"cloud_id": "gcpzz", "resource_type": "rdszz", "request_id": 42})
    assert r.status_code == 404
    assert statements, "the catalog query should have been logged"
    assert not _reaches_sql("gcpzz", statements)
    assert not _reaches_sql("rdszz", statements)
