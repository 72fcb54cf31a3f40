"""REST API latency at 10,000 and 1,000,000 history rows, POST throughput, and bulk creation vs raw RQ.

    .venv/bin/python bench/api_scale.py            # ~5-10 minutes
    .venv/bin/python bench/api_scale.py --only-bulk  # step 4 alone, about a minute
    .venv/bin/python bench/api_scale.py --help

What it does, in one run:

1. Creates a Postgres database `bench_api_<pid>`, migrates it (`manage.py migrate`)
   and loads a job history straight in SQL (`INSERT ... SELECT FROM generate_series`,
   one statement per batch, with the attempt timeline through a data-modifying CTE):
   30 days of `created_at`, types example/email/report, ~94 % finished, ~5 % failed,
   some queued/started/scheduled/canceled/stopped/abandoned/lost, realistic params
   (e-mail addresses on five domains), results, errors and tracebacks. The loading
   session runs with `session_replication_role = replica` (the count trigger and
   the foreign-key checks are skipped for that session only); `jobs_jobcount` is
   then seeded with one GROUP BY and `jobs_jobendminute` with per-minute counts of
   finished/failed rows (from `ended_at`, the last 8 days as `stats.fold()` keeps),
   exactly what folding the deltas would have produced. When growing to 1M rows the
   secondary indexes of `jobs_job` are dropped and rebuilt from their own
   definitions (`pg_indexes`). Then `VACUUM ANALYZE`.
2. Serves the project with a real gunicorn (`queueproject.asgi:application`,
   `queueproject.web_worker.UvicornWorker`, 2 workers, 127.0.0.1, DEBUG off) and times read
   requests from one keep-alive client (`requests`, `Authorization: Token ...` of
   a superuser), endpoints interleaved round-robin so machine noise hits all alike:
   the first page, a page 10,000 rows deep (reached by following `next`), a filtered
   page, two searches, a job's detail and the statistics. Target: p50 < 50 ms at
   1M rows and p50(1M) <= 1.5 x p50(10k).
3. POST /api/jobs requests per second with bounded concurrency (throttle raised
   through JOBS_API_WRITE_RATE).
4. One POST of 10,000 jobs as a JSON list, in jobs per second, as a ratio of RQ's
   raw `Queue.enqueue_many` (JSONSerializer, `Queue.prepare_data`) of 10,000 jobs
   in the same run (median of the repetitions). Target: ratio >= 0.5. The same
   bulk is also run in-process, timed stage by stage, to show where the time goes.
5. For every missed target: the SQL the endpoint ran (captured in-process) and its
   EXPLAIN (ANALYZE, BUFFERS), or the bulk breakdown and a profile.

Results are printed and written to bench/results/api_scale-<time>.json. Only Redis
database 10 is used (flushed at the start and the end); the database is dropped at
the end unless --keep.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
import requests

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
VENV_BIN = Path(sys.executable).parent
PG_URL = "postgresql://postgres@127.0.0.1:5432"
REDIS_URL = "redis://127.0.0.1:6379/10"  # the only Redis database this benchmark may touch

P50_TARGET_MS = 50.0
RATIO_TARGET = 1.5
BULK_TARGET = 0.5
DEPTH = 10_000
PAGE_SIZE = 50  # JobCursorPagination.page_size
SEARCH_DOMAIN = "initech"  # the rarest of the five e-mail domains: ~1 % of all rows
SEARCH_ERROR = "refused"  # in the error of ~1.6 % of all rows
RAW_QUEUE = "bench-raw"
RAW_FUNC = "bench.noop_jobs.noop"
MINUTE_RETENTION_DAYS = 8  # jobs.stats.MINUTE_RETENTION


def log(message: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5 - 1e-9)))
    return ordered[rank - 1]


def fmt(value: float | None, spec: str = ".1f") -> str:
    return "-" if value is None else format(value, spec)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the data ---------------------------------------------------------------------

# One statement makes jobs number `first`..`last` of a load of `total` jobs, and their
# attempt timeline. Job k is created at end - 30 days + (k - 1 + jitter) x (30 days / total)
# and rows go in oldest first, so the table's physical order follows created_at as it
# does in production (rows are appended as jobs are created). The newest 0.3 % of a
# load are the live backlog (queued, some started); the rest are mostly finished, ~5 %
# failed, and a few scheduled, canceled, stopped, abandoned or lost. Every random
# choice is a column of `base`, so each row's type, status, times and texts agree.
LOAD_SQL = r"""
WITH base AS (
    SELECT gen_random_uuid() AS id, g, %(end)s::timestamptz AS t_end,
           random() AS r_type, random() AS r_status, random() AS r_age, random() AS r_wait,
           random() AS r_run, random() AS r_pick, random() AS r_domain, random() AS r_user, random() AS r_owner
    FROM generate_series(%(first)s::int, %(last)s::int) AS g
), typed AS (
    SELECT b.*,
        CASE WHEN r_type < 0.50 THEN 'example' WHEN r_type < 0.85 THEN 'email' ELSE 'report' END AS type,
        CASE WHEN g > %(total)s::int - %(live)s::int THEN CASE WHEN r_status < 0.9 THEN 'queued' ELSE 'started' END
             WHEN r_status < 0.002 THEN 'scheduled'
             WHEN r_status < 0.005 THEN 'canceled'
             WHEN r_status < 0.006 THEN 'stopped'
             WHEN r_status < 0.007 THEN 'abandoned'
             WHEN r_status < 0.008 THEN 'lost'
             WHEN r_status < 0.058 THEN 'failed'
             ELSE 'finished' END AS status,
        t_end - interval '30 days' + (g - 1 + r_age) * (interval '30 days' / %(total)s::float8) AS created
    FROM base b
), timed AS (
    SELECT t.*,
        CASE type WHEN 'email' THEN 'high' WHEN 'report' THEN 'low' ELSE 'default' END AS queue,
        CASE type WHEN 'email' THEN 5 ELSE 3 END AS max_attempts,
        CASE type WHEN 'email' THEN 120 WHEN 'report' THEN 1800 ELSE 3700 END AS timeout,
        (r_wait ^ 3) * interval '30 seconds' AS wait,
        CASE type WHEN 'email' THEN interval '200 ms' + r_run * interval '2 s'
                  WHEN 'report' THEN interval '2 s' + r_run * interval '60 s'
                  ELSE interval '5 s' + r_run * interval '100 ms' END AS run,
        'user' || (r_user * 50000)::int || '@'
            || CASE WHEN r_domain < 0.45 THEN 'example.com' WHEN r_domain < 0.70 THEN 'gmail.com'
                    WHEN r_domain < 0.85 THEN 'outlook.com' WHEN r_domain < 0.97 THEN 'acme-corp.io'
                    ELSE 'initech.test' END AS address
    FROM typed t
), shaped AS (
    SELECT x.*,
        CASE WHEN status IN ('queued', 'scheduled', 'canceled') THEN 0
             WHEN status = 'failed' THEN max_attempts
             WHEN status = 'finished' AND r_pick < 0.03 THEN 2
             ELSE 1 END AS attempts,
        CASE WHEN status IN ('started', 'finished', 'failed', 'stopped', 'abandoned', 'lost')
             THEN LEAST(t_end, created + wait) END AS started,
        CASE WHEN status IN ('finished', 'failed') THEN LEAST(t_end, created + wait + run)
             WHEN status = 'stopped' THEN LEAST(t_end, created + wait + run / 2)
             WHEN status IN ('abandoned', 'lost') THEN LEAST(t_end, created + wait + interval '20 s')
             WHEN status = 'canceled' THEN LEAST(t_end, created + r_wait * interval '5 minutes') END AS ended,
        CASE WHEN status <> 'failed' THEN ''
             WHEN type = 'example' AND r_pick < 0.8 THEN 'ExampleJobFailed: the example job was asked to fail'
             WHEN type = 'example' THEN 'JobTimeoutException: Task exceeded maximum timeout value (3700 seconds)'
             WHEN type = 'email' AND r_run < 0.4
                 THEN 'SMTPRecipientsRefused: {''' || address || ''': (550, b''5.1.1 User unknown'')}'
             WHEN type = 'email' AND r_run < 0.7 THEN 'ConnectionRefusedError: [Errno 111] Connection refused'
             WHEN type = 'email' THEN 'SMTPServerDisconnected: Connection unexpectedly closed'
             WHEN r_run < 0.5 THEN 'JobTimeoutException: Task exceeded maximum timeout value (1800 seconds)'
             ELSE 'OperationalError: connection to server at "db" (10.0.0.5), port 5432 failed: Connection refused'
        END AS err
    FROM timed x
), ins AS (
    INSERT INTO jobs_job (
        id, type, queue, params, status, progress, progress_message, result, error, traceback,
        attempts, max_attempts, timeout, created_at, enqueued_at, scheduled_for, started_at, ended_at,
        updated_at, worker_name, created_by_id, mirror_seq)
    SELECT
        id, type, queue,
        CASE type
            WHEN 'email' THEN jsonb_build_object(
                'to', jsonb_build_array(address),
                'subject', CASE WHEN r_pick < 0.5 THEN 'Your invoice #' || (r_user * 100000)::int
                                WHEN r_pick < 0.8 THEN 'Welcome aboard' ELSE 'Password reset' END,
                'body', 'Hello,' || chr(10) || chr(10) || 'please find the details of your account below.'
                    || chr(10) || '-- The team',
                'from_email', NULL)
            WHEN 'report' THEN jsonb_build_object(
                'since', CASE WHEN r_pick < 0.5 THEN NULL
                              ELSE to_char((created - interval '7 days') AT TIME ZONE 'UTC',
                                           'YYYY-MM-DD"T"HH24:MI:SS"Z"') END,
                'until', NULL)
            ELSE jsonb_build_object('duration', 5.0, 'steps', 10, 'fail', r_pick < 0.05, 'message', '')
        END,
        status,
        CASE status WHEN 'finished' THEN 100 WHEN 'started' THEN (r_run * 100)::int ELSE 0 END,
        CASE WHEN type = 'example' AND status = 'finished' THEN 'step 10 of 10'
             WHEN type = 'example' AND status = 'started' THEN 'step 3 of 10' ELSE '' END,
        CASE WHEN status <> 'finished' THEN NULL
             WHEN type = 'example' THEN jsonb_build_object('slept', 5.0, 'message', '')
             WHEN type = 'email' THEN jsonb_build_object(
                 'sent', 1, 'to', jsonb_build_array(address), 'message_id', '<' || id || '@mail.internal>')
             ELSE jsonb_build_object(
                 'since', to_char((created - interval '1 day') AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
                 'until', to_char(created AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"+00:00"'),
                 'jobs', (r_run * 50000)::int, 'file', 'reports/' || id || '.csv',
                 'download_url', '/reports/' || id || '/download')
        END,
        CASE status WHEN 'abandoned' THEN 'the worker running it died'
                    WHEN 'lost' THEN 'Redis no longer knows this job' ELSE err END,
        CASE WHEN status <> 'failed' THEN ''
             ELSE 'Traceback (most recent call last):' || chr(10)
                 || '  File "/app/jobs/runner.py", line 58, in run' || chr(10)
                 || '    return spec.func(spec.params.model_validate(params))' || chr(10)
                 || '  File "/app/jobs/tasks/' || type || '.py", line 40, in ' || type || chr(10)
                 || '    raise' || chr(10) || err END,
        attempts, max_attempts, timeout,
        created,
        CASE WHEN status = 'scheduled' THEN NULL ELSE created + interval '3 ms' END,
        CASE WHEN status = 'scheduled' THEN t_end + r_run * interval '7 days' END,
        started, ended,
        COALESCE(ended, started, created),
        CASE WHEN started IS NULL THEN ''
             ELSE 'worker-' || (1 + (r_wait * 8)::int) || '.' || (1000 + (r_pick * 8999)::int) END,
        CASE WHEN r_owner < 0.3 THEN %(user_id)s::int END,
        GREATEST(attempts * 4 - 1, 0)
    FROM shaped
    ORDER BY created
    RETURNING id, status, attempts, worker_name, started_at, ended_at, error, traceback
)
INSERT INTO jobs_jobattempt (job_id, number, worker_name, started_at, ended_at, outcome, error, traceback, retry_at)
SELECT ins.id, n.n, ins.worker_name,
    ins.started_at - (ins.attempts - n.n) * interval '1 minute',
    CASE WHEN n.n < ins.attempts THEN ins.started_at - (ins.attempts - n.n) * interval '1 minute' + interval '1 s'
         ELSE ins.ended_at END,
    CASE WHEN n.n < ins.attempts THEN 'failed' WHEN ins.status = 'started' THEN 'running' ELSE ins.status END,
    CASE WHEN n.n < ins.attempts
         THEN COALESCE(NULLIF(ins.error, ''), 'ConnectionRefusedError: [Errno 111] Connection refused')
         ELSE ins.error END,
    CASE WHEN n.n < ins.attempts OR ins.status = 'failed' THEN ins.traceback ELSE '' END,
    CASE WHEN n.n < ins.attempts THEN ins.started_at - (ins.attempts - n.n - 1) * interval '1 minute' END
FROM ins CROSS JOIN LATERAL generate_series(1, ins.attempts) AS n(n)
"""

SEED_COUNTS = [
    "DELETE FROM jobs_jobcount",
    "INSERT INTO jobs_jobcount (queue, status, count) SELECT queue, status, COUNT(*) FROM jobs_job GROUP BY 1, 2",
    "DELETE FROM jobs_jobendminute",
    f"""INSERT INTO jobs_jobendminute (minute, queue, status, count)
        SELECT date_trunc('minute', ended_at), queue, status, COUNT(*) FROM jobs_job
        WHERE status IN ('finished', 'failed') AND ended_at >= now() - interval '{MINUTE_RETENTION_DAYS} days'
        GROUP BY 1, 2, 3""",
]

SECONDARY_INDEXES = """
    SELECT i.indexname, i.indexdef FROM pg_indexes i
    WHERE i.schemaname = 'public' AND i.tablename = 'jobs_job'
      AND i.indexname NOT IN (SELECT conname FROM pg_constraint WHERE conrelid = 'jobs_job'::regclass)
    ORDER BY i.indexname
"""


def load_rows(db_url: str, n: int, user_id: int, *, seed: float, rebuild_indexes: bool) -> dict[str, float]:
    """Add `n` jobs (and their attempts), reseed the counters, VACUUM ANALYZE; returns timings."""
    timings: dict[str, float] = {}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # no count trigger, no FK checks: this session only
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("SET work_mem = '64MB'")
        conn.execute("SELECT setseed(%s)", (seed,))
        indexes: list[tuple[str, str]] = []
        if rebuild_indexes:
            indexes = [(str(name), str(sql)) for name, sql in conn.execute(SECONDARY_INDEXES).fetchall()]
            for name, _sql in indexes:
                conn.execute(f'DROP INDEX "{name}"')
        started = time.perf_counter()
        batch = 250_000
        done = 0
        end = datetime.now(tz=UTC)
        live = max(1, round(n * 0.003))
        while done < n:
            chunk = min(batch, n - done)
            params = {"first": done + 1, "last": done + chunk, "total": n, "live": live, "end": end, "user_id": user_id}
            conn.execute(LOAD_SQL, params)
            done += chunk
            if n > batch:
                log(f"  inserted {done:,}/{n:,} rows ({time.perf_counter() - started:.0f} s)")
        timings["insert_s"] = time.perf_counter() - started
        started = time.perf_counter()
        for name, sql in indexes:
            t0 = time.perf_counter()
            conn.execute(sql)
            log(f"  rebuilt index {name} ({time.perf_counter() - t0:.1f} s)")
        timings["indexes_s"] = time.perf_counter() - started
        started = time.perf_counter()
        for sql in SEED_COUNTS:
            conn.execute(sql)
        timings["counters_s"] = time.perf_counter() - started
        started = time.perf_counter()
        conn.execute("VACUUM (ANALYZE) jobs_job")
        conn.execute("VACUUM (ANALYZE) jobs_jobattempt")
        conn.execute("ANALYZE jobs_jobcount")
        conn.execute("ANALYZE jobs_jobendminute")
        timings["vacuum_analyze_s"] = time.perf_counter() - started
    return timings


def data_facts(db_url: str) -> dict[str, Any]:
    with psycopg.connect(db_url, autocommit=True) as conn:

        def one(sql: str, *params: Any) -> Any:
            row = conn.execute(sql, params).fetchone()
            return row[0] if row else None

        total = one("SELECT COUNT(*) FROM jobs_job")
        statuses: dict[str, int] = dict(
            conn.execute("SELECT status, COUNT(*) FROM jobs_job GROUP BY 1 ORDER BY 2 DESC").fetchall()
        )
        like = "SELECT COUNT(*) FROM jobs_job WHERE UPPER(params::text) LIKE UPPER(%s) OR UPPER(error) LIKE UPPER(%s)"
        return {
            "rows": total,
            "attempt_rows": one("SELECT COUNT(*) FROM jobs_jobattempt"),
            "statuses": statuses,
            "failed_email_rows": one("SELECT COUNT(*) FROM jobs_job WHERE status = 'failed' AND type = 'email'"),
            "search_domain_rows": one(like, f"%{SEARCH_DOMAIN}%", f"%{SEARCH_DOMAIN}%"),
            "search_error_rows": one(like, f"%{SEARCH_ERROR}%", f"%{SEARCH_ERROR}%"),
            "table_size": one("SELECT pg_size_pretty(pg_total_relation_size('jobs_job'))"),
            "jobcount_total": one("SELECT SUM(count) FROM jobs_jobcount"),
        }


# --- processes --------------------------------------------------------------------


def base_env(db_url: str, *, debug: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "queueproject.settings",
            "DATABASE_URL": db_url,
            "REDIS_URL": REDIS_URL,
            "DEBUG": "1" if debug else "0",
            "SECRET_KEY": "x",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "CSRF_TRUSTED_ORIGINS": "http://127.0.0.1,http://localhost",
            "TLS_TERMINATED_BY_PROXY": "true",  # plain HTTP on loopback: no redirect to HTTPS
            "LOG_LEVEL": "WARNING",
            "ENV_FILE": "/dev/null",  # no .env file may point us at another database or Redis
            "JOBS_API_WRITE_RATE": "1000000/min",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def migrate(db_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=ROOT,
        env=base_env(db_url, debug=True),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"migrate failed:\n{result.stdout}\n{result.stderr}")


#: How gunicorn serves the project: the deployed ASGI setup (Procfile), and WSGI for comparison.
SERVERS = {
    "asgi": ["queueproject.asgi:application", "-k", "queueproject.web_worker.UvicornWorker"],
    "wsgi": ["queueproject.wsgi:application", "-k", "gthread", "--threads", "4"],
}


class Gunicorn:
    """gunicorn on 127.0.0.1, started and stopped by this benchmark only."""

    def __init__(self, db_url: str, port: int, workers: int, log_path: Path, kind: str = "asgi"):
        self.port = port
        self.kind = kind
        self.log_path = log_path
        self.base = f"http://127.0.0.1:{port}"
        self.command = [
            str(VENV_BIN / "gunicorn"),
            *SERVERS[kind],
            *("--bind", f"127.0.0.1:{port}", "--workers", str(workers), "--timeout", "300"),
            *("--graceful-timeout", "10", "--log-level", "warning"),
        ]
        self.env = base_env(db_url, debug=False)
        if kind == "asgi":
            self.env["DB_POOL"] = "true"  # as the Procfile and docker-compose run the web
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, token: str) -> None:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"gunicorn exited ({self.process.returncode}); see {self.log_path}")
            with contextlib.suppress(requests.RequestException):
                answer = requests.get(
                    f"{self.base}/api/jobs/types", headers={"Authorization": f"Token {token}"}, timeout=5
                )
                if answer.status_code == 200:
                    return
            time.sleep(0.3)
        raise SystemExit(f"gunicorn did not answer within 60 s; see {self.log_path}")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()  # the master: it stops its own workers
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None


def pg_sessions(pg_url: str, db_name: str) -> int:
    """Sessions ever opened to the database (pg_stat_database.sessions), after stats had time to flush."""
    time.sleep(1.2)
    with psycopg.connect(f"{pg_url}/postgres", autocommit=True) as conn:
        row = conn.execute("SELECT sessions FROM pg_stat_database WHERE datname = %s", (db_name,)).fetchone()
    return int(row[0]) if row else 0


def pg_connect_ms(db_url: str, count: int = 20) -> float:
    """Median time to open (and close) one Postgres connection from Python, as Django does."""
    times = []
    for _ in range(count):
        started = time.perf_counter()
        psycopg.connect(db_url).close()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


# --- read latency -----------------------------------------------------------------


@dataclass
class Endpoint:
    key: str
    label: str
    urls: list[str]  # requests cycle through these
    times_ms: list[float] = field(default_factory=list)
    items: list[int] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "url": self.urls[0],
            "n": len(self.times_ms),
            "p50_ms": statistics.median(self.times_ms),
            "p95_ms": percentile(self.times_ms, 95),
            "min_ms": min(self.times_ms),
            "max_ms": max(self.times_ms),
            "items_per_page": statistics.median(self.items) if self.items else None,
        }


class Client:
    def __init__(self, base: str, token: str):
        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"

    def get(self, url: str) -> tuple[float, Any]:
        full = url if url.startswith("http") else self.base + url
        started = time.perf_counter()
        answer = self.session.get(full, timeout=120)
        elapsed = (time.perf_counter() - started) * 1000
        if answer.status_code != 200:
            raise SystemExit(f"GET {full}: {answer.status_code} {answer.text[:500]}")
        return elapsed, answer.json()


def deep_cursor_url(client: Client, depth: int) -> str:
    """The URL of the page starting `depth` rows deep, by following `next` (500 rows a page)."""
    url = "/api/jobs?page_size=500"
    seen = 0
    while seen < depth:
        _elapsed, body = client.get(url)
        seen += len(body["results"])
        url = body["next"]
        if url is None:
            raise SystemExit(f"the list ended after {seen} rows, before depth {depth}")
        if seen + 500 > depth and seen < depth:
            # The last step: a page of exactly the rows still missing.
            parts = urlsplit(url)
            query = [(k, v) for k, v in parse_qsl(parts.query) if k != "page_size"]
            query.append(("page_size", str(depth - seen)))
            url = urlunsplit(parts._replace(query=urlencode(query)))
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "page_size"]  # time the default page size
    return urlunsplit(("", "", parts.path, urlencode(query), ""))


def sample_job_ids(db_url: str, count: int) -> list[str]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute("SELECT id FROM jobs_job ORDER BY random() LIMIT %s", (count,)).fetchall()
    return [str(row[0]) for row in rows]


def read_endpoints(client: Client, db_url: str, rows: int, requests_per_endpoint: int) -> list[Endpoint]:
    depth = min(DEPTH, rows - PAGE_SIZE)
    log(f"  following next cursors to depth {depth:,}")
    deep = deep_cursor_url(client, depth)
    ids = sample_job_ids(db_url, requests_per_endpoint)
    return [
        Endpoint("first_page", "GET /api/jobs (first page)", ["/api/jobs"]),
        Endpoint("deep_page", f"GET /api/jobs page {depth:,} rows deep", [deep]),
        Endpoint("filtered", "GET /api/jobs?status=failed&type=email", ["/api/jobs?status=failed&type=email"]),
        Endpoint("search_domain", f"GET /api/jobs?search={SEARCH_DOMAIN}", [f"/api/jobs?search={SEARCH_DOMAIN}"]),
        Endpoint("search_error", f"GET /api/jobs?search={SEARCH_ERROR}", [f"/api/jobs?search={SEARCH_ERROR}"]),
        Endpoint("detail", "GET /api/jobs/{id} (random ids)", [f"/api/jobs/{job_id}" for job_id in ids]),
        Endpoint("stats", "GET /api/jobs/stats", ["/api/jobs/stats"]),
    ]


def measure_reads(client: Any, templates: list[Endpoint], requests_per_endpoint: int) -> dict[str, Endpoint]:
    """Time every endpoint `requests_per_endpoint` times, round-robin, after 5 warm-up requests each."""
    endpoints = [Endpoint(e.key, e.label, e.urls) for e in templates]
    for endpoint in endpoints:  # warm up: connections, caches, plans
        for i in range(5):
            client.get(endpoint.urls[i % len(endpoint.urls)])
    for i in range(requests_per_endpoint):  # round-robin: noise spreads evenly over the endpoints
        for endpoint in endpoints:
            elapsed, body = client.get(endpoint.urls[i % len(endpoint.urls)])
            endpoint.times_ms.append(elapsed)
            if isinstance(body, dict) and "results" in body:
                endpoint.items.append(len(body["results"]))
    return {endpoint.key: endpoint for endpoint in endpoints}


class InProcessClient:
    """The same requests through Django's test Client in this process: no HTTP, no ASGI, no thread hop."""

    def __init__(self, token: str):
        from django.test import Client as DjangoClient

        self.client = DjangoClient(HTTP_HOST="127.0.0.1", HTTP_AUTHORIZATION=f"Token {token}")

    def get(self, url: str) -> tuple[float, Any]:
        started = time.perf_counter()
        answer = self.client.get(url)
        elapsed = (time.perf_counter() - started) * 1000
        if answer.status_code != 200:
            raise SystemExit(f"in-process GET {url}: {answer.status_code} {answer.content[:500]!r}")
        return elapsed, json.loads(answer.content)


# --- writes -----------------------------------------------------------------------


def measure_posts(base: str, token: str, seconds: float, concurrency: int) -> dict[str, Any]:
    headers = {"Authorization": f"Token {token}"}
    body: dict[str, Any] = {"type": "example", "params": {"duration": 1}}
    with requests.Session() as warm:
        for _ in range(20):
            warm.post(f"{base}/api/jobs", json=body, headers=headers, timeout=60)
    start_gate = threading.Barrier(concurrency + 1)
    deadline = [0.0]

    def worker() -> tuple[list[float], Counter[int], float]:
        latencies: list[float] = []
        codes: Counter[int] = Counter()
        with requests.Session() as session:
            session.headers.update(headers)
            start_gate.wait()
            while time.perf_counter() < deadline[0]:
                t0 = time.perf_counter()
                answer = session.post(f"{base}/api/jobs", json=body, timeout=60)
                latencies.append((time.perf_counter() - t0) * 1000)
                codes[answer.status_code] += 1
        return latencies, codes, time.perf_counter()

    with ThreadPoolExecutor(concurrency) as pool:
        futures = [pool.submit(worker) for _ in range(concurrency)]
        deadline[0] = time.perf_counter() + seconds
        started = time.perf_counter()
        start_gate.wait()
        outcomes = [future.result() for future in futures]
    elapsed = max(outcome[2] for outcome in outcomes) - started
    latencies = [value for outcome in outcomes for value in outcome[0]]
    codes: Counter[int] = Counter()
    for outcome in outcomes:
        codes.update(outcome[1])
    return {
        "concurrency": concurrency,
        "seconds": elapsed,
        "requests": len(latencies),
        "created": codes.get(201, 0),
        "status_codes": {str(code): count for code, count in sorted(codes.items())},
        "rps": codes.get(201, 0) / elapsed,
        "p50_ms": statistics.median(latencies),
        "p95_ms": percentile(latencies, 95),
    }


def raw_rq_enqueue_many(n: int) -> dict[str, float]:
    from redis import Redis
    from rq import Queue
    from rq.serializers import JSONSerializer

    conn = Redis.from_url(REDIS_URL)
    queue = Queue(RAW_QUEUE, connection=conn, serializer=JSONSerializer)
    params = {"duration": 5.0, "steps": 10, "fail": False, "message": ""}
    started = time.perf_counter()
    datas = [Queue.prepare_data(RAW_FUNC, args=("example", params), timeout=3700) for _ in range(n)]
    prepared = time.perf_counter()
    jobs = queue.enqueue_many(datas)
    ended = time.perf_counter()
    assert len(jobs) == n
    queue.empty()
    conn.close()
    return {"seconds": ended - started, "prepare_s": prepared - started, "enqueue_many_s": ended - prepared}


def api_bulk(base: str, token: str, n: int) -> dict[str, Any]:
    body = json.dumps([{"type": "example"} for _ in range(n)]).encode()
    started = time.perf_counter()
    answer = requests.post(
        f"{base}/api/jobs",
        data=body,
        headers={"Authorization": f"Token {token}", "Content-Type": "application/json"},
        timeout=300,
    )
    elapsed = time.perf_counter() - started
    if answer.status_code != 201:
        return {"ok": False, "status": answer.status_code, "body": answer.text[:500], "request_bytes": len(body)}
    created = len(answer.json())
    if created != n:
        raise SystemExit(f"bulk POST created {created} jobs, not {n}")
    return {
        "ok": True,
        "seconds": elapsed,
        "request_bytes": len(body),
        "response_bytes": len(answer.content),
    }


@contextlib.contextmanager
def timed(target: Any, name: str, totals: dict[str, float]) -> Iterator[None]:
    """Accumulate the time spent in `target.name` into totals[name] while the block runs."""
    original: Callable[..., Any] = getattr(target, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - t0

    setattr(target, name, wrapper)
    try:
        yield
    finally:
        setattr(target, name, original)


def bulk_breakdown(n: int, user: Any, *, profile: bool = False) -> dict[str, Any]:
    """The API's bulk path in-process, stage by stage (what the view does, in order)."""
    import redis.client
    from rest_framework.renderers import JSONRenderer

    from jobs import rqstore, services, sql
    from jobs.api import serializers as s

    body = json.dumps([{"type": "example"} for _ in range(n)]).encode()
    stages: dict[str, float] = {}
    inner: dict[str, float] = {}
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    t0 = time.perf_counter()
    data = json.loads(body)
    stages["json parse"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    bulk = s.JobCreateSerializer(data=data, many=True, allow_empty=False, max_length=10_000)  # type: ignore[call-arg]
    bulk.is_valid(raise_exception=True)
    stages["DRF JobCreateSerializer(many=True).is_valid"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    job_requests = [s.job_request(item) for item in bulk.validated_data]
    stages["job_request() per item"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with (
        timed(services, "_validate", inner),
        timed(sql, "_prepared", inner),
        timed(rqstore, "stage", inner),
        timed(rqstore, "point_at", inner),
        timed(redis.client.Pipeline, "execute", inner),
    ):
        jobs = services.jobs_enqueue(requests=job_requests, user=user)
    stages["services.jobs_enqueue"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    data_out = s.JobCreatedSerializer(jobs, many=True).data
    stages["JobCreatedSerializer(many=True).data (response)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    rendered = JSONRenderer().render(data_out)
    stages["JSONRenderer.render (response)"] = time.perf_counter() - t0
    if profiler:
        profiler.disable()
    enqueue = stages["services.jobs_enqueue"]
    detail = {
        "  _validate: registry + pydantic, per job": inner.get("_validate", 0.0),
        "  sql._prepared: field values for the database": inner.get("_prepared", 0.0),
        "  stage: point_at per job (RQ job re-pointed at the row)": inner.get("point_at", 0.0),
        "  stage: rest (save per job, RPUSH per queue)": inner.get("stage", 0.0) - inner.get("point_at", 0.0),
        "  Pipeline.execute: Redis MULTI ... EXEC": inner.get("execute", 0.0),
    }
    detail["  rest: Job() objects, COPY/INSERT left after stage, commit"] = enqueue - sum(detail.values())
    ordered: dict[str, float] = {}
    for stage, seconds in stages.items():
        ordered[stage] = seconds
        if stage == "services.jobs_enqueue":
            ordered.update(detail)
    result: dict[str, Any] = {
        "n": n,
        "request_bytes": len(body),
        "response_bytes": len(rendered),
        "stages_s": ordered,
        "total_s": sum(stages.values()),
    }
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(22)
        result["profile"] = out.getvalue()
    return result


# --- diagnosis --------------------------------------------------------------------


def explain_endpoint(url: str, token: str) -> dict[str, Any]:
    """Run the endpoint in-process, capture its SQL, EXPLAIN ANALYZE the slowest query."""
    from django.db import connection
    from django.test import Client as DjangoClient
    from django.test.utils import CaptureQueriesContext

    client = DjangoClient(HTTP_HOST="127.0.0.1")
    path = url if not url.startswith("http") else urlunsplit(("", "", *urlsplit(url)[2:]))
    client.get(path, headers={"Authorization": f"Token {token}"})  # warm
    with CaptureQueriesContext(connection) as captured:
        answer = client.get(path, headers={"Authorization": f"Token {token}"})
    assert answer.status_code == 200, answer.content[:300]
    queries = [(float(query["time"]), query["sql"]) for query in captured.captured_queries]
    # The endpoint's own queries, not authentication's (its token lookup is the same everywhere).
    own = [query for query in queries if '"jobs_' in query[1]] or queries
    slowest_time, slowest_sql = max(own)
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {slowest_sql}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    executed = [line for line in plan.splitlines() if line.startswith("Execution Time:")]
    return {
        "queries": [{"ms": round(t * 1000, 2), "sql": sql} for t, sql in queries],
        "slowest_ms": slowest_time * 1000,
        "slowest_sql": slowest_sql,
        "plan": plan,
        "execution_ms": float(executed[0].split()[2]) if executed else None,
        "shape": plan_shape(plan),
    }


def plan_shape(plan: str) -> str:
    """The plan's nodes, outermost first: 'Limit > Unique > Gather Merge > ...'."""
    nodes = []
    for line in plan.splitlines():
        if "(cost=" in line:
            node = line.split("(cost=")[0].strip().removeprefix("->").strip()
            nodes.append(node.replace(" on jobs_", " jobs_").replace("Index Scan using ", "Index Scan "))
    return " > ".join(nodes)


# --- the run ----------------------------------------------------------------------


def setup_django(db_url: str) -> None:
    os.environ.update(base_env(db_url, debug=False))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def make_superuser() -> tuple[Any, str]:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    user = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench-password-123")
    token = Token.objects.create(user=user)
    return user, str(token.key)


def flush_redis() -> None:
    from redis import Redis

    conn = Redis.from_url(REDIS_URL)
    assert conn.connection_pool.connection_kwargs.get("db") == 10
    conn.flushdb()
    conn.close()


def label(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 and n % 1_000_000 == 0 else f"{n // 1000}k"


def print_reads(sizes: list[int], reads: dict[int, dict[str, dict[str, Any]]], *, judge: bool) -> list[dict[str, Any]]:
    small, large = sizes
    rows = []
    s, b = label(small), label(large)
    header = f"{'endpoint':<40} {'p50@' + s:>8} {'p95@' + s:>8} {'p50@' + b:>8} {'p95@' + b:>8} {'ratio':>6}"
    if judge:
        header += f"  {'p50<50ms':<8} {'ratio<=1.5':<10}"
    print(header)
    print("-" * len(header))
    for key, at_small in reads[small].items():
        at_large = reads[large][key]
        ratio = at_large["p50_ms"] / at_small["p50_ms"]
        p50_ok = at_large["p50_ms"] < P50_TARGET_MS
        ratio_ok = ratio <= RATIO_TARGET
        name = at_large["label"] if key != "deep_page" else "GET /api/jobs page 10,000 rows deep *"
        line = (
            f"{name:<40} {fmt(at_small['p50_ms']):>8} {fmt(at_small['p95_ms']):>8} "
            f"{fmt(at_large['p50_ms']):>8} {fmt(at_large['p95_ms']):>8} {ratio:>6.2f}"
        )
        if judge:
            line += f"  {'PASS' if p50_ok else 'FAIL':<8} {'PASS' if ratio_ok else 'FAIL':<10}"
        print(line)
        rows.append({"key": key, "ratio": ratio, "p50_pass": p50_ok, "ratio_pass": ratio_ok})
    return rows


def measure_bulk(server: Gunicorn, token: str, user: Any, args: argparse.Namespace) -> dict[str, Any]:
    """One POST of `args.bulk` jobs vs RQ's enqueue_many, alternating; then the same in-process, step by step."""
    log(f"bulk: {args.bulk:,} jobs in one POST vs RQ enqueue_many, {args.bulk_reps} repetitions")
    api_runs: list[dict[str, Any]] = []
    raw_runs: list[dict[str, float]] = []
    raw_rq_enqueue_many(200)  # warm up imports and the connection
    # The same for the API: a few small bulks, so that every gunicorn worker has made one
    # (which worker takes a request is up to the kernel). A worker's first costs ~0.5-1 s more.
    for _ in range(3 * args.workers):
        if not api_bulk(server.base, token, 200)["ok"]:
            break
    for rep in range(args.bulk_reps):
        for which in ["api", "raw"] if rep % 2 == 0 else ["raw", "api"]:
            if which == "api":
                api_runs.append(api_bulk(server.base, token, args.bulk))
                if not api_runs[-1]["ok"]:
                    log(f"bulk POST refused: {api_runs[-1]}")
            else:
                raw_runs.append(raw_rq_enqueue_many(args.bulk))
    ok_runs = [run for run in api_runs if run["ok"]]
    raw_s = statistics.median(run["seconds"] for run in raw_runs)
    from django.conf import settings

    bulk: dict[str, Any] = {
        "n": args.bulk,
        "api_runs": api_runs,
        "raw_runs": raw_runs,
        "raw_seconds": raw_s,
        "raw_jobs_per_s": args.bulk / raw_s,
        "request_bytes": api_runs[0]["request_bytes"],
        "data_upload_max_memory_size": settings.DATA_UPLOAD_MAX_MEMORY_SIZE,
        "pass": False,
    }
    if ok_runs:
        api_s = statistics.median(run["seconds"] for run in ok_runs)
        ratio = raw_s / api_s
        bulk.update({"api_seconds": api_s, "api_jobs_per_s": args.bulk / api_s, "ratio": ratio})
        bulk["pass"] = ratio >= BULK_TARGET
    log("bulk, in-process, stage by stage")
    bulk["breakdown"] = bulk_breakdown(args.bulk, user)
    bulk["raw_alongside"] = raw_rq_enqueue_many(args.bulk)
    if not bulk["pass"]:
        profile_n = min(1000, args.bulk)
        log(f"bulk target missed: profiling {profile_n:,} jobs in-process")
        bulk["profile_n"] = profile_n
        bulk["profile"] = bulk_breakdown(profile_n, user, profile=True)["profile"]
    return bulk


def print_bulk(bulk: dict[str, Any], reps: int) -> None:
    n = bulk["n"]
    limit = bulk["data_upload_max_memory_size"]
    print(
        f"Bulk creation of {n:,} jobs (median of {reps}). Request body {bulk['request_bytes']:,} "
        f"bytes; DATA_UPLOAD_MAX_MEMORY_SIZE {limit:,} bytes = {limit // n} bytes per job at {n:,}"
    )
    ok_runs = [run for run in bulk["api_runs"] if run["ok"]]
    if ok_runs:
        runs = ", ".join(format(run["seconds"], ".2f") for run in ok_runs)
        print(
            f"  one POST /api/jobs with a list:    {bulk['api_seconds']:6.2f} s = "
            f"{bulk['api_jobs_per_s']:7,.0f} jobs/s "
            f"(runs {runs} s; response {ok_runs[0]['response_bytes']:,} bytes)"
        )
    else:
        print(f"  one POST /api/jobs with a list: REFUSED {bulk['api_runs'][0]}")
    raw_runs = bulk["raw_runs"]
    runs = ", ".join(format(run["seconds"], ".2f") for run in raw_runs)
    prepare = statistics.median(run["prepare_s"] for run in raw_runs)
    many = statistics.median(run["enqueue_many_s"] for run in raw_runs)
    print(
        f"  RQ Queue.enqueue_many, JSON, raw:  {bulk['raw_seconds']:6.2f} s = {bulk['raw_jobs_per_s']:7,.0f} jobs/s "
        f"(runs {runs} s; prepare_data {prepare:.2f} s + enqueue_many {many:.2f} s)"
    )
    if ok_runs:
        verdict = "PASS" if bulk["pass"] else "FAIL"
        print(f"  ratio API / raw RQ: {bulk['ratio']:.2f} (target >= {BULK_TARGET}): {verdict}")
    breakdown, raw = bulk["breakdown"], bulk["raw_alongside"]
    print_breakdown("in-process, the view's steps", breakdown)
    print(
        f"    => in-process ratio vs raw RQ run right after ({raw['seconds']:.2f} s): "
        f"{raw['seconds'] / breakdown['total_s']:.2f} (no HTTP/ASGI)"
    )
    if "profile" in bulk:
        print()
        print(f"Bulk target missed: in-process profile of the view's steps for {bulk['profile_n']:,} jobs (cumulative)")
        print(bulk["profile"])


def print_breakdown(title: str, breakdown: dict[str, Any]) -> None:
    print(f"  {title} ({breakdown['total_s']:.2f} s in all):")
    for stage, seconds in breakdown["stages_s"].items():
        print(f"    {stage:<56} {seconds:7.3f} s")


def finish(results: dict[str, Any], run_started: float, *, all_pass: bool) -> int:
    print()
    total_s = time.perf_counter() - run_started
    verdict = "ALL TARGETS MET" if all_pass else "SOME TARGETS MISSED"
    print(f"{verdict}; run time {total_s / 60:.1f} min; load average now {os.getloadavg()[0]:.1f}")
    results["run_seconds"] = total_s
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"api_scale-{datetime.now(tz=UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print(f"results: {out.relative_to(ROOT)}")
    return 0 if all_pass else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=10_000, help="rows for the first measurement (10,000)")
    parser.add_argument("--large", type=int, default=1_000_000, help="rows for the second measurement (1,000,000)")
    parser.add_argument("--requests", type=int, default=80, help="timed requests per read endpoint and size (80)")
    parser.add_argument("--post-seconds", type=float, default=6.0, help="seconds of POST load (6)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent POST clients (8)")
    parser.add_argument("--bulk", type=int, default=10_000, help="jobs in the bulk POST (10,000)")
    parser.add_argument("--bulk-reps", type=int, default=5, help="bulk repetitions, API and raw RQ alternating (5)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument("--pg-url", default=PG_URL, help=f"Postgres server, without a database ({PG_URL})")
    parser.add_argument("--keep", action="store_true", help="keep the database (and print its URL)")
    parser.add_argument("--only-bulk", action="store_true", help="measure bulk creation only (about a minute)")
    args = parser.parse_args()
    if args.large <= args.small or args.small <= PAGE_SIZE * 2:
        parser.error("need --large > --small > 100")

    run_started = time.perf_counter()
    db_name = f"bench_api_{os.getpid()}"
    pg_url = args.pg_url.rstrip("/")
    db_url = f"{pg_url}/{db_name}"
    tmp = Path(tempfile.mkdtemp(prefix="api_scale-"))
    server: Gunicorn | None = None
    results: dict[str, Any] = {
        "benchmark": "api_scale",
        "started_at": datetime.now(tz=UTC).isoformat(),
        "machine": {
            "node": platform.node(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
        },
        "config": {k: v for k, v in vars(args).items() if k != "pg_url"},
        "client": f"real gunicorn ({args.workers} queueproject.web_worker.UvicornWorker, DEBUG=0), one keep-alive "
        "requests.Session; and in-process Django test Client",
    }
    with psycopg.connect(f"{pg_url}/postgres", autocommit=True) as admin:
        results["postgres"] = admin.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        admin.execute(f'CREATE DATABASE "{db_name}"')
    log(f"database {db_name} created; Redis {REDIS_URL}")
    try:
        flush_redis()
        t0 = time.perf_counter()
        migrate(db_url)
        log(f"migrated ({time.perf_counter() - t0:.1f} s)")
        setup_django(db_url)
        from django.conf import settings
        from django.db import connections

        results["data_upload_max_memory_size"] = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        user, token = make_superuser()
        connections.close_all()
        if args.only_bulk:
            server = Gunicorn(db_url, free_port(), args.workers, tmp / "gunicorn.log")
            server.start(token)
            bulk = measure_bulk(server, token, user, args)
            results["bulk"] = bulk
            print()
            print_bulk(bulk, args.bulk_reps)
            return finish(results, run_started, all_pass=bulk["pass"])

        sizes = [args.small, args.large]
        reads: dict[int, dict[str, dict[str, Any]]] = {}
        reads_inproc: dict[int, dict[str, dict[str, Any]]] = {}
        endpoints_by_size: dict[int, list[Endpoint]] = {}
        results["sizes"] = {}
        loaded = 0
        explains: dict[str, Any] = {}
        for index, size in enumerate(sizes):
            log(f"loading {size - loaded:,} rows (to {size:,})")
            t0 = time.perf_counter()
            timings = load_rows(db_url, size - loaded, user.id, seed=0.1 + index / 10, rebuild_indexes=index > 0)
            loaded = size
            facts = data_facts(db_url)
            spent = ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
            log(f"loaded in {time.perf_counter() - t0:.0f} s ({spent}); {facts['rows']:,} rows, {facts['table_size']}")
            server = Gunicorn(db_url, free_port(), args.workers, tmp / "gunicorn.log")
            server.start(token)
            client = Client(server.base, token)
            _ms, stats_body = client.get("/api/jobs/stats")
            facts["stats_total"] = stats_body["totals"]["total"]
            if facts["stats_total"] != facts["rows"]:
                raise SystemExit(f"stats total {facts['stats_total']} != rows {facts['rows']}")
            templates = read_endpoints(client, db_url, size, args.requests)
            endpoints_by_size[size] = templates
            log(f"measuring reads at {size:,} rows through gunicorn (ASGI) on {server.base}")
            sessions_before = pg_sessions(pg_url, db_name)
            reads[size] = {k: e.summary() for k, e in measure_reads(client, templates, args.requests).items()}
            made = len(templates) * (5 + args.requests)
            facts["pg_sessions_per_request"] = (pg_sessions(pg_url, db_name) - sessions_before) / made
            server.stop()
            server = None
            log(f"measuring reads at {size:,} rows in-process (Django test Client)")
            inproc = measure_reads(InProcessClient(token), templates, args.requests)
            reads_inproc[size] = {k: e.summary() for k, e in inproc.items()}
            results["sizes"][str(size)] = {
                "load": timings,
                "facts": facts,
                "reads_gunicorn_asgi": reads[size],
                "reads_in_process": reads_inproc[size],
            }
            if size == args.large:
                # Before any write: the plans of exactly the data that was measured.
                log("capturing every endpoint's SQL and EXPLAIN ANALYZE of its slowest query")
                explains = {endpoint.key: explain_endpoint(endpoint.urls[0], token) for endpoint in templates}
            connections.close_all()

        log("what-if: the same reads and POSTs through gunicorn serving WSGI (gthread) instead of ASGI")
        server = Gunicorn(db_url, free_port(), args.workers, tmp / "gunicorn-wsgi.log", kind="wsgi")
        server.start(token)
        client = Client(server.base, token)
        sessions_before = pg_sessions(pg_url, db_name)
        wsgi_reads = measure_reads(client, endpoints_by_size[args.large], args.requests)
        made = len(endpoints_by_size[args.large]) * (5 + args.requests)
        wsgi_sessions = (pg_sessions(pg_url, db_name) - sessions_before) / made
        wsgi_posts = measure_posts(server.base, token, args.post_seconds, args.concurrency)
        server.stop()
        server = None
        connect_ms = pg_connect_ms(db_url)
        results["wsgi_what_if"] = {
            "server": " ".join(SERVERS["wsgi"]),
            "reads": {k: e.summary() for k, e in wsgi_reads.items()},
            "pg_sessions_per_request": wsgi_sessions,
            "post": wsgi_posts,
        }
        results["pg_connect_ms"] = connect_ms

        server = Gunicorn(db_url, free_port(), args.workers, tmp / "gunicorn.log")
        server.start(token)
        log(f"POST /api/jobs (ASGI) for {args.post_seconds:.0f} s, {args.concurrency} concurrent clients")
        posts = measure_posts(server.base, token, args.post_seconds, args.concurrency)
        results["post"] = posts

        bulk = measure_bulk(server, token, user, args)
        server.stop()
        server = None
        results["bulk"] = bulk
        connections.close_all()

        # --- report -------------------------------------------------------------
        print()
        print(f"API scale benchmark, {results['started_at'][:19]}Z, {platform.node()}, {os.cpu_count()} CPUs")
        print(f"Postgres {results['postgres']}, Redis db 10; load average at start {os.getloadavg()[0]:.1f}")
        for size in sizes:
            f = results["sizes"][str(size)]["facts"]
            dom, err = f["search_domain_rows"], f["search_error_rows"]
            print(
                f"  {label(size):>3}: {f['rows']:,} jobs, {f['attempt_rows']:,} attempts, {f['table_size']}; "
                f"failed+email {f['failed_email_rows']:,}; search {SEARCH_DOMAIN!r} matches {dom:,} "
                f"({100 * dom / f['rows']:.2f} %), {SEARCH_ERROR!r} {err:,} ({100 * err / f['rows']:.2f} %)"
            )
        big = results["sizes"][str(args.large)]["load"]
        print(
            f"  growing to {label(args.large)}: insert {big['insert_s']:.0f} s, "
            f"rebuild indexes {big['indexes_s']:.0f} s, "
            f"seed counters {big['counters_s']:.1f} s, VACUUM ANALYZE {big['vacuum_analyze_s']:.0f} s"
        )
        print()
        print(
            f"Read latency in ms through gunicorn, ASGI as deployed ({args.requests} requests each after 5 warm-up, "
            "endpoints round-robin, one keep-alive client)"
        )
        read_rows = print_reads(sizes, reads, judge=True)
        print(f"* at {label(args.small)} rows: {min(DEPTH, args.small - PAGE_SIZE):,} rows deep (the last full page)")
        print()
        print("Same requests in-process (Django test Client: no HTTP, no ASGI), ms, for reference")
        print_reads(sizes, reads_inproc, judge=False)
        print()
        wsgi = results["wsgi_what_if"]
        per_request = ", ".join(
            f"{results['sizes'][str(size)]['facts']['pg_sessions_per_request']:.2f} at {label(size)}" for size in sizes
        )
        print(
            f"New Postgres sessions per request: ASGI {per_request}; WSGI {wsgi['pg_sessions_per_request']:.2f}. "
            f"Opening one costs {connect_ms:.1f} ms (median, psycopg.connect from Python)."
        )
        print(
            f"Where the time goes at {label(args.large)}, p50 ms: ASGI (as deployed), gunicorn {wsgi['server']} "
            "(what-if, same 2 workers), in-process, and the slowest SQL alone (EXPLAIN ANALYZE) with its plan"
        )
        header = f"{'endpoint':<40} {'ASGI':>6} {'WSGI':>6} {'in-proc':>7} {'SQL':>6}  plan"
        print(header)
        print("-" * 120)
        for key, at_large in reads[args.large].items():
            info = explains[key]
            print(
                f"{at_large['label']:<40} {fmt(at_large['p50_ms']):>6} {fmt(wsgi['reads'][key]['p50_ms']):>6} "
                f"{fmt(reads_inproc[args.large][key]['p50_ms']):>7} {fmt(info['execution_ms'], '.2f'):>6}  "
                f"{info['shape'][:56]}"
            )
        print()
        for kind, post in (("ASGI", posts), ("WSGI what-if", wsgi["post"])):
            print(
                f"POST /api/jobs ({kind}), one example job each, {post['concurrency']} concurrent clients for "
                f"{post['seconds']:.1f} s at {label(args.large)} rows: {post['rps']:.0f} jobs created/s; "
                f"p50 {post['p50_ms']:.0f} ms, p95 {post['p95_ms']:.0f} ms; status codes {post['status_codes']}"
            )
        print()
        print_bulk(bulk, args.bulk_reps)

        # --- diagnosis of missed targets -------------------------------------------
        failed_reads = [row for row in read_rows if not (row["p50_pass"] and row["ratio_pass"])]
        bulk_ok = bulk["pass"]
        results["targets"] = {"reads": read_rows, "bulk_ratio_pass": bulk_ok, "all_pass": not failed_reads and bulk_ok}
        by_key = {endpoint.key: endpoint for endpoint in endpoints_by_size[args.large]}
        results["explain"] = explains
        if failed_reads:
            print()
            print(
                f"Missed read targets: the SQL each ran in-process at {label(args.large)} rows "
                "(captured right after its measurement, before any write); the slowest EXPLAINed"
            )
            for row in failed_reads:
                info = explains[row["key"]]
                print()
                print(f"== {by_key[row['key']].label}")
                for query in info["queries"]:
                    sql = query["sql"]
                    print(f"  {query['ms']:8.2f} ms  {sql[:150]}{'...' if len(sql) > 150 else ''}")
                print(f"  slowest ({info['slowest_ms']:.1f} ms): {info['slowest_sql']}")
                print("  EXPLAIN (ANALYZE, BUFFERS):")
                for line in info["plan"].splitlines():
                    print(f"    {line}")
        return finish(results, run_started, all_pass=results["targets"]["all_pass"])
    finally:
        if server is not None:
            server.stop()
        with contextlib.suppress(Exception):
            from django.db import connections as django_connections

            django_connections.close_all()
        with contextlib.suppress(Exception):
            flush_redis()
        if args.keep:
            log(f"kept database: {db_url}")
        else:
            with psycopg.connect(f"{pg_url}/postgres", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
            log(f"database {db_name} dropped")


if __name__ == "__main__":
    sys.exit(main())
