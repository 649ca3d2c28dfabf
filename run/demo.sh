#!/usr/bin/env bash
# One whole tfgen job, end to end, on the embedded defaults: no server to install.
#
#   bash run/demo.sh            # request aws/rds/42 as alice
#   bash run/demo.sh azure vm 101
#
# It creates .venv (unless TFGEN_VENV names one), a SQLite APEX schema with demo data,
# a bare git repository with a `main` branch as the remote, then starts the API
# (gunicorn) and one Celery worker on the filesystem queue, mints a dev token, submits
# the job over HTTP, polls it, prints the job document and the commit. Then it merges
# the branch into main in the local remote, as a reviewer would, and shows the request
# go published -> merged: `celery -A tasks beat` runs the reconciler every
# RECONCILE_INTERVAL (2 s here), which finds the branch inside main. It stops what it
# started. Everything it writes lives under var/demo (TFGEN_VAR_DIR), wiped at each run.
set -euo pipefail

cloud=${1:-aws}
rtype=${2:-rds}
request_id=${3:-42}
user=${DEMO_USER:-alice}
groups=${DEMO_GROUPS:-aws-admins,azure-admins}

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
venv=${TFGEN_VENV:-$root/.venv}
var=${TFGEN_VAR_DIR:-$root/var/demo}
if [ -t 2 ]; then
  say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
else
  say() { printf '==> %s\n' "$*" >&2; }
fi

if [ ! -x "$venv/bin/python" ]; then
  say "creating $venv"
  python3 -m venv "$venv"
fi
stamp="$venv/.tfgen-requirements.sha256"
want=$(sha256sum requirements.txt | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing requirements.txt (once)"
  "$venv/bin/pip" install -q --disable-pip-version-check -r requirements.txt
  echo "$want" >"$stamp"
fi
export PATH="$venv/bin:$PATH"

export APP_ENV=dev AUTH_MODE=dev TFGEN_VAR_DIR="$var" LOG_LEVEL=${LOG_LEVEL:-WARNING}
# The starter policies (docs/policies.md): the demo requests each trip one warning.
export POLICY_DIR=${POLICY_DIR:-$root/policies}
export RECONCILE_INTERVAL=${RECONCILE_INTERVAL:-2}
unset CELERY_BROKER_URL CELERY_RESULT_BACKEND DATABASE_URL JOB_STORE_URL GIT_REMOTE PUBLISHER
rm -rf "$var"
mkdir -p "$var"

say "APEX schema with demo data in $var/apex.sqlite, bare git remote $var/remote.git (main)"
python manage.py init-db --demo >&2

port=$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
api="http://127.0.0.1:$port"
pids=()
stop() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap stop EXIT

say "starting the API on $api, one Celery worker and celery beat (logs in $var/*.log)"
gunicorn --bind "127.0.0.1:$port" --workers 2 manage:app >"$var/api.log" 2>&1 &
pids+=($!)
celery -A tasks worker --concurrency 1 --loglevel "$LOG_LEVEL" >"$var/worker.log" 2>&1 &
pids+=($!)
celery -A tasks beat --loglevel "$LOG_LEVEL" -s "$var/celerybeat-schedule" >"$var/beat.log" 2>&1 &
pids+=($!)

for _ in $(seq 1 100); do
  curl -fsS "$api/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "$api/ready" >/dev/null || { say "the API did not get ready; see $var/api.log"; exit 1; }

token=$(python manage.py token --user "$user" --groups "$groups" 2>/dev/null)
body=$(printf '{"cloud_id": "%s", "resource_type": "%s", "request_id": %s}' "$cloud" "$rtype" "$request_id")
say "POST /api/v1/terraform/generate $body"
answer=$(curl -sS -X POST "$api/api/v1/terraform/generate" \
  -H "Authorization: Bearer $token" -H "Content-Type: application/json" -d "$body" \
  -w '\n%{http_code}')
status=${answer##*$'\n'}
answer=${answer%$'\n'*}
echo "$answer" | jq . >&2
[ "$status" = 202 ] || { say "expected 202, got $status"; exit 1; }
location=$(echo "$answer" | jq -r .links.self)

say "polling GET $location"
last=""
for _ in $(seq 1 300); do
  doc=$(curl -fsS "$api$location" -H "Authorization: Bearer $token")
  now=$(echo "$doc" | jq -r '"\(.status) \(.stage)"')
  [ "$now" != "$last" ] && say "  $now" && last=$now
  case "$now" in SUCCESS*|FAILURE*|REVOKED*) break ;; esac
  sleep 0.2
done

echo "$doc" | jq .
final=$(echo "$doc" | jq -r .status)
if [ "$final" != SUCCESS ]; then
  say "job ended $final; worker log: $var/worker.log"
  exit 1
fi
say "policy report (POLICY_DIR=$POLICY_DIR):"
echo "$doc" | jq -r '.result.policy | "  \(.summary)", (.warnings[] | "  warning \(.rule): \(.msg)")' >&2
branch=$(echo "$doc" | jq -r .result.branch)
say "the commit on $branch in the local remote:"
git --git-dir "$var/remote.git" log --stat -1 "$branch" >&2
say "see it again with: git --git-dir $var/remote.git log -p $branch"

request="$api/api/v1/requests/$cloud/$rtype/$request_id"
state() { curl -fsS "$request" -H "Authorization: Bearer $token" | jq -r .state; }
say "the request is $(state): GET /api/v1/requests/$cloud/$rtype/$request_id"
say "a reviewer merges $branch into main in the local remote"
work="$var/review"
git clone -q "$var/remote.git" "$work"
git -C "$work" -c user.name=reviewer -c user.email=reviewer@localhost \
  merge -q --no-ff "origin/$branch" -m "Merge branch '$branch' into 'main'"
git -C "$work" push -q origin main
rm -rf "$work"
say "waiting for the reconciler (celery beat, every ${RECONCILE_INTERVAL}s) to notice"
now=$(state)
for _ in $(seq 1 150); do
  [ "$now" = merged ] && break
  sleep 0.2
  now=$(state)
done
curl -fsS "$request" -H "Authorization: Bearer $token" | jq '{state, branch, history}' >&2
[ "$now" = merged ] || { say "the request stayed $now; beat log: $var/beat.log"; exit 1; }
say "request $cloud/$rtype/$request_id: published -> merged"
say "its events (GET /api/v1/events):"
curl -fsS "$api/api/v1/events?limit=100" -H "Authorization: Bearer $token" \
  | jq -r --argjson id "$request_id" '.events[] | select(.request_id == $id) | "  \(.id) \(.type)"' >&2
