"""gunicorn settings for production: ``gunicorn -c config/gunicorn_conf.py manage:app``.

Every value can be overridden from the environment (``GUNICORN_*``, ``PORT``); the
defaults suit one API pod. Logs, access log included, are structured lines from
``app.logs`` (``LOG_FORMAT``, ``LOG_LEVEL``). With ``PROMETHEUS_MULTIPROC_DIR`` set the
workers share their metrics through that folder, emptied when the server starts.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # the config is read before gunicorn changes directory
    sys.path.insert(0, str(ROOT))

from app.metrics import clear_multiprocess_dir, multiprocess_dir  # noqa: E402


def cpu_limit() -> int:
    """Cores this container may use: the cgroup quota when there is one, else the CPUs."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            return max(1, round(int(quota) / int(period)))
    except (OSError, ValueError):
        pass
    return len(os.sched_getaffinity(0)) or 1


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    return int(raw) if raw.strip() else default


bind = f"0.0.0.0:{_env_int('PORT', 8000)}"
# The API waits on Redis and the database, not on the CPU: threads serve the waits.
worker_class = "gthread"
workers = _env_int("GUNICORN_WORKERS", 2 * cpu_limit() + 1)
threads = _env_int("GUNICORN_THREADS", 4)
# No request does slow work (that is the workers'), so 30 s means something hangs.
timeout = _env_int("GUNICORN_TIMEOUT", 30)
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 25)
# Above the ingress's idle timeout, so the proxy closes idle connections, not gunicorn.
keepalive = _env_int("GUNICORN_KEEPALIVE", 75)
max_requests = _env_int("GUNICORN_MAX_REQUESTS", 2000)
max_requests_jitter = _env_int("GUNICORN_MAX_REQUESTS_JITTER", 200)
worker_tmp_dir = os.environ.get("GUNICORN_WORKER_TMP_DIR", "/dev/shm")  # noqa: S108 - tmpfs heartbeat
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")
limit_request_line = 4094
limit_request_fields = 100

_level = os.environ.get("LOG_LEVEL", "INFO").upper()
# The app's own default (config/settings/): one format for every line of the process.
_format = os.environ.get("LOG_FORMAT") or (
    "json" if os.environ.get("APP_ENV", "dev") == "prod" else "console")
accesslog = "-"
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


def child_exit(server: Any, worker: Any) -> None:
    """A worker that exits keeps its counters but drops its live gauges."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
