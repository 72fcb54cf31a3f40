"""The scheduler at scale: 10,000 schedules due within a minute, and 100,000 delayed jobs due at one second.

    .venv/bin/python bench/schedules.py                                  # the full run, ~5-8 minutes
    .venv/bin/python bench/schedules.py --schedules 500 --delayed 5000   # a smoke run, about a minute
    .venv/bin/python bench/schedules.py --help

Both parts run one real scheduler process (`manage.py runscheduler`, its default tick unless
--tick, DEBUG off, no worker) against a fresh database, and stop it at the end of the part.

1. **Schedules**: with the scheduler active (it holds its Redis lock), N enabled interval
   schedules (type `example`, params {"duration": 0}, every 3600 s) are bulk-inserted, their
   starts spread evenly over the next minute and `next_due_at` computed by
   `jobs.schedules.timing_of(s).next_after(now)`, as `schedule_save` would. The bench waits
   until every schedule has its run (a `ScheduleRun` with its job), then reports the lag
   `ScheduleRun.created_at - due_at` (p50, p99, max, how many within 1 s) and the job's
   `enqueued_at - due_at` (on its queue; target p99 <= 1 s), the scheduler's CPU time over the
   minute (/proc/<pid>/stat: user + system, all its threads), and checks exactly-once: N runs,
   N jobs, N distinct (schedule, due time), N ids on the Redis queue.
2. **Delayed jobs**: N jobs with one `run_at` T (a whole second) are created through
   `jobs.services.jobs_enqueue` in chunks of `MAX_BULK` before the scheduler starts (T is set
   from the creation rate of a timed calibration chunk, so it falls after the scheduler is
   up). From T the bench polls the queue's Redis list: when the last job is on it (seconds
   after T, jobs per second), that none was promoted twice (list length exactly N, N distinct
   ids, the created ids), and when the rows all say `queued` (the scheduler's mirror thread).

Only Redis database 10 is used (flushed at the start and the end; --redis-db) and the Postgres
database `bench_schedules` (created, dropped at the end unless --keep; --database); with --sqlite
a file in a temporary directory instead. Results go to bench/results/schedules-<time>.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
REDIS_URL = "redis://127.0.0.1:6379/10"  # the only Redis database this benchmark may touch (--redis-db)
PG_SERVER = "postgresql://postgres@127.0.0.1:5432"
PG_DB = "bench_schedules"  # --database
TARGET_P99_S = 1.0
EVERY = 3600  # seconds: each schedule is due once during the bench
JOB_TYPE, JOB_PARAMS = "example", {"duration": 0}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# --- small helpers ------------------------------------------------------------


def log(message: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def fmt(value: float | None, spec: str = ".3f") -> str:
    return "-" if value is None else format(value, spec)


def lag_stats(lags: list[float]) -> dict[str, Any]:
    return {
        "n": len(lags),
        "p50": percentile(lags, 50),
        "p99": percentile(lags, 99),
        "max": max(lags) if lags else None,
        "min": min(lags) if lags else None,
        "within_1s": sum(1 for lag in lags if lag <= 1.0),
    }


def sleep_until(moment: float) -> None:
    delay = moment - time.time()
    if delay > 0:
        time.sleep(delay)


def commit_of(project: Path) -> str:
    """The checked-out commit, read from .git (best effort, no git command)."""
    git = project / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head.removeprefix("ref: ")
        if (git / ref).exists():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(f" {ref}"):
                return line.split()[0]
    except OSError:
        pass
    return ""


# --- environment --------------------------------------------------------------


def base_env(db_url: str, *, debug: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DB_POOL", "JOBS_MODULES", "JOBS_SCHEDULES"}}
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
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
        }
    )
    return env


class Database:
    """The fresh database of the run: Postgres `bench_schedules`, or a SQLite file."""

    def __init__(self, sqlite: bool, tmp: Path, keep: bool):
        self.sqlite, self.keep = sqlite, keep
        self.url = f"sqlite:///{tmp / 'bench.sqlite3'}" if sqlite else f"{PG_SERVER}/{PG_DB}"
        self.created = False

    def _admin(self, statement: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
            conn.execute(sql.SQL(statement).format(sql.Identifier(PG_DB)))

    def create(self) -> None:
        if not self.sqlite:
            log(f"creating Postgres database {PG_DB}")
            self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)")
            self._admin("CREATE DATABASE {}")
            self.created = True
        log("migrating")
        result = subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=base_env(self.url, debug=True),
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise SystemExit(f"migrate failed:\n{result.stdout}\n{result.stderr}")

    def drop(self) -> None:
        if self.created and not self.keep:
            with contextlib.suppress(Exception):
                self._admin("DROP DATABASE IF EXISTS {} WITH (FORCE)")


def setup_django(db_url: str) -> None:
    os.environ.update(base_env(db_url, debug=False))
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def reset() -> None:
    """Empty the jobs app's tables and Redis database 10."""
    from django.db import connection

    from bench import agent
    from jobs import queues

    agent.reset()
    connection.close()
    queues.redis().flushdb()


