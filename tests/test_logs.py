"""One job, followed across processes: every log line of it carries the same correlation id.

A real stack (Redis broker and job store, SQLite APEX store, git remote) with
``LOG_FORMAT=json``: the API runs in this process (its lines are read from fd 1), the
worker is a real prefork ``celery worker`` (its lines are read from its output) with its
metrics served from the main process in multiprocess mode.
"""

from __future__ import annotations

import io
import json
import logging
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from app import create_app
from app.logs import (
    audit,
    bind_job,
    configure_logging,
    get_logger,
    make_formatter,
    remember_task_correlation,
    reset_context,
)
from config.settings import ConfigError
from tests.conftest import Stack, Worker, free_port, sqlite_apex, stack_env

BODY = {"cloud_id": "aws", "resource_type": "rds", "request_id": 42}
STAGES = ["fetch", "render", "validate", "policy", "publish"]


class JsonStack(Stack):
    """A stack whose API and worker log JSON; the worker serves metrics on a port."""

    metrics_port: int


@pytest.fixture(scope="module")
def json_stack(tmp_path_factory: pytest.TempPathFactory, redis_client: redis.Redis
               ) -> Iterator[JsonStack]:
    base = tmp_path_factory.mktemp("logs")
    env = {**stack_env(base, sqlite_apex(base / "apex.sqlite"), "logs"), "LOG_FORMAT": "json"}
    port = free_port()
    s = JsonStack(env)
    s.metrics_port = port
    s.worker = Worker({**env, "PROMETHEUS_MULTIPROC_DIR": str(base / "prometheus"),
                       "WORKER_METRICS_PORT": str(port), "WORKER_METRICS_ADDR": "127.0.0.1"},
                      concurrency=2).start()
    yield s
    s.close()


def json_lines(text: str | list[str]) -> list[dict[str, Any]]:
    """Every line that is a JSON object (the worker's banner is not)."""
    lines = text.splitlines() if isinstance(text, str) else text
    out = []
    for line in lines:
        line = line.strip()
        if line.startswith("{"):
            out.append(json.loads(line))
    return out


