"""tfgen's API against the bare Flask+Celery endpoint, side by side in one run (issue #17).

Starts, in a temporary folder:

- a private ``redis-server`` on a free loopback port (no persistence; tfgen on DB 1, the
  baseline on DB 2), and the identity-provider stand-in of the tests (``tests/stubs/idp``)
  serving its JWKS;
- tfgen as production serves it: ``gunicorn -c config/gunicorn_conf.py manage:app`` with
  JSON logs (to a file), multiprocess metrics, OIDC tokens checked against that JWKS, a
  SQLite APEX schema with the demo catalog;
- ``bench/baseline_app.py`` (a route that writes a Redis key and calls ``send_task``; a
  route that reads the key back) under gunicorn with the same server settings: 2 workers
  x 4 threads, gthread, the same keep-alive, timeouts and max-requests (``server_args``).

Then drives both with ``wrk`` (Debian: ``apt-get install wrk``), 16 connections, in
alternated rounds: each round runs submit on both sides (the first side alternates),
then poll on both. Submit sends what APEX sends: a bearer token (one of 8 valid tokens,
so verification happens on every call), a JSON body and a unique ``Idempotency-Key``;
poll reads one of 16 jobs submitted before the rounds. Prints each round, then a
markdown table of medians over the rounds (throughput, p50, p99 and tfgen/bare ratios).

    /work/venv/bin/python -m bench.bench_api [--rounds 3] [--seconds 10] [--connections 16]
        [--profile DIR]   # py-spy raw stacks of tfgen's workers during its rounds
        [--tfgen-root DIR]  # serve tfgen from another checkout (a before/after comparison)
        [--pin 0/1]  # both servers on CPU 0; Redis, wrk and the IdP on CPU 1

Runs in about ``rounds x 4 x (seconds + 1) + 15`` s (3 x 10 s: ~2.5 min). Every process
it starts is stopped at the end, also on Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from app.demo import create_demo_database  # noqa: E402
from bench.procs import children, proc_stat  # noqa: E402
from config.settings import load  # noqa: E402
from tests.stubs.idp import IdentityProvider  # noqa: E402

WRK = shutil.which("wrk") or "/usr/bin/wrk"
BIN = Path(sys.executable).parent
BODY = json.dumps({"cloud_id": "aws", "resource_type": "rds", "request_id": 42,
                   "dry_run": False})
TOKENS = 8
POLLED_JOBS = 16


def server_args(env: dict[str, str]) -> list[str]:
    """The server settings config/gunicorn_conf.py takes from ``env``, as gunicorn flags.

    Given to both sides (tfgen gets them on top of its config file, which sets the same).
    """
    server = load(env).server
    return ["-k", "gthread", "--workers", str(server.workers), "--threads", str(server.threads),
            "--timeout", str(server.timeout), "--graceful-timeout", str(server.graceful_timeout),
            "--keep-alive", str(server.keepalive), "--max-requests", str(server.max_requests),
            "--max-requests-jitter", str(server.max_requests_jitter),
            "--worker-tmp-dir", server.worker_tmp_dir, "--no-control-socket"]

# wrk scripts. ``done`` prints one JSON line the bench parses.
_DONE = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\nRESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"errors": %d, "status_errors": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""

_SUBMIT = r"""
local tokens = {%(tokens)s}
local body = '%(body)s'
local path = '%(path)s'
local n = 0
local threads = 0
setup = function(thread)
  threads = threads + 1
  thread:set("tag", '%(run)s-' .. threads)