def analyze() -> None:
    """Planner statistics, as a long-lived table has (autovacuum keeps them on Postgres)."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")


# --- the scheduler process ------------------------------------------------------


class SchedulerProcess:
    def __init__(self, env: dict[str, str], tick: float | None, log_path: Path):
        command = [sys.executable, "manage.py", "runscheduler"]
        if tick is not None:
            command += ["--tick", str(tick)]
        self.log_path = log_path
        with log_path.open("ab") as out:
            self.process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.pid = self.process.pid

    def cpu_seconds(self) -> float:
        """User + system CPU of the process (all its threads) so far, from /proc."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; field 3 is fields[0]
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime: fields 14, 15

    def wait_active(self, timeout: float = 60.0) -> float:
        """Wait until it holds the scheduler lock; returns the wall time it was seen to."""
        from jobs import queues
        from jobs.scheduler import LOCK_KEY

        conn: Any = queues.redis()
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the scheduler exited ({self.process.returncode}):\n{self.tail()}")
            holder = conn.get(LOCK_KEY)
            if holder and f":{self.pid}:" in holder.decode():
                return time.time()
            time.sleep(0.05)
        raise RuntimeError(f"the scheduler did not take its lock within {timeout:.0f}s:\n{self.tail()}")

    def tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                log("the scheduler did not stop within 20s of SIGTERM: killing it")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


# --- part 1: schedules due within a minute ----------------------------------------


def make_schedules(n: int, window: float, lead: float) -> tuple[datetime, datetime, float]:
    """N interval schedules whose first due times are spread evenly over `window` seconds from now + lead."""
    from django.utils import timezone

    from jobs.models import Schedule
    from jobs.schedules import timing_of

    began = time.perf_counter()
    now = timezone.now()
    first = now + timedelta(seconds=lead)
    rows = []
    for i in range(n):
        schedule = Schedule(
            name=f"bench-{i:06d}",
            type=JOB_TYPE,
            params=dict(JOB_PARAMS),
            every=EVERY,
            timezone="UTC",
            start_at=first + timedelta(seconds=window * i / n),
            created_at=now,
        )
        schedule.next_due_at = timing_of(schedule).next_after(now)
        rows.append(schedule)
    Schedule.objects.bulk_create(rows, batch_size=1000)
    analyze()
    return first, rows[-1].start_at or first, time.perf_counter() - began


