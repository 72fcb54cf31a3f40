#!/usr/bin/env bash
# Set up and run every check: ruff, mypy, and the test suite against the real
# Redis, on PostgreSQL and then on SQLite. The browser tests (marked `browser`,
# headless Chromium), the fault suite (`faults`) and the scenarios of processes,
# settings and connections (`once`) are slow: they run in the PostgreSQL pass, not
# the SQLite one. The suites of the workers, the fault suite and the browser tests run once
# more on RQ 3.0.0 (what `pip install django-rq` installs today; the product supports both majors),
# on SQLite.
# Extra arguments go to pytest, in every pass.
#
# Each pass runs its tests in parallel (pytest-xdist): most of them wait on real
# processes (workers, schedulers, servers), not on the CPU. Every xdist worker has
# a Redis database of its own (tests/parallel.py: the pass's first database plus
# the worker's number) and a test database of its own (pytest-django's `_gwN`).
# The environment may change:
#   TEST_REDIS_URL             the Redis server (its database number is not used)
#   TEST_POSTGRES_URL          the PostgreSQL database whose name the test databases take
#   TEST_SQLITE_WORKERS        xdist workers of the SQLite pass (default 3)
#   TEST_POSTGRES_WORKERS      xdist workers of the PostgreSQL pass (default 7)
#   TEST_SQLITE_REDIS_DB       first Redis database of the SQLite pass (default: its last is 15)
#   TEST_POSTGRES_REDIS_DB     first Redis database of the PostgreSQL pass (default 4)
#   TEST_RQ3_REDIS_DB          first Redis database of the RQ 3 pass (default 1; it has 3 workers)
#   FUZZ_REDIS_URL, FUZZ_PORT  schemathesis's Redis database (default 11) and port (scripts/fuzz_api.sh)
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"

setup_venv requirements-dev.txt

export REDIS_URL="${TEST_REDIS_URL:-redis://127.0.0.1:6379/15}"
POSTGRES_URL="${TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/queueproject}"
ensure_redis "$REDIS_URL"

