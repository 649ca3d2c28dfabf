"""The git publisher and a remote URL that carries credentials.

``GIT_REMOTE=https://user:token@host/repo.git`` is how many sites reach a git server. The
token must not come back in a job's result, in an error, in a log line or in the lock
key (which lives in Redis). Git itself is pointed at a local bare repository for that
URL through its own ``url.<base>.insteadOf`` rule (set in the environment), so the push
really happens while the publisher only ever holds the credentialed URL.
"""

from __future__ import annotations

import http.server
import logging
import threading
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest

from app.core.locks import LocalLocks
from app.core.model import Change, RenderedFile
from app.core.publish.base import redact_credentials
from app.core.publish.git import GitError, GitPublisher
from app.errors import InternalError, TfgenError
from tests.conftest import git, make_git_remote

SECRET = "glpat-git-remote-secret-0123456789"
CREDENTIALED = f"https://tfgen-bot:{SECRET}@git.example.test/platform/infra-live.git"
SHOWN = "https://***@git.example.test/platform/infra-live.git"


class RecordingLocks:
    """A lock factory (the publisher's ``lock_factory`` parameter) that notes each key."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.locks = LocalLocks()

    def __call__(self, key: str, owner: str | None = None) -> AbstractContextManager[Any]:
        self.keys.append(key)
        return self.locks(key, owner)


def change(job_uuid: str | None = None, content: str = 'a = "1"\n') -> Change:
    return Change(project_id=None, branch="feature/aws-rds-orders-db", target_branch="main",
                  files=(RenderedFile("aws/rds/orders-db.tf", content),),
                  commit_message=f"tfgen: x\n\nTfgen-Job: {job_uuid or uuid.uuid4()}\n",
                  title="x", description="x", job_uuid=job_uuid or str(uuid.uuid4()))


@pytest.fixture
def remote(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bare repository that git reaches when asked for ``CREDENTIALED``."""
    bare = make_git_remote(tmp_path / "remote.git")
    monkeypatch.setenv("GIT_CONFIG_COUNT", "1")
    monkeypatch.setenv("GIT_CONFIG_KEY_0", f"url.{bare}.insteadOf")
    monkeypatch.setenv("GIT_CONFIG_VALUE_0", CREDENTIALED)
    return bare


@pytest.fixture
def not_found_server() -> Iterator[str]:
    """An HTTP server answering 404 to everything: git says "repository ... not found"."""
    class Quiet(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://tfgen-bot:{SECRET}@127.0.0.1:{server.server_address[1]}/infra-live.git"
    server.shutdown()
    server.server_close()


def test_a_push_through_a_credentialed_url_reports_it_without_the_credentials(
        remote: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    locks = RecordingLocks()
    publisher = GitPublisher(CREDENTIALED, lock_factory=locks)
    result = publisher.publish(change()).to_dict()

    assert git(remote, "rev-parse", "feature/aws-rds-orders-db") == result["commit"]["sha"]
    assert result["remote"] == SHOWN
    assert SECRET not in repr(result)
    assert locks.keys == [f"git:{SHOWN}:feature/aws-rds-orders-db"]
    assert SECRET not in caplog.text
    assert SECRET not in repr(publisher.__dict__.get("remote"))


def test_an_error_about_a_credentialed_url_does_not_show_the_credentials(
        not_found_server: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    locks = RecordingLocks()
    with pytest.raises(InternalError) as caught:  # a missing remote is a setting to fix
        GitPublisher(not_found_server, lock_factory=locks).publish(change())
    error: TfgenError = caught.value
    shown = redact_credentials(not_found_server)
    assert shown.startswith("http://***@127.0.0.1:")
    assert error.message.startswith(f"git remote {shown} does not exist")
    chain = [error, error.__cause__]
    assert all(SECRET not in str(e) and SECRET not in repr(e.__dict__) for e in chain)
    assert SECRET not in str(error.to_dict())
    assert locks.keys == [f"git:{shown}:feature/aws-rds-orders-db"]
    assert SECRET not in caplog.text


def test_git_messages_are_redacted_before_they_become_errors() -> None:
    # What older git versions print on a push or a failed fetch.
    error = GitError(["push", "-q"], f"To {CREDENTIALED}\n ! [rejected] (fetch first)\n"
                                     f"fatal: unable to access '{CREDENTIALED}/': 403\n")
    assert SECRET not in str(error) and SECRET not in error.stderr
    assert f"To {SHOWN}" in error.stderr and "[rejected]" in error.stderr
