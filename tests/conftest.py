"""Shared fixtures: real Redis, SQLite and PostgreSQL, real Celery workers, a git remote.

Every test run uses its own Redis key prefix and queue names, its own PostgreSQL
schema and temporary folders, so runs never see each other's jobs. GitLab and the
identity provider cannot run here; their stand-ins live in ``tests/stubs``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import redis
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from app import create_app
from app.auth import mint_dev_token
from app.core.store.schema import ResourceType, init_schema
from app.demo import RESOURCE_TYPES, create_demo_database, load_demo

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = os.environ.get("TFGEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/9")
PG_URL = os.environ.get("TFGEN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
RUN_ID = uuid.uuid4().hex[:8]
# CI gives checkov its own virtualenv and exports CHECKOV_BIN; only the checkov test uses
# it. Every stack, worker and demo here runs on tfgen's settings alone, so its findings
# (and its ~5 s a job) never reach tests that count policy warnings or time jobs.
CHECKOV_BIN = os.environ.pop("CHECKOV_BIN", None)
DEFAULT_GROUPS = "aws-admins,azure-admins"

# A request type whose view sleeps ``delay_seconds`` per row in PostgreSQL: a slow
# database makes a job's stages observable without touching tfgen's code.
SLOW = ResourceType(
    "aws", "slowdb",
    columns=lambda: [
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("module_version", sa.String(30), nullable=False),
        sa.Column("gitlab_project_id", sa.String(200)),
        sa.Column("delay_seconds", sa.Float, nullable=False),
    ],
    rows=[{"id": i, "name": f"slow-{i}", "module_version": "1.0.0",
           "gitlab_project_id": "platform/infra-live", "delay_seconds": 2.0}
          for i in range(1, 30)],
    templates={"1.0.0": 'resource "null_resource" "slow_{{ id }}" {\n'
                        '  triggers = {\n    name = {{ name | to_terraform_string }}\n  }\n}\n'},
)


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private ``redis-server`` on a free port (never the shared one) with its AOF on, for
    tests that stop and restart Redis. ``stop`` is SIGTERM: Redis syncs its AOF and exits
    (no RDB: ``--save ""``), so only the AOF brings data back."""

    def __init__(self, base: Path, fsync: str = "everysec") -> None:
        self.dir = base / "redis"
        self.dir.mkdir(exist_ok=True)
        self.port = free_port()
        self.fsync = fsync
        self.proc: subprocess.Popen[bytes] | None = None
        self.down_at: float | None = None
        self.down_seconds = 0.0
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", self.fsync, "--save", "",
             "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with redis.Redis(port=self.port) as client:  # closed: no socket left for gc
            deadline = time.monotonic() + 30
            while True:
                try:
                    client.ping()
                    return self
                except redis.ConnectionError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise
                    time.sleep(0.05)

    def restart(self, pause: float = 0.0) -> None:
        """Stop, stay down ``pause`` seconds, start again; note when and for how long."""
        self.down_at = time.monotonic()
        self.stop()
        time.sleep(pause)
        self.start()
        self.down_seconds = time.monotonic() - self.down_at
        self.restarts += 1

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A private Redis that syncs its AOF on every write; stopped after the test."""
    server = RedisServer(tmp_path, fsync="always").start()
    yield server
    server.stop()


def stop_server(proc: subprocess.Popen[str]) -> str:
    """Stop a server process (SIGTERM) and return everything it wrote."""
    if proc.poll() is None:
        proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return str(out)


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    """The shared Redis (CI starts one); this run's keys are removed afterwards."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as e:  # a red test, never a silent skip
        pytest.fail(f"Redis at {REDIS_URL} does not answer: {e}")
    yield client
    for key in client.scan_iter(f"*{RUN_ID}*"):
        client.delete(key)
    client.close()


