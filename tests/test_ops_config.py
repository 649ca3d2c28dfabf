"""Production process settings: gunicorn (several workers, one /metrics) and Flower (auth)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.auth import AuthSettings, mint_dev_token
from app.demo import create_demo_database
from config.flowerconfig import flower_options
from tests.conftest import ROOT, free_port, stop_server


class Gunicorn:
    """``gunicorn -c config/gunicorn_conf.py manage:app`` with 2 workers and JSON logs."""

    def __init__(self, tmp_path: Path, **settings: str) -> None:
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.metrics_dir = tmp_path / "prometheus"
        self.metrics_dir.mkdir()
        (self.metrics_dir / "counter_1.db").write_bytes(b"stale")  # an earlier run's file
        self.port = port
        env = {**os.environ, "APP_ENV": "test", "TFGEN_VAR_DIR": str(tmp_path / "var"),
               "LOG_FORMAT": "json", "PORT": str(port), "GUNICORN_WORKERS": "2",
               "GUNICORN_WORKER_TMP_DIR": str(tmp_path),
               "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir), **settings}
        env = {k: v for k, v in env.items() if v != ""}  # "": leave the setting unset
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn_conf.py", "manage:app"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{self.base}/api/v1/swagger.json", timeout=1).close()
                return
            # TimeoutError: the socket is bound before a worker answers (a slow boot).
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.proc.kill()
                    raise RuntimeError(f"gunicorn did not start: {self.stop()}") from None
                time.sleep(0.1)

    def stop(self) -> str:
        """Stop the server (SIGTERM) and return everything it wrote."""
        return stop_server(self.proc)


@pytest.fixture
def gunicorn(tmp_path: Path) -> Iterator[Gunicorn]:
    server = Gunicorn(tmp_path)
    yield server
    server.stop()


def get(url: str, **headers: str) -> str:
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=5) as r:
        return str(r.read().decode())


def test_metrics_under_gunicorn_sum_every_worker_process(tmp_path: Path) -> None:
    # Each worker is replaced after 4 requests: 30 requests are served by 8 processes,
    # most of them gone by the scrape, which must still count every request.
    server = Gunicorn(tmp_path, GUNICORN_MAX_REQUESTS="4", GUNICORN_MAX_REQUESTS_JITTER="0")
    try:
        for _ in range(30):
            get(f"{server.base}/health")
        pids = {p.stem.split("_")[-1] for p in server.metrics_dir.glob("counter_*.db")}
        assert "1" not in pids, "the stale file of an earlier run was not cleared"
        assert len(pids) >= 7
        text = get(f"{server.base}/metrics")
    finally:
        server.stop()
    assert 'tfgen_http_requests_total{method="GET",route="/health",status="200"} 30.0' in text


def test_gunicorn_binds_all_interfaces_on_port_and_logs_json_by_default_in_prod(
        tmp_path: Path) -> None:
    remote = tmp_path / "remote.git"
    server = Gunicorn(tmp_path, APP_ENV="prod", LOG_FORMAT="", AUTH_MODE="oidc",
                      OIDC_ISSUER="https://idp.example/realms/tfgen", OIDC_AUDIENCE="tfgen",
                      OIDC_JWKS_URL="https://idp.example/jwks",
                      DATABASE_URL=f"sqlite:///{tmp_path / 'apex.sqlite'}",
                      CELERY_BROKER_URL="redis://127.0.0.1:6379/9", GIT_REMOTE=str(remote))
    get(f"{server.base}/health", **{"X-Correlation-ID": "prod-json-1"})
    lines = [json.loads(line) for line in server.stop().splitlines()]
    listening = f"Listening at: http://0.0.0.0:{server.port} "
    assert any(line["event"].startswith(listening) for line in lines), lines
    assert [line for line in lines if line.get("correlation_id") == "prod-json-1"
            and line["event"] == "http.access"]


def test_gunicorn_logs_in_the_apps_format_when_log_format_is_unset(tmp_path: Path) -> None:
    server = Gunicorn(tmp_path, LOG_FORMAT="")  # APP_ENV=test: the app logs console lines
    get(f"{server.base}/health", **{"X-Correlation-ID": "console-1"})
    out = server.stop().splitlines()
    access = [line for line in out if "http.access" in line and "console-1" in line]
    assert access and not access[0].startswith("{"), out
    assert not [line for line in out if line.startswith("{")], out


def test_gunicorn_logs_are_json_and_the_access_line_has_the_correlation_id(
    gunicorn: Gunicorn,
) -> None:
    get(f"{gunicorn.base}/health", **{"X-Correlation-ID": "from-apex-7"})
    lines = [json.loads(line) for line in gunicorn.stop().splitlines()]
    (access,) = [line for line in lines if line["event"] == "http.access"
                 and line.get("correlation_id") == "from-apex-7"]
    assert access["logger"] == "gunicorn.access"
    assert (access["method"], access["path"], access["status"]) == ("GET", "/health", "200")
    assert access["correlation_id"] == "from-apex-7"
    assert any(line["logger"] == "gunicorn.error" for line in lines)


def test_flower_refuses_to_start_unauthenticated_in_prod() -> None:
    with pytest.raises(SystemExit, match="FLOWER_BASIC_AUTH"):
        flower_options({"APP_ENV": "prod"})
    with pytest.raises(SystemExit, match="FLOWER_OAUTH2_SECRET"):
        flower_options({"APP_ENV": "prod", "FLOWER_AUTH_PROVIDER": "x", "FLOWER_OAUTH2_KEY": "k",
                        "FLOWER_OAUTH2_REDIRECT_URI": "https://f/login", "FLOWER_AUTH": ".*"})
    assert flower_options({"APP_ENV": "dev"}).get("basic_auth") is None


def test_flower_takes_basic_auth_or_oauth_from_the_environment() -> None:
    basic = flower_options({"APP_ENV": "prod", "FLOWER_BASIC_AUTH": "ops:pw1, oncall:pw2"})
    assert basic["basic_auth"] == ["ops:pw1", "oncall:pw2"]
    oauth = flower_options({
        "APP_ENV": "prod", "FLOWER_AUTH_PROVIDER": "flower.views.auth.GitLabLoginHandler",
        "FLOWER_OAUTH2_KEY": "k", "FLOWER_OAUTH2_SECRET": "s",
        "FLOWER_OAUTH2_REDIRECT_URI": "https://flower.example/login",
        "FLOWER_AUTH": r".*@example\.com"})
    assert oauth["auth_provider"] == "flower.views.auth.GitLabLoginHandler"
    assert oauth["purge_offline_workers"] == 300
    assert json.dumps(oauth)  # plain values, as Flower's config parser expects


def test_gunicorn_workers_enqueue_without_listening_for_the_result(tmp_path: Path) -> None:
    # Celery's Redis result backend subscribes to a task's result channel on every
    # send_task, for a .get() the API never makes. The job is still queued, once.
    from tests.test_redis_restart import RedisServer

    redis_server = RedisServer(tmp_path)
    redis_server.start()
    key_path = tmp_path / "dev-key.pem"
    settings = AuthSettings.from_config({"APP_ENV": "test", "AUTH_MODE": "dev",
                                         "AUTH_DEV_KEY_PATH": str(key_path)})
    token = mint_dev_token(settings, "alice", ["aws-admins"])
    try:
        server = Gunicorn(tmp_path, AUTH_MODE="dev", AUTH_DEV_KEY_PATH=str(key_path),
                          CLOUD_PERMISSIONS='{"aws-admins": ["aws"]}',
                          DATABASE_URL=create_demo_database(f"sqlite:///{tmp_path / 'a.sqlite'}"),
                          CELERY_BROKER_URL=redis_server.url, JOB_QUEUE="ops-test")
        try:
            request = urllib.request.Request(
                f"{server.base}/api/v1/terraform/generate", method="POST",
                data=json.dumps({"cloud_id": "aws", "resource_type": "rds",
                                 "request_id": 42}).encode(),
                headers={"Authorization": f"Bearer {token}",
                         "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as answer:
                assert answer.status == 202
        finally:
            server.stop()
        client = redis.Redis.from_url(redis_server.url)
        assert client.llen("ops-test") == 1
        stats = client.info("commandstats")
        assert "cmdstat_subscribe" not in stats, stats
        client.close()
    finally:
        redis_server.stop()


def test_gunicorn_freezes_the_loaded_app_out_of_the_garbage_collector() -> None:
    import gc

    import config.gunicorn_conf as conf

    try:
        for hook in (lambda: conf.pre_fork(None, None), lambda: conf.post_worker_init(None)):
            gc.unfreeze()
            hook()
            # Everything alive when the hook ran is frozen: a collection does not walk it.
            assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()
