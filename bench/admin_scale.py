"""Django admin latency at 10,000 and 1,000,000 history rows, and a filter-wide retry of 100,000 failed jobs.

    .venv/bin/python bench/admin_scale.py           # 10k and 1M rows, 100,000 retried
    .venv/bin/python bench/admin_scale.py --quick   # 10k and 100k rows, 10,000 retried
    .venv/bin/python bench/admin_scale.py --help

What it does, in one run:

1. Creates two Postgres databases, `bench_admin_<pid>_small` and `bench_admin_<pid>_large`,
   migrates them and loads 10,000 rows into the first, then 1,000,000 into the second,
   with the loader of `api_scale.py` (the same realistic history, straight in SQL),
   and seeds the hourly rollups the statistics view reads (`jobs_jobendhour`) as
   `stats.fold()` would have made them from those rows; puts some plain RQ jobs in
   Redis (queued, finished and failed: run by a burst `rq.SimpleWorker` in this
   process) so that django-rq's pages have something to show.
2. Serves each database with its own real gunicorn (ASGI through
   `queueproject.web_worker.UvicornWorker`, 2 workers, DEBUG off, as `api_scale.py` does), logs
   in to each through the admin's own login form (`/admin/login/`, with its CSRF
   token) as a superuser, and times, one request at a time, pages and sizes
   interleaved round-robin so machine noise hits all alike: the jobs changelist, its
   status filter, a search, a job's change page (random ids), the statistics view,
   and for reference django-rq's dashboard and its finished registry page.
   Targets: p50 < 150 ms at the larger size and p50(large) <= 1.5 x p50(small).
3. At the larger size, before any write: every admin page's SQL, captured in-process
   (Django's test Client logged in as the superuser), with the EXPLAIN (ANALYZE,
   BUFFERS) of its slowest queries, printed for every page that misses a target.
4. Makes `--retry` rows of the larger database failed (in SQL; `jobs_jobcount`,
   `jobs_jobendminute` and `jobs_jobendhour` reseeded as at the load) and times, in this process,
   the filter-wide retry `services.jobs_act(jobs=selectors.job_list(filters={"status":
   ["failed"]}), action="retry")`; then checks that exactly those jobs are queued in
   Redis and their rows are `queued`.

Results are printed (the table last) and written to bench/results/admin_scale-<time>.json.
Only Redis database 9 is used (flushed at the start and the end); the databases are
dropped at the end unless --keep. The exit status is 0 when every admin page meets its
targets and the retry checks pass, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import inspect
import io
import json
import os
import platform
import pstats
import re
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: `bench` must import

from bench import api_scale
from bench.api_scale import Endpoint, fmt, label, log

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
PG_URL = api_scale.PG_URL
REDIS_DB = 9
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"  # the only Redis database this benchmark may touch

P50_TARGET_MS = 150.0
RATIO_TARGET = 1.5
USERNAME = "bench-admin"
PASSWORD = "bench-admin-password-123"
SEARCH_TERM = api_scale.SEARCH_DOMAIN  # an e-mail domain of the loader's params: ~1 % of rows
CHANGELIST = "/admin/jobs/job/"
STATISTICS = "/admin/jobs/job/statistics/"
RQ_QUEUE = "default"  # the queue whose django-rq registry page is timed
RQ_FUNC = "bench.noop_jobs.noop"
RQ_MISSING_FUNC = "bench.noop_jobs.missing"  # does not exist: its jobs fail (AttributeError)
#: Pages timed for reference: not the product's, not judged in the exit status.
REFERENCE = {"rq_dashboard", "rq_finished"}
HOUR_RETENTION_DAYS = 90  # jobs.stats.HOUR_RETENTION
BUCKETS_PER_DOUBLING = 4  # jobs.stats.BUCKETS_PER_DOUBLING
#: Besides the slowest, EXPLAIN the next slowest queries of a page that take at least this long.
EXPLAIN_ALSO_MS = 10.0
#: A missed page whose SQL is less than this share of its in-process time also gets a profile.
PROFILE_BELOW_SQL_SHARE = 0.5
PROFILE_LINES = 15


def _bucket(ms: str) -> str:
    """`stats.bucket(ms)` in SQL: floor(4 x log2(ms)) + 1, 0 below 1 ms; a power of two exactly."""
    log2 = f"(ln({ms}::float8) / ln(2::float8))"
    return (
        f"CASE WHEN {ms} IS NULL THEN NULL WHEN {ms} < 1 THEN 0 "
        f"WHEN ({ms} & ({ms} - 1)) = 0 THEN {BUCKETS_PER_DOUBLING} * round({log2})::int + 1 "
        f"ELSE floor({BUCKETS_PER_DOUBLING} * {log2})::int + 1 END"
    )


# The hourly rollups the statistics view reads (`jobs_jobendhour`), which the loader does not
# seed: what `stats.fold()` would have made of the loaded rows' JobRunDelta rows (run time
# ended - started, wait time started - enqueued, histograms in `stats.bucket` buckets).
SEED_HOURS = [
    "DELETE FROM jobs_jobendhour",
    f"""
