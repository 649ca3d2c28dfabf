"""``/health``, ``/ready``: probes for load balancers and Kubernetes (no auth)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from flask import Blueprint, current_app

from app.errors import PolicyError, TfgenError
from app.services import Services

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/health")
def health() -> dict[str, str]:
    """Alive while the process serves requests."""
    return {"status": "ok"}


@bp.get("/ready")
def ready() -> tuple[dict[str, Any], int]:
    """Ready when the job store/broker and the APEX database answer and the policies
    compile; 503 names which not."""
    svc: Services = current_app.extensions["tfgen"]
    checks: dict[str, str] = {}
    probes: list[tuple[str, Callable[[], object]]] = [
        ("jobs", svc.jobs.ping), ("database", svc.store.ping), ("broker", _ping_broker)]
    if svc.policies.enabled:
        probes.append(("policies", svc.policies.check))
    for name, ping in probes:
        try:
            ping()
            checks[name] = "ok"
        except PolicyError as e:
            checks[name] = f"{svc.policies.folder} does not compile: {e.message}"
        except (TfgenError, OSError) as e:
            # Unauthenticated: say what is down, never a driver's text (hosts, ports).
            log.warning("ready: %s unavailable: %s", name, getattr(e, "message", e))
            checks[name] = f"unavailable ({getattr(e, 'code', type(e).__name__)})"
    failing = sorted(k for k, v in checks.items() if v != "ok")
    body: dict[str, Any] = {"status": "ok" if not failing else "unavailable", "checks": checks}
    if failing:
        body["failing"] = failing
    return body, 200 if not failing else 503


def _ping_broker() -> None:
    celery = current_app.extensions["celery"]
    try:
        with celery.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as e:
        raise OSError(f"broker: {type(e).__name__}") from e