SQLITE_WORKERS="${TEST_SQLITE_WORKERS:-3}"
POSTGRES_WORKERS="${TEST_POSTGRES_WORKERS:-7}"
SQLITE_REDIS_DB="${TEST_SQLITE_REDIS_DB:-$((16 - SQLITE_WORKERS))}"
POSTGRES_REDIS_DB="${TEST_POSTGRES_REDIS_DB:-4}"
RQ3_REDIS_DB="${TEST_RQ3_REDIS_DB:-1}"
RQ3_WORKERS=3
FUZZ_REDIS_DB="$(redis_db "${FUZZ_REDIS_URL:-redis://127.0.0.1:6379/11}")"
for number in "$SQLITE_WORKERS" "$POSTGRES_WORKERS" "$SQLITE_REDIS_DB" "$POSTGRES_REDIS_DB" "$RQ3_REDIS_DB"; do
    [[ "$number" =~ ^[0-9]+$ ]] || die "the TEST_*_WORKERS and TEST_*_REDIS_DB variables take whole numbers, not '$number'"
done
[ "$SQLITE_WORKERS" -ge 1 ] && [ "$POSTGRES_WORKERS" -ge 1 ] || die "each pass needs at least one worker"
# Databases 1-15 (the tests refuse 0, the default one); the passes and schemathesis, which
# run at once, never share one.
sqlite_last=$((SQLITE_REDIS_DB + SQLITE_WORKERS - 1))
postgres_last=$((POSTGRES_REDIS_DB + POSTGRES_WORKERS - 1))
[ "$SQLITE_REDIS_DB" -ge 1 ] && [ "$sqlite_last" -le 15 ] ||
    die "the SQLite pass's Redis databases $SQLITE_REDIS_DB-$sqlite_last are not all within 1-15"
[ "$POSTGRES_REDIS_DB" -ge 1 ] && [ "$postgres_last" -le 15 ] ||
    die "the PostgreSQL pass's Redis databases $POSTGRES_REDIS_DB-$postgres_last are not all within 1-15"
[ "$sqlite_last" -lt "$POSTGRES_REDIS_DB" ] || [ "$postgres_last" -lt "$SQLITE_REDIS_DB" ] ||
    die "the passes' Redis databases overlap: $SQLITE_REDIS_DB-$sqlite_last and $POSTGRES_REDIS_DB-$postgres_last"
for first_last in "$SQLITE_REDIS_DB $sqlite_last" "$POSTGRES_REDIS_DB $postgres_last"; do
    read -r first last <<<"$first_last"
    [ "$FUZZ_REDIS_DB" -lt "$first" ] || [ "$FUZZ_REDIS_DB" -gt "$last" ] ||
        die "schemathesis's Redis database $FUZZ_REDIS_DB (FUZZ_REDIS_URL) is one of the tests' ($first-$last)"
done
for db in $(seq "$RQ3_REDIS_DB" $((RQ3_REDIS_DB + RQ3_WORKERS - 1))); do
    { [ "$db" -ge 1 ] && [ "$db" -le 15 ] && [ "$db" != "$FUZZ_REDIS_DB" ] &&
        { [ "$db" -lt "$SQLITE_REDIS_DB" ] || [ "$db" -gt "$sqlite_last" ]; } &&
        { [ "$db" -lt "$POSTGRES_REDIS_DB" ] || [ "$db" -gt "$postgres_last" ]; }; } ||
        die "the RQ 3 pass's Redis database $db (TEST_RQ3_REDIS_DB) is not within 1-15 or is another step's"
done

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

# Python writes its bytecode caches even where the environment says not to: the tests start
# a hundred Django processes, and each would compile the project's modules anew.
unset PYTHONDONTWRITEBYTECODE

say "ruff"
"$VENV/bin/ruff" check .
"$VENV/bin/ruff" format --check .

# Then everything else in two phases (below), each step in the background, its output in
# var/NAME.log, shown when all are done (var/NAME.status: its exit status, seconds and CPU
# seconds): mypy, the three test passes (each on its own Redis databases) and schemathesis. A pass
# that selects no test (pytest's exit code 5, e.g. with -k) is not a failure; any other failure
# fails the script.
mkdir -p "$ROOT/var"
rm -f "$ROOT"/var/{mypy,tests-sqlite,tests-postgres,tests-rq3,fuzz}.status
start_step() {  # start_step NAME COMMAND...: in the background; var/NAME.status gets "STATUS SECONDS"
    local name="$1"
    shift
    (
        started=$SECONDS
        status=0
        "$@" >"$ROOT/var/$name.log" 2>&1 </dev/null || status=$?
        # The CPU seconds of the step's processes (those reaped: the tests' servers and workers too).
        times >"$ROOT/var/$name.times" # not in $(...): a subshell would have no children to count
        cpu="$(awk 'NR == 2 { total = 0; for (i = 1; i <= 2; i++) { split($i, t, "m"); total += t[1] * 60 + t[2] } printf "%d", total }' "$ROOT/var/$name.times")"
        echo "$status $((SECONDS - started)) $cpu" >"$ROOT/var/$name.status"
    ) &
}
# Tests go to the workers one or two at a time (--dist load, --maxschedchunk 2): a worker
# never queues fast tests behind a slow one while another is idle. A worker that crashes
# is not replaced (--max-worker-restart 0): its replacement's number, hence its Redis
# database, would be past the pass's own.
run_pass() {  # run_pass NAME DATABASE_URL REDIS_URL WORKERS PYTEST_ARGS...
    local name="$1" database="$2" redis_url="$3" workers="$4"
    shift 4
    start_step "$name" env DATABASE_URL="$database" REDIS_URL="$redis_url" "$VENV/bin/pytest" \
        -n "$workers" --dist load --maxschedchunk 2 --max-worker-restart 0 --durations 15 "$@"
}

# The RQ 3 pass: the suites that drive RQ's workers (the lifecycle, the mirror, the compatibility
# layer, django-rq's pages, the pooled and threaded workers), the fault suite with the races and the
# short chaos run (what guards the mirror), and the browser tests (the pages over jobs that RQ 3's
# workers run), with RQ 3.0.0 instead of the pinned 2.12:
# the project's venv with rq 3.0.0 ahead of it on PYTHONPATH (var/rq3-packages; what RQ 3 needs
# besides, click, croniter and redis-py, is in the venv at versions it takes), inherited by every
# process the tests start.
RQ3_PACKAGES="$ROOT/var/rq3-packages"
RQ3_TESTS=(tests/test_lifecycle.py tests/test_mirror.py tests/test_rqcompat.py tests/test_django_rq_readonly.py
    tests/test_pool.py tests/test_threads.py tests/test_fault_suite.py tests/test_faults.py tests/test_races.py
    tests/test_exec_reply_lost.py tests/test_chaos.py tests/browser)
rq3_pass() {
    if [ ! -f "$RQ3_PACKAGES/rq/version.py" ] || ! grep -q "'3.0.0'" "$RQ3_PACKAGES/rq/version.py"; then
        rm -rf "$RQ3_PACKAGES"
        "$PY" -m pip install --quiet --no-deps --target "$RQ3_PACKAGES" rq==3.0.0 || return 1
    fi
    export PYTHONPATH="$RQ3_PACKAGES${PYTHONPATH:+:$PYTHONPATH}"
    "$PY" -c 'import rq; print(f"rq {rq.__version__} from {rq.__file__}")' &&
        env DATABASE_URL="sqlite:///$ROOT/var/rq3.sqlite3" REDIS_URL="$REDIS_BASE/$RQ3_REDIS_DB" \
            "$VENV/bin/pytest" -n "$RQ3_WORKERS" --dist load --maxschedchunk 2 --max-worker-restart 0 \
            --durations 5 "${RQ3_TESTS[@]}" "${pg_args[@]}"
}

# The SQLite pass leaves out the browser and fault suites and the `once` scenarios (slow; they
# run once, on PostgreSQL); a -m of the caller is combined with that.
pg_args=("$@")
sqlite_args=()
sqlite_marks="not browser and not faults and not once"
while [ $# -gt 0 ]; do
    case "$1" in
        -m)
            [ $# -ge 2 ] || die "-m needs a marker expression"
            sqlite_marks="($2) and not browser and not faults and not once"
            shift 2
            ;;
        -m?*)
            sqlite_marks="(${1#-m}) and not browser and not faults and not once"
            shift
            ;;
        *)
            sqlite_args+=("$1")
            shift
            ;;
    esac
