"""A database outage during a job: DATABASE_UNAVAILABLE, retried by the task, then done.

A real worker reaches PostgreSQL through a loopback relay that the test cuts and
restores; nothing in tfgen is patched.
"""

from __future__ import annotations

from pathlib import Path

import redis
import sqlalchemy as sa

from tests.conftest import Stack, Worker, stack_env
from tests.core.store.test_apex import Proxy


def test_a_job_retries_through_a_database_outage(
    tmp_path: Path, redis_client: redis.Redis, pg_url: str
) -> None:
    url = sa.make_url(pg_url)
    proxy = Proxy((url.host or "127.0.0.1", url.port or 5432)).start()
    proxied = url.set(port=proxy.port).render_as_string(hide_password=False)
    env = stack_env(tmp_path, proxied, f"dbretry-{proxy.port}")
    env["DATABASE_CONNECT_TIMEOUT"] = "2"
    s = Stack(env)
    try:
        r = s.submit({"cloud_id": "aws", "resource_type": "ec2", "request_id": 7})
        assert r.status_code == 202  # the API read the catalog through the relay
        job_uuid = r.json["uuid"]
        proxy.cut()
        s.worker = Worker(env, concurrency=1).start()
        doc = s.wait(job_uuid, until=lambda d: d["status"] in {"RETRY", "SUCCESS", "FAILURE"})
        assert doc["status"] == "RETRY", doc
        assert doc["error"]["code"] == "DATABASE_UNAVAILABLE"
        assert doc["error"]["retryable"] is True
        proxy.start()
        doc = s.wait(job_uuid)
        assert doc["status"] == "SUCCESS", doc
        assert doc["attempts"] >= 2
        assert any(st.get("code") == "DATABASE_UNAVAILABLE" for st in doc["stages"]
                   if st["stage"] == "retry")
    finally:
        s.close()
        proxy.cut()
