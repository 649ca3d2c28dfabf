"""A DATABASE_URL whose driver is not installed stops the process at start, naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import create_app
from config.settings import ConfigError
from tests.conftest import ROOT


def test_process_stops_at_start_naming_the_package(tmp_path: Path) -> None:
    # SQLAlchemy's default MySQL driver is mysqlclient, which tfgen does not install.
    env = {**os.environ, "APP_ENV": "dev", "TFGEN_VAR_DIR": str(tmp_path),
           "DATABASE_URL": "mysql://tfgen@db.example.com/apex"}
    proc = subprocess.run([sys.executable, "manage.py", "init-db"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode != 0
    assert "DATABASE_URL" in proc.stderr and "pip install mysqlclient" in proc.stderr


@pytest.mark.parametrize(("url", "names"), [
    ("mysql+pymysql://u:pw@db/apex", ["mysql+pymysql", "pip install pymysql"]),
    ("oracle+cx_oracle://u:pw@db:1521/?service_name=APEX", ["oracle+oracledb"]),
    ("nosuchdb://u@db/apex", ["DATABASE_URL", "nosuchdb"]),
])
def test_create_app_refuses_a_url_it_cannot_connect_with(
        tmp_path: Path, url: str, names: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        create_app({"APP_ENV": "test", "TFGEN_VAR_DIR": str(tmp_path), "DATABASE_URL": url})
    for name in names:
        assert name in str(caught.value)
    assert "pw" not in str(caught.value)