WITH ended AS (
    SELECT date_trunc('hour', ended_at) AS hour, queue, type, status,
        (EXTRACT(EPOCH FROM (ended_at - started_at)) * 1000)::bigint AS run_ms,
        (EXTRACT(EPOCH FROM (started_at - enqueued_at)) * 1000)::bigint AS wait_ms
    FROM jobs_job
    WHERE status IN ('finished', 'failed') AND ended_at >= now() - interval '{HOUR_RETENTION_DAYS} days'
), bucketed AS (
    SELECT hour, queue, type, status, run_ms, wait_ms,
        {_bucket("run_ms")} AS run_bucket, {_bucket("wait_ms")} AS wait_bucket
    FROM ended
), runs AS (
    SELECT hour, queue, type, status, jsonb_object_agg(run_bucket::text, n) AS hist
    FROM (SELECT hour, queue, type, status, run_bucket, COUNT(*) AS n FROM bucketed
          WHERE run_bucket IS NOT NULL GROUP BY 1, 2, 3, 4, 5) r
    GROUP BY 1, 2, 3, 4
), waits AS (
    SELECT hour, queue, type, status, jsonb_object_agg(wait_bucket::text, n) AS hist
    FROM (SELECT hour, queue, type, status, wait_bucket, COUNT(*) AS n FROM bucketed
          WHERE wait_bucket IS NOT NULL GROUP BY 1, 2, 3, 4, 5) w
    GROUP BY 1, 2, 3, 4
)
INSERT INTO jobs_jobendhour (hour, queue, type, status, count, run_ms_sum, run_hist, wait_ms_sum, wait_hist)
SELECT t.hour, t.queue, t.type, t.status, t.n, t.run_sum, COALESCE(runs.hist, '{{}}'), t.wait_sum,
    COALESCE(waits.hist, '{{}}')
FROM (SELECT hour, queue, type, status, COUNT(*) AS n,
             COALESCE(SUM(GREATEST(run_ms, 0)), 0) AS run_sum, COALESCE(SUM(GREATEST(wait_ms, 0)), 0) AS wait_sum
      FROM ended GROUP BY 1, 2, 3, 4) t
LEFT JOIN runs USING (hour, queue, type, status)
LEFT JOIN waits USING (hour, queue, type, status)
""",
    "ANALYZE jobs_jobendhour",
]

FAILED_PICK_SQL = """
CREATE TEMP TABLE bench_pick ON COMMIT DROP AS
SELECT id FROM jobs_job WHERE status = 'finished' ORDER BY random() LIMIT %s
"""

# A finished job turned into a failed one as the loader writes them: an error and traceback
# of its type, no result, its last attempt failed with the same error.
MAKE_FAILED_SQL = r"""
WITH picked AS (
    SELECT j.id,
        CASE j.type WHEN 'email' THEN 'SMTPServerDisconnected: Connection unexpectedly closed'
                    WHEN 'report' THEN 'JobTimeoutException: Task exceeded maximum timeout value (1800 seconds)'
                    ELSE 'ExampleJobFailed: the example job was asked to fail' END AS err
    FROM jobs_job j JOIN bench_pick p ON p.id = j.id
)
UPDATE jobs_job j SET
    status = 'failed', progress = 0, progress_message = '', result = NULL, error = picked.err,
    traceback = 'Traceback (most recent call last):' || chr(10)
        || '  File "/app/jobs/runner.py", line 58, in run' || chr(10)
        || '    return spec.func(spec.params.model_validate(params))' || chr(10)
        || '  File "/app/jobs/tasks/' || j.type || '.py", line 40, in ' || j.type || chr(10)
        || '    raise' || chr(10) || picked.err
FROM picked WHERE j.id = picked.id
"""

FAIL_LAST_ATTEMPT_SQL = """
UPDATE jobs_jobattempt a SET outcome = 'failed', error = j.error, traceback = j.traceback
FROM jobs_job j JOIN bench_pick p ON p.id = j.id
WHERE a.job_id = j.id AND a.number = j.attempts
"""


# --- processes --------------------------------------------------------------------


def bench_env(db_url: str, *, debug: bool) -> dict[str, str]:
    """`api_scale`'s environment, on Redis database 9; cookies over plain HTTP (127.0.0.1, no TLS)."""
    env = api_scale.base_env(db_url, debug=debug)
    env["REDIS_URL"] = REDIS_URL
    env["SECURE_COOKIES"] = "false"
    return env


def migrate(db_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=bench_env(db_url, debug=True),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"migrate failed:\n{result.stdout}\n{result.stderr}")


def setup_django(db_url: str) -> None:
    os.environ.update(bench_env(db_url, debug=False))
    import django

    django.setup()


def start_gunicorn(db_url: str, workers: int, log_path: Path, token: str) -> api_scale.Gunicorn:
    server = api_scale.Gunicorn(db_url, api_scale.free_port(), workers, log_path)
    server.env.update({"REDIS_URL": REDIS_URL, "SECURE_COOKIES": "false"})
    server.start(token)
    return server


SUPERUSER_SCRIPT = f"""
import json
import django
django.setup()
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
user = get_user_model().objects.create_superuser({USERNAME!r}, "bench-admin@example.com", {PASSWORD!r})
print(json.dumps([user.pk, Token.objects.create(user=user).key]))
"""


