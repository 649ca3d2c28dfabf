"""The HTTP server's part of the settings: Flask's body limit and gunicorn's processes.

``config/gunicorn_conf.py`` reads its values from here (``PORT``, ``GUNICORN_*``,
``FORWARDED_ALLOW_IPS``), so a malformed one stops the server naming it, as any other
setting does. The defaults suit one API pod.
"""

from __future__ import annotations

from config.settings.parts import Part, env

__all__ = ["ServerSettings"]


class ServerSettings(Part):
    """The HTTP side: request body limit (Flask's own ``MAX_CONTENT_LENGTH``) and gunicorn."""

    max_content_length: int = env("MAX_CONTENT_LENGTH", 1024 * 1024)
    port: int = env("PORT", 8000)
    #: None: 2 x the container's CPU limit + 1 (``gunicorn_conf.cpu_limit``).
    workers: int | None = env("GUNICORN_WORKERS", None)
    threads: int = env("GUNICORN_THREADS", 4)
    timeout: int = env("GUNICORN_TIMEOUT", 30)
    graceful_timeout: int = env("GUNICORN_GRACEFUL_TIMEOUT", 25)
    keepalive: int = env("GUNICORN_KEEPALIVE", 75)
    #: Replace a worker after this many requests (0: never; see config/gunicorn_conf.py).
    max_requests: int = env("GUNICORN_MAX_REQUESTS", 0)
    max_requests_jitter: int = env("GUNICORN_MAX_REQUESTS_JITTER", 200)
    worker_tmp_dir: str = env("GUNICORN_WORKER_TMP_DIR", "/dev/shm")  # noqa: S108 - tmpfs heartbeat
    forwarded_allow_ips: str = env("FORWARDED_ALLOW_IPS", "127.0.0.1")
    #: Build the app once in the master and fork the workers from it (0: each builds it).
    preload: bool = env("GUNICORN_PRELOAD", True)