def part_schedules(args: argparse.Namespace, env: dict[str, str], tmp: Path) -> dict[str, Any]:
    from django.db.models import Count

    from jobs import queues, registry
    from jobs.models import Job, ScheduleRun

    n = args.schedules
    log(f"part 1: {n} schedules due within {args.window:.0f}s")
    reset()
    scheduler = SchedulerProcess(env, args.tick, tmp / "scheduler-1.log")
    result: dict[str, Any] = {"schedules": n, "window_s": args.window, "every_s": EVERY}
    try:
        scheduler.wait_active()
        if args.idle:
            # The scheduler's own cost with nothing due (its rounds, the reconciler, the mirror thread).
            idle_cpu = scheduler.cpu_seconds()
            time.sleep(args.idle)
            idle_cpu = scheduler.cpu_seconds() - idle_cpu
            result["idle_cpu_s_per_min"] = round(idle_cpu / args.idle * 60, 3)
            log(f"  idle: {idle_cpu:.2f} CPU-s in {args.idle:.0f}s ({idle_cpu / args.idle * 60:.1f} CPU-s per minute)")
        first_due, last_due, created_s = make_schedules(n, args.window, args.lead)
        result["created_s"] = round(created_s, 3)
        log(
            f"created {n} schedules in {created_s:.2f}s; first due {first_due:%H:%M:%S.%f}, last {last_due:%H:%M:%S.%f}"
        )
        if time.time() > first_due.timestamp():
            log("WARNING: the schedules were created after the first due time (raise --lead)")
        sleep_until(first_due.timestamp())
        cpu_start, wall_start = scheduler.cpu_seconds(), time.time()
        deadline = last_due.timestamp() + args.timeout
        made, next_report = 0, time.time() + 10
        while time.time() < deadline:
            made = ScheduleRun.objects.filter(job__isnull=False).count()
            if made >= n:
                break
            if scheduler.process.poll() is not None:
                raise RuntimeError(f"the scheduler exited ({scheduler.process.returncode}):\n{scheduler.tail()}")
            if time.time() >= next_report:
                due_so_far = min(n, math.floor(n * (time.time() - wall_start) / args.window) + 1)
                log(f"  {made}/{n} runs made, {due_so_far} due so far")
                next_report += 10
            time.sleep(0.2)
        wall_end = time.time()
        cpu = scheduler.cpu_seconds() - cpu_start
        finished = made >= n
        if not finished:
            log(f"TIMEOUT: {made}/{n} runs made {args.timeout:.0f}s after the last due time; stopping the scheduler")
    finally:
        scheduler.stop()

    elapsed = wall_end - wall_start
    result.update(
        {
            "finished": finished,
            "seconds_first_due_to_last_run": round(elapsed, 3),
            "scheduler_cpu_s": round(cpu, 3),
            "scheduler_cpu_s_per_min": round(cpu / elapsed * 60, 3) if elapsed else None,
        }
    )
    runs = list(
        ScheduleRun.objects.values_list("schedule_id", "due_at", "created_at", "job__created_at", "job__enqueued_at")
    )
    result["run_lag_s"] = lag_stats([(created - due).total_seconds() for _, due, created, _, _ in runs])
    result["job_created_lag_s"] = lag_stats([(job - due).total_seconds() for _, due, _, job, _ in runs if job])
    result["job_enqueued_lag_s"] = lag_stats(
        [(queued - due).total_seconds() for _, due, _, _, queued in runs if queued]
    )
    per_schedule = Counter(schedule for schedule, *_ in runs)
    queue = queues.get_queue(registry.get(JOB_TYPE).queue)
    conn: Any = queues.redis()
    queued_ids = [i.decode() for i in conn.lrange(queue.key, 0, -1)]
    job_ids = {str(i) for i in Job.objects.values_list("id", flat=True)}
    checks = {
        "runs": len(runs),
        "runs_with_job": sum(1 for run in runs if run[3] is not None),
        "jobs": len(job_ids),
        "distinct_schedule_due": len({(schedule, due) for schedule, due, *_ in runs}),
        "schedules_run_more_than_once": sum(1 for count in per_schedule.values() if count > 1),
        "missed_runs": ScheduleRun.objects.filter(missed=True).count(),
        "job_statuses": dict(Job.objects.values_list("status").annotate(n=Count("id")).order_by()),
        "queue_length": len(queued_ids),
        "queue_distinct": len(set(queued_ids)),
        "queue_ids_are_the_jobs": set(queued_ids) == job_ids,
    }
    checks["exactly_once"] = (
        checks["runs"] == checks["runs_with_job"] == checks["jobs"] == checks["distinct_schedule_due"] == n
        and checks["schedules_run_more_than_once"] == 0
        and checks["queue_length"] == checks["queue_distinct"] == n
        and checks["queue_ids_are_the_jobs"]
    )
    result["checks"] = checks
    # The target is on the job's arrival on its queue: a schedule's run counts once its job can be taken.
    p99 = result["job_enqueued_lag_s"]["p99"]
    result["target"] = f"p99 lag (on the queue) <= {TARGET_P99_S:g} s"
    result["passed"] = bool(finished and checks["exactly_once"] and p99 is not None and p99 <= TARGET_P99_S)
    return result


