"""Pruning the history: rows per second on 1,000,000 jobs, and the API's p95 before and during the prune.

    .venv/bin/python bench/prune.py              # ~4-6 minutes on 2 cores
    .venv/bin/python bench/prune.py --rows 200000 --seconds 8   # a smoke run
    .venv/bin/python bench/prune.py --help

1. Creates the Postgres database `bench_prune_<pid>`, migrates it and loads `--rows` jobs with
   `api_scale.py`'s SQL (types example/email/report, ~94 % finished, ~5 % failed, a few of every
   other status, attempts), created over 30 days ending `--end-days-ago` (20) days ago: with the
   default ages (finished 30 days, failed 90), about two thirds of the finished jobs are past
   their age. The counters are seeded as `stats.fold()` would have. The report jobs each get a
   schedule run (20 schedules) and an audit entry, as a schedule's jobs have.
2. Serves the project with a real gunicorn (ASGI, `queueproject.web_worker.UvicornWorker`,
   2 workers, DEBUG off, DB_POOL on, port `--port` 8131) and times `GET /api/jobs/` (a token)
   from one keep-alive client thread for `--seconds` (15) with nothing else running.
3. Runs `jobs.retention.prune()` (the function the scheduler and `manage.py prunehistory` run)
   in this process with the default policy and batch size, while the same client keeps timing
   `GET /api/jobs/`; reports the prune's rows per second and the API's p50/p95 during it, and
   p95 during / p95 before as a ratio.
4. Checks that the status counts (`stats.status_counts()`, folded) are the same after the prune.

Only Redis database 9 is used (flushed at the start and the end); the database is dropped at the
end unless `--keep`. Results go to `bench/results/prune-<time>.json` (git-ignored).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import api_scale  # the loader and the gunicorn runner

RESULTS_DIR = Path(__file__).resolve().parent / "results"
REDIS_URL = "redis://127.0.0.1:6379/9"  # the only Redis database this benchmark touches
#: DEBUG off as deployed, speaking plain HTTP to 127.0.0.1 (as behind a proxy that terminates TLS).
ENV = {
    "REDIS_URL": REDIS_URL,
    "ALLOWED_HOSTS": "127.0.0.1,localhost",
    "CSRF_TRUSTED_ORIGINS": "http://127.0.0.1",
    "TLS_TERMINATED_BY_PROXY": "true",
    "SECURE_COOKIES": "false",
}
SCHEDULES = 20


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))]


def load(db_url: str, rows: int, user_id: int, end: datetime) -> dict[str, float]:
    """`rows` jobs created over the 30 days before `end` (api_scale's SQL), counters seeded, indexes rebuilt."""
    timings: dict[str, float] = {}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("SET session_replication_role = replica")  # no triggers, no FK checks: this session only
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("SELECT setseed(0.42)")
        indexes = [(str(n), str(sql)) for n, sql in conn.execute(api_scale.SECONDARY_INDEXES).fetchall()]
        for name, _sql in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        started = time.perf_counter()
        done, batch, live = 0, 250_000, max(1, round(rows * 0.003))
        while done < rows:
            chunk = min(batch, rows - done)
            params = {
                "first": done + 1,
                "last": done + chunk,
                "total": rows,
                "live": live,
                "end": end,
                "user_id": user_id,
            }
            conn.execute(api_scale.LOAD_SQL, params)
            done += chunk
            log(f"  inserted {done:,}/{rows:,} rows ({time.perf_counter() - started:.0f} s)")
        timings["insert_s"] = time.perf_counter() - started
        started = time.perf_counter()
        for _name, sql in indexes:
            conn.execute(sql)
        timings["indexes_s"] = time.perf_counter() - started
        # The report jobs come from schedules: a run and a creation audit entry each.
        conn.execute(
            "INSERT INTO jobs_schedulerun (schedule_id, due_at, job_id, missed, by_hand, created_at) "
            "SELECT (SELECT MIN(id) FROM jobs_schedule) + (row_number() OVER (ORDER BY created_at)) %% %s, "
            "created_at, id, false, false, created_at FROM jobs_job WHERE type = 'report'",
            (SCHEDULES,),
        )
        conn.execute(
            "INSERT INTO jobs_jobaudit (job_id, job_type, action, status_before, username, via, note, at) "
            "SELECT id, type, 'create', 'pending', '', 'schedule', 'schedule, due', created_at "
            "FROM jobs_job WHERE type = 'report'"
        )
        for sql in api_scale.SEED_COUNTS:
            conn.execute(sql)
        started = time.perf_counter()
        for table in ("jobs_job", "jobs_jobattempt", "jobs_schedulerun", "jobs_jobaudit", "jobs_jobcount"):
            conn.execute(f"VACUUM (ANALYZE) {table}")
        timings["vacuum_analyze_s"] = time.perf_counter() - started
    return timings


class Pinger(threading.Thread):
    """GET /api/jobs/ back to back on one keep-alive session; each time with the phase it fell in."""

    def __init__(self, base: str, token: str):
        super().__init__(daemon=True)
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Token {token}"
        self.url = f"{base}/api/jobs/"
        self.phase = "warm-up"
        self.times: dict[str, list[float]] = {}
        self.errors: dict[str, int] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            phase = self.phase
            started = time.perf_counter()
            answer = self.session.get(self.url, timeout=60)
            elapsed = (time.perf_counter() - started) * 1000
            if answer.status_code != 200 or len(answer.json()["results"]) != 50:
                self.errors[phase] = self.errors.get(phase, 0) + 1
            if phase == self.phase:  # not straddling two phases
                self.times.setdefault(phase, []).append(elapsed)
            time.sleep(0.02)

    def summary(self, phase: str) -> dict[str, Any]:
        times = self.times.get(phase, [])
        return {
            "n": len(times),
            "p50_ms": statistics.median(times) if times else None,
            "p95_ms": percentile(times, 95) if times else None,
            "max_ms": max(times) if times else None,
            "errors": self.errors.get(phase, 0),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="jobs in the history (1,000,000)")
    parser.add_argument("--end-days-ago", type=float, default=20, help="the newest job's age in days (20)")
    parser.add_argument("--seconds", type=float, default=15, help="seconds of API timing before the prune (15)")
    parser.add_argument("--batch", type=int, default=None, help="jobs per transaction (JOBS_RETENTION_BATCH)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument("--port", type=int, default=8131, help="gunicorn's port (8131)")
    parser.add_argument("--pg-url", default=api_scale.PG_URL, help=f"Postgres server ({api_scale.PG_URL})")
    parser.add_argument("--keep", action="store_true", help="keep the database (and print its URL)")
    args = parser.parse_args()

    db_name = f"bench_prune_{os.getpid()}"
    pg_url = args.pg_url.rstrip("/")
    db_url = f"{pg_url}/{db_name}"
    tmp = Path(tempfile.mkdtemp(prefix="prune-"))
    results: dict[str, Any] = {
        "benchmark": "prune",
        "started_at": datetime.now(tz=UTC).isoformat(),
        "machine": {"node": platform.node(), "cpus": os.cpu_count(), "loadavg_at_start": os.getloadavg()},
        "config": {k: v for k, v in vars(args).items() if k != "pg_url"},
    }
    with psycopg.connect(f"{pg_url}/postgres", autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db_name}"')
    log(f"database {db_name} created; Redis {REDIS_URL}")
    server: api_scale.Gunicorn | None = None
    pinger: Pinger | None = None
    try:
        api_scale.migrate(db_url)
        os.environ.update({**api_scale.base_env(db_url, debug=False), **ENV})
        import django

        django.setup()
        from django.conf import settings
        from redis import Redis

        Redis.from_url(REDIS_URL).flushdb()
        from django.db import connection

        from jobs import retention, stats
        from jobs.models import Job, Schedule

        user, token = api_scale.make_superuser()
        Schedule.objects.bulk_create(
            [Schedule(name=f"nightly {i}", type="report", cron="0 2 * * *", timezone="UTC") for i in range(SCHEDULES)]
        )
        end = datetime.now(tz=UTC) - timedelta(days=args.end_days_ago)
        log(f"loading {args.rows:,} jobs created from {end - timedelta(days=30):%Y-%m-%d} to {end:%Y-%m-%d}")
        results["load"] = load(db_url, args.rows, user.pk, end)
        policy = retention.Policy.from_settings()
        candidates = retention.count_candidates(policy)
        counts_before = stats.status_counts()
        results["rows_before"] = Job.objects.count()
        log(f"{results['rows_before']:,} jobs; {candidates:,} past their age ({policy.describe()})")

        server = api_scale.Gunicorn(db_url, args.port, args.workers, tmp / "gunicorn.log")
        server.env.update(ENV)
        server.start(token)
        pinger = Pinger(server.base, token)
        pinger.start()
        time.sleep(3)
        pinger.phase = "before"
        log(f"timing GET /api/jobs/ for {args.seconds:.0f} s with nothing else running")
        time.sleep(args.seconds)
        pinger.phase = "during"
        log("pruning, while GET /api/jobs/ goes on")
        last = [0.0]

        def progress(result: retention.PruneResult) -> None:
            if time.monotonic() - last[0] > 10:
                last[0] = time.monotonic()
                log(f"  {result.examined:,}/{candidates:,} examined, {result.deleted:,} deleted ({result.rate:,.0f}/s)")

        result = retention.prune(policy=policy, batch_size=args.batch, progress=progress)
        pinger.phase = "after"
        time.sleep(2)
        pinger.stop.set()
        pinger.join(timeout=60)
        stats.fold()
        counts_after = stats.status_counts()
        rows_after = Job.objects.count()
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_size_pretty(pg_total_relation_size('jobs_job'))")
            table_size = cursor.fetchone()[0]
        before, during = pinger.summary("before"), pinger.summary("during")
        ratio = during["p95_ms"] / before["p95_ms"] if before["p95_ms"] and during["p95_ms"] else None
        same = {
            q: {s: n for s, n in by.items() if not s.startswith(retention.PRUNED_PREFIX)}
            for q, by in counts_after.items()
        }
        results.update(
            {
                "candidates": candidates,
                "prune": {**result.as_dict(), "rate_rows_per_s": result.rate, "skipped_locked": result.skipped_locked},
                "rows_after": rows_after,
                "table_size_after": table_size,
                "api_before": before,
                "api_during": during,
                "p95_ratio": ratio,
                "status_counts_unchanged": same == counts_before,
                "batch_size": args.batch or settings.JOBS_RETENTION_BATCH,
            }
        )
        print()
        print(f"history: {results['rows_before']:,} jobs, {candidates:,} past their age; {rows_after:,} left")
        print(
            f"prune:   {result.deleted:,} jobs in {result.batches:,} batches of {results['batch_size']:,}, "
            f"{result.seconds:.1f} s: {result.rate:,.0f} rows/s (with {result.attempts:,} attempts, "
            f"{result.audits:,} audit entries, {result.schedule_runs:,} schedule runs)"
        )
        print(f"{'GET /api/jobs/':<16}{'n':>6}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}{'errors':>8}")
        for name, row in (("before", before), ("during", during)):
            print(
                f"{name:<16}{row['n']:>6}{row['p50_ms'] or 0:>9.1f}{row['p95_ms'] or 0:>9.1f}"
                f"{row['max_ms'] or 0:>9.1f}{row['errors']:>8}"
            )
        print(f"p95 during / before: {ratio:.2f}" if ratio else "p95 ratio: n/a")
        print(f"status counts the same after the prune (folded): {results['status_counts_unchanged']}")
    finally:
        if pinger is not None:
            pinger.stop.set()
        if server is not None:
            server.stop()
        from redis import Redis

        Redis.from_url(REDIS_URL).flushdb()
        if args.keep:
            log(f"kept: {db_url}")
        else:
            from django.db import connections

            connections.close_all()
            with psycopg.connect(f"{pg_url}/postgres", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"prune-{datetime.now(tz=UTC):%Y%m%dT%H%M%S}.json"
    path.write_text(json.dumps(results, indent=2, default=str))
    log(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
