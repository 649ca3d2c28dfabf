"""Whole jobs per second: API submit -> real Celery worker -> publish, end to end.

Each run submits N jobs (fifty distinct aws/rds requests, then repeats, which publish
nothing new) through the API in-process, with one prefork worker of 2 processes, and
waits for all of them to end. Variants:

- ``redis-git``: Redis broker and job store, the git publisher on a local bare remote;
- ``embedded-git``: Celery's ``filesystem://`` queue and SQLite job records (the demo);
- ``redis-gitlab``: Redis, the GitLab publisher against the loopback stand-in.

    /work/main/.venv/bin/python -m bench.bench_jobs [--jobs 100] [--variants redis-git,...]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from app.core.jobs import parse_time
from tests.conftest import Stack, Worker, sqlite_apex, stack_env
from tests.stubs.gitlab_server import GitLabStub
from tests.test_gitlab_jobs import EXTRA_IDS, add_requests, gitlab_env

VARIANTS = ("redis-git", "embedded-git", "redis-gitlab")


def environment(variant: str, base: Path, stub: GitLabStub) -> dict[str, str]:
    """Settings of one variant, in a fresh folder."""
    name = f"bench-{uuid.uuid4().hex[:6]}"
    if variant == "redis-gitlab":
        return gitlab_env(base, stub, name)
    database_url = sqlite_apex(base / "apex.sqlite")
    add_requests(database_url)
    env = stack_env(base, database_url, name)
    if variant == "embedded-git":
        for key in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "JOB_STORE_URL"):
            del env[key]
    return env


def run(variant: str, jobs: int, stub: GitLabStub) -> dict[str, float]:
    """Submit ``jobs`` jobs and return throughput and latency figures."""
    with tempfile.TemporaryDirectory() as tmp:
        stack = Stack(environment(variant, Path(tmp), stub))
        stack.worker = Worker(stack.env, concurrency=2).start()
        try:
            ids = [EXTRA_IDS[i % len(EXTRA_IDS)] for i in range(jobs)]
            headers = stack.auth("alice")  # minted once, as a client would
            started = time.perf_counter()
            uuids = [stack.client.post("/api/v1/terraform/generate", headers=headers, json={
                "cloud_id": "aws", "resource_type": "rds", "request_id": i}).json["uuid"]
                for i in ids]
            submitted = time.perf_counter()
            docs = [stack.wait(u, timeout=600) for u in uuids]
            ended = time.perf_counter()
        finally:
            stack.close()
    failed = [d for d in docs if d["status"] != "SUCCESS"]
    if failed:
        raise SystemExit(f"{variant}: {len(failed)} jobs did not succeed: {failed[0]['error']}")
    latencies = [(parse_time(d["finished_at"]) - parse_time(d["submitted_at"])).total_seconds()
                 for d in docs]
    return {
        "submit_per_s": jobs / (submitted - started),
        "jobs_per_s": jobs / (ended - started),
        "p50_s": statistics.median(latencies),
        "p95_s": statistics.quantiles(latencies, n=20)[18],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    print(f"{'variant':<14} {'jobs':>5} {'submits/s':>10} {'jobs/s':>8} {'p50 s':>7} {'p95 s':>7}")
    with GitLabStub() as stub:
        stub.add_user("alice", "glpat-demo-alice-not-a-real-token")
        stub.add_user("tfgen-bot", "glpat-service-tfgen-bot-0123456789")
        stub.add_project("platform/infra-live",
                         members={"alice": "developer", "tfgen-bot": "developer"})
        for variant in args.variants.split(","):
            r = run(variant, args.jobs, stub)
            print(f"{variant:<14} {args.jobs:>5} {r['submit_per_s']:>10.0f} "
                  f"{r['jobs_per_s']:>8.1f} {r['p50_s']:>7.2f} {r['p95_s']:>7.2f}", flush=True)


if __name__ == "__main__":
    main()
