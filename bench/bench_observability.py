"""Cost of observability: one JSON log line, one /metrics scrape (with the Redis queue gauge).

Run: ``PYTHONPATH=. python bench/bench_observability.py`` (Redis on 127.0.0.1:6379 for the scrape).
Figures go to docs/benchmarks.md.
"""

from __future__ import annotations

import io
import tempfile
import time

from app import create_app
from app.logs import bind_job, configure_logging, get_logger, reset_context


def per_call(fn: object, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn()  # type: ignore[operator]
    return (time.perf_counter() - start) / n


def main() -> None:
    with tempfile.TemporaryDirectory() as var:
        app = create_app({"APP_ENV": "test", "TFGEN_VAR_DIR": var, "LOG_LEVEL": "WARNING",
                          "CELERY_BROKER_URL": "redis://127.0.0.1:6379/9",
                          "JOB_QUEUE": "bench-queue"})
        client = app.test_client()
        client.get("/metrics")
        scrape = per_call(lambda: client.get("/metrics"), 200)
        health = per_call(lambda: client.get("/health"), 500)
    configure_logging("INFO", "json", stream=io.StringIO())
    reset_context(correlation_id="bench")
    bind_job("00000000-0000-0000-0000-000000000000", "alice",
             {"cloud_id": "aws", "resource_type": "rds", "request_id": 42})
    log = get_logger("tfgen.bench")
    line = per_call(lambda: log.info("job.stage", stage="render", attempt=1), 20000)
    print(f"json log line with job context: {line * 1e6:.1f} us")
    print(f"GET /health (request metrics on): {health * 1e3:.2f} ms")
    print(f"GET /metrics (incl. Redis LLEN pipeline): {scrape * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
