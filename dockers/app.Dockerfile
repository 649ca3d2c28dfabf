# tfgen API: gunicorn serving manage:app. Build from the repository root:
#   docker build -f dockers/app.Dockerfile -t tfgen-app .
# oracledb runs in thin mode: no Oracle Instant Client in the image.
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /build
COPY requirements.txt .
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-compile -r requirements.txt

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APP_ENV=prod \
    LOG_FORMAT=json \
    PORT=8000 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus \
    TFGEN_VAR_DIR=/tmp/tfgen
RUN groupadd --system --gid 10001 tfgen \
    && useradd --system --uid 10001 --gid tfgen --home-dir /app --shell /usr/sbin/nologin tfgen \
    && install -d -o 10001 -g 10001 /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY --chown=root:root manage.py pyproject.toml ./
COPY --chown=root:root app ./app
COPY --chown=root:root config ./config
COPY --chown=root:root swagger ./swagger
COPY --chown=root:root policies ./policies
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('PORT', '8000')}/health\", timeout=2)"]
CMD ["gunicorn", "-c", "config/gunicorn_conf.py", "manage:app"]
