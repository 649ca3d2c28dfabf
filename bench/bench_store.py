"""Job loads per second: the store's pool against a new connection per load.

Runs on SQLite (a temporary file) and PostgreSQL (a private schema in
``TFGEN_TEST_PG_URL``, default ``postgresql+psycopg://postgres@127.0.0.1:5432/test``,
dropped after). A "job load" is ``ApexStore.load`` of the demo ``aws/ec2`` request 7:
the request row joined with its template, then its two security-group rules.

    /work/main/.venv/bin/python -m bench.bench_store [--seconds 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa

from app.core.model import JobRequest
from app.core.store import ApexStore, StoreSettings
from app.demo import create_demo_database

PG_URL = os.environ.get("TFGEN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUEST = JobRequest("aws", "ec2", 7)


@contextmanager
def sqlite_apex() -> Iterator[str]:
    """A SQLite file with the demo schema."""
    with tempfile.TemporaryDirectory() as tmp:
        yield create_demo_database(f"sqlite:///{Path(tmp) / 'apex.sqlite'}")


@contextmanager
def postgres_apex() -> Iterator[str]:
    """A private PostgreSQL schema with the demo data, dropped afterwards."""
    schema = f"tfgen_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield create_demo_database(f"{PG_URL}?options=-csearch_path%3D{schema}")
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def loads_per_second(store: ApexStore, seconds: float, threads: int) -> float:
    """Run loads from ``threads`` threads for ``seconds``; return loads per second."""
    store.load(REQUEST)  # first connect, dialect initialisation, catalog
    counts = [0] * threads
    deadline = time.perf_counter() + seconds

    def run(i: int) -> None:
        while time.perf_counter() < deadline:
            store.load(REQUEST)
            counts[i] += 1

    start = time.perf_counter()
    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(counts) / (time.perf_counter() - start)


def main() -> None:
    """Print a Markdown table of loads/s per database and pool mode."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print("| database | connections | threads | job loads/s |")
    print("|---|---|---|---|")
    for name, apex in (("SQLite", sqlite_apex), ("PostgreSQL", postgres_apex)):
        with apex() as url:
            rates = {}
            for mode, pool_size in (("pool (5)", 5), ("new per load", 0)):
                store = ApexStore(StoreSettings(url, pool_size=pool_size, catalog_ttl=3600))
                try:
                    rates[mode] = loads_per_second(store, args.seconds, args.threads)
                finally:
                    store.dispose()
                print(f"| {name} | {mode} | {args.threads} | {rates[mode]:,.0f} |")
            print(f"| {name} | pool / new | | x{rates['pool (5)'] / rates['new per load']:.1f} |")


if __name__ == "__main__":
    main()