def lines_about(job_uuid: str, raw: list[str]) -> list[dict[str, Any]]:
    """The lines that mention the job anywhere; each must be JSON."""
    mentioning = [line for line in raw if job_uuid in line]
    parsed = json_lines(mentioning)
    assert len(parsed) == len(mentioning), [m for m in mentioning if not m.startswith("{")]
    return parsed


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text (0 when absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def worker_metrics(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return str(r.read().decode())


def test_every_line_of_a_job_carries_its_correlation_id(
    json_stack: JsonStack, capfd: pytest.CaptureFixture[str]
) -> None:
    assert json_stack.worker is not None
    capfd.readouterr()
    correlation_id = f"apex-{uuid.uuid4().hex[:12]}"
    r = json_stack.submit(BODY, headers={"X-Correlation-ID": correlation_id})
    assert r.status_code == 202
    job_uuid = r.json["uuid"]
    doc = json_stack.wait(job_uuid)
    assert doc["status"] == "SUCCESS", doc
    assert doc["correlation_id"] == correlation_id

    api = lines_about(job_uuid, capfd.readouterr().err.splitlines())
    worker = lines_about(job_uuid, [line.strip() for line in json_stack.worker.lines])
    every = api + worker
    assert {line.get("correlation_id") for line in every} == {correlation_id}, every
    assert {line["job_uuid"] for line in every} == {job_uuid}

    # From the request...
    (submit,) = [line for line in api if line["event"] == "audit.submit"]
    assert submit["outcome"] == "accepted"
    assert (submit["user"], submit["cloud_id"], submit["resource_type"],
            submit["request_id"]) == ("alice", "aws", "rds", 42)
    # ...through the worker's main process, which received the message...
    assert any(line["logger"] == "celery.worker.strategy" for line in worker)
    # ...to the task's last stage, its end and the audit record of the publish.
    in_task = [line for line in worker if line["logger"].startswith(("tfgen", "app"))]
    assert [line["stage"] for line in in_task if line["event"] == "job.stage"] == STAGES
    for line in in_task:
        assert (line["user"], line["cloud_id"], line["resource_type"],
                line["request_id"]) == ("alice", "aws", "rds", 42), line
    events = [line["event"] for line in in_task]
    assert events.index("job.finished") > events.index("job.stage")
    (published,) = [line for line in in_task if line["event"] == "audit.publish"]
    assert published["commit"] == doc["result"]["commit"]["sha"]
    assert published["files"] == [f["path"] for f in doc["result"]["files"]]


def test_metrics_count_the_job_in_the_api_and_the_worker(json_stack: JsonStack) -> None:
    text = json_stack.client.get("/metrics").get_data(as_text=True)
    submitted = sample(text, "tfgen_jobs_submitted_total", cloud_id="aws", resource_type="rds")
    accepted = sample(text, "tfgen_http_requests_total", method="POST", status="202",
                      route="/api/v1/terraform/generate")
    finished = sample(worker_metrics(json_stack.metrics_port), "tfgen_jobs_finished_total",
                      status="SUCCESS", code="none")

    job_uuid = json_stack.submit(BODY).json["uuid"]
    assert json_stack.wait(job_uuid)["status"] == "SUCCESS"

    r = json_stack.client.get("/metrics")
    assert r.status_code == 200  # no token needed, like /health
    assert r.content_type.startswith("text/plain")
    text = r.get_data(as_text=True)
    assert sample(text, "tfgen_jobs_submitted_total", cloud_id="aws",
                  resource_type="rds") == submitted + 1
    assert sample(text, "tfgen_http_requests_total", method="POST", status="202",
                  route="/api/v1/terraform/generate") == accepted + 1
    assert sample(text, "tfgen_queue_length", queue=json_stack.env["JOB_QUEUE"]) == 0
    assert sample(text, "tfgen_queue_up") == 1

    # The task ran in a pool child; the worker's main process serves its samples.
    served = worker_metrics(json_stack.metrics_port)
    assert sample(served, "tfgen_jobs_finished_total", status="SUCCESS",
                  code="none") == finished + 1
    for stage in STAGES:
        assert sample(served, "tfgen_job_stage_duration_seconds_count", stage=stage) >= 1



@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    """Route this process's logs to a buffer as JSON; back to the console afterwards."""
    stream = io.StringIO()
    configure_logging("INFO", "json", stream=stream)
    yield stream
    reset_context()
    configure_logging("INFO", "console")


def test_stdlib_and_structlog_lines_carry_the_bound_fields_without_secrets(
    log_stream: io.StringIO,
) -> None:
    reset_context(correlation_id="c-1")
    bind_job("j-1", "alice", {"cloud_id": "aws", "resource_type": "rds", "request_id": 7})
    logging.getLogger("some.library").warning("plain %s line", "stdlib")
    get_logger("tfgen.test").info("job.note", gitlab_token="glpat-secret", password="pw")
    audit("cancel", "requested", canceled_by="bob")
    first, second, third = json_lines(log_stream.getvalue())
    for line in (first, second, third):
        assert (line["correlation_id"], line["job_uuid"], line["user"], line["cloud_id"],
                line["resource_type"], line["request_id"]) == ("c-1", "j-1", "alice", "aws",
                                                                "rds", 7)
        assert {"timestamp", "level", "logger", "event"} <= set(line)
    assert (first["event"], first["logger"], first["level"]) == (
        "plain stdlib line", "some.library", "warning")
    assert (second["gitlab_token"], second["password"]) == ("***", "***")
    assert "glpat-secret" not in log_stream.getvalue()
    assert (third["event"], third["logger"], third["audit"]) == ("audit.cancel", "tfgen.audit",
                                                                 True)


def test_celery_lines_about_a_task_get_its_job_and_correlation_id(
    log_stream: io.StringIO,
) -> None:
    task_id = str(uuid.uuid4())
    remember_task_correlation(task_id, "c-2")
    logging.getLogger("celery.worker.strategy").info(
        "Task %(name)s[%(id)s] received", {"name": "tfgen.generate", "id": task_id},
        extra={"data": {"id": task_id}})
    logging.getLogger("celery.worker.request").info("Discarding revoked task: x[%s]", task_id)
    for line in json_lines(log_stream.getvalue()):
        assert (line["job_uuid"], line["correlation_id"]) == (task_id, "c-2")


def test_a_bad_log_setting_stops_the_app_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="LOG_FORMAT"):
        create_app({"APP_ENV": "test", "TFGEN_VAR_DIR": str(tmp_path), "LOG_FORMAT": "xml"})
    with pytest.raises(ConfigError, match="LOG_LEVEL"):
        create_app({"APP_ENV": "test", "TFGEN_VAR_DIR": str(tmp_path), "LOG_LEVEL": "LOUD"})


def _access_record(correlation_id: str = "c-9") -> logging.LogRecord:
    """An access record as gunicorn's ``Logger.access`` makes it (atoms as the args)."""
    from gunicorn.glogging import SafeAtoms

    atoms = {"h": "10.0.0.7", "l": "-", "u": "-", "t": "[01/Dec/2026:17:44:25 +0000]",
             "r": "GET /api/v1/uuid/x HTTP/1.1", "s": "200", "m": "GET", "U": "/api/v1/uuid/x",
             "q": "", "H": "HTTP/1.1", "b": "812", "B": 812, "f": "-", "a": "wrk/4",
             "T": 0, "D": 1234, "M": 1, "L": "0.001234", "p": "<1>",
             "{x-correlation-id}o": correlation_id, "{authorization}i": "Bearer secret"}
    return logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1,
                             '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s"',
                             (SafeAtoms(atoms),), None)


