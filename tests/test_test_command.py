"""``bash run/test.sh`` on a machine without a PostgreSQL server.

Each case runs the command on one PostgreSQL test (the demo schema on the ``pg_url``
fixture) with ``TFGEN_TEST_PG_URL`` on a port where nothing listens.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port

ONE_PG_TEST = "tests/test_test_command.py::test_postgresql_answers"


def test_postgresql_answers(pg_url: str) -> None:
    """The probe the cases below run: needs the ``pg_url`` fixture's server."""
    import sqlalchemy as sa

    engine = sa.create_engine(pg_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM tf_template")).scalar_one() > 0
    engine.dispose()


def run_test_command(tmp_path: Path, path: str, **extra: str) -> subprocess.CompletedProcess[str]:
    venv = Path(os.environ.get("TFGEN_VENV", ROOT / ".venv")).resolve()
    env = {**os.environ, "PATH": path, "TFGEN_VENV": str(venv),
           "TFGEN_TEST_PG_URL": f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/test",
           **extra}
    for name in ("TFGEN_SKIP_PG", "TFGEN_REQUIRE_ALL"):
        if name not in extra:
            env.pop(name, None)
    return subprocess.run(["bash", "run/test.sh", ONE_PG_TEST, "-q", "-p", "no:randomly"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def _path_without_initdb(tmp_path: Path) -> str:
    # Every tool of this PATH but PostgreSQL's: links in a folder of their own.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "env", "mkdir", "rm", "id", "mktemp", "seq", "sleep", "git",
                 "redis-server", "chown", "runuser", "cat", "dirname"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def test_without_a_server_or_initdb_it_runs_the_rest_and_says_what_it_skipped(
        tmp_path: Path) -> None:
    proc = run_test_command(tmp_path, _path_without_initdb(tmp_path))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "SKIPPED the tests that need PostgreSQL" in out
    assert "initdb/pg_ctl are not installed" in out
    assert "1 skipped" in out and "needs PostgreSQL" in out


def test_ci_fails_instead_of_skipping(tmp_path: Path) -> None:
    proc = run_test_command(tmp_path, _path_without_initdb(tmp_path), TFGEN_REQUIRE_ALL="1")
    assert proc.returncode != 0
    assert "the store tests need it" in proc.stderr


@pytest.mark.skipif(shutil.which("initdb") is None or shutil.which("pg_ctl") is None,
                    reason="initdb/pg_ctl are not installed here")
def test_with_initdb_it_starts_a_private_postgresql(tmp_path: Path) -> None:
    proc = run_test_command(tmp_path, os.environ["PATH"])
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "starting a private PostgreSQL" in out
    assert "1 passed" in out and "skipped" not in out.lower().replace("skipping", "")
