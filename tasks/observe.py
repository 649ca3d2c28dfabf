"""Logs and metrics of the worker, wired through Celery's signals, not the task body.

- ``setup_logging``: Celery leaves logging to us; ``app.logs`` renders JSON or console.
- ``TracedRequest``: the worker's main process notes each message's correlation id, so
  its own "Task ... received" line carries it.
- ``task_prerun`` / ``task_postrun``: bind the job's correlation id, uuid, user, cloud,
  type and request id to every line the task logs; forget them afterwards.
- ``worker_init`` / ``worker_ready`` / ``worker_process_shutdown``: metrics in
  multiprocess mode; the pool's children write samples, the main process serves
  ``WORKER_METRICS_PORT``.
"""

from __future__ import annotations

import os
from typing import Any

from celery import current_app as current_celery
from celery.signals import (
    setup_logging,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_shutdown,
    worker_ready,
)
from celery.worker.request import Request
from prometheus_client import multiprocess, start_http_server

from app.errors import TfgenError
from app.logs import bind_job, configure_logging, get_logger, remember_task_correlation
from app.logs import reset_context as reset_log_context
from app.metrics import clear_multiprocess_dir, multiprocess_dir

__all__ = ["CORRELATION_HEADER", "TracedRequest"]

CORRELATION_HEADER = "tfgen_correlation_id"

log = get_logger("tfgen.tasks")


class TracedRequest(Request):  # type: ignore[misc]
    """A task message as the worker's main process sees it; notes its correlation id."""

    def __init__(self, message: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(message, *args, **kwargs)
        remember_task_correlation(self.id, self._request_dict.get(CORRELATION_HEADER))


def _flask_config() -> Any:
    return current_celery.flask_app.config


@setup_logging.connect
def _setup_logging(**_: Any) -> None:
    """Take logging over from Celery: the same format as the API (``LOG_FORMAT``)."""
    config = _flask_config()
    configure_logging(config["LOG_LEVEL"], config["LOG_FORMAT"])


@task_prerun.connect
def _bind_task_context(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    """Every line the task logs carries its job's fields, and the API's correlation id."""
    correlation_id = getattr(getattr(task, "request", None), CORRELATION_HEADER, None)
    reset_log_context(correlation_id=correlation_id, job_uuid=task_id)
    if task_id is None or task is None:
        return
    flask_app = getattr(task.app, "flask_app", None)
    if flask_app is None:
        return
    try:
        record = flask_app.extensions["tfgen"].jobs.get(task_id)
    except TfgenError:
        return  # the task itself meets the outage and reports it
    if record is not None:
        # A retried message may have lost its headers; the record keeps the id.
        bind_job(task_id, record.owner, record.request,
                 correlation_id=correlation_id or record.correlation_id)


@task_postrun.connect
def _forget_task_context(**_: Any) -> None:
    """The next task in this process starts with a clean context."""
    reset_log_context()


@worker_init.connect
def _reset_metrics_dir(**_: Any) -> None:
    """Samples of an earlier run of this worker must not count again."""
    clear_multiprocess_dir()


@worker_ready.connect
def _serve_metrics(**_: Any) -> None:
    """Serve ``/metrics`` from the worker's main process on ``WORKER_METRICS_PORT``."""
    config = _flask_config()
    port = int(config.get("WORKER_METRICS_PORT") or 0)
    if not port:
        return
    if not multiprocess_dir():
        log.warning("metrics.single_process", reason="PROMETHEUS_MULTIPROC_DIR is not set: "
                    "the pool's children's samples are not served")
        start_http_server(port, addr=config["WORKER_METRICS_ADDR"])
    else:
        from prometheus_client import CollectorRegistry

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        start_http_server(port, addr=config["WORKER_METRICS_ADDR"], registry=registry)
    log.info("metrics.serving", port=port)


@worker_process_shutdown.connect
def _mark_child_dead(pid: int | None = None, **_: Any) -> None:
    """A pool child that exits leaves its samples, minus its live gauges."""
    if multiprocess_dir():
        multiprocess.mark_process_dead(pid or os.getpid())  # type: ignore[no-untyped-call]
