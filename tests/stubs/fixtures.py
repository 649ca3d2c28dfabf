"""pytest fixtures for the GitLab stand-in; import them into a ``conftest.py``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.stubs.gitlab_server import GitLabStub

__all__ = ["ALICE", "BOB", "EVE", "PROJECT", "RITA", "gitlab_stub"]

PROJECT = "infra/terraform"
ALICE = "glpat-alice-0123456789abcdef"  # developer
BOB = "glpat-bob-0123456789abcdef"  # developer
RITA = "glpat-rita-0123456789abcdef"  # reporter: may read, may not push
EVE = "glpat-eve-0123456789abcdef"  # no access to the project: sees 404


@pytest.fixture
def gitlab_stub() -> Iterator[GitLabStub]:
    """A started GitLab stand-in on a free loopback port, stopped afterwards.

    Seeded with users alice and bob (developers), rita (reporter), eve (no access) and a
    private project ``infra/terraform`` whose ``main`` branch holds ``README.md``.
    """
    with GitLabStub() as stub:
        for name, token in (("alice", ALICE), ("bob", BOB), ("rita", RITA), ("eve", EVE)):
            stub.add_user(name, token)
        stub.add_project(
            PROJECT,
            members={"alice": "developer", "bob": "developer", "rita": "reporter"},
        )
        yield stub
