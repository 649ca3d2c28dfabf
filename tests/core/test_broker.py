"""The Redis broker transport keeps one client object per channel (app/core/broker.py)."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from celery import Celery
from kombu import Connection, Consumer, Exchange, Queue

from app import create_app
from app.core import broker
from tests.conftest import REDIS_URL, RUN_ID, RedisServer


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


def open_with_unacked(url: str, transport: str, name: str) -> tuple[Connection, Queue, Any]:
    """A connection as a worker holds one: a task message delivered and not acked on the
    default channel, the broadcast (fan-out) channel beside it, a BRPOP waiting."""
    conn = Connection(url, transport=transport, transport_options={"visibility_timeout": 1})
    tasks = Queue(name, Exchange(name), name)
    with conn.Producer() as producer:
        producer.publish({"job": 1}, exchange=tasks.exchange, routing_key=name,
                         declare=[tasks])
    delivered: list[Any] = []
    Consumer(conn.default_channel, [tasks], callbacks=[lambda _, m: delivered.append(m)],
             accept=["json"]).consume()
    broadcast = Queue(f"{name}-bcast", Exchange(f"{name}-bcast", type="fanout"),
                      auto_delete=True)
    Consumer(conn.channel(), [broadcast], callbacks=[lambda *_: None],
             accept=["json"]).consume()
    for _ in range(100):  # the message, then the task channel's next BRPOP waiting
        if delivered and conn.default_channel._in_poll:
            break
        with contextlib.suppress(socket.timeout):
            conn.drain_events(timeout=0.1)
    assert len(delivered) == 1 and conn.default_channel._in_poll
    return conn, tasks, delivered[0]


def test_a_lost_connection_ends_in_connection_errors_and_the_message_comes_back(
        tmp_path: Path) -> None:
    """kombu 5.7's teardown left the task channel open with its Connection detached; its
    close or a late ack then raised AttributeError, and the worker's main process exited."""
    server = RedisServer(tmp_path).start()
    try:
        conn, tasks, message = open_with_unacked(server.url, "app.core.broker:Transport", "t")
        server.stop()
        conn.collect(socket_timeout=2)  # what Celery does first after a lost connection
        conn.close()  # then this, ignoring connection errors: no AttributeError now
        with pytest.raises(conn.connection_errors):
            message.ack()  # the worker's hub acks what finished: a connection error, logged

        server.start()  # the AOF brings the message and its unacked entry back
        time.sleep(1.2)  # past the visibility timeout
        with Connection(server.url, transport="app.core.broker:Transport",
                        transport_options={"visibility_timeout": 1}) as again:
            again.default_channel.qos.restore_visible()
            back = tasks(again.default_channel).get(no_ack=True)
            assert back is not None and back.payload == {"job": 1}
    finally:
        server.stop()


def test_kombus_own_transport_still_needs_the_guard(tmp_path: Path) -> None:
    """When this fails, kombu has fixed its teardown: ``Channel._connparams`` can go."""
    server = RedisServer(tmp_path).start()
    try:
        conn, _, _ = open_with_unacked(server.url, "redis", "t")
        server.stop()
        conn.collect(socket_timeout=2)
        with pytest.raises(AttributeError, match="hostname"):
            conn.close()
    finally:
        server.stop()