def make_superuser(db_url: str) -> tuple[int, str]:
    """The superuser who logs in, and its API token (gunicorn's readiness check asks the API)."""
    result = subprocess.run(
        [sys.executable, "-c", SUPERUSER_SCRIPT],
        cwd=ROOT,
        env=bench_env(db_url, debug=False),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"creating the superuser failed:\n{result.stdout}\n{result.stderr}")
    user_id, token = json.loads(result.stdout.strip().splitlines()[-1])
    return int(user_id), str(token)


def redis_conn() -> Any:
    from redis import Redis

    conn = Redis.from_url(REDIS_URL)
    assert conn.connection_pool.connection_kwargs.get("db") == REDIS_DB
    return conn


def flush_redis() -> None:
    conn = redis_conn()
    conn.flushdb()
    conn.close()


def seed_rq_jobs(count: int) -> dict[str, int]:
    """Plain RQ jobs on the `default` queue for django-rq's pages: finished, failed and waiting ones."""
    from rq import Queue, SimpleWorker
    from rq.serializers import JSONSerializer

    conn = redis_conn()
    queue = Queue(RQ_QUEUE, connection=conn, serializer=JSONSerializer)
    finished, failed, waiting = count, max(1, count // 5), max(1, count // 2)
    queue.enqueue_many([Queue.prepare_data(RQ_FUNC, result_ttl=86_400) for _ in range(finished)])
    queue.enqueue_many([Queue.prepare_data(RQ_MISSING_FUNC) for _ in range(failed)])
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker = SimpleWorker([queue], connection=conn, serializer=JSONSerializer)
        worker.work(burst=True, logging_level="CRITICAL")  # the failures are wanted
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)
    queue.enqueue_many([Queue.prepare_data(RQ_FUNC) for _ in range(waiting)])
    found = {
        "finished": len(queue.finished_job_registry),
        "failed": len(queue.failed_job_registry),
        "queued": queue.count,
    }
    conn.close()
    if found != {"finished": finished, "failed": failed, "queued": waiting}:
        raise SystemExit(f"seeding RQ jobs: expected {finished} finished, {failed} failed, {waiting} queued: {found}")
    return found


# --- the admin through gunicorn ---------------------------------------------------


class AdminClient:
    """One keep-alive session logged in through the admin's login form."""

    def __init__(self, base: str):
        self.base = base
        self.session = requests.Session()

    def login(self) -> None:
        url = f"{self.base}/admin/login/?next=/admin/"
        form = self.session.get(url, timeout=60)
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        if form.status_code != 200 or match is None:
            raise SystemExit(f"GET /admin/login/: {form.status_code}, no CSRF token in the form")
        answer = self.session.post(
            url,
            data={"csrfmiddlewaretoken": match.group(1), "username": USERNAME, "password": PASSWORD, "next": "/admin/"},
            headers={"Referer": url},
            allow_redirects=False,
            timeout=60,
        )
        if answer.status_code != 302 or "sessionid" not in self.session.cookies:
            raise SystemExit(f"admin login refused: {answer.status_code} {answer.text[:300]}")
        if self.fetch("/admin/").status_code != 200:
            raise SystemExit("logged in, but /admin/ does not answer 200")

    def fetch(self, url: str) -> requests.Response:
        return self.session.get(self.base + url, allow_redirects=False, timeout=300)

    def get(self, url: str) -> tuple[float, Any]:
        """What `api_scale.measure_reads` calls: the time of one GET, which must answer 200."""
        started = time.perf_counter()
        answer = self.fetch(url)
        elapsed = (time.perf_counter() - started) * 1000
        if answer.status_code != 200:
            raise SystemExit(
                f"GET {url}: {answer.status_code} {answer.headers.get('Location', '')} {answer.text[:300]}"
            )
        return elapsed, None


def status_param(client: AdminClient) -> tuple[str, str]:
    """The status filter's parameter: `status`, or `status__exact` when the admin refuses `status`."""
    code = client.fetch(f"{CHANGELIST}?status=failed").status_code
    if code == 200:
        return "status", "?status=failed answered 200"
    if code not in (302, 400):
        raise SystemExit(f"GET {CHANGELIST}?status=failed: {code}")
    fallback = client.fetch(f"{CHANGELIST}?status__exact=failed").status_code
    if fallback != 200:
        raise SystemExit(f"GET {CHANGELIST}?status=failed: {code}; ?status__exact=failed: {fallback}")
    return "status__exact", f"?status=failed answered {code}, ?status__exact=failed answered 200"


def statistics_availability(client: AdminClient) -> tuple[bool, str]:
    answer = client.fetch(STATISTICS)
    if answer.status_code == 200:
        return True, "200"
    where = answer.headers.get("Location")
    return False, f"answers {answer.status_code}" + (f" (to {where})" if where else "")