@pytest.mark.parametrize("correlation_id", ["c-9", "-"])
def test_access_line_written_directly_equals_the_processors_line(correlation_id: str) -> None:
    reset_context()
    direct = json.loads(make_formatter("json").format(_access_record(correlation_id)))
    processed = json.loads(make_formatter("json", fast=False).format(
        _access_record(correlation_id)))
    assert direct.pop("timestamp").endswith("Z") and processed.pop("timestamp").endswith("Z")
    assert list(direct.items()) == list(processed.items())
    assert direct["event"] == "http.access" and "Bearer" not in json.dumps(direct)


def test_access_line_with_bound_context_takes_the_processors() -> None:
    reset_context(correlation_id="bound-1")
    try:
        line = json.loads(make_formatter("json").format(_access_record("c-9")))
    finally:
        reset_context()
    assert line["correlation_id"] == "bound-1"  # merged from the context, as before
    assert line["event"] == "http.access"


class _GunicornResponse:
    def __init__(self) -> None:
        self.status = "404 NOT FOUND"
        self.sent = 97
        self.headers = [("Content-Type", "application/json"), ("Content-Length", "97"),
                        ("X-Correlation-ID", "c-41")]


class _GunicornRequest:
    def __init__(self) -> None:
        self.headers = [("HOST", "tfgen:8000"), ("AUTHORIZATION", "Bearer secret"),
                        ("USER-AGENT", "apex/2")]


_ENVIRON = {"REQUEST_METHOD": "GET", "RAW_URI": "/api/v1/uuid/x?y=1", "PATH_INFO": "/api/v1/uuid/x",
            "QUERY_STRING": "y=1", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "10.0.0.7",
            "HTTP_USER_AGENT": "apex/2", "HTTP_AUTHORIZATION": "Bearer secret",
            "wsgi.url_scheme": "http"}


@pytest.mark.parametrize("with_id", [True, False])
def test_the_lean_access_atoms_make_the_same_line_as_gunicorns(with_id: bool) -> None:
    import datetime

    from gunicorn.config import Config
    from gunicorn.glogging import Logger, SafeAtoms

    from config.gunicorn_conf import AccessLogger

    resp = _GunicornResponse()
    if not with_id:
        resp.headers = resp.headers[:2]
    took = datetime.timedelta(seconds=1, microseconds=2345)
    full = Logger(Config()).atoms(resp, _GunicornRequest(), _ENVIRON, took)
    lean = AccessLogger(Config()).atoms(resp, _GunicornRequest(), _ENVIRON, took)
    assert {k: full[k] for k in lean} == lean  # each atom is gunicorn's own value
    reset_context()
    for fast in (True, False):
        lines = [json.loads(make_formatter("json", fast=fast).format(logging.LogRecord(
            "gunicorn.access", logging.INFO, __file__, 1, "%(h)s %(s)s", (SafeAtoms(atoms),),
            None))) for atoms in (full, lean)]
        for line in lines:
            assert line.pop("timestamp").endswith("Z")
        assert list(lines[0].items()) == list(lines[1].items())
        assert lines[0]["status"] == "404" and lines[0]["duration_ms"] == 1002.345
        assert lines[0].get("correlation_id") == ("c-41" if with_id else None)


class _Records(logging.Handler):
    """Keeps the records it is given, to format them both ways."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_structlog_lines_written_directly_equal_the_processors_lines(
        log_stream: io.StringIO) -> None:
    keep = _Records()
    logging.getLogger().addHandler(keep)
    try:
        reset_context(correlation_id="c-5")
        bind_job("j-5", "alice", {"cloud_id": "aws", "resource_type": "rds", "request_id": 5})
        audit("submit", "accepted", dry_run=False, submitted_by="alice")
        log = get_logger("tfgen.test")
        log.info("job.%s", "formatted", path=Path("/x"), api_token="glpat-x")
        log.warning("job.note", nested={"a": [1, 2]}, level_hint=None)
        try:
            raise ValueError("boom")
        except ValueError:
            log.exception("job.failed")
        get_logger("tfgen.test").info("job.stack", stack_info=True)
    finally:
        logging.getLogger().removeHandler(keep)
        reset_context()
    assert len(keep.records) == 5
    direct, processed = make_formatter("json"), make_formatter("json", fast=False)
    for record in keep.records:
        assert direct.format(record) == processed.format(record)
    lines = [json.loads(direct.format(r)) for r in keep.records]
    assert list(lines[0])[:4] == ["timestamp", "level", "logger", "event"]
    assert (lines[1]["event"], lines[1]["path"], lines[1]["api_token"]) == (
        "job.formatted", "/x", "***")
    assert lines[4]["stack"].startswith("Stack (most recent call last)")


def test_a_line_with_an_exception_takes_the_processors(log_stream: io.StringIO) -> None:
    keep = _Records()
    logging.getLogger().addHandler(keep)
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger("tfgen.test").exception("job.failed")
        (record,) = keep.records
        line = make_formatter("json").format(record)  # exc_info=True: read while handling
        assert line == make_formatter("json", fast=False).format(record)
    finally:
        logging.getLogger().removeHandler(keep)
    assert json.loads(line)["exception"][0]["exc_value"] == "boom"
