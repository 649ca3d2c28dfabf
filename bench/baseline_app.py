"""The least code that does tfgen's API I/O: the bare endpoint ``bench/bench_api.py`` compares with.

``POST /submit`` writes one Redis key and calls Celery's ``send_task`` on the same Redis
broker; ``GET /job/<uuid>`` reads the key back. No token, no validation, no metrics, no
logs, Celery's default settings: what any Flask+Celery service pays at the least.

    BASELINE_REDIS_URL=redis://127.0.0.1:6379/2 gunicorn -k gthread -w 2 --threads 4 \
        bench.baseline_app:app
"""

from __future__ import annotations

import json
import os
import uuid

import redis
from celery import Celery
from flask import Flask, Response, request

REDIS_URL = os.environ.get("BASELINE_REDIS_URL", "redis://127.0.0.1:6379/2")
QUEUE = os.environ.get("BASELINE_QUEUE", "baseline")

app = Flask(__name__)
store = redis.Redis.from_url(REDIS_URL)
celery = Celery("baseline", broker=REDIS_URL)


@app.post("/submit")
def submit() -> tuple[dict[str, str], int]:
    """Write the job's key, enqueue its task, answer 202."""
    body = request.get_json()
    job_uuid = str(uuid.uuid4())
    store.set(f"baseline:job:{job_uuid}", json.dumps({"status": "PENDING", "request": body}),
              ex=3600)
    celery.send_task("tfgen.generate", args=[job_uuid], task_id=job_uuid, queue=QUEUE)
    return {"uuid": job_uuid, "status": "PENDING"}, 202


@app.get("/job/<job_uuid>")
def poll(job_uuid: str) -> Response | tuple[dict[str, str], int]:
    """Read the job's key back."""
    data = store.get(f"baseline:job:{job_uuid}")
    if data is None:
        return {"message": "no such job"}, 404
    return Response(data, content_type="application/json")
