"""Prometheus metrics: what they are, how a process exposes them.

The API serves ``GET /metrics`` (open, like ``/health``); a Celery worker serves the
same text on ``WORKER_METRICS_PORT`` from its main process (``tasks/observe.py``).

Several processes, one scrape: when ``PROMETHEUS_MULTIPROC_DIR`` is set (gunicorn with
several workers, Celery prefork), every process writes its samples to files in that
folder and the scrape reads them all (prometheus-client's multiprocess mode). The
folder must be empty when the server starts and private to one pod.

The queue length is not a sample anyone writes: it is read from the broker (Redis
``LLEN``) at scrape time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import redis
from flask import Blueprint, Flask, Response, g, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = [
    "EVENTS",
    "GITLAB_HOOKS",
    "GITLAB_REQUESTS",
    "GITLAB_RETRIES",
    "HTTP_LATENCY",
    "HTTP_REQUESTS",
    "JOBS_FINISHED",
    "JOBS_SUBMITTED",
    "JOB_RETRIES",
    "STAGE_DURATION",
    "QueueLengthCollector",
    "StageTimer",
    "clear_multiprocess_dir",
    "exposition",
    "multiprocess_dir",
    "observe_event",
    "observe_gitlab",
    "register_metrics",
]

_SECONDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_STAGE_SECONDS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

HTTP_REQUESTS = Counter("tfgen_http_requests_total", "API requests answered",
                        ["method", "route", "status"])
HTTP_LATENCY = Histogram("tfgen_http_request_duration_seconds", "API request latency",
                         ["method", "route"], buckets=_SECONDS)
JOBS_SUBMITTED = Counter("tfgen_jobs_submitted_total", "Jobs accepted (202) by the API",
                         ["cloud_id", "resource_type"])
JOBS_FINISHED = Counter("tfgen_jobs_finished_total",
                        "Jobs that ended, by final status and failure code (none on success)",
                        ["status", "code"])
JOB_RETRIES = Counter("tfgen_job_retries_total", "Job attempts scheduled again, by error code",
                      ["code"])
STAGE_DURATION = Histogram("tfgen_job_stage_duration_seconds", "Time spent in each job stage",
                           ["stage"], buckets=_STAGE_SECONDS)
GITLAB_REQUESTS = Counter("tfgen_gitlab_requests_total",
                          "GitLab API requests, by outcome (ok, transient, rate_limited, error)",
                          ["outcome"])
GITLAB_RETRIES = Counter("tfgen_gitlab_retries_total",
                         "GitLab requests repeated after a transient failure or a 429",
                         ["reason"])
EVENTS = Counter("tfgen_events_total",
                 "Events appended to the feed, by type (job.*, request.*); "
                 "lifecycle.hook_failed: a request step or webhook nudge that failed "
                 "after a change (the sweep redoes the step)",
                 ["type"])
GITLAB_HOOKS = Counter("tfgen_gitlab_hooks_total",
                       "GitLab webhook deliveries answered 202, by event and outcome "
                       "(queued, duplicate, ignored)", ["event", "outcome"])


def multiprocess_dir() -> str | None:
    """The multiprocess folder when that mode is on (``PROMETHEUS_MULTIPROC_DIR``)."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def clear_multiprocess_dir() -> None:
    """Empty the multiprocess folder (server start: stale files would count twice)."""
    folder = multiprocess_dir()
    if not folder:
        return
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


def _samples_registry() -> CollectorRegistry:
    """Where this process's samples are read from: every process's files, or its own."""
    if multiprocess_dir():
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return registry
    return REGISTRY


def exposition(extra: Iterable[CollectorRegistry] = ()) -> bytes:
    """The Prometheus text of this process (or of all, in multiprocess mode) plus ``extra``."""
    return b"".join(generate_latest(r) for r in (_samples_registry(), *extra))


