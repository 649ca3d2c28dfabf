"""Where tfgen's API workers spend their time: shares of py-spy raw stacks by concern.

``bench/bench_api.py --profile DIR`` records ``DIR/<call>-<round>.txt`` (py-spy
``--format raw``: one ``frame;frame;... count`` line per distinct stack, the gunicorn
workers' busy threads only). This sums each file's samples into the buckets below (a
stack counts for the first bucket one of its frames matches) and prints the shares.

    /work/venv/bin/python -m bench.profile_shares DIR/submit-0.txt [...] [--top 25]
"""

from __future__ import annotations

import argparse
import collections
import re
from pathlib import Path

#: (bucket, frame pattern), first match wins: outer concerns before the ones they call.
BUCKETS: tuple[tuple[str, str], ...] = (
    ("worker boot (imports, create_app)", r"_find_and_load|load_wsgi|create_app"),
    ("token verification", r"TokenVerifier\.verify|current_principal"),
    ("celery: task-sent event", r"EventDispatcher\.(publish|send)"),
    ("celery: publish task", r"send_task|send_task_message"),
    ("job store: create", r"RedisJobStore\.create|_create_once"),
    ("job store: get / expiry", r"RedisJobStore\.get|expire_overdue|JobRecord\.from_fields"),
    ("catalog check", r"require_pair"),
    ("audit / app log lines", r"audit \(|bind_job|reset_context"),
    ("access log line", r"Logger\.access|glogging"),
    ("metrics", r"count_request|start_timer|prometheus_client|Counter\.inc"),
    ("restx validation", r"Namespace\.payload|validate_payload|jsonschema"),
    ("job document / JSON out", r"JobRecord\.document|make_response|json.*dumps|output_json"),
    ("JSON in", r"get_json|StrictJSONProvider"),
    ("correlation id, body limits", r"take_correlation_id|refuse_large_body|give_correlation"),
    ("HTTP parsing / gunicorn I/O", r"gunicorn/http|gthread\.py.*(handle|accept|enqueue)"),
)


def shares(path: Path) -> tuple[int, collections.Counter[str], collections.Counter[str]]:
    """Total samples, samples per bucket, self samples per function."""
    buckets: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    total = 0
    compiled = [(name, re.compile(p)) for name, p in BUCKETS]
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = stack.split(";")
        if len(frames) < 3:
            continue  # the master's own loop
        total += n
        leaves[frames[-1]] += n
        for name, pattern in compiled:
            if any(pattern.search(f) for f in frames):
                buckets[name] += n
                break
        else:
            buckets["other (Flask, werkzeug, gunicorn)"] += n
    return total, buckets, leaves


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=15, help="self-time functions to list")
    args = parser.parse_args()
    for path in args.files:
        total, buckets, leaves = shares(path)
        print(f"\n{path} ({total} samples)\n\n| concern | share |\n|---|---|")
        for name, n in buckets.most_common():
            print(f"| {name} | {100 * n / max(total, 1):.1f}% |")
        print("\nself time:")
        for name, n in leaves.most_common(args.top):
            print(f"  {100 * n / max(total, 1):5.1f}%  {name}")


if __name__ == "__main__":
    main()