def admin_pages(
    client: AdminClient, db_url: str, requests_per_page: int, rq_index: int
) -> tuple[list[Endpoint], dict[str, Any]]:
    param, why = status_param(client)
    available, stats_answer = statistics_availability(client)
    ids = api_scale.sample_job_ids(db_url, requests_per_page)
    pages = [
        Endpoint("changelist", f"{CHANGELIST} (first page)", [CHANGELIST]),
        Endpoint("status_filter", f"{CHANGELIST}?{param}=failed", [f"{CHANGELIST}?{param}=failed"]),
        Endpoint("search", f"{CHANGELIST}?q={SEARCH_TERM}", [f"{CHANGELIST}?q={SEARCH_TERM}"]),
        Endpoint("change", f"{CHANGELIST}<id>/change/ (random ids)", [f"{CHANGELIST}{i}/change/" for i in ids]),
    ]
    if available:
        pages.append(Endpoint("statistics", STATISTICS, [STATISTICS]))
    pages += [
        Endpoint("rq_dashboard", "/django-rq/ (reference)", ["/django-rq/"]),
        Endpoint(
            "rq_finished",
            f"/django-rq/queues/{rq_index}/finished/ (reference)",
            [f"/django-rq/queues/{rq_index}/finished/"],
        ),
    ]
    notes = {"status_param": param, "status_param_why": why, "statistics": stats_answer}
    return pages, notes


WARMUP = 5


def measure_pages(sites: dict[int, tuple[AdminClient, list[Endpoint]]], requests_per_page: int) -> None:
    """Time every page of every size `requests_per_page` times, one request at a time.

    After WARMUP requests each, rounds go page by page, and for each page size by size
    (smaller first in even rounds, larger first in odd ones): a page's requests at both
    sizes are back to back, so noise on the machine hits the sizes alike.
    """
    for client, pages in sites.values():
        for page in pages:
            for i in range(WARMUP):
                client.get(page.urls[i % len(page.urls)])
    keys = list(dict.fromkeys(page.key for _client, pages in sites.values() for page in pages))
    sizes = sorted(sites)
    started = time.perf_counter()
    for i in range(requests_per_page):
        order = sizes if i % 2 == 0 else sizes[::-1]
        for key in keys:
            for size in order:
                client, pages = sites[size]
                for page in pages:
                    if page.key == key:
                        elapsed, _body = client.get(page.urls[i % len(page.urls)])
                        page.times_ms.append(elapsed)
        if (i + 1) % 10 == 0 and i + 1 < requests_per_page:
            log(f"  round {i + 1}/{requests_per_page} ({time.perf_counter() - started:.0f} s)")


# --- diagnosis --------------------------------------------------------------------


def capture_sql(url: str, user: Any) -> dict[str, Any]:
    """Run the page in-process as the superuser, capture its SQL, EXPLAIN ANALYZE the slowest queries."""
    from django.db import connection
    from django.test import Client as DjangoClient
    from django.test.utils import CaptureQueriesContext

    durations: list[float] = []

    def timer(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            durations.append((time.perf_counter() - t0) * 1000)

    client = DjangoClient(HTTP_HOST="127.0.0.1")
    client.force_login(user)
    client.get(url)  # warm
    started = time.perf_counter()
    with CaptureQueriesContext(connection) as captured, connection.execute_wrapper(timer):
        answer = client.get(url)
    page_ms = (time.perf_counter() - started) * 1000
    if answer.status_code != 200:
        return {"error": f"in-process GET {url}: {answer.status_code}"}
    # The SQL as sent (parameters in) from the capture; the time, to the microsecond, from the wrapper.
    if len(durations) != len(captured.captured_queries):
        durations = [float(query["time"]) * 1000 for query in captured.captured_queries]
    queries = [(ms, query["sql"]) for ms, query in zip(durations, captured.captured_queries, strict=True)]
    # The page's own queries, not the session's and the user's (the same on every page).
    own = sorted((q for q in queries if '"jobs_' in q[1] and q[1].lstrip().upper().startswith("SELECT")), reverse=True)
    explained = []
    for index, (ms, sql) in enumerate(own[:3]):
        if index and ms < EXPLAIN_ALSO_MS:
            break
        with connection.cursor() as cursor:
            cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}")
            plan = "\n".join(row[0] for row in cursor.fetchall())
        executed = [line for line in plan.splitlines() if line.startswith("Execution Time:")]
        explained.append(
            {
                "ms": round(ms, 2),
                "sql": sql,
                "plan": plan,
                "execution_ms": float(executed[0].split()[2]) if executed else None,
                "shape": api_scale.plan_shape(plan),
            }
        )
    # Where the rest of the time goes (view code, templates): one more request, profiled.
    profiler = cProfile.Profile()
    profiler.enable()
    client.get(url)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    out.write("By cumulative time, the project's own code (jobs/):\n")
    stats.sort_stats("cumulative").print_stats(r"/jobs/", PROFILE_LINES)
    out.write("By own time, everything:\n")
    stats.sort_stats("tottime").print_stats(PROFILE_LINES)
    profile = out.getvalue().replace(f"{ROOT}/.venv/lib/python{sys.version_info.major}.{sys.version_info.minor}/", "")
    profile = profile.replace(f"{ROOT}/", "")
    return {
        "url": url,
        "page_ms_in_process": round(page_ms, 1),
        "sql_ms": round(sum(ms for ms, _sql in queries), 2),
        "queries": [{"ms": round(ms, 2), "sql": sql} for ms, sql in queries],
        "explained": explained,
        "profile": profile,
    }


# --- the filter-wide retry --------------------------------------------------------