end
request = function()
  n = n + 1
  return wrk.format("POST", path, {
    ["Authorization"] = "Bearer " .. tokens[(n %% #tokens) + 1],
    ["Content-Type"] = "application/json",
    ["Idempotency-Key"] = tag .. "-" .. n,
  }, body)
end
"""

_POLL = r"""
local tokens = {%(tokens)s}
local paths = {%(paths)s}
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", paths[(n %% #paths) + 1], {
    ["Authorization"] = "Bearer " .. tokens[(n %% #tokens) + 1],
  })
end
"""


def free_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 60) -> None:
    """Wait until ``url`` answers anything over HTTP."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2):  # noqa: S310 - loopback
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


@dataclass
class Side:
    """One server under test: its name, base URL, routes and process."""

    name: str
    url: str
    submit_path: str
    poll_prefix: str
    proc: subprocess.Popen[bytes]
    poll_paths: list[str] | None = None


@contextlib.contextmanager
def started(cmd: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT
            ) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``cmd`` in its own process group; stop the group (TERM, then KILL) on exit."""
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=cwd, start_new_session=True)
    try:
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def tfgen_env(base: Path, redis_url: str, idp: IdentityProvider) -> dict[str, str]:
    """tfgen's production-like settings, in ``base``."""
    prom = base / "prometheus"
    prom.mkdir()
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("TFGEN_", "GUNICORN_"))},
        "APP_ENV": "test",
        "TFGEN_VAR_DIR": str(base / "var"),
        "DATABASE_URL": create_demo_database(f"sqlite:///{base / 'apex.sqlite'}"),
        "CELERY_BROKER_URL": f"{redis_url}/1",
        "JOB_QUEUE": "tfgen-bench",
        "PUBLISHER": "git",
        "GIT_REMOTE": str(base / "remote.git"),
        "AUTH_MODE": "oidc",
        "OIDC_ISSUER": idp.issuer,
        "OIDC_AUDIENCE": idp.audience,
        "OIDC_JWKS_URL": idp.jwks_url,
        "CLOUD_PERMISSIONS": json.dumps({"aws-users": ["aws"]}),
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "INFO",
        "PROMETHEUS_MULTIPROC_DIR": str(prom),
        "GUNICORN_WORKERS": "2",
        "GUNICORN_THREADS": "4",
    }


def submit_jobs(side: Side, token: str, count: int) -> list[str]:
    """Submit ``count`` jobs through ``side``; return their poll paths."""
    paths = []
    for _ in range(count):
        req = urllib.request.Request(  # noqa: S310 - loopback
            side.url + side.submit_path, data=BODY.encode(), method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json",
                     "Idempotency-Key": uuid.uuid4().hex})
        with urllib.request.urlopen(req, timeout=10) as answer:  # noqa: S310
            if answer.status != 202:
                raise SystemExit(f"{side.name}: submit answered {answer.status}")
            paths.append(side.poll_prefix + json.loads(answer.read())["uuid"])
    return paths


def lua_list(items: list[str]) -> str:
    return ", ".join(f"'{item}'" for item in items)


def tree_cpu(pid: int) -> float:
    """CPU seconds used by process ``pid``, its live children and the children it reaped."""
    total = sum(int(x) for x in proc_stat(pid)[11:15])  # utime stime cutime cstime
    total += sum(int(f[11]) + int(f[12]) for f in children(pid).values())
    return total / os.sysconf("SC_CLK_TCK")


def workers_rss(pid: int) -> dict[int, float]:
    """Resident memory (MB) of each live child of ``pid`` (gunicorn's workers)."""
    sizes = {}
    for child in children(pid):
        with contextlib.suppress(OSError, ValueError, KeyError):
            status = dict(line.split(":", 1) for line in Path(f"/proc/{child}/status")
                          .read_text().splitlines() if ":" in line)
            sizes[child] = int(status["VmRSS"].split()[0]) / 1024
    return sizes


def run_wrk(side: Side, kind: str, tokens: list[str], seconds: float, connections: int,
            base: Path) -> dict[str, float]:
    """One wrk run of ``kind`` (submit or poll) against ``side``; its figures."""
    if kind == "submit":
        script = _SUBMIT % {"tokens": lua_list(tokens), "body": BODY, "path": side.submit_path,
                            "run": uuid.uuid4().hex[:12]}
    else:
        script = _POLL % {"tokens": lua_list(tokens), "paths": lua_list(side.poll_paths or [])}
    path = base / f"{side.name}-{kind}.lua"
    path.write_text(script + _DONE)
    cpu = tree_cpu(side.proc.pid)
    out = subprocess.run(
        [WRK, "-t", "2", "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
         "--timeout", "10s", "-s", str(path), side.url],
        capture_output=True, text=True, check=True).stdout
    cpu = tree_cpu(side.proc.pid) - cpu
    line = next(x for x in out.splitlines() if x.startswith("RESULT "))
    r = json.loads(line.removeprefix("RESULT "))
    if r["errors"] or r["status_errors"]:
        raise SystemExit(f"{side.name} {kind}: {r['errors']} socket errors, "
                         f"{r['status_errors']} non-2xx answers\n{out}")
    return {"requests": r["requests"], "rps": r["requests"] / (r["duration_us"] / 1e6),
            "p50_ms": r["p50_us"] / 1000, "p99_ms": r["p99_us"] / 1000,
            "cpu_ms": 1000 * cpu / max(r["requests"], 1)}