done

REDIS_BASE="${REDIS_URL%/*}"
# Two phases, so that no more than about ten test processes share the two cores: the fault, browser and
# once suites hold the product to its promised times (a 503 within 3 s, an end in the history within
# 10 s), and with all three passes at once a machine running at half speed broke them.
say "mypy, the tests on PostgreSQL (all) and schemathesis: at once"
start_step mypy env DEBUG=true SECRET_KEY=typecheck "$VENV/bin/mypy" .
run_pass tests-postgres "$POSTGRES_URL" "$REDIS_BASE/$POSTGRES_REDIS_DB" "$POSTGRES_WORKERS" "${pg_args[@]}"
postgres_pass=$!
start_step fuzz bash "$ROOT/scripts/fuzz_api.sh"
wait "$postgres_pass" || true
say "the tests on SQLite (without the browser, fault and once suites) and on RQ 3: at once"
run_pass tests-sqlite "sqlite:///$ROOT/db.sqlite3" "$REDIS_BASE/$SQLITE_REDIS_DB" "$SQLITE_WORKERS" \
    -m "$sqlite_marks" "${sqlite_args[@]}"
start_step tests-rq3 rq3_pass
wait

failed=no
ran=no
for name in mypy tests-sqlite tests-postgres tests-rq3 fuzz; do
    read -r status seconds cpu 2>/dev/null <"$ROOT/var/$name.status" || { status=1 seconds=0 cpu=0; }
    case "$name" in
        mypy) title="mypy" ;;
        fuzz) title="schemathesis against the API's own OpenAPI schema" ;;
        tests-rq3) title="the RQ 3 pass (RQ 3.0.0)" ;;
        *) title="$name" ;;
    esac
    say "$title ($((seconds / 60))m$((seconds % 60))s, CPU $((cpu / 60))m$((cpu % 60))s)"
    cat "$ROOT/var/$name.log"
    case "$name:$status" in
        *:0) [ "$name" = mypy ] || [ "$name" = fuzz ] || [ "$name" = tests-rq3 ] || ran=yes ;;
        tests-*:5) say "no test selected in this pass" ;;
        *) failed=yes ;;
    esac
done
[ "$failed" = no ] || die "checks failed (see above)"
[ "$ran" = yes ] || die "no test matched in either pass"