def seed_hours(db_url: str) -> float | None:
    """Seed the hourly rollups from the rows (see SEED_HOURS); the seconds it took, None if the table differs."""
    started = time.perf_counter()
    try:
        with psycopg.connect(db_url, autocommit=True) as conn, conn.transaction():
            for sql in SEED_HOURS:
                conn.execute(sql)
    except psycopg.Error as exc:
        log(f"  jobs_jobendhour not seeded: {str(exc).strip().splitlines()[0]}")
        return None
    return time.perf_counter() - started


def make_failed(db_url: str, target: int) -> dict[str, Any]:
    """Turn random finished rows failed until exactly `target` rows are; reseed the counters."""
    with psycopg.connect(db_url, autocommit=True) as conn:

        def one(sql: str, *params: Any) -> int:
            row = conn.execute(sql, params).fetchone()
            return int(row[0]) if row else 0

        already = one("SELECT COUNT(*) FROM jobs_job WHERE status = 'failed'")
        need = target - already
        finished = one("SELECT COUNT(*) FROM jobs_job WHERE status = 'finished'")
        if need < 0:
            raise SystemExit(f"{already:,} rows are failed already: more than --retry {target:,}")
        if need > finished:
            raise SystemExit(f"only {finished:,} finished rows to turn failed; {need:,} needed")
        conn.execute("SET session_replication_role = replica")  # as the loader: no count trigger, this session only
        started = time.perf_counter()
        with conn.transaction():
            conn.execute(FAILED_PICK_SQL, (need,))
            conn.execute(MAKE_FAILED_SQL)
            conn.execute(FAIL_LAST_ATTEMPT_SQL)
        update_s = time.perf_counter() - started
        started = time.perf_counter()
        for sql in api_scale.SEED_COUNTS:
            conn.execute(sql)
        seed_hours(db_url)
        conn.execute("VACUUM (ANALYZE) jobs_job")
        conn.execute("VACUUM (ANALYZE) jobs_jobattempt")
        conn.execute("ANALYZE jobs_jobcount")
        conn.execute("ANALYZE jobs_jobendminute")
        reseed_s = time.perf_counter() - started
        failed = one("SELECT COUNT(*) FROM jobs_job WHERE status = 'failed'")
        counted = one("SELECT COALESCE(SUM(count), 0) FROM jobs_jobcount WHERE status = 'failed'")
        rows = one("SELECT COUNT(*) FROM jobs_job")
        counted_all = one("SELECT COALESCE(SUM(count), 0) FROM jobs_jobcount")
    if failed != target or counted != target or counted_all != rows:
        raise SystemExit(f"made {failed:,} rows failed (jobs_jobcount says {counted:,}); wanted {target:,}")
    return {"already_failed": already, "turned_failed": need, "update_s": update_s, "reseed_vacuum_s": reseed_s}


def run_retry(db_url: str, target: int) -> dict[str, Any]:
    """Time `jobs_act(retry)` over the failed filter, in-process against Redis database 9; check the outcome."""
    from django.db import connections

    from jobs import queues, selectors, services, stats
    from jobs.models import JobAudit

    with psycopg.connect(db_url, autocommit=True) as conn:
        failed_ids = {row[0] for row in conn.execute("SELECT id FROM jobs_job WHERE status = 'failed'").fetchall()}
    audits_before = JobAudit.objects.filter(action="retry").count()
    flush_redis()  # only the retried jobs in Redis from here: the check below is exact
    connections.close_all()
    log(f"retrying {len(failed_ids):,} failed jobs: services.jobs_act(action='retry') over the status filter")
    jobs = selectors.job_list(filters={"status": ["failed"]})
    started = time.perf_counter()
    outcome = services.jobs_act(jobs=jobs, action="retry")
    seconds = time.perf_counter() - started
    log(f"  done in {seconds:.1f} s; checking Redis and the rows")

    rconn = queues.redis()
    per_queue: dict[str, int] = {}
    in_redis: list[str] = []
    for queue in queues.all_queues():
        raws: Any = rconn.lrange(queue.key, 0, -1)
        ids = [raw.decode() for raw in raws]
        per_queue[queue.name] = len(ids)
        in_redis.extend(ids)
    expected = {str(job_id) for job_id in failed_ids}
    hashes = 0
    statuses: dict[str, int] = {}
    ordered = sorted(expected)
    for chunk in range(0, len(ordered), 5000):
        with rconn.pipeline(transaction=False) as pipe:
            for job_id in ordered[chunk : chunk + 5000]:
                pipe.hget(f"rq:job:{job_id}", "status")
            for status in pipe.execute():
                if status is not None:
                    hashes += 1
                    statuses[status.decode()] = statuses.get(status.decode(), 0) + 1
    with psycopg.connect(db_url, autocommit=True) as pg:
        rows: dict[str, int] = dict(
            pg.execute(
                "SELECT status, COUNT(*) FROM jobs_job WHERE id = ANY(%s) GROUP BY 1", (list(failed_ids),)
            ).fetchall()
        )
        row = pg.execute("SELECT COUNT(*) FROM jobs_job WHERE status = 'failed'").fetchone()
        failed_left = int(row[0]) if row else -1
    audits = JobAudit.objects.filter(action="retry").count() - audits_before
    counted_failed = sum(per.get("failed", 0) for per in stats.status_counts().values())
    checks = {
        "jobs_act done == retried": outcome.done == target and outcome.skipped == 0,
        f"{target:,} job ids on the queues, each once, exactly the retried ones": len(in_redis) == target
        and set(in_redis) == expected,
        f"{target:,} RQ job hashes, status queued": hashes == target and statuses == {"queued": target},
        f"{target:,} rows queued": rows == {"queued": target},
        "no failed row left": failed_left == 0,
        "counters (JobCount + deltas) say 0 failed": counted_failed == 0,
        f"{target:,} audit entries": audits == target,
    }
    return {
        "n": len(failed_ids),
        "seconds": seconds,
        "jobs_per_s": len(failed_ids) / seconds,
        "result": {
            "matched": outcome.matched,
            "done": outcome.done,
            "skipped": outcome.skipped,
            "skipped_by_status": outcome.skipped_by_status,
        },
        "signature": f"jobs_act{inspect.signature(services.jobs_act)}",
        "queued_per_queue": per_queue,
        "rq_job_statuses": statuses,
        "row_statuses": rows,
        "audits": audits,
        "checks": checks,
        "pass": all(checks.values()),
    }


