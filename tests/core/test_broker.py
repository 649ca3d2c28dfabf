"""The Redis broker transport keeps one client object per channel (app/core/broker.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from celery import Celery

from app import create_app
from app.core import broker
from tests.conftest import REDIS_URL, RUN_ID


def celery_for(tmp_path: Path, broker_url: str, queue: str) -> Celery:
    app = create_app({"APP_ENV": "test", "TFGEN_VAR_DIR": str(tmp_path),
                      "CELERY_BROKER_URL": broker_url, "JOB_QUEUE": queue})
    celery: Celery = app.extensions["celery"]
    return celery


@pytest.mark.parametrize(("url", "transport"), [
    ("redis://127.0.0.1:6379/9", "app.core.broker:Transport"),
    ("rediss://127.0.0.1:6380/9", None),  # kombu's own: its scheme check wants TLS options
    ("filesystem://", None),
])
def test_redis_brokers_get_the_kept_client_transport(tmp_path: Path, url: str,
                                                     transport: str | None) -> None:
    app = create_app({"APP_ENV": "test", "TFGEN_VAR_DIR": str(tmp_path),
                      "CELERY_BROKER_URL": url})
    assert app.config["CELERY"].get("broker_transport") == transport


def test_publishes_reuse_one_client_per_pool_and_every_message_lands(
        tmp_path: Path, redis_client: redis.Redis) -> None:
    queue = f"tfgen-test-{RUN_ID}-broker"
    celery = celery_for(tmp_path, REDIS_URL, queue)
    try:
        with celery.producer_or_acquire() as producer:
            channel = producer.channel
            assert isinstance(channel, broker.Channel)
            clients = set()
            for n in range(3):
                celery.send_task("tfgen.generate", args=[f"job-{n}"], queue=queue,
                                 producer=producer)
                clients.add(id(channel._kept_client))
            assert len(clients) == 1, "a client object was built per publish"
            first = channel._kept_client
            assert first.connection_pool is channel.pool

            channel._disconnect_pools()  # what kombu does on a connection error
            celery.send_task("tfgen.generate", args=["job-3"], queue=queue,
                             producer=producer)
            assert channel._kept_client is not first
            assert channel._kept_client.connection_pool is channel.pool
        assert redis_client.llen(queue) == 4
    finally:
        redis_client.delete(queue)
        celery.close()
