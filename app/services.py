"""The composition root: builds the domain parts from configuration, once per process.

Nothing connects here at import time or at construction: the store and job store open
connections on first use, so a Celery parent can build them before it forks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cached_property
from typing import Any

import redis
import sqlalchemy as sa

from app.core.backoff import retry_countdown
from app.core.checkov import Checkov
from app.core.events import EventLog, RedisEventLog, event_log_from_url
from app.core.jobs import JobLifecycle, JobStore, job_store_from_url
from app.core.lifecycle import HookedJobStore, Lifecycle
from app.core.locks import LocalLocks, LockFactory, RedisLocks
from app.core.model import Secret
from app.core.pipeline import Pipeline
from app.core.policy import PolicyCheck, PolicyEngine
from app.core.publish.base import Publisher
from app.core.publish.git import GitPublisher
from app.core.publish.gitlab import GitLabPublisher
from app.core.render import Renderer
from app.core.requests import RequestStore, request_store_from_url
from app.core.store import ApexStore
from app.core.validate import Validator
from app.core.waivers import WaiverStore, waiver_store_from_url
from app.core.webhooks import SecretBox, WebhookStore
from app.metrics import observe_event, observe_gitlab
from app.observe import job_finished
from config.settings import SETTINGS_KEY, Settings

__all__ = ["Services"]


class Services:
    """Lazily built store, job store, waivers, policies, publisher and pipeline."""

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = config
        # Set by the app factory: asks for a webhook fan-out after an event is appended.
        self.on_event: Callable[[str], None] | None = None

    def close(self) -> None:
        """Release the connections of the stores built so far, for an app dropped before
        its process ends (tests, one-off commands); a store used afterwards reconnects."""
        built = vars(self)
        if "store" in built:
            self.store.dispose()
        for name in ("jobs", "events", "requests", "waivers", "webhooks"):
            part = built.get(name)
            part = getattr(part, "inner", part)  # the HookedJobStore's wrapped store
            client, engine = getattr(part, "client", None), getattr(part, "engine", None)
            if isinstance(client, redis.Redis):
                client.close()
            if isinstance(engine, sa.Engine):
                engine.dispose()

    @cached_property
    def store(self) -> ApexStore:
        """The APEX store (one engine and pool per process)."""
        settings: Settings = self.config[SETTINGS_KEY]
        return ApexStore(settings.store)

    @cached_property
    def jobs(self) -> JobStore:
        """Where job records live; each status transition feeds the lifecycle hook."""
        # The event log lives beside the records: a status change and its event are one
        # atomic write (MULTI/EXEC on Redis, one transaction on SQL).
        store = job_store_from_url(self.config["JOB_STORE_URL"],
                                   prefix=self.config["JOB_KEY_PREFIX"],
                                   ttl=int(self.config["JOB_RESULT_TTL"]), events=self.events)
        return HookedJobStore(store, self.lifecycle)

    @cached_property
    def job_lifecycle(self) -> JobLifecycle:
        """Ends jobs, one way for every path; each ending is counted and audited once."""
        return JobLifecycle(self.jobs, on_finished=job_finished)

    @cached_property
    def events(self) -> EventLog:
        """The ordered event log, beside the job records."""
        return event_log_from_url(self.config["JOB_STORE_URL"],
                                  prefix=self.config["JOB_KEY_PREFIX"],
                                  max_len=int(self.config["EVENT_MAX_LEN"]),
                                  max_age=int(self.config["EVENT_MAX_AGE"]))

    @cached_property
    def requests(self) -> RequestStore:
        """Request records, beside the job records."""
        return request_store_from_url(self.config["JOB_STORE_URL"],
                                      prefix=self.config["JOB_KEY_PREFIX"])

    @cached_property
    def lifecycle(self) -> Lifecycle:
        """The one hook every job and request change goes through."""
        return Lifecycle(self.events, self.requests,
                         target_branch=self.config["GITLAB_TARGET_BRANCH"],
                         gitlab_url=self.config.get("GITLAB_URL"), observer=observe_event,
                         on_append=self.on_event)

    @cached_property
    def webhooks(self) -> WebhookStore | None:
        """Webhook subscriptions and their outbox, beside the event log (Redis only)."""
        events = self.events
        if not isinstance(events, RedisEventLog):
            return None
        c = self.config
        base, cap = float(c["WEBHOOK_BACKOFF_BASE"]), float(c["WEBHOOK_BACKOFF_MAX"])
        return WebhookStore(events.client, events, prefix=c["JOB_KEY_PREFIX"],
                            box=SecretBox(c.get("WEBHOOK_SECRET_KEY")),
                            max_attempts=int(c["WEBHOOK_MAX_ATTEMPTS"]),
                            backoff=lambda n: retry_countdown(n, cap, base=base),
                            rotation_grace=float(c["WEBHOOK_ROTATION_GRACE"]))

    @cached_property
    def waivers(self) -> WaiverStore:
        """Policy waivers, stored beside the job records."""
        return waiver_store_from_url(self.config["JOB_STORE_URL"],
                                     prefix=self.config["JOB_KEY_PREFIX"])

    @cached_property
    def policies(self) -> PolicyEngine:
        """The ``POLICY_DIR`` Rego policies, compiled once per process (and on change)."""
        return PolicyEngine(self.config.get("POLICY_DIR"))

    @cached_property
    def policy_check(self) -> PolicyCheck:
        """The policy stage: Rego, waivers, and checkov when ``CHECKOV_BIN`` is set."""
        binary = self.config.get("CHECKOV_BIN")
        scanners = [Checkov(binary, float(self.config["CHECKOV_TIMEOUT"]))] if binary else []
        return PolicyCheck(self.policies, self.waivers, scanners)

    @cached_property
    def locks(self) -> LockFactory:
        """Per-branch publish locks: in Redis when there is one, else in-process."""
        url = self.config.get("PUBLISH_LOCK_URL")
        if url:
            client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)
            # The lock outlives the longest publish: the job's hard time limit.
            return RedisLocks(client, prefix=f"{self.config['JOB_KEY_PREFIX']}:lock:",
                              timeout=float(self.config["JOB_TIME_LIMIT"]))
        return LocalLocks()

    @cached_property
    def publisher(self) -> Publisher:
        """The configured publisher (``git`` or ``gitlab``)."""
        c = self.config
        if c["PUBLISHER"] == "gitlab":
            return GitLabPublisher(
                c["GITLAB_URL"],
                fallback_token=Secret(c["GITLAB_TOKEN"]) if c["GITLAB_TOKEN"] else None,
                labels=c["GITLAB_MR_LABELS"],
                assignee_id=c["GITLAB_MR_ASSIGNEE_ID"],
                reviewer_ids=c["GITLAB_MR_REVIEWER_IDS"],
                lock_factory=self.locks,
                max_retries=c["GITLAB_MAX_RETRIES"],
                backoff_base=c["GITLAB_BACKOFF_BASE"],
                max_retry_time=c["GITLAB_RETRY_MAX_TIME"],
                request_timeout=c["GITLAB_REQUEST_TIMEOUT"],
                ssl_verify=c["GITLAB_SSL_VERIFY"],
                observer=observe_gitlab,
            )
        return GitPublisher(c["GIT_REMOTE"], lock_factory=self.locks)

    @cached_property
    def pipeline(self) -> Pipeline:
        """fetch -> render -> validate -> policy -> publish."""
        return Pipeline(
            store=self.store,
            renderer=Renderer(cache_size=int(self.config["TEMPLATE_CACHE_SIZE"])),
            validator=Validator(
                terraform_bin=self.config["TERRAFORM_BIN"],
                provider_mirror=self.config["TERRAFORM_PROVIDER_MIRROR"],
                fmt_engine=self.config["TERRAFORM_FMT_ENGINE"],
                timeout=float(self.config["TERRAFORM_TIMEOUT"]),
            ),
            publisher=self.publisher,
            target_branch=self.config["GITLAB_TARGET_BRANCH"],
            policy=self.policy_check,
        )
