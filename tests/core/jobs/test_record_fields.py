"""A job record as store fields: the text is the one ``asdict`` + ``json.dumps`` gave."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from app.core.jobs import JobRecord


@dataclass
class _Part:
    path: str
    sizes: list[int]


def _record() -> JobRecord:
    return JobRecord(uuid="u-1", owner="alice",
                     request={"cloud_id": "aws", "resource_type": "rds", "request_id": 42,
                              "dry_run": False},
                     result={"files": [_Part("aws/rds/a.tf", [1, 2])], "pair": ("a", "b"),
                             "text": "quote \" and ${x} é"},
                     stages=[{"stage": "fetch", "at": "2026-12-01T00:00:00.000Z"}])


def test_fields_are_the_asdict_text_in_field_order() -> None:
    record = _record()
    expected = {k: json.dumps(v, separators=(",", ":")) for k, v in asdict(record).items()}
    assert list(record.to_fields().items()) == list(expected.items())


def test_fields_read_back_as_the_record() -> None:
    record = JobRecord(uuid="u-2", owner="bob", request={"cloud_id": "aws"},
                       error={"code": "TIMEOUT", "message": "a\\nb", "retryable": True})
    as_bytes = {k.encode(): v.encode() for k, v in record.to_fields().items()}
    assert JobRecord.from_fields(as_bytes) == record
    assert JobRecord.from_fields({**record.to_fields(), "unknown_field": "1"}) == record
