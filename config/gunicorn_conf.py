"""gunicorn settings for production: ``gunicorn -c config/gunicorn_conf.py manage:app``.

Every value comes from tfgen's typed settings (``config/settings/``), read once here:
``PORT`` and ``GUNICORN_*`` (``ServerSettings``; the defaults suit one API pod), and the
log level and format the app uses (``LOG_LEVEL``, ``LOG_FORMAT``, whose default follows
``APP_ENV``). A missing or malformed setting stops the server before it forks, naming
it. Logs, access log included, are structured lines from ``app.logs``. With
``PROMETHEUS_MULTIPROC_DIR`` set the workers share their metrics through that folder,
emptied when the server starts.
"""

from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the config is read before gunicorn changes directory
    sys.path.insert(0, str(ROOT))

from gunicorn.glogging import Logger  # noqa: E402

from app.logs import access_atoms  # noqa: E402
from app.metrics import clear_multiprocess_dir, multiprocess_dir  # noqa: E402
from config.settings import load  # noqa: E402


class AccessLogger(Logger):  # type: ignore[misc]
    """gunicorn's logger, giving the access line only the atoms it is made of.

    gunicorn's own atoms (a formatted time, every header and environ variable) were half
    of an access line's cost; the line (``app.logs``) has the same fields either way.
    """

    def atoms(self, resp: Any, req: Any, environ: Any, request_time: Any) -> dict[str, Any]:
        """The atoms of ``app.logs.access_atoms``."""
        micros = request_time.seconds * 1_000_000 + request_time.microseconds
        return access_atoms(resp.status, getattr(resp, "sent", None), resp.headers,
                            environ, micros)


def cpu_limit() -> int:
    """Cores this container may use: the cgroup quota when there is one, else the CPUs."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            return max(1, round(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return len(os.sched_getaffinity(0)) or 1


_settings = load()
_server = _settings.server

bind = f"0.0.0.0:{_server.port}"
# The API waits on Redis and the database, not on the CPU: threads serve the waits.
worker_class = "gthread"
workers = _server.workers or 2 * cpu_limit() + 1
threads = _server.threads
# No request does slow work (that is the workers'), so 30 s means something hangs.
timeout = _server.timeout
graceful_timeout = _server.graceful_timeout
# Above the ingress's idle timeout, so the proxy closes idle connections, not gunicorn.
keepalive = _server.keepalive
# Off by default (gunicorn's default too). A replaced worker drops its kept-alive
# connections, and their clients reconnect to the workers still running: with clients
# that keep connections (an ingress's upstream pool), every replacement leaves
# one worker serving them all while the new one idles, until the next replacement moves
# them back. At 2000 requests a worker, that halved the API's throughput under steady
# load, with one core idle (docs/benchmarks.md). tfgen's caches are bounded
# (app/core/lru.py) and a worker's memory stays flat over a long run (bench_api prints
# it): set GUNICORN_MAX_REQUESTS only to contain a leak found in a library.
max_requests = _server.max_requests
max_requests_jitter = _server.max_requests_jitter
# The app is built once, in the master, and each worker forks from it: a worker replaced
# after max_requests serves at once instead of importing and building tfgen again (1-2 s
# of CPU each; under load a quarter of the API's CPU went there, docs/benchmarks.md).
# Safe because create_app connects to nothing (app/__init__.py).
preload_app = _server.preload
worker_tmp_dir = _server.worker_tmp_dir  # a tmpfs: the workers' heartbeat files
forwarded_allow_ips = _server.forwarded_allow_ips
limit_request_line = 4094
limit_request_fields = 100

_level = _settings.log.level.upper()
# The app's own format (json in prod, console elsewhere): one format for every line.
_format = _settings.log.format
accesslog = "-"
logger_class = AccessLogger
errorlog = "-"
loglevel = _level.lower()
logconfig_dict: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"structured": {"()": "app.logs.make_formatter", "fmt": _format}},
    "handlers": {
        "structured": {"class": "logging.StreamHandler", "formatter": "structured",
                       "stream": "ext://sys.stderr"},
    },
    "loggers": {
        "gunicorn.error": {"level": _level, "handlers": ["structured"], "propagate": False},
        # One JSON line per request (event "http.access"), with the correlation id.
        "gunicorn.access": {"level": "INFO", "handlers": ["structured"], "propagate": False},
    },
    # The app installs its own root handler (app.logs); none here, or lines would double.
    "root": {"level": _level, "handlers": []},
}


def on_starting(server: Any) -> None:
    """Metrics of an earlier run in this folder would count twice: empty it."""
    clear_multiprocess_dir()


def pre_fork(server: Any, worker: Any) -> None:
    """Freeze the preloaded app's objects out of the garbage collector's reach.

    A full collection walks every tracked object: with the app's ~125,000 it paused all
    of a worker's threads for ~80 ms, on average ~25 us of every submit (and its p99).
    Frozen objects are never walked, nor written to by a collection in the worker, so
    their pages also stay shared with the master (the gc module's advice for fork).
    """
    gc.freeze()


def post_worker_init(worker: Any) -> None:
    """Freeze the app a worker loaded itself (``GUNICORN_PRELOAD=0``); see ``pre_fork``."""
    gc.freeze()


def post_fork(server: Any, worker: Any) -> None:
    """A worker serves HTTP: it never waits on a Celery result (``never_wait_on_results``)."""
    from app import never_wait_on_results

    never_wait_on_results()


def child_exit(server: Any, worker: Any) -> None:
    """A worker that exits keeps its counters but drops its live gauges."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