def observe_gitlab(event: str, detail: str) -> None:
    """The GitLab publisher's observer: ``("request", outcome)`` or ``("retry", reason)``."""
    if event == "request":
        GITLAB_REQUESTS.labels(detail).inc()
    elif event == "retry":
        GITLAB_RETRIES.labels(detail).inc()


def observe_event(kind: str) -> None:
    """The lifecycle hook's observer: one event of type ``kind`` was appended."""
    EVENTS.labels(kind).inc()


class StageTimer:
    """Observes how long a job spends in each stage, one stage after the other."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._stage: str | None = None
        self._since = 0.0

    def enter(self, stage: str) -> None:
        """Close the current stage (if any) and start ``stage``."""
        self.close()
        self._stage, self._since = stage, self._clock()

    def close(self) -> None:
        """Record the current stage's duration; nothing when no stage is open."""
        if self._stage is not None:
            STAGE_DURATION.labels(self._stage).observe(self._clock() - self._since)
            self._stage = None


class QueueLengthCollector(Collector):
    """``tfgen_queue_length``: messages waiting in the job queue, read from Redis at scrape.

    Celery's Redis transport keeps a queue as a list named after it, plus one list per
    priority step; reserved but unacknowledged messages wait in the ``unacked`` hash.
    """

    PRIORITY_SEPARATOR = "\x06\x16"
    PRIORITY_STEPS = (3, 6, 9)

    def __init__(self, broker_url: str, queues: Iterable[str]) -> None:
        self.queues = tuple(queues)
        self.client = redis.Redis.from_url(broker_url, socket_connect_timeout=1,
                                           socket_timeout=1)

    def collect(self) -> Iterable[Metric]:
        """Read the lengths; ``tfgen_queue_up`` says whether the broker answered."""
        length = GaugeMetricFamily("tfgen_queue_length", "Jobs waiting in the broker queue",
                                   labels=["queue"])
        unacked = GaugeMetricFamily("tfgen_queue_unacked",
                                    "Messages reserved by workers and not yet acknowledged")
        up = GaugeMetricFamily("tfgen_queue_up", "1 when the broker answered the scrape")
        try:
            pipe = self.client.pipeline(transaction=False)
            for queue in self.queues:
                pipe.llen(queue)
                for step in self.PRIORITY_STEPS:
                    pipe.llen(f"{queue}{self.PRIORITY_SEPARATOR}{step}")
            pipe.hlen("unacked")
            answers = pipe.execute()
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        per_queue = 1 + len(self.PRIORITY_STEPS)
        for i, queue in enumerate(self.queues):
            length.add_metric([queue], sum(answers[i * per_queue:(i + 1) * per_queue]))
        unacked.add_metric([], answers[-1])
        up.add_metric([], 1)
        yield from (length, unacked, up)


def broker_registry(config: Mapping[str, Any]) -> CollectorRegistry | None:
    """A registry with the queue-length collector when the broker is Redis, else None."""
    broker = str(config["CELERY"]["broker_url"])
    if not broker.startswith(("redis://", "rediss://")):
        return None  # the filesystem transport of embedded runs has nothing to count
    registry = CollectorRegistry(auto_describe=False)
    registry.register(QueueLengthCollector(broker, [config["JOB_QUEUE"]]))
    return registry


def register_metrics(app: Flask) -> None:
    """Count and time every request by route and status; serve ``GET /metrics``."""
    queue_registry = broker_registry(app.config)
    extra = [queue_registry] if queue_registry else []
    bp = Blueprint("metrics", __name__)

    @bp.get("/metrics")
    def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(exposition(extra), content_type=CONTENT_TYPE_LATEST)

    @app.before_request
    def start_timer() -> None:
        g.metrics_started = time.perf_counter()

    @app.after_request
    def count_request(response: Response) -> Response:
        rule = request.url_rule
        route = rule.rule if rule is not None else "<unmatched>"
        HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        started = g.get("metrics_started")
        if started is not None:
            HTTP_LATENCY.labels(request.method, route).observe(time.perf_counter() - started)
        return response

    app.register_blueprint(bp)