# --- report -----------------------------------------------------------------------


def judge(sizes: list[int], reads: dict[int, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    small, large = sizes
    keys = list(reads[large]) + [key for key in reads[small] if key not in reads[large]]
    if "statistics" not in keys:  # its row says "not available"
        keys.insert(keys.index("change") + 1, "statistics")
    rows = []
    for key in keys:
        at_small, at_large = reads[small].get(key), reads[large].get(key)
        ratio = at_large["p50_ms"] / at_small["p50_ms"] if at_small and at_large else None
        rows.append(
            {
                "key": key,
                "label": (at_large or at_small or {}).get("label", STATISTICS if key == "statistics" else key),
                "reference": key in REFERENCE,
                "small": at_small,
                "large": at_large,
                "ratio": ratio,
                "p50_pass": at_large["p50_ms"] < P50_TARGET_MS if at_large else None,
                "ratio_pass": ratio <= RATIO_TARGET if ratio is not None else None,
            }
        )
    return rows


def verdict(value: bool | None) -> str:
    return "-" if value is None else ("ok" if value else "BELOW")


def print_table(sizes: list[int], rows: list[dict[str, Any]], explains: dict[str, Any], stats_note: str) -> None:
    s, b = label(sizes[0]), label(sizes[1])
    header = (
        f"{'page':<44} {'p50@' + s:>9} {'p95@' + s:>9} {'p50@' + b:>9} {'p95@' + b:>9} {'ratio':>6}  "
        f"{'p50<150ms':<9} {'ratio<=1.5':<10} {'SQL@' + b:>8} {'queries':>7}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        small, large = row["small"] or {}, row["large"] or {}
        info = explains.get(row["key"], {})
        line = (
            f"{row['label']:<44} {fmt(small.get('p50_ms')):>9} {fmt(small.get('p95_ms')):>9} "
            f"{fmt(large.get('p50_ms')):>9} {fmt(large.get('p95_ms')):>9} {fmt(row['ratio'], '.2f'):>6}  "
            f"{verdict(row['p50_pass']):<9} {verdict(row['ratio_pass']):<10} "
            f"{fmt(info.get('sql_ms')):>8} {len(info.get('queries', [])) if info else '-':>7}"
        )
        if not small and not large:
            line = f"{row['label']:<44} not available ({stats_note})"
        print(line)


def print_diagnosis(rows: list[dict[str, Any]], explains: dict[str, Any], large: int) -> None:
    missed = [r for r in rows if not r["reference"] and (r["p50_pass"] is False or r["ratio_pass"] is False)]
    if not missed:
        return
    print()
    print(f"Missed targets: the SQL each page ran in-process at {label(large)} rows (before any write), and the")
    print(f"EXPLAIN (ANALYZE, BUFFERS) of its slowest query (and of the next ones over {EXPLAIN_ALSO_MS:.0f} ms)")
    for row in missed:
        info = explains.get(row["key"])
        print()
        print(f"== {row['label']}")
        if not info or "error" in info:
            print(f"  (no SQL captured: {info.get('error') if info else 'not measured at this size'})")
            continue
        print(
            f"  {len(info['queries'])} queries, {info['sql_ms']:.1f} ms of SQL; "
            f"the page took {info['page_ms_in_process']:.0f} ms in-process"
        )
        for query in info["queries"]:
            sql = query["sql"]
            print(f"  {query['ms']:9.2f} ms  {sql[:160]}{'...' if len(sql) > 160 else ''}")
        for item in info["explained"]:
            print()
            print(f"  {item['ms']:.1f} ms: {item['sql']}")
            print("  EXPLAIN (ANALYZE, BUFFERS):")
            for line in item["plan"].splitlines():
                print(f"    {line}")
        share = info["sql_ms"] / info["page_ms_in_process"] if info["page_ms_in_process"] else 1.0
        if share < PROFILE_BELOW_SQL_SHARE:
            print()
            print(f"  SQL is {share:.0%} of the page's time in-process: the rest is Python. Profile of one request:")
            for line in info["profile"].strip().splitlines():
                print(f"    {line}")


def print_retry(retry: dict[str, Any]) -> None:
    per_queue = ", ".join(f"{name} {count:,}" for name, count in retry["queued_per_queue"].items())
    print(
        f"Filter-wide retry, services.jobs_act(jobs=selectors.job_list(filters={{'status': ['failed']}}), "
        f"action='retry'), in-process, Redis db {REDIS_DB}:"
    )
    print(
        f"  {retry['n']:,} failed jobs retried in {retry['seconds']:.1f} s = {retry['jobs_per_s']:,.0f} jobs/s "
        f"(done {retry['result']['done']:,}, skipped {retry['result']['skipped']:,}); queued in Redis: {per_queue}"
    )
    for check, ok in retry["checks"].items():
        print(f"  {'ok   ' if ok else 'FAIL '} {check}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="10,000 and 100,000 rows, 10,000 retried, 20 requests")
    parser.add_argument("--small", type=int, help="rows of the smaller database (10,000)")
    parser.add_argument("--large", type=int, help="rows of the larger database (1,000,000; --quick 100,000)")
    parser.add_argument(
        "--retry", type=int, help="failed jobs retried in the larger database (100,000; --quick 10,000)"
    )
    parser.add_argument("--requests", type=int, help="timed requests per page and size (50; --quick 20)")
    parser.add_argument("--rq-jobs", type=int, default=1000, help="finished RQ jobs for django-rq's pages (1,000)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers per server (2)")
    parser.add_argument("--pg-url", default=PG_URL, help=f"Postgres server, without a database ({PG_URL})")
    parser.add_argument("--keep", action="store_true", help="keep the databases (and print their URLs)")
    args = parser.parse_args()
    args.small = args.small or 10_000
    args.large = args.large or (100_000 if args.quick else 1_000_000)
    args.retry = args.retry or (10_000 if args.quick else 100_000)
    args.requests = args.requests or (20 if args.quick else 50)
    if not args.large > args.small > 0:
        parser.error("need --large > --small > 0")
    if not 0 < args.retry <= args.large // 2:
        parser.error("need 0 < --retry <= --large / 2")

    run_started = time.perf_counter()
    pg_url = args.pg_url.rstrip("/")
    sizes = [args.small, args.large]
    db_names = {
        size: f"bench_admin_{os.getpid()}_{which}" for size, which in zip(sizes, ["small", "large"], strict=True)
    }
    db_urls = {size: f"{pg_url}/{name}" for size, name in db_names.items()}
    large_url = db_urls[args.large]
    tmp = Path(tempfile.mkdtemp(prefix="admin_scale-"))
    servers: list[api_scale.Gunicorn] = []
    results: dict[str, Any] = {
        "benchmark": "admin_scale",
        "started_at": datetime.now(tz=UTC).isoformat(),
        "machine": {
            "node": platform.node(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
        },
        "config": {k: v for k, v in vars(args).items() if k != "pg_url"},
        "client": f"real gunicorn per database ({args.workers} queueproject.web_worker.UvicornWorker, DEBUG=0), one "
        "keep-alive requests.Session each, logged in through /admin/login/; one request at a time",
        "targets": {"p50_ms_below": P50_TARGET_MS, "ratio_at_most": RATIO_TARGET},
    }
    with psycopg.connect(f"{pg_url}/postgres", autocommit=True) as admin:
        results["postgres"] = admin.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        for name in db_names.values():
            admin.execute(f'CREATE DATABASE "{name}"')
    log(f"databases {', '.join(db_names.values())} created; Redis {REDIS_URL}")
    try:
        flush_redis()
        users: dict[int, tuple[int, str]] = {}
        for size, db_url in db_urls.items():
            t0 = time.perf_counter()
            migrate(db_url)
            users[size] = make_superuser(db_url)
            log(f"{db_names[size]} migrated, superuser {USERNAME!r} created ({time.perf_counter() - t0:.1f} s)")
        setup_django(large_url)  # in-process: the larger database (SQL capture, the retry)
        warnings.filterwarnings("ignore", "No directory at", UserWarning)  # no collected static files: not needed
        from django.contrib.auth import get_user_model
        from django.db import connections
        from django_rq.settings import get_queues_map

        user = get_user_model().objects.get(username=USERNAME)
        connections.close_all()
        rq_index = get_queues_map()[RQ_QUEUE]
        results["rq_jobs"] = seed_rq_jobs(args.rq_jobs)
        log(f"RQ jobs in Redis db {REDIS_DB} for django-rq's pages: {results['rq_jobs']}")

        results["sizes"] = {}
        for size, db_url in db_urls.items():
            log(f"loading {size:,} rows into {db_names[size]}")
            t0 = time.perf_counter()
            timings = api_scale.load_rows(db_url, size, users[size][0], seed=0.1, rebuild_indexes=size == args.large)
            hours_s = seed_hours(db_url)
            if hours_s is not None:
                timings["hour_rollups_s"] = hours_s
            facts = api_scale.data_facts(db_url)
            spent = ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
            log(f"loaded in {time.perf_counter() - t0:.0f} s ({spent}); {facts['rows']:,} rows, {facts['table_size']}")
            results["sizes"][str(size)] = {"database": db_names[size], "load": timings, "facts": facts}

        sites: dict[int, tuple[AdminClient, list[Endpoint]]] = {}
        notes: dict[int, dict[str, Any]] = {}
        for size, db_url in db_urls.items():
            server = start_gunicorn(db_url, args.workers, tmp / f"gunicorn-{size}.log", users[size][1])
            servers.append(server)
            client = AdminClient(server.base)
            client.login()
            pages, notes[size] = admin_pages(client, db_url, args.requests, rq_index)
            sites[size] = (client, pages)
            results["sizes"][str(size)]["notes"] = notes[size]
            log(
                f"{label(size)} rows served on {server.base}, logged in; status filter parameter "
                f"{notes[size]['status_param']!r} ({notes[size]['status_param_why']}); "
                f"statistics view {notes[size]['statistics']}"
            )
        log(f"measuring {args.requests} requests per page and size, pages and sizes round-robin")
        t0 = time.perf_counter()
        measure_pages(sites, args.requests)
        log(f"  measured in {time.perf_counter() - t0:.0f} s")
        for server in servers:
            server.stop()
        servers.clear()
        reads = {size: {page.key: page.summary() for page in pages} for size, (_client, pages) in sites.items()}
        for size in sizes:
            results["sizes"][str(size)]["pages"] = reads[size]

        # Before any write: the plans of exactly the data that was measured.
        log(f"capturing every admin page's SQL in-process at {label(args.large)}, with EXPLAIN ANALYZE")
        large_pages = sites[args.large][1]
        explains = {page.key: capture_sql(page.urls[0], user) for page in large_pages if page.key not in REFERENCE}
        results["explain"] = explains
        connections.close_all()

        log(f"making {args.retry:,} rows failed (in SQL), reseeding the counters")
        results["make_failed"] = make_failed(large_url, args.retry)
        retry = run_retry(large_url, args.retry)
        results["retry"] = retry
        connections.close_all()

        # --- report -------------------------------------------------------------
        rows = judge(sizes, reads)
        judged = [r for r in rows if not r["reference"]]
        reads_pass = all(r["p50_pass"] is not False and r["ratio_pass"] is not False for r in judged)
        all_pass = reads_pass and retry["pass"]
        results["rows"] = rows
        results["all_pass"] = all_pass
        note = notes[args.large]
        print_diagnosis(rows, explains, args.large)
        print()
        print(f"Admin scale benchmark, {results['started_at'][:19]}Z, {platform.node()}, {os.cpu_count()} CPUs")
        print(
            f"Postgres {results['postgres']}, Redis db {REDIS_DB}; load average at start "
            f"{results['machine']['loadavg_at_start'][0]:.1f}"
        )
        for size in sizes:
            f = results["sizes"][str(size)]["facts"]
            dom = f["search_domain_rows"]
            print(
                f"  {label(size):>4}: {f['rows']:,} jobs, {f['attempt_rows']:,} attempts, {f['table_size']}; "
                f"failed {f['statuses'].get('failed', 0):,}; {SEARCH_TERM!r} in {dom:,} rows "
                f"({100 * dom / f['rows']:.2f} %)"
            )
        rq_jobs = results["rq_jobs"]
        print(
            f"  django-rq: queue {RQ_QUEUE!r} with {rq_jobs['queued']:,} queued, {rq_jobs['finished']:,} finished, "
            f"{rq_jobs['failed']:,} failed RQ jobs"
        )
        print(f"  status filter parameter: {note['status_param']!r} ({note['status_param_why']})")
        available = "available" if note["statistics"] == "200" else f"not available, {note['statistics']}"
        print(f"  statistics view: {available}")
        print()
        print(
            f"Admin latency in ms through gunicorn (ASGI, {args.workers} workers per database, DEBUG off), logged in "
            f"through /admin/login/; {args.requests} requests per page and size after {WARMUP} warm-up, one at a time,"
        )
        print(
            f"pages and sizes round-robin. Targets: p50 < {P50_TARGET_MS:.0f} ms at {label(args.large)} and "
            f"p50({label(args.large)}) <= {RATIO_TARGET} x p50({label(args.small)}). "
            f"SQL@{label(args.large)}: the page's SQL in-process (ms), and its queries."
        )
        print_table(sizes, rows, explains, note["statistics"])
        print("(reference): django-rq's own pages, for comparison; not counted in the verdict.")
        print()
        print_retry(retry)
        return finish(results, run_started, all_pass=all_pass)
    finally:
        for server in servers:
            server.stop()
        with contextlib.suppress(Exception):
            from django.db import connections as django_connections

            django_connections.close_all()
        with contextlib.suppress(Exception):
            flush_redis()
        if args.keep:
            log(f"kept databases: {', '.join(db_urls.values())}")
        else:
            with psycopg.connect(f"{pg_url}/postgres", autocommit=True) as admin:
                for name in db_names.values():
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            log(f"databases {', '.join(db_names.values())} dropped")


def finish(results: dict[str, Any], run_started: float, *, all_pass: bool) -> int:
    print()
    total_s = time.perf_counter() - run_started
    verdict_line = "ALL TARGETS MET" if all_pass else "SOME TARGETS MISSED"
    print(f"{verdict_line}; run time {total_s / 60:.1f} min; load average now {os.getloadavg()[0]:.1f}")
    results["run_seconds"] = total_s
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"admin_scale-{datetime.now(tz=UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {out.relative_to(ROOT)}")
    return 0 if all_pass else 1


if __name__ == "__main__":
    sys.exit(main())