@contextlib.contextmanager
def profiling(enabled: Path | None, side: Side, label: str) -> Iterator[None]:
    """py-spy raw stacks of ``side``'s workers meanwhile: threads holding the GIL."""
    if enabled is None or side.name != "tfgen":
        yield
        return
    out = enabled / f"{label}.txt"
    spy = subprocess.Popen(
        [str(BIN / "py-spy"), "record", "--pid", str(side.proc.pid), "--subprocesses",
         "--format", "raw", "--rate", "200", "--gil", "--nonblocking", "-o", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=30)
        except subprocess.TimeoutExpired:
            spy.kill()
            spy.wait()


def median(values: list[float]) -> float:
    return statistics.median(values)


def report(results: dict[tuple[str, str], list[dict[str, float]]], args: argparse.Namespace
           ) -> str:
    """The markdown table: medians over the rounds, and tfgen/bare ratios."""
    rows = ["| call | side | requests/s | p50 ms | p99 ms | server CPU ms/request |",
            "|---|---|---|---|---|---|"]
    ratios = []
    for kind in ("submit", "poll"):
        m = {side: {f: median([r[f] for r in results[(side, kind)]])
                    for f in ("rps", "p50_ms", "p99_ms", "cpu_ms")} for side in ("tfgen", "bare")}
        for side in ("tfgen", "bare"):
            rows.append(f"| {kind} | {side} | {m[side]['rps']:,.0f} | {m[side]['p50_ms']:.1f} | "
                        f"{m[side]['p99_ms']:.1f} | {m[side]['cpu_ms']:.2f} |")
        per_round = [t["rps"] / b["rps"] for t, b in
                     zip(results[("tfgen", kind)], results[("bare", kind)], strict=True)]
        ratios.append(
            f"| {kind} | {m['tfgen']['rps'] / m['bare']['rps']:.2f}x "
            f"({min(per_round):.2f}-{max(per_round):.2f}) | "
            f"{m['tfgen']['p50_ms'] / m['bare']['p50_ms']:.2f}x | "
            f"{m['tfgen']['p99_ms'] / m['bare']['p99_ms']:.2f}x | "
            f"{m['bare']['cpu_ms'] / m['tfgen']['cpu_ms']:.2f}x |")
    header = (f"{args.rounds} rounds x {args.seconds:g} s a side, {args.connections} "
              f"connections, wrk -t2; medians over the rounds.\n\n")
    if args.pin:
        header += (f"Both servers pinned to CPU {sorted(args.pin[0])}; Redis, wrk and the "
                   f"identity provider to CPU {sorted(args.pin[1])}.\n\n")
    return (header + "\n".join(rows) + "\n\n| call | tfgen/bare throughput (per round) | "
            "p50 | p99 | bare/tfgen CPU per request |\n|---|---|---|---|---|\n"
            + "\n".join(ratios) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--warmup", type=float, default=2, help="seconds per side and call")
    parser.add_argument("--profile", type=Path, help="folder for py-spy raw stacks of tfgen")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    parser.add_argument("--tfgen-root", type=Path, default=ROOT,
                        help="serve tfgen from this checkout (e.g. an older commit's files)")
    parser.add_argument("--pin", metavar="SERVERS/OTHERS", type=cpu_split,
                        help="CPU lists, e.g. 0/1: both gunicorns on the first, Redis, wrk "
                             "and the identity provider on the second")
    args = parser.parse_args()
    if args.pin:
        os.sched_setaffinity(0, args.pin[1])  # what this process starts inherits it
    if not Path(WRK).exists():
        raise SystemExit("wrk not found: apt-get install wrk")
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="bench-api-"))
    try:
        run(args, base)
    finally:
        if args.keep:
            print(f"kept {base}", file=sys.stderr)
        else:
            shutil.rmtree(base, ignore_errors=True)


def cpu_split(value: str) -> tuple[set[int], set[int]]:
    """``0/1`` or ``0,1/2-3``: the servers' CPUs and everything else's."""
    def cpus(text: str) -> set[int]:
        found: set[int] = set()
        for part in text.split(","):
            first, _, last = part.partition("-")
            found.update(range(int(first), int(last or first) + 1))
        return found
    servers, _, others = value.partition("/")
    return cpus(servers), cpus(others)