def make_git_remote(path: Path) -> Path:
    """A bare repository with a ``main`` branch holding one README commit."""
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(path)], check=True)
    work = path.parent / (path.name + "-seed")
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "README.md").write_text("# infra-live\n")
    git = ["git", "-C", str(work), "-c", "user.name=seed", "-c", "user.email=seed@localhost"]
    subprocess.run([*git, "add", "README.md"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "seed"], check=True)
    subprocess.run([*git, "push", "-q", str(path), "main"], check=True)
    return path


def git(remote: Path, *args: str) -> str:
    """Run a git command against the bare remote and return its output."""
    return subprocess.run(["git", "--git-dir", str(remote), *args], check=True,
                          capture_output=True, text=True).stdout.strip()


def sqlite_apex(path: Path) -> str:
    """A SQLite APEX schema with the demo data; returns its URL."""
    return create_demo_database(f"sqlite:///{path}")


def stack_env(base: Path, database_url: str, name: str) -> dict[str, str]:
    """Environment for one test stack: API and worker read the same settings."""
    remote = make_git_remote(base / "remote.git")
    return {
        "APP_ENV": "test",
        "TFGEN_VAR_DIR": str(base / "var"),
        "DATABASE_URL": database_url,
        "CELERY_BROKER_URL": REDIS_URL,
        "CELERY_RESULT_BACKEND": REDIS_URL,
        "JOB_STORE_URL": REDIS_URL,
        "JOB_KEY_PREFIX": f"tfgen-test-{RUN_ID}-{name}",
        "JOB_QUEUE": f"tfgen-test-{RUN_ID}-{name}",
        "PUBLISHER": "git",
        "GIT_REMOTE": str(remote),
        "AUTH_MODE": "dev",
        "LOG_LEVEL": "INFO",
        "CATALOG_TTL": "1",
    }


class Worker:
    """A real ``celery -A tasks worker`` process on the stack's queue."""

    def __init__(self, env: Mapping[str, str], concurrency: int = 2, log: Path | None = None,
                 queues: str | None = None):
        self.env = {**os.environ, **env}
        self.queues = queues or self.env["JOB_QUEUE"]
        self.concurrency = concurrency
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.log = log

    def start(self, timeout: float = 60) -> Worker:
        """Start the worker and wait until it says it is ready."""
        cmd = [sys.executable, "-m", "celery", "-A", "tasks", "worker",
               "-Q", self.queues, "-c", str(self.concurrency), "-P", "prefork",
               "-n", f"{self.queues}-{uuid.uuid4().hex[:6]}@%h",
               "--without-gossip", "--without-mingle", "-l", "INFO"]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        ready = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                if " ready." in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout):
            self.stop()
            raise RuntimeError("worker did not start:\n" + "".join(self.lines[-40:]))
        return self

    def children(self) -> list[int]:
        """PIDs of the pool's child processes."""
        assert self.proc is not None
        kids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == self.proc.pid:
                kids.append(int(stat.parent.name))
        return kids

    def stop(self) -> None:
        """Warm shutdown (SIGTERM), then SIGKILL if it lingers."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stdout:  # also when it had exited on its own
            self.proc.stdout.close()


class Stack:
    """An app, its test client and (optionally) a worker sharing one environment."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.app: Flask = create_app(env)
        self.client: FlaskClient = self.app.test_client()
        self.remote = Path(env["GIT_REMOTE"])
        self.worker: Worker | None = None

    def auth(self, user: str = "alice", groups: str = DEFAULT_GROUPS,
             roles: str = "") -> dict[str, str]:
        """An ``Authorization`` header with a dev-mode token for ``user``."""
        token = mint_dev_token(self.app, user, [g for g in groups.split(",") if g],
                               roles=[r for r in roles.split(",") if r])
        return {"Authorization": f"Bearer {token}"}

    def submit(self, body: Mapping[str, Any], user: str = "alice",
               headers: Mapping[str, str] | None = None) -> Any:
        """POST a job as ``user``."""
        return self.client.post("/api/v1/terraform/generate", json=dict(body),
                                headers={**self.auth(user), **(headers or {})})

    def get(self, job_uuid: str, user: str = "alice") -> Any:
        """GET the job document as ``user``."""
        return self.client.get(f"/api/v1/uuid/{job_uuid}", headers=self.auth(user))

    def delete(self, job_uuid: str, user: str = "alice") -> Any:
        """DELETE (cancel) the job as ``user``."""
        return self.client.delete(f"/api/v1/uuid/{job_uuid}", headers=self.auth(user))

    def wait(self, job_uuid: str, until: Callable[[dict[str, Any]], bool] | None = None,
             timeout: float = 90, user: str = "alice") -> dict[str, Any]:
        """Poll until ``until(doc)`` (default: the job ended); return the document."""
        until = until or (lambda d: d["status"] in {"SUCCESS", "FAILURE", "REVOKED"})
        deadline = time.monotonic() + timeout
        while True:
            doc = self.get(job_uuid, user).json
            if until(doc):
                return dict(doc)
            if time.monotonic() > deadline:
                logs = "".join(self.worker.lines[-30:]) if self.worker else ""
                raise AssertionError(f"job {job_uuid} stuck: {doc}\n{logs}")
            time.sleep(0.05)

    def close(self) -> None:
        """Stop the worker and release connections."""
        if self.worker:
            self.worker.stop()
        self.app.extensions["tfgen"].close()


