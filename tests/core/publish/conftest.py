"""Fixtures for publisher tests: the GitLab stand-in and small builders."""

from __future__ import annotations

from tests.stubs.fixtures import gitlab_stub

__all__ = ["gitlab_stub"]
