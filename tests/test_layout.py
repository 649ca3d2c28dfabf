"""The layout's rules, checked on the source so that they stay true.

- domain code (``app/core``) imports no Flask, flask_restx or Celery;
- tasks never import the HTTP layer (``app.apis``);
- the HTTP layer never imports a publisher nor enqueues by name (it calls a task's
  ``submit()``);
- the names the API, the worker and beat share (task names, the correlation header) are
  spelled once;
- importing ``tasks`` builds no Flask app (``celery -A tasks`` binds it lazily).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def sources(*packages: str) -> Iterator[tuple[Path, ast.Module]]:
    for package in packages:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield path, ast.parse(path.read_text(), str(path))


def imported(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Every module an ``import`` or ``from ... import`` names (absolute imports only)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.lineno, node.module
            for alias in node.names:  # ``from app.core import publish``
                yield node.lineno, f"{node.module}.{alias.name}"


def under(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def offenders(packages: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return [f"{path.relative_to(ROOT)}:{line} imports {name}"
            for path, tree in sources(*packages)
            for line, name in imported(tree)
            if any(under(name, bad) for bad in forbidden)]


@pytest.mark.parametrize(("packages", "forbidden"), [
    (("app/core",), ("flask", "flask_restx", "celery")),
    (("tasks",), ("app.apis",)),
    (("app/apis",), ("app.core.publish", "celery", "kombu")),
])
def test_import_rules(packages: tuple[str, ...], forbidden: tuple[str, ...]) -> None:
    assert offenders(packages, forbidden) == []


def test_the_http_layer_enqueues_through_submit_never_by_name() -> None:
    calls = [f"{path.relative_to(ROOT)}:{node.lineno} .{node.func.attr}()"
             for path, tree in sources("app")
             for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and node.func.attr in {"send_task", "apply_async", "delay", "signature", "s"}]
    assert calls == []


def string_constants(*packages: str) -> list[tuple[Path, int, str]]:
    return [(path, node.lineno, node.value)
            for path, tree in sources(*packages)
            for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_task_and_header_names_are_spelled_once() -> None:
    from tasks import deliver as webhooks
    from tasks.deliver import deliver, fan_out
    from tasks.generate import generate
    from tasks.hooks import gitlab_hook
    from tasks.observe import CORRELATION_HEADER
    from tasks.periodic import reconcile, sweep

    # config/ too: beat's schedule names the periodic tasks.
    constants = string_constants("app", "tasks", "config")
    for name in (generate.name, gitlab_hook.name, fan_out.name, deliver.name,
                 reconcile.name, sweep.name, webhooks.sweep.name, CORRELATION_HEADER):
        places = [f"{path.relative_to(ROOT)}:{line}" for path, line, text in constants
                  if text == name]
        assert len(places) == 1, (name, places)


def test_importing_tasks_builds_no_flask_app() -> None:
    # A bare environment: building the app would need (and read) its settings.
    probe = ("import celery, tasks\n"
             "print(hasattr(celery.current_app._get_current_object(), 'flask_app'))\n"
             "print(sorted(tasks.__all__))\n")
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("APP_", "DATABASE_", "REDIS_", "CELERY_", "JOB_"))}
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.splitlines() == [
        "False", "['deliver', 'generate', 'hooks', 'observe', 'periodic']"]


MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def test_modules_and_functions_stay_small() -> None:
    """No module in app/, tasks/ or config/ over 400 lines, no function over 60.

    A module that grows past it holds several concerns: split it into a package whose
    module names say what each owns (``app/core/policy/``). A function past it does
    several steps: name them.
    """
    big = []
    for path, tree in sources("app", "tasks", "config"):
        name = path.relative_to(ROOT)
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            big.append(f"{name}: {lines} lines")
        big += [f"{name}:{node.lineno} {node.name}(): "
                f"{node.end_lineno - node.lineno + 1} lines"
                for node in ast.walk(tree)
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                and node.end_lineno is not None
                and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert big == []