def api_only(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[Stack]:
    """The API on SQLite and Redis; no worker reads its queue (a module fixture's body)."""
    base = tmp_path_factory.mktemp(name)
    stack = Stack(stack_env(base, sqlite_apex(base / "apex.sqlite"), name))
    yield stack
    stack.close()


def require_postgresql() -> None:
    """Skip, saying why, when run/test.sh found no PostgreSQL and could start none."""
    if os.environ.get("TFGEN_SKIP_PG"):
        pytest.skip(f"needs PostgreSQL: {os.environ['TFGEN_SKIP_PG']}")


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A private PostgreSQL schema with the demo data and the slow type; dropped after."""
    require_postgresql()
    schema = f"tfgen_test_{RUN_ID}"
    admin = sa.create_engine(PG_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    except sa.exc.OperationalError as e:
        pytest.fail(f"PostgreSQL at {PG_URL} does not answer: {e}")
    url = f"{PG_URL}?options=-csearch_path%3D{schema}"
    engine = sa.create_engine(url)
    types = (*RESOURCE_TYPES, SLOW)
    init_schema(engine, types)
    load_demo(engine, types)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP VIEW v_aws_slowdb_requests"))
        conn.execute(sa.text(
            "CREATE VIEW v_aws_slowdb_requests AS SELECT * FROM apex_aws_slowdb_request "
            "WHERE pg_sleep(delay_seconds) IS NOT NULL"))
    engine.dispose()
    yield url
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_client: redis.Redis
          ) -> Iterator[Stack]:
    """SQLite APEX store, Redis broker and job store, git remote, one real worker."""
    base = tmp_path_factory.mktemp("stack")
    env = stack_env(base, sqlite_apex(base / "apex.sqlite"), "main")
    s = Stack(env)
    s.worker = Worker(env, concurrency=2).start()
    yield s
    s.close()


@pytest.fixture(scope="session")
def pg_stack(tmp_path_factory: pytest.TempPathFactory, redis_client: redis.Redis,
             pg_url: str) -> Iterator[Stack]:
    """Like ``stack`` on PostgreSQL, with ``aws/slowdb`` requests that take 2 s to fetch."""
    base = tmp_path_factory.mktemp("pgstack")
    env = stack_env(base, pg_url, "pg")
    s = Stack(env)
    s.worker = Worker(env, concurrency=2).start()
    yield s
    s.close()


@pytest.fixture
def idle_stack(tmp_path: Path, redis_client: redis.Redis, pg_url: str) -> Iterator[Stack]:
    """A stack whose queue no worker reads (yet): tests start their own worker."""
    env = stack_env(tmp_path, pg_url, f"idle-{uuid.uuid4().hex[:6]}")
    s = Stack(env)
    yield s
    s.close()
