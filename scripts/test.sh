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

# The two passes run at once (two cores), each on its own Redis database, their output
# kept apart and shown when both are done. A pass that selects no test (pytest's exit
# code 5, e.g. with -k) is not a failure; any other failure fails the script.
mkdir -p "$ROOT/var"
run_pass() {  # run_pass NAME DATABASE_URL REDIS_URL PYTEST_ARGS...: starts it; its status goes to var/NAME.status
    local name="$1" database="$2" redis_url="$3"
    shift 3
    (
        status=0
        DATABASE_URL="$database" REDIS_URL="$redis_url" "$VENV/bin/pytest" "$@" >"$ROOT/var/$name.log" 2>&1 || status=$?
        echo "$status" >"$ROOT/var/$name.status"
    ) &
}

# The SQLite pass leaves out the browser and fault suites (slow; they run once, on
# PostgreSQL); a -m of the caller is combined with that.
pg_args=("$@")
sqlite_args=()
sqlite_marks="not browser and not faults"
while [ $# -gt 0 ]; do
    case "$1" in
        -m)
            [ $# -ge 2 ] || die "-m needs a marker expression"
            sqlite_marks="($2) and not browser and not faults"
            shift 2
            ;;
        -m?*)
            sqlite_marks="(${1#-m}) and not browser and not faults"
            shift
            ;;
        *)
            sqlite_args+=("$1")
            shift
            ;;
    esac
done

REDIS_BASE="${REDIS_URL%/*}"
rm -f "$ROOT"/var/tests-*.status
say "tests on SQLite (without the browser and fault suites) and on PostgreSQL (all), at once"
run_pass tests-sqlite "sqlite:///$ROOT/db.sqlite3" "$REDIS_BASE/15" -m "$sqlite_marks" "${sqlite_args[@]}"
run_pass tests-postgres "$POSTGRES_URL" "$REDIS_BASE/14" "${pg_args[@]}"
wait
failed=no
ran=no
for name in tests-sqlite tests-postgres; do
    say "$name"
    cat "$ROOT/var/$name.log"
    case "$(cat "$ROOT/var/$name.status" 2>/dev/null || echo 1)" in
        0) ran=yes ;;
        5) say "no test selected in this pass" ;;
        *) failed=yes ;;
    esac
done
[ "$failed" = no ] || die "tests failed (see above)"
[ "$ran" = yes ] || die "no test matched in either pass"
say "schemathesis against the API's own OpenAPI schema"
bash "$ROOT/scripts/fuzz_api.sh"