# --- part 2: delayed jobs due at the same second ------------------------------------


def enqueue_delayed(n: int, run_at: datetime) -> float:
    from jobs.services import MAX_BULK, JobRequest, jobs_enqueue

    began = time.perf_counter()
    for start in range(0, n, MAX_BULK):
        size = min(MAX_BULK, n - start)
        jobs_enqueue(requests=[JobRequest(type=JOB_TYPE, params=dict(JOB_PARAMS), run_at=run_at) for _ in range(size)])
    return time.perf_counter() - began


def part_delayed(args: argparse.Namespace, env: dict[str, str], tmp: Path) -> dict[str, Any]:
    from django.db.models import Count

    from jobs import queues, registry
    from jobs.models import Job
    from jobs.services import MAX_BULK
    from jobs.statuses import JobStatus

    n = args.delayed
    log(f"part 2: {n} delayed jobs due at the same second")
    queue = queues.get_queue(registry.get(JOB_TYPE).queue)
    conn: Any = queues.redis()
    result: dict[str, Any] = {"jobs": n, "queue": queue.name}

    # Calibrate: time one chunk (due in an hour), then throw it away.
    reset()
    sample = min(MAX_BULK, n)
    sample_s = enqueue_delayed(sample, datetime.now(tz=UTC) + timedelta(hours=1))
    rate = sample / sample_s
    reset()
    # T: a whole second (RQ scores delayed jobs in whole seconds) after the creation, with a margin,
    # and the scheduler's start-up.
    due = math.ceil(time.time() + 1.25 * n / rate + args.lead + 5)
    run_at = datetime.fromtimestamp(due, tz=UTC)
    log(f"  calibration: {sample} jobs in {sample_s:.2f}s ({rate:.0f} jobs/s); T = {run_at:%H:%M:%S}")

    created_s = enqueue_delayed(n, run_at)
    analyze()
    scheduled = queue.scheduled_job_registry.count
    result.update({"created_s": round(created_s, 3), "create_jobs_per_s": round(n / created_s, 1)})
    log(f"  created {n} delayed jobs in {created_s:.2f}s ({n / created_s:.0f} jobs/s); {scheduled} scheduled in Redis")
    if scheduled != n or conn.llen(queue.key):
        raise RuntimeError(
            f"after creation: {scheduled} scheduled, {conn.llen(queue.key)} on the queue; expected {n}, 0"
        )

    scheduler = SchedulerProcess(env, args.tick, tmp / "scheduler-2.log")
    try:
        active_at = scheduler.wait_active()
        result["scheduler_active_before_T_s"] = round(due - active_at, 3)
        if active_at > due:
            log(f"WARNING: the scheduler took its lock {active_at - due:.1f}s after T: the times below include that")
        sleep_until(due - 0.5)
        cpu_start = scheduler.cpu_seconds()
        sleep_until(due)
        first_at = last_at = None
        length = 0
        deadline = due + args.timeout
        next_report = due + 10
        while time.time() < deadline:
            length = conn.llen(queue.key)
            now = time.time()
            if length and first_at is None:
                first_at = now
            if length >= n:
                last_at = now
                break
            if scheduler.process.poll() is not None:
                raise RuntimeError(f"the scheduler exited ({scheduler.process.returncode}):\n{scheduler.tail()}")
            if now >= next_report:
                log(f"  T+{now - due:.0f}s: {length}/{n} on the queue ({length / (now - due):.0f} jobs/s)")
                next_report += 10
            time.sleep(0.01)
        cpu = scheduler.cpu_seconds() - cpu_start
        if last_at is None:
            log(f"TIMEOUT: {length}/{n} on the queue {args.timeout:.0f}s after T; stopping the scheduler")
        # Rows: the scheduler's mirror thread marks them queued from the promotion events.
        rows_at = None
        rows_deadline = time.time() + args.rows_timeout if last_at else time.time()
        while time.time() < rows_deadline:
            if not Job.objects.filter(status=JobStatus.SCHEDULED).exists():
                rows_at = time.time()
                break
            time.sleep(0.2)
        time.sleep(1.0)  # anything promoted twice would show now
    finally:
        scheduler.stop()

    ids = [i.decode() for i in conn.lrange(queue.key, 0, -1)]
    job_ids = {str(i) for i in Job.objects.values_list("id", flat=True)}
    seconds = (last_at - due) if last_at else None
    result.update(
        {
            "finished": last_at is not None,
            "first_on_queue_after_T_s": round(first_at - due, 3) if first_at else None,
            "last_on_queue_after_T_s": round(seconds, 3) if seconds is not None else None,
            "jobs_per_s": round(n / seconds, 1) if seconds else None,
            "rows_queued_after_T_s": round(rows_at - due, 3) if rows_at else None,
            "scheduler_cpu_s": round(cpu, 3),
            "checks": {
                "queue_length": len(ids),
                "queue_distinct": len(set(ids)),
                "queue_ids_are_the_jobs": set(ids) == job_ids,
                "still_scheduled_in_redis": queue.scheduled_job_registry.count,
                "row_statuses": dict(Job.objects.values_list("status").annotate(n=Count("id")).order_by()),
            },
        }
    )
    checks = result["checks"]
    checks["promoted_once"] = (
        checks["queue_length"] == checks["queue_distinct"] == n and checks["queue_ids_are_the_jobs"]
    )
    return result


