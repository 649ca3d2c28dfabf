#!/usr/bin/env bash
# The test command: starts Redis when none answers on 127.0.0.1:6379 and a private
# PostgreSQL when none answers at TFGEN_TEST_PG_URL (and initdb/pg_ctl are installed),
# then runs pytest. Extra arguments go to pytest (e.g. `bash run/test.sh tests/apis -x`).
# Without any PostgreSQL the tests that need one are skipped, each saying why, unless
# TFGEN_REQUIRE_ALL=1 (CI sets it): then a missing server fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${TFGEN_VENV:-.venv}
if [ ! -x "$venv/bin/pytest" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r requirements-dev.txt
fi
py="$venv/bin/python"

mkdir -p var
redis_up() { "$py" -c 'import redis; redis.Redis(port=6379, socket_timeout=1).ping()' 2>/dev/null; }
if ! redis_up; then
  command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
  echo "starting redis-server on 127.0.0.1:6379 (no persistence)" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --logfile "$PWD/var/redis-ci.log" --dir /tmp
  for _ in $(seq 1 50); do redis_up && break; sleep 0.1; done
  redis_up || { echo "redis-server did not answer" >&2; exit 1; }
fi

export TFGEN_TEST_PG_URL=${TFGEN_TEST_PG_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}
pg_up() {
  "$py" - "$TFGEN_TEST_PG_URL" <<'PY' 2>/dev/null
import sys, sqlalchemy as sa
sa.create_engine(sys.argv[1], connect_args={"connect_timeout": 2}).connect().close()
PY
}

pg_dir=""
stop_pg() { [ -n "$pg_dir" ] && as_pg pg_ctl -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1; rm -rf "$pg_dir"; }
as_pg() {  # initdb and postgres refuse to run as root: use the postgres account then
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
start_private_pg() {
  command -v initdb >/dev/null && command -v pg_ctl >/dev/null || { skip_why="initdb/pg_ctl are not installed"; return 1; }
  if [ "$(id -u)" = 0 ] && ! id postgres >/dev/null 2>&1; then
    skip_why="running as root and there is no postgres account for initdb"; return 1
  fi
  pg_dir=$(mktemp -d /tmp/tfgen-pg.XXXXXX)
  [ "$(id -u)" = 0 ] && chown postgres "$pg_dir"
  local port
  port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  echo "starting a private PostgreSQL on 127.0.0.1:$port (data in $pg_dir)" >&2
  as_pg initdb -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 >"$pg_dir/initdb.log" 2>&1 \
    && as_pg pg_ctl -D "$pg_dir/data" -l "$pg_dir/server.log" -w \
         -o "-p $port -k $pg_dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null \
    && "$py" -c "import psycopg; c = psycopg.connect('host=127.0.0.1 port=$port user=postgres dbname=postgres', autocommit=True); c.execute('CREATE DATABASE test'); c.close()" \
    || { skip_why="the private PostgreSQL did not start (see $pg_dir)"; pg_dir=""; return 1; }
  export TFGEN_TEST_PG_URL="postgresql+psycopg://postgres@127.0.0.1:$port/test"
}

skip_why=""
if ! pg_up && ! start_private_pg; then
  if [ "${TFGEN_REQUIRE_ALL:-0}" = 1 ]; then
    echo "PostgreSQL does not answer at $TFGEN_TEST_PG_URL and $skip_why: the store tests need it" >&2
    exit 1
  fi
  export TFGEN_SKIP_PG="no PostgreSQL at $TFGEN_TEST_PG_URL and $skip_why"
  echo "SKIPPING the tests that need PostgreSQL: $TFGEN_SKIP_PG" >&2
fi
trap stop_pg EXIT

set +e
"$venv/bin/pytest" -p no:cacheprovider ${TFGEN_SKIP_PG:+-rs} "$@"
rc=$?
set -e
[ -n "${TFGEN_SKIP_PG:-}" ] && echo "SKIPPED the tests that need PostgreSQL: $TFGEN_SKIP_PG" >&2
exit $rc
