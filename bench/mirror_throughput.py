"""Throughput of the product's worker (with mirroring) as a ratio of bare django-rq, and the mirror's lag.

    .venv/bin/python bench/mirror_throughput.py            # the 4 cells, 5-10 minutes
    .venv/bin/python bench/mirror_throughput.py --help

For each cell (forking Worker / SimpleWorker x SQLite / Postgres) and each
repetition, it times one `manage.py rqworker default --burst` of bare django-rq
(`rq.Worker` / `rq.SimpleWorker`, JSON serializer, plain `rq.job.Job`) on N
no-op RQ jobs, and one of the product's worker (`jobs.worker.Worker` /
`jobs.worker.SimpleWorker`) on N no-op jobs enqueued through
`jobs.services.jobs_enqueue`, from the worker's start until it has exited and all
N rows are `finished` in the database. Bare and product runs alternate (their
order flips every repetition); the ratio of a repetition is
bare seconds / product seconds, and the cell reports the median. The mirror's
lag is, per job, `Job.updated_at - Job.ended_at` over every product run.

See bench/README.md for the method, the options and how to read the table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BENCH_DIR = Path(__file__).resolve().parent
BENCH_ROOT = BENCH_DIR.parent  # the directory that holds the `bench` package
RESULTS_DIR = BENCH_DIR / "results"
TARGET = 0.90
QUEUE = "default"
BARE_FUNC = "bench.noop_jobs.noop"
JSON_SERIALIZER = "rq.serializers.JSONSerializer"

WORKERS = {
    # name: (bare django-rq worker class, the product's worker class)
    "fork": ("rq.Worker", "jobs.worker.Worker"),
    "simple": ("rq.SimpleWorker", "jobs.worker.SimpleWorker"),
}
WORKER_LABELS = {"fork": "Worker (fork)", "simple": "SimpleWorker"}
BACKENDS = ("sqlite", "postgres")


# --- small helpers ------------------------------------------------------------


def log(message: str) -> None:
    sys.stderr.write(f"[{time.strftime('%H:%M:%S')}] {message}\n")
    sys.stderr.flush()


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile (None for no values)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(pct / 100 * len(ordered) + 0.5 - 1e-9)))
    return ordered[rank - 1]


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def redis_db_number(url: str) -> int:
    path = urlsplit(url).path.strip("/")
    return int(path) if path else 0


# --- the processes it drives --------------------------------------------------


class Agent:
    """`python -m bench.agent` for one database (see bench/agent.py)."""

    def __init__(self, python: str, project: Path, env: dict[str, str], log_path: Path):
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [python, "-m", "bench.agent"],
            cwd=project,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,
        )

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None
        assert stdout is not None
        stdin.write(json.dumps({"op": op, **args}) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"bench agent exited (code {self.process.poll()}); see {self._log.name}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"bench agent {op} failed: {reply.get('error')}\n{reply.get('traceback', '')}")
        return reply

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.process.stdin is not None
            self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            kill_group(self.process)
        self._log.close()


def signal_group(process: subprocess.Popen[Any], signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def kill_group(process: subprocess.Popen[Any]) -> None:
    signal_group(process, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


@dataclass
class Run:
    variant: str  # "bare" or "product"
    seconds: float  # worker start -> exited (and, for the product, all rows finished)
    work_seconds: float | None  # first job started -> same end (the run without the process start-up)
    cpu_seconds: float  # user + system CPU of the worker process and its work horses
    exit_code: int
    waited_after_exit: float = 0.0  # product: how long rows took to be finished after the worker exited
    lags_ms: list[float] = field(default_factory=list)


@dataclass
class Cell:
    worker: str
    backend: str
    jobs: int
    runs: list[tuple[Run, Run]] = field(default_factory=list)  # (bare, product) per repetition

    @property
    def name(self) -> str:
        return f"{self.worker}-{self.backend}"


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.python = sys.executable
        self.project = Path(args.project_dir).resolve()
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-mirror-"))
        self.agents: dict[str, Agent] = {}
        self.db_urls: dict[str, str] = {}
        self.pg_created = False
        import redis

        self.redis = redis.Redis.from_url(args.redis_url)

    # --- environment ----------------------------------------------------------

    def env(self, backend: str, *, debug: bool) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("DJANGO_SETTINGS_MODULE", "PYTHONSTARTUP"):
            env.pop(name, None)
        env.update(
            {
                "DATABASE_URL": self.db_urls[backend],
                "REDIS_URL": self.args.redis_url,
                "DEBUG": "1" if debug else "0",
                "SECRET_KEY": "x",
                "ALLOWED_HOSTS": "127.0.0.1,localhost",
                "CSRF_TRUSTED_ORIGINS": "http://127.0.0.1,http://localhost",
                "TLS_TERMINATED_BY_PROXY": "true",  # plain HTTP on loopback: no redirect to HTTPS
                "LOG_LEVEL": "WARNING",
                "JOBS_MODULES": "bench.noop_jobs",
                "PYTHONPATH": os.pathsep.join(dict.fromkeys([str(self.project), str(BENCH_ROOT)])),
                "ENV_FILE": str(self.tmp / "no.env"),  # never a developer's .env
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def setup(self, backends: list[str]) -> None:
        db_number = redis_db_number(self.args.redis_url)
        if db_number in (0, 15) and not self.args.force:
            raise SystemExit(f"refusing Redis database {db_number} (0 is the default, 15 the tests'): use --redis-url")
        if self.redis.dbsize() and not self.args.force:
            raise SystemExit(
                f"Redis database {db_number} is not empty: it is flushed before every run. "
                "Pass --force if it is yours to wipe."
            )
        if "sqlite" in backends:
            self.db_urls["sqlite"] = f"sqlite:///{self.tmp / 'bench.sqlite3'}"
        if "postgres" in backends:
            self.create_postgres()
            self.db_urls["postgres"] = with_db(self.args.pg_url, self.args.pg_db)
        for backend in backends:
            log(f"migrating the {backend} database")
            subprocess.run(
                [self.python, "manage.py", "migrate", "--no-input", "-v", "0"],
                cwd=self.project,
                env=self.env(backend, debug=True),
                check=True,
            )
            agent = Agent(
                self.python, self.project, self.env(backend, debug=self.args.debug), self.tmp / f"agent-{backend}.log"
            )
            self.agents[backend] = agent
            vendor = agent.call("hello")["vendor"]
            expected = "postgresql" if backend == "postgres" else "sqlite"
            if vendor != expected:
                raise SystemExit(f"{backend}: the agent is connected to {vendor}, not {expected}")

    def create_postgres(self) -> None:
        import psycopg
        from psycopg import sql

        log(f"creating Postgres database {self.args.pg_db}")
        with psycopg.connect(self.args.pg_url, autocommit=True) as conn:
            name = sql.Identifier(self.args.pg_db)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
        self.pg_created = True

    def teardown(self) -> None:
        for agent in self.agents.values():
            agent.close()
        with contextlib.suppress(Exception):
            self.redis.flushdb()
        if self.pg_created and not self.args.keep:
            import psycopg
            from psycopg import sql

            with contextlib.suppress(Exception), psycopg.connect(self.args.pg_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.args.pg_db)))
        if self.args.keep:
            log(f"kept {self.tmp} (worker logs, SQLite file)")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- one run --------------------------------------------------------------

    def enqueue_bare(self, n: int) -> None:
        from rq import Queue
        from rq.serializers import JSONSerializer

        queue = Queue(QUEUE, connection=self.redis, serializer=JSONSerializer)
        for start in range(0, n, 1000):
            queue.enqueue_many([Queue.prepare_data(BARE_FUNC) for _ in range(min(1000, n - start))])
        if queue.count != n:
            raise RuntimeError(f"bare enqueue: {queue.count} jobs on the queue, expected {n}")

    def bare_first_started(self) -> float | None:
        from rq.registry import FinishedJobRegistry

        registry = FinishedJobRegistry(QUEUE, connection=self.redis)
        ids = registry.get_job_ids()
        with self.redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.hget(f"rq:job:{job_id}", "started_at")
            values = pipe.execute()
        starts = [datetime.fromisoformat(v.decode().replace("Z", "+00:00")).timestamp() for v in values if v]
        return min(starts) if starts else None

    def start_worker(self, backend: str, variant: str, worker: str, log_path: Path) -> subprocess.Popen[bytes]:
        bare_class, product_class = WORKERS[worker]
        command = [self.python, "manage.py", "rqworker", QUEUE, "--burst", "--serializer", JSON_SERIALIZER]
        if variant == "bare":
            command += ["--worker-class", bare_class, "--job-class", "rq.job.Job"]
        else:
            command += ["--worker-class", product_class]
        with log_path.open("wb") as out:
            return subprocess.Popen(
                command,
                cwd=self.project,
                env=self.env(backend, debug=self.args.debug),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: a kill reaches the work horse too
            )

    def run_once(self, cell: Cell, variant: str, rep: int) -> Run:
        agent = self.agents[cell.backend]
        self.redis.flushdb()
        agent.call("reset")
        if variant == "bare":
            self.enqueue_bare(cell.jobs)
        else:
            agent.call("enqueue", n=cell.jobs)
        log_path = self.tmp / f"{cell.name}-{variant}-{rep}.log"
        usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started_wall = time.time()
        started = time.perf_counter()
        process = self.start_worker(cell.backend, variant, cell.worker, log_path)
        # A blocking wait sees the exit at once (Popen.wait with a timeout polls up to every 50 ms).
        watchdog = threading.Timer(self.args.run_timeout, signal_group, [process, signal.SIGKILL])
        watchdog.start()
        try:
            code = process.wait()
        finally:
            watchdog.cancel()
        ended = time.perf_counter()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        # The worker and the work horses it reaped (the agents are never reaped during a run).
        cpu = (usage.ru_utime - usage_before.ru_utime) + (usage.ru_stime - usage_before.ru_stime)
        exited_wall = started_wall + (ended - started)
        if ended - started >= self.args.run_timeout:
            raise RuntimeError(f"{cell.name} {variant}: the worker ran longer than {self.args.run_timeout}s")
        if code != 0:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"{cell.name} {variant}: the worker exited with {code}:\n{tail}")

        if variant == "bare":
            from rq import Queue
            from rq.registry import FinishedJobRegistry

            left = Queue(QUEUE, connection=self.redis).count
            finished = FinishedJobRegistry(QUEUE, connection=self.redis).count
            if left or finished != cell.jobs:
                raise RuntimeError(f"{cell.name} bare: {finished} jobs finished, {left} left on the queue")
            first = self.bare_first_started()
            work = exited_wall - first if first else None
            return Run("bare", ended - started, work, cpu, code)

        # The product: done when every row says finished (the worker drains its mirror before exiting).
        waited = 0.0
        state = agent.call("check")
        if state["finished"] < cell.jobs:
            deadline = time.perf_counter() + self.args.mirror_timeout
            while state["finished"] < cell.jobs and time.perf_counter() < deadline:
                time.sleep(0.05)
                state = agent.call("check")
            waited = time.perf_counter() - ended
            log(f"{cell.name} product: rows were finished {waited:.2f}s after the worker exited")
        if state["finished"] < cell.jobs:
            raise RuntimeError(
                f"{cell.name} product: only {state['finished']}/{cell.jobs} rows finished "
                f"{self.args.mirror_timeout}s after the worker exited (see {log_path})"
            )
        if state["attempts_finished"] != cell.jobs:
            raise RuntimeError(f"{cell.name} product: {state['attempts_finished']}/{cell.jobs} attempts finished")
        seconds = (ended - started) + waited
        stats = agent.call("stats")
        first = stats["first_started"]
        work = exited_wall + waited - first if first else None
        return Run("product", seconds, work, cpu, code, waited_after_exit=waited, lags_ms=stats["lags_ms"])

    # --- the whole benchmark ----------------------------------------------------

    def run(self, cells: list[Cell]) -> None:
        for rep in range(self.args.repeats):
            for cell in cells:
                order = ("bare", "product") if rep % 2 == 0 else ("product", "bare")
                results: dict[str, Run] = {}
                for variant in order:
                    results[variant] = self.run_once(cell, variant, rep)
                bare, product = results["bare"], results["product"]
                cell.runs.append((bare, product))
                log(
                    f"rep {rep + 1}/{self.args.repeats} {cell.name:15} N={cell.jobs}: "
                    f"bare {bare.seconds:6.2f}s  product {product.seconds:6.2f}s  "
                    f"ratio {bare.seconds / product.seconds:.3f}"
                )


# --- report -------------------------------------------------------------------


def summarize(cell: Cell) -> dict[str, Any]:
    bare = [b.seconds for b, _ in cell.runs]
    product = [p.seconds for _, p in cell.runs]
    ratios = [b.seconds / p.seconds for b, p in cell.runs]
    work_ratios = [b.work_seconds / p.work_seconds for b, p in cell.runs if b.work_seconds and p.work_seconds]
    cpu_ratios = [b.cpu_seconds / p.cpu_seconds for b, p in cell.runs if p.cpu_seconds]
    lags = [lag for _, p in cell.runs for lag in p.lags_ms]
    return {
        "worker": cell.worker,
        "backend": cell.backend,
        "jobs": cell.jobs,
        "bare_seconds": bare,
        "product_seconds": product,
        "bare_jobs_per_s": cell.jobs / statistics.median(bare),
        "product_jobs_per_s": cell.jobs / statistics.median(product),
        "ratios": ratios,
        "ratio_median": statistics.median(ratios),
        "work_ratios": work_ratios,
        "work_ratio_median": statistics.median(work_ratios) if work_ratios else None,
        "bare_cpu_seconds": [b.cpu_seconds for b, _ in cell.runs],
        "product_cpu_seconds": [p.cpu_seconds for _, p in cell.runs],
        "cpu_ratios": cpu_ratios,
        "cpu_ratio_median": statistics.median(cpu_ratios) if cpu_ratios else None,
        "product_waited_after_exit_s": [p.waited_after_exit for _, p in cell.runs],
        "lag_ms": {
            "jobs": len(lags),
            "p50": percentile(lags, 50),
            "p95": percentile(lags, 95),
            "p99": percentile(lags, 99),
            "max": max(lags) if lags else None,
        },
        "meets_target": statistics.median(ratios) >= TARGET,
    }


def table(summaries: list[dict[str, Any]]) -> str:
    header = (
        f"{'worker':14} {'db':8} {'N':>5}  {'bare j/s':>8}  {'product j/s':>11}  "
        f"{'ratio':>6}  {'ratio per rep':<27} {'excl. start':>11}  {'cpu ratio':>9}  {'lag p50':>8}  {'lag p95':>8}  "
        f"{'target':>6}"
    )
    lines = [header, "-" * len(header)]
    for s in summaries:
        per_rep = " ".join(f"{r:.2f}" for r in s["ratios"])
        lines.append(
            f"{WORKER_LABELS[s['worker']]:14} {s['backend']:8} {s['jobs']:>5}  {s['bare_jobs_per_s']:8.1f}  "
            f"{s['product_jobs_per_s']:11.1f}  {s['ratio_median']:6.3f}  {per_rep:<27} "
            f"{fmt(s['work_ratio_median'], '.3f'):>11}  {fmt(s['cpu_ratio_median'], '.3f'):>9}  "
            f"{fmt(s['lag_ms']['p50'], '.0f'):>6}ms  "
            f"{fmt(s['lag_ms']['p95'], '.0f'):>6}ms  {'ok' if s['meets_target'] else 'BELOW':>6}"
        )
    return "\n".join(lines)


def git_state(project: Path) -> dict[str, Any]:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=project, capture_output=True, text=True, check=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD"),
        "dirty_product_files": git("status", "--porcelain", "--", "jobs", "queueproject").splitlines(),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("rq", "django-rq", "Django", "redis", "psycopg"):
        with contextlib.suppress(PackageNotFoundError):
            found[package] = version(package)
    return found


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=4, help="repetitions of every cell (default 4)")
    parser.add_argument("--jobs-fork", type=int, default=300, help="jobs per run, forking Worker (default 300)")
    parser.add_argument("--jobs-simple", type=int, default=2000, help="jobs per run, SimpleWorker (default 2000)")
    parser.add_argument("--workers", default="fork,simple", help="comma-separated: fork, simple")
    parser.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14", help="a Redis database the bench may wipe")
    parser.add_argument(
        "--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres", help="Postgres server (any database on it)"
    )
    parser.add_argument("--pg-db", default="bench_queue", help="database the bench creates and drops")
    parser.add_argument(
        "--project-dir",
        default=str(BENCH_ROOT),
        help="the checkout whose jobs/ and manage.py to run (default: this one)",
    )
    parser.add_argument("--debug", action="store_true", help="run workers with DEBUG=1 (default DEBUG=0, as deployed)")
    parser.add_argument("--run-timeout", type=float, default=300.0, help="seconds one worker run may take")
    parser.add_argument("--mirror-timeout", type=float, default=60.0, help="seconds rows may lag the worker's exit")
    parser.add_argument(
        "--json", help="where to write the results (default bench/results/mirror_throughput-<time>.json)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory and the Postgres database")
    parser.add_argument("--force", action="store_true", help="use the Redis database even if it is not empty")
    args = parser.parse_args(argv)
    args.worker_list = [w.strip() for w in args.workers.split(",") if w.strip()]
    args.backend_list = [b.strip() for b in args.backends.split(",") if b.strip()]
    for worker in args.worker_list:
        if worker not in WORKERS:
            parser.error(f"unknown worker {worker!r}")
    for backend in args.backend_list:
        if backend not in BACKENDS:
            parser.error(f"unknown backend {backend!r}")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    jobs = {"fork": args.jobs_fork, "simple": args.jobs_simple}
    cells = [Cell(worker, backend, jobs[worker]) for worker in args.worker_list for backend in args.backend_list]
    bench = Bench(args)
    began = time.time()
    try:
        bench.setup(args.backend_list)
        bench.run(cells)
    finally:
        bench.teardown()
    summaries = [summarize(cell) for cell in cells]
    print()
    print(
        f"Mirror throughput: product worker / bare django-rq, no-op jobs, median of {args.repeats} "
        f"interleaved repetitions (target >= {TARGET:.2f})"
    )
    print(table(summaries))
    print()
    print("ratio       = bare seconds / product seconds (whole run: worker start -> exit and all rows finished)")
    print("excl. start = the same ratio from the first job's start (the process start-up of both removed)")
    print("cpu ratio   = bare CPU seconds / product CPU seconds of the worker process and its work horses")
    print("lag         = Job.updated_at - Job.ended_at over every job of the product runs (mirror applies the batch)")
    all_ok = all(s["meets_target"] for s in summaries)
    verdict = "all cells meet" if all_ok else "NOT all cells meet"
    print(f"\n{verdict} the {TARGET:.2f} target; took {time.time() - began:.0f}s")

    results = {
        "benchmark": "mirror_throughput",
        "when": datetime.now(tz=UTC).isoformat(timespec="seconds"),
        "target": TARGET,
        "repeats": args.repeats,
        "project_dir": str(bench.project),
        "git": git_state(bench.project),
        "versions": versions(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_end": os.getloadavg()},
        "settings": {"debug": args.debug, "redis_url": args.redis_url, "pg_db": args.pg_db},
        "cells": summaries,
        "raw": {
            cell.name: [
                {
                    "bare_seconds": b.seconds,
                    "product_seconds": p.seconds,
                    "bare_work_seconds": b.work_seconds,
                    "product_work_seconds": p.work_seconds,
                    "bare_cpu_seconds": b.cpu_seconds,
                    "product_cpu_seconds": p.cpu_seconds,
                }
                for b, p in cell.runs
            ]
            for cell in cells
        },
    }
    path = Path(args.json) if args.json else RESULTS_DIR / f"mirror_throughput-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {path}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