# --- report -------------------------------------------------------------------------


def report(args: argparse.Namespace, one: dict[str, Any] | None, two: dict[str, Any] | None) -> None:
    tick = f"--tick {args.tick:g}" if args.tick is not None else "its default tick (1 s)"
    print()
    print(
        f"Scheduler at scale ({'SQLite' if args.sqlite else 'PostgreSQL'}, "
        f"one `manage.py runscheduler` with {tick}, no worker)"
    )
    if one:
        run, job = one["run_lag_s"], one["job_enqueued_lag_s"]
        checks = one["checks"]
        verdict = "PASS" if one["passed"] else "FAIL"
        print()
        print(f"1. {one['schedules']} interval schedules, first runs due over {one['window_s']:.0f}s")
        header = f"   {'lag (s)':34} {'p50':>7} {'p99':>7} {'max':>7} {'within 1 s':>12}"
        print(header)
        for label, stats in (("ScheduleRun.created_at - due_at", run), ("Job.enqueued_at - due_at (on queue)", job)):
            print(
                f"   {label:34} {fmt(stats['p50']):>7} {fmt(stats['p99']):>7} {fmt(stats['max']):>7} "
                f"{stats['within_1s']:>6}/{stats['n']}"
            )
        print(
            f"   runs {checks['runs']}, jobs {checks['jobs']}, "
            f"distinct (schedule, due) {checks['distinct_schedule_due']}, "
            f"on the queue {checks['queue_length']} ({checks['queue_distinct']} distinct): "
            f"{'exactly once' if checks['exactly_once'] else 'NOT exactly once'}"
        )
        print(
            f"   scheduler CPU {one['scheduler_cpu_s']:.1f}s over {one['seconds_first_due_to_last_run']:.1f}s "
            f"(first due -> last run) = {fmt(one['scheduler_cpu_s_per_min'], '.1f')} CPU-s per minute "
            f"(idle: {fmt(one.get('idle_cpu_s_per_min'), '.1f')})"
        )
        print(f"   target {one['target']}: {verdict} (p99 {fmt(job['p99'])} s)")
    if two:
        checks = two["checks"]
        print()
        print(
            f"2. {two['jobs']} delayed jobs, one run_at T "
            f"(created in {two['created_s']:.1f}s, {two['create_jobs_per_s']:.0f} jobs/s)"
        )
        print(
            f"   first on the queue T+{fmt(two['first_on_queue_after_T_s'])}s, "
            f"last T+{fmt(two['last_on_queue_after_T_s'])}s: "
            f"{fmt(two['jobs_per_s'], '.0f')} jobs/s; all rows queued at T+{fmt(two['rows_queued_after_T_s'])}s"
        )
        print(
            f"   queue length {checks['queue_length']} ({checks['queue_distinct']} distinct, "
            f"{'the created ids' if checks['queue_ids_are_the_jobs'] else 'NOT the created ids'}), "
            f"{checks['still_scheduled_in_redis']} still scheduled: "
            f"{'each promoted once' if checks['promoted_once'] else 'NOT each promoted once'}"
        )
        print(f"   scheduler CPU {two['scheduler_cpu_s']:.1f}s from T to the last on the queue")
    print()
    print("summary")
    print(f"   {'part':40} {'result':>28}  target")
    if one:
        print(
            f"   {str(one['schedules']) + ' schedules due in a minute':40} "
            f"{'p99 lag ' + fmt(one['job_enqueued_lag_s']['p99']) + ' s':>28}  "
            f"p99 <= {TARGET_P99_S:g} s: {'PASS' if one['passed'] else 'FAIL'}"
        )
    if two:
        rate = fmt(two["jobs_per_s"], ".0f")
        last = fmt(two["last_on_queue_after_T_s"], ".1f")
        print(
            f"   {str(two['jobs']) + ' delayed jobs due at one second':40} "
            f"{last + ' s, ' + rate + ' jobs/s':>28}  (none)"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--schedules", type=int, default=10_000, help="schedules in part 1 (default 10000; 0 skips)")
    parser.add_argument("--delayed", type=int, default=100_000, help="delayed jobs in part 2 (default 100000; 0 skips)")
    parser.add_argument("--window", type=float, default=60.0, help="seconds the schedules' due times span (default 60)")
    parser.add_argument(
        "--tick", type=float, default=None, help="the scheduler's --tick (default: none given, the command's own, 1 s)"
    )
    parser.add_argument("--redis-db", type=int, default=10, help="the Redis database to use, and flush (default 10)")
    parser.add_argument("--database", default=PG_DB, help=f"the Postgres database to create and drop (default {PG_DB})")
    parser.add_argument("--lead", type=float, default=3.0, help="seconds from the creation to the first due time")
    parser.add_argument(
        "--timeout", type=float, default=180.0, help="seconds after the last due time before a part gives up"
    )
    parser.add_argument(
        "--idle", type=float, default=10.0, help="seconds the scheduler's idle CPU is measured before part 1 (0: no)"
    )
    parser.add_argument("--rows-timeout", type=float, default=120.0, help="seconds part 2 waits for the rows")
    parser.add_argument("--sqlite", action="store_true", help="a SQLite file in a temporary directory, not Postgres")
    parser.add_argument("--keep", action="store_true", help="keep the database and the temporary directory (logs)")
    parser.add_argument("--json", help="where to write the results (default bench/results/schedules-<time>.json)")
    args = parser.parse_args(argv)
    if args.tick == 0:
        args.tick = None
    if args.redis_db < 1:
        parser.error("--redis-db must not be 0 (the default database)")
    if args.schedules < 0 or args.delayed < 0:
        parser.error("--schedules and --delayed must be >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    global REDIS_URL, PG_DB
    args = parse_args(argv)
    REDIS_URL, PG_DB = f"redis://127.0.0.1:6379/{args.redis_db}", args.database
    tmp = Path(tempfile.mkdtemp(prefix="bench-schedules-"))
    database = Database(args.sqlite, tmp, args.keep)
    began = time.time()
    one = two = None
    try:
        database.create()
        setup_django(database.url)
        env = base_env(database.url, debug=False)
        if args.schedules:
            one = part_schedules(args, env, tmp)
        if args.delayed:
            two = part_delayed(args, env, tmp)
    finally:
        with contextlib.suppress(Exception):
            from django.db import connection

            from jobs import queues

            connection.close()
            queues.redis().flushdb()
        database.drop()
        if args.keep:
            log(f"kept {tmp} (scheduler logs)")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report(args, one, two)
    print(f"\ntook {time.time() - began:.0f}s")

    from importlib.metadata import version

    results = {
        "benchmark": "schedules",
        "when": datetime.now(tz=UTC).isoformat(timespec="seconds"),
        "commit": commit_of(ROOT),
        "versions": {package: version(package) for package in ("Django", "rq", "redis", "psycopg", "croniter")},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_end": os.getloadavg()},
        "settings": {
            "database": "sqlite" if args.sqlite else "postgres",
            "tick": args.tick,
            "redis_url": REDIS_URL,
            "window_s": args.window,
            "lead_s": args.lead,
        },
        "schedules": one,
        "delayed": two,
    }
    path = Path(args.json) if args.json else RESULTS_DIR / f"schedules-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
