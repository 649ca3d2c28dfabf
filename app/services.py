"""The composition root: builds the domain parts from configuration, once per process.

Nothing connects here at import time or at construction: the store and job store open
connections on first use, so a Celery parent can build them before it forks.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

from app.core.jobs import JobStore, job_store_from_url
from app.core.model import Publisher
from app.core.pipeline import Pipeline
from app.core.publish.git import GitPublisher
from app.core.render import Renderer
from app.core.store import ApexStore, StoreSettings
from app.core.validate import Validator

__all__ = ["Services"]


class Services:
    """Lazily built store, job store, renderer, validator, publisher and pipeline."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config

    @cached_property
    def store(self) -> ApexStore:
        """The APEX store (one engine and pool per process)."""
        return ApexStore(StoreSettings.from_config(self.config))

    @cached_property
    def jobs(self) -> JobStore:
        """Where job records live."""
        return job_store_from_url(self.config["JOB_STORE_URL"],
                                  prefix=self.config["JOB_KEY_PREFIX"],
                                  ttl=int(self.config["JOB_RESULT_TTL"]))

    @cached_property
    def publisher(self) -> Publisher:
        """The configured publisher (``git`` or ``gitlab``)."""
        if self.config["PUBLISHER"] == "gitlab":
            raise NotImplementedError("PUBLISHER=gitlab arrives with issue 5")
        return GitPublisher(self.config["GIT_REMOTE"])

    @cached_property
    def pipeline(self) -> Pipeline:
        """fetch -> render -> validate -> publish."""
        return Pipeline(
            store=self.store,
            renderer=Renderer(),
            validator=Validator(),
            publisher=self.publisher,
            target_branch=self.config["GITLAB_TARGET_BRANCH"],
        )
