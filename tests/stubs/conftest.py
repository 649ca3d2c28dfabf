"""Fixtures for the stand-ins' own tests."""

from __future__ import annotations

from tests.stubs.fixtures import gitlab_stub

__all__ = ["gitlab_stub"]
