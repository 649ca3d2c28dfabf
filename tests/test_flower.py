"""``celery -A tasks flower`` as the README writes it: tfgen's settings, auth, readable tasks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import ROOT, Stack, free_port, stack_env

AUTH = ("ops", "s3cret")


def flower_cmd() -> list[str]:
    return [sys.executable, "-m", "celery", "-A", "tasks", "flower"]


def test_plain_flower_command_refuses_to_start_unauthenticated_in_prod(tmp_path: Path) -> None:
    env = {**os.environ, **stack_env(tmp_path, f"sqlite:///{tmp_path / 'apex.sqlite'}", "fl"),
           "APP_ENV": "prod", "AUTH_MODE": "oidc", "OIDC_ISSUER": "https://idp.example/realms/x",
           "OIDC_AUDIENCE": "tfgen", "OIDC_JWKS_URL": "https://idp.example/jwks",
           "FLOWER_PORT": str(free_port())}
    env.pop("FLOWER_BASIC_AUTH", None)
    proc = subprocess.run(flower_cmd(), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode != 0
    assert "refuses to start unauthenticated" in proc.stdout + proc.stderr


@pytest.fixture
def flower(stack: Stack) -> Iterator[str]:
    """Flower started exactly as the README says, with basic auth, on the stack's Redis."""
    port = free_port()
    env = {**os.environ, **stack.env, "FLOWER_BASIC_AUTH": "ops:s3cret",
           "FLOWER_PORT": str(port), "FLOWER_ADDRESS": "127.0.0.1"}
    proc = subprocess.Popen(flower_cmd(), cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{url}/healthcheck", timeout=1)
                break
            except requests.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("flower did not start") from None
                time.sleep(0.2)
        # Flower's web side answers before its event receiver has subscribed (a thread
        # of its own). Events are fan-out: one sent before that is never seen, so a task
        # received then shows no name or args. A worker's heartbeat (every 2 s) in
        # Flower's event state says the receiver is listening.
        while not requests.get(f"{url}/workers", params={"json": 1}, auth=AUTH,
                               timeout=5).json()["data"]:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("flower saw no worker's events")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)


def test_plain_flower_command_asks_for_credentials(flower: str) -> None:
    assert requests.get(f"{flower}/", timeout=5).status_code == 401
    assert requests.get(f"{flower}/", auth=AUTH, timeout=5).status_code == 200


def test_flower_shows_the_request_a_task_is_for(flower: str, stack: Stack) -> None:
    r = stack.submit({"cloud_id": "aws", "resource_type": "rds", "request_id": 42,
                      "dry_run": True})
    assert r.status_code == 202
    job_uuid = r.json["uuid"]
    assert stack.wait(job_uuid)["status"] == "SUCCESS"
    deadline = time.monotonic() + 30
    task: dict[str, Any] = {}
    while time.monotonic() < deadline:
        answer = requests.get(f"{flower}/api/task/info/{job_uuid}", auth=AUTH, timeout=5)
        task = answer.json() if answer.status_code == 200 else {}
        if task.get("args"):
            break
        time.sleep(0.3)
    assert task.get("args") == "aws/rds/42", task
