#!/usr/bin/env bash
# Set up and run every check: ruff, mypy, and the test suite against the real
# Redis, on SQLite and then on PostgreSQL. The browser tests (marked `browser`,
# headless Chromium) are slow: they run once, in the PostgreSQL pass. Extra
# arguments go to pytest.
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
ensure_chromium

say "ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .
say "mypy"
DEBUG=true SECRET_KEY=typecheck "$VENV/bin/mypy" .

# run_pytest ARGS...: a pass that selects no test (pytest's exit code 5, e.g. with -k) is not a
# failure; any other failure stops the script with pytest's exit code.
TESTS_RAN=no
run_pytest() {
    local status=0
    "$VENV/bin/pytest" "$@" || status=$?
    case "$status" in
        0) TESTS_RAN=yes ;;
        5) say "no test selected in this pass" ;;
        *) return "$status" ;;
    esac
}

# The SQLite pass leaves the browser tests out; a -m of the caller is combined with that.
pg_args=("$@")
sqlite_args=()
sqlite_marks="not browser"
while [ $# -gt 0 ]; do
    case "$1" in
        -m)
            [ $# -ge 2 ] || die "-m needs a marker expression"
            sqlite_marks="($2) and not browser"
            shift 2
            ;;
        -m?*)
            sqlite_marks="(${1#-m}) and not browser"
            shift
            ;;
        *)
            sqlite_args+=("$1")
            shift
            ;;
    esac
done

say "tests on SQLite (without the browser tests)"
DATABASE_URL="sqlite:///$ROOT/db.sqlite3" run_pytest -m "$sqlite_marks" "${sqlite_args[@]}"
say "tests on PostgreSQL (with the browser tests)"
DATABASE_URL="$POSTGRES_URL" run_pytest "${pg_args[@]}"
[ "$TESTS_RAN" = yes ] || die "no test matched in either pass"
say "schemathesis against the API's own OpenAPI schema"
bash "$ROOT/scripts/fuzz_api.sh"