def pinned(args: argparse.Namespace, cmd: list[str]) -> list[str]:
    """``cmd`` on the servers' CPUs when ``--pin`` asks for it."""
    if not args.pin:
        return cmd
    return ["taskset", "-c", ",".join(map(str, sorted(args.pin[0]))), *cmd]


def run(args: argparse.Namespace, base: Path) -> None:
    redis_port, tfgen_port, bare_port = free_port(), free_port(), free_port()
    redis_url = f"redis://127.0.0.1:{redis_port}"
    with contextlib.ExitStack() as stack:
        stack.enter_context(started(
            ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(base)], dict(os.environ), base / "redis.log"))
        idp = stack.enter_context(IdentityProvider())
        env = tfgen_env(base, redis_url, idp)
        args.server_args = server_args(env)
        tfgen = Side("tfgen", f"http://127.0.0.1:{tfgen_port}", "/api/v1/terraform/generate",
                     "/api/v1/uuid/", stack.enter_context(started(
                         pinned(args, [str(BIN / "gunicorn"), "-c", "config/gunicorn_conf.py",
                                       "-b", f"127.0.0.1:{tfgen_port}", *args.server_args,
                                       "manage:app"]),
                         env, base / "tfgen.log", cwd=args.tfgen_root)))
        bare_env = {**os.environ, "BASELINE_REDIS_URL": f"{redis_url}/2"}
        bare = Side("bare", f"http://127.0.0.1:{bare_port}", "/submit", "/job/",
                    stack.enter_context(started(
                        pinned(args, [str(BIN / "gunicorn"), "-b", f"127.0.0.1:{bare_port}",
                                      *args.server_args, "bench.baseline_app:app"]),
                        bare_env, base / "bare.log")))
        wait_http(tfgen.url + "/health")
        wait_http(bare.url + "/job/none")
        tokens = [idp.mint(exp=int(time.time()) + 3600, jti=uuid.uuid4().hex)
                  for _ in range(TOKENS)]
        for side in (tfgen, bare):
            side.poll_paths = submit_jobs(side, tokens[0], POLLED_JOBS)
        sides = (tfgen, bare)
        for kind in ("submit", "poll"):  # warm both: imports, pools, JWKS, catalog
            for side in sides:
                run_wrk(side, kind, tokens, args.warmup, args.connections, base)
        rss_before = workers_rss(tfgen.proc.pid)
        results: dict[tuple[str, str], list[dict[str, float]]] = {
            (s.name, k): [] for s in sides for k in ("submit", "poll")}
        print(f"{'round':>5} {'call':<7} {'side':<6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} "
              f"{'CPU ms':>7}", flush=True)
        for n in range(args.rounds):
            order = sides if n % 2 == 0 else sides[::-1]
            for kind in ("submit", "poll"):
                for side in order:
                    with profiling(args.profile, side, f"{kind}-{n}"):
                        r = run_wrk(side, kind, tokens, args.seconds, args.connections, base)
                    results[(side.name, kind)].append(r)
                    print(f"{n + 1:>5} {kind:<7} {side.name:<6} {r['rps']:>8.0f} "
                          f"{r['p50_ms']:>8.1f} {r['p99_ms']:>8.1f} {r['cpu_ms']:>7.2f}",
                          flush=True)
        rss_after = workers_rss(tfgen.proc.pid)
        served = sum(r["requests"] for (name, _), rs in results.items() if name == "tfgen"
                     for r in rs)
        kept = sorted(set(rss_before) & set(rss_after))
        print("\ntfgen's workers, resident MB before -> after the rounds ("
              f"{served:,} requests; {len(kept)} of {len(rss_after)} the same processes): "
              + ", ".join(f"{rss_before[p]:.0f} -> {rss_after[p]:.0f}" for p in kept))
        audits = sum(1 for line in (base / "tfgen.log").open(errors="replace")
                     if '"audit.submit"' in line)
        print(f"\ntfgen wrote {audits} audit.submit lines; its log: "
              f"{(base / 'tfgen.log').stat().st_size / 1e6:.1f} MB\n")
        print(report(results, args))


if __name__ == "__main__":
    main()
