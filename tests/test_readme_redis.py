"""The README's "Run it against Redis" section, command by command, from an empty var/.

Only what keeps runs apart differs from the README: a private var folder, Redis db 9
with this run's key prefix and queue (never the shared defaults).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from app.demo import create_demo_database
from tests.conftest import REDIS_URL, ROOT, RUN_ID, Stack, Worker


@pytest.fixture
def readme_env(tmp_path: Path, redis_client: redis.Redis) -> Iterator[dict[str, str]]:
    """run/dev-env.sh as shipped, plus the README's one export (CELERY_BROKER_URL)."""
    names = ("APP_ENV", "LOG_LEVEL", "LOG_FORMAT", "PUBLISHER")
    shipped = subprocess.run(
        ["bash", "-c", ". run/dev-env.sh >/dev/null && env -0"], cwd=ROOT, check=True,
        capture_output=True, text=True).stdout.split("\0")
    dev = dict(line.split("=", 1) for line in shipped if "=" in line)
    env = {name: dev[name] for name in names if name in dev}
    env.update(TFGEN_VAR_DIR=str(tmp_path / "var"), CELERY_BROKER_URL=REDIS_URL,
               JOB_KEY_PREFIX=f"tfgen-test-{RUN_ID}-readme",
               JOB_QUEUE=f"tfgen-test-{RUN_ID}-readme")
    yield env


def test_readme_redis_section_ends_in_success_with_no_extra_step(
        readme_env: dict[str, str]) -> None:
    env = {**os.environ, **readme_env}
    for name in ("DATABASE_URL", "GIT_REMOTE", "JOB_STORE_URL", "CELERY_RESULT_BACKEND"):
        env.pop(name, None)
    init = subprocess.run([sys.executable, "manage.py", "init-db", "--demo"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120, check=False)
    assert init.returncode == 0, init.stderr
    var = Path(readme_env["TFGEN_VAR_DIR"])
    assert (var / "remote.git" / "HEAD").exists(), init.stdout

    # The API as gunicorn builds it (manage:app), the worker as `celery -A tasks worker`.
    stack = Stack({**readme_env, "GIT_REMOTE": str(var / "remote.git")})
    assert stack.app.config["CELERY"]["result_backend"] == REDIS_URL  # follows the broker
    assert stack.app.config["JOB_STORE_URL"] == REDIS_URL
    stack.worker = Worker(readme_env).start()
    try:
        r = stack.submit({"cloud_id": "aws", "resource_type": "rds", "request_id": 42})
        assert r.status_code == 202, r.json
        doc = stack.wait(r.json["uuid"])
        assert doc["status"] == "SUCCESS", doc
        branch = doc["result"]["branch"]
        log = subprocess.run(["git", "--git-dir", str(var / "remote.git"), "log", "-1",
                              "--format=%B", branch], capture_output=True, text=True,
                             check=True).stdout
        assert f"Tfgen-Job: {doc['uuid']}" in log
    finally:
        stack.close()


def test_a_missing_git_remote_fails_the_job_with_a_clear_non_gitlab_code(
        readme_env: dict[str, str]) -> None:
    env = {**readme_env, "GIT_REMOTE": str(Path(readme_env["TFGEN_VAR_DIR"]) / "nowhere.git"),
           "JOB_QUEUE": readme_env["JOB_QUEUE"] + "-noremote"}
    env["DATABASE_URL"] = create_demo_database(
        f"sqlite:///{Path(env['TFGEN_VAR_DIR']).parent / 'apex.sqlite'}")
    stack = Stack(env)
    stack.worker = Worker(env).start()
    try:
        r = stack.submit({"cloud_id": "aws", "resource_type": "rds", "request_id": 42})
        doc = stack.wait(r.json["uuid"])
    finally:
        stack.close()
    assert doc["status"] == "FAILURE"
    assert doc["error"]["code"] == "INTERNAL"
    assert not doc["error"]["retryable"]
    assert "nowhere.git" in doc["error"]["message"]
    assert "init-db --demo" in doc["error"]["message"]
