"""What both publishers share: URL redaction and the job's commit trailer."""

from __future__ import annotations

import pytest

from app.core.publish.base import made_by_job, redact_credentials

SECRET = "glpat-git-remote-secret-0123456789"
CREDENTIALED = f"https://tfgen-bot:{SECRET}@git.example.test/platform/infra-live.git"
SHOWN = "https://***@git.example.test/platform/infra-live.git"


@pytest.mark.parametrize(("text", "shown"), [
    (CREDENTIALED, SHOWN),
    (f"https://{SECRET}@gitlab.example.com/a.git", "https://***@gitlab.example.com/a.git"),
    (f"https://oauth2:{SECRET}@host:8443/a/b.git", "https://***@host:8443/a/b.git"),
    (f"ssh://git:{SECRET}@host/a.git", "ssh://***@host/a.git"),
    (f"https://u:p@ss{SECRET}@host/a.git", "https://***@host/a.git"),  # '@' in the password
    (f"fatal: '{CREDENTIALED}' and 'http://x:{SECRET}@h/'", f"fatal: '{SHOWN}' and 'http://***@h/'"),
    # nothing secret: kept as it is
    ("https://gitlab.example.com/a.git", "https://gitlab.example.com/a.git"),
    ("git@gitlab.example.com:platform/a.git", "git@gitlab.example.com:platform/a.git"),
    ("/var/lib/tfgen/remote.git", "/var/lib/tfgen/remote.git"),
    ("https://host/a/@scope/b.git", "https://host/a/@scope/b.git"),
])
def test_redact_credentials(text: str, shown: str) -> None:
    assert redact_credentials(text) == shown


def test_a_trailer_must_be_the_jobs_whole_line() -> None:
    job = "6f1c2b9e-0000-4000-8000-000000000001"
    assert made_by_job(f"subject\n\nbody\n\nTfgen-Job: {job}\nTfgen-Request: a/b/1\n", job)
    assert not made_by_job(f"subject\n\nTfgen-Job: {job}0\n", job)
    assert not made_by_job(f"subject mentions Tfgen-Job: {job} in passing\n", job)
    assert not made_by_job(None, job)
