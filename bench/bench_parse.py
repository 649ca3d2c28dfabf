"""HCL parse cost, isolated vs in-process: ``python bench/bench_parse.py``.

Side by side on the demo templates' output: HashiCorp's parser in this process (the
old way, which a fatal Go error takes down), ``Validator.parse`` (the parser in a child
process kept between parses, as jobs run it now), a new child for every parse, and a
bracket-depth scan (what a size/depth guard before an in-process parse would cost).
Copy the figures to ``docs/benchmarks.md`` under "HCL parse".
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from app.core.model import RenderedFile
from app.core.render import Renderer
from app.core.validate import Validator
from bench.bench_render import cases


def depth_scan(text: str) -> int:
    """Deepest bracket nesting outside quoted strings (a guard's minimum work)."""
    depth = deepest = 0
    quoted = escaped = False
    for char in text:
        if quoted:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                quoted = False
        elif char == '"':
            quoted = True
        elif char in "[{(":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]})":
            depth -= 1
    return deepest


def per_call_ms(fn: Callable[[], object], seconds: float = 2.0) -> float:
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        fn()
        count += 1
    return (time.perf_counter() - start) / count * 1000


def main() -> None:
    import pygohcl

    renderer = Renderer()
    files = [RenderedFile(f"{t.cloud_id}-{t.resource_type}.tf", renderer.render(t, r))
             for t, r in cases()]
    validator = Validator()
    size = sum(len(f.content) for f in files)
    print(f"{len(files)} files, {size} characters per job")
    rows = {
        "in-process pygohcl (baseline)": lambda: [pygohcl.loads(f.content) for f in files],
        "Validator.parse (kept child)": lambda: validator.parse(files),
        "a new child per parse": lambda: Validator().parse(files),
        "depth scan (a guard alone)": lambda: [depth_scan(f.content) for f in files],
    }
    for name, fn in rows.items():
        print(f"{name:32} {per_call_ms(fn):8.3f} ms/job")

if __name__ == "__main__":
    main()
