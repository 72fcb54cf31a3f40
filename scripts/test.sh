#!/usr/bin/env bash
# Set up and run every check: ruff, mypy, and the test suite against the real
# Redis, on SQLite and then on PostgreSQL. Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

setup_venv requirements-dev.txt

export REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"
POSTGRES_URL="${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/queueproject}"
ensure_redis "$REDIS_URL"

postgres_ping() { "$PY" -c 'import sys, psycopg; psycopg.connect(sys.argv[1].replace("postgres://","postgresql://",1), connect_timeout=2).close()' "${POSTGRES_URL%/*}/postgres" >/dev/null 2>&1; }
if ! postgres_ping; then
    if ls /etc/postgresql/*/main >/dev/null 2>&1 && command -v pg_ctlcluster >/dev/null 2>&1; then
        say "Starting PostgreSQL"
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
        for _ in $(seq 50); do postgres_ping && break; sleep 0.2; done
    fi
fi
postgres_ping || die "PostgreSQL does not answer at ${POSTGRES_URL%/*} (install it: apt-get install postgresql, or set TEST_POSTGRES_URL)."

say "ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
say "mypy"
DEBUG=true SECRET_KEY=typecheck "$VENV/bin/mypy" .

say "tests on SQLite"
DATABASE_URL="sqlite:///$ROOT/db.sqlite3" "$VENV/bin/pytest" "$@"
say "tests on PostgreSQL"
DATABASE_URL="$POSTGRES_URL" "$VENV/bin/pytest" "$@"
say "schemathesis against the API's own OpenAPI schema"
bash "$ROOT/scripts/fuzz_api.sh"
