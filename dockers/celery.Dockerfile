# tfgen Celery worker: `celery -A tasks worker` on JOB_QUEUE (the default queue).
#   docker build -f dockers/celery.Dockerfile -t tfgen-celery .
# oracledb runs in thin mode: no Oracle Instant Client. git is here for PUBLISHER=git.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY requirements.txt .
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-compile -r requirements.txt

FROM ${PYTHON_IMAGE}
# WORKER_CONCURRENCY: prefork processes, 4 per CPU core given to the container
# (README "Sizing workers", kube/configmap.yaml).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APP_ENV=prod \
    LOG_FORMAT=json \
    WORKER_METRICS_PORT=9808 \
    WORKER_CONCURRENCY=4 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus \
    TFGEN_VAR_DIR=/tmp/tfgen
# git follows the base image's Debian release (bookworm); its security updates come
# with a rebuild, so the package is not pinned to a point version here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tfgen \
    && useradd --system --uid 10001 --gid tfgen --home-dir /app --shell /usr/sbin/nologin tfgen \
    && install -d -o 10001 -g 10001 /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=root:root manage.py pyproject.toml ./
COPY --chown=root:root app ./app
COPY --chown=root:root config ./config
COPY --chown=root:root tasks ./tasks
COPY --chown=root:root swagger ./swagger
COPY --chown=root:root policies ./policies
USER 10001:10001
EXPOSE 9808
# The main process serves the pool's metrics: it answers while the worker lives.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ['WORKER_METRICS_PORT']}/metrics\", timeout=4)"]
# Warm shutdown on SIGTERM finishes running tasks (late ack re-queues what is cut off).
STOPSIGNAL SIGTERM
CMD ["sh", "-c", "exec celery -A tasks worker --loglevel=\"${LOG_LEVEL:-INFO}\" --concurrency=\"${WORKER_CONCURRENCY}\" --prefetch-multiplier=1 --max-tasks-per-child=200 --without-gossip --without-mingle"]
