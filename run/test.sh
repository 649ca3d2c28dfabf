#!/usr/bin/env bash
# The test command: starts Redis when none answers on 127.0.0.1:6379, checks PostgreSQL,
# then runs pytest. Extra arguments go to pytest (e.g. `bash run/test.sh tests/apis -x`).
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${TFGEN_VENV:-.venv}
if [ ! -x "$venv/bin/pytest" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r requirements-dev.txt
fi

mkdir -p var
redis_up() { "$venv/bin/python" -c 'import redis; redis.Redis(port=6379, socket_timeout=1).ping()' 2>/dev/null; }
if ! redis_up; then
  command -v redis-server >/dev/null || { echo "redis-server is not installed (apt-get install redis-server)" >&2; exit 1; }
  echo "starting redis-server on 127.0.0.1:6379 (no persistence)" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --logfile "$PWD/var/redis-ci.log" --dir /tmp
  for _ in $(seq 1 50); do redis_up && break; sleep 0.1; done
  redis_up || { echo "redis-server did not answer" >&2; exit 1; }
fi

pg_up() { "$venv/bin/python" -c 'import psycopg; psycopg.connect("host=127.0.0.1 port=5432 user=postgres dbname=test", connect_timeout=2).close()' 2>/dev/null; }
if ! pg_up; then
  echo "PostgreSQL does not answer on 127.0.0.1:5432 (user postgres, database test): the store tests need it" >&2
  exit 1
fi

exec "$venv/bin/pytest" -p no:cacheprovider "$@"
