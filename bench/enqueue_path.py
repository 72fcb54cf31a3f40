"""Where an enqueue call's time goes before its job reaches Redis: the product's against bare RQ's.

    .venv/bin/python bench/enqueue_path.py            # SQLite and PostgreSQL, about a minute
    .venv/bin/python bench/enqueue_path.py --help

Enqueue-to-start latency (bench/workers.py) is the enqueue call up to the moment Redis has the job,
then the worker's pickup. This measures the first part, one call at a time with a gap between calls
(as the latency run does: on an idle machine the path runs cold), in one process per database:

- the product's `services.job_enqueue` of a one-parameter job: how long after the call began each
  step started (the request's validation, the row's insert, the Redis job's staging, the Redis
  transaction), and the whole call (which also commits, logs and tells the live pages);
- bare RQ's `Queue.enqueue` of a plain function (JSON serializer), whose push is its last command;
- on PostgreSQL, the least a row written first can cost: `BEGIN` and a one-row `INSERT` into a
  two-column temporary table, until the `INSERT` is done (then `COMMIT`); the same in psycopg's
  pipeline mode. The product writes more (its `jobs_job` row, with indexes and a trigger).

Medians of `--calls` calls (200), `--gap` seconds apart (0.05). It needs Redis on 127.0.0.1:6379
(database `--redis-db`, 9 by default, emptied before and after; a non-empty one is refused unless
`--force`) and, for PostgreSQL, the server at `--pg-url` (the database `bench_enqueue_path` is
created and dropped). bench/README.md reads the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BENCH_DIR = Path(__file__).resolve().parent
PROJECT = BENCH_DIR.parent
PG_DB = "bench_enqueue_path"
#: The steps of the product's call, in order (`child` marks each when it begins).
STEPS = ("validate", "insert", "stage", "send", "call")


def child(calls: int, gap: float) -> dict[str, Any]:
    """Runs in a process of its own, Django set up for one database: the figures, as JSON."""
    import contextlib

    import django

    django.setup()
    import redis
    import rq
    from django.core.management import call_command
    from django.db import connection
    from rq.serializers import JSONSerializer

    from jobs import queues, rqstore, services, sql

    call_command("migrate", verbosity=0)
    marks: dict[str, float] = {}

    def mark_start(owner: Any, name: str, label: str) -> None:
        original = getattr(owner, name)

        def marked(*args: Any, **kwargs: Any) -> Any:
            marks.setdefault(label, time.perf_counter())
            return original(*args, **kwargs)

        setattr(owner, name, marked)

    mark_start(services, "_validate", "validate")
    mark_start(rqstore, "stage", "stage")
    mark_start(rqstore, "send", "send")
    inserting = sql.inserting

    @contextlib.contextmanager
    def marked_inserting(*args: Any, **kwargs: Any) -> Any:
        marks.setdefault("insert", time.perf_counter())
        with inserting(*args, **kwargs):
            yield

    sql.inserting = marked_inserting

    def timed(call: Any, warm: int = 20) -> list[float]:
        for _ in range(warm):
            call()
        times = []
        for _ in range(calls):
            time.sleep(gap)
            started = time.perf_counter()
            call()
            times.append((time.perf_counter() - started) * 1000)
        return times

    figures: dict[str, Any] = {}
    steps: dict[str, list[float]] = {step: [] for step in STEPS}

    def product() -> None:
        marks.clear()
        started = time.perf_counter()
        services.job_enqueue(type="bench_stamp", params={"token": "x"})
        marks["call"] = time.perf_counter()
        for step in STEPS:
            steps[step].append((marks[step] - started) * 1000)

    timed(product)
    figures["product"] = {step: statistics.median(values[-calls:]) for step, values in steps.items()}

    bare = rq.Queue(
        "bench-enqueue-path", connection=redis.Redis.from_url(os.environ["REDIS_URL"]), serializer=JSONSerializer
    )
    figures["rq_enqueue"] = statistics.median(timed(lambda: bare.enqueue("bench.peers.common.stamp", "x")))

    if connection.vendor == "postgresql":
        connection.ensure_connection()
        raw = connection.connection
        raw.autocommit = False  # Django's connection is in autocommit mode: the first statement now sends BEGIN
        with raw.cursor() as cursor:
            cursor.execute("CREATE TEMPORARY TABLE bench_rows (a integer, b text)")
        raw.commit()

        def insert(pipelined: bool) -> None:
            with raw.cursor() as cursor:
                if pipelined:
                    with raw.pipeline():
                        cursor.execute("INSERT INTO bench_rows VALUES (%s, %s)", [1, "x"])
                else:
                    cursor.execute("INSERT INTO bench_rows VALUES (%s, %s)", [1, "x"])
            marks["inserted"] = time.perf_counter()
            raw.commit()

        for name, pipelined in (("begin_insert", False), ("begin_insert_pipelined", True)):
            to_insert: list[float] = []

            def one(pipelined: bool = pipelined, to_insert: list[float] = to_insert) -> None:
                started = time.perf_counter()
                insert(pipelined)
                to_insert.append((marks["inserted"] - started) * 1000)

            timed(one)
            figures[name] = statistics.median(to_insert[-calls:])
    queues.redis().flushdb()
    return figures


def run_child(database_url: str, redis_url: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(tmp)),
        "LANG": "C.UTF-8",
        "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH", ""), str(PROJECT)])),
        "DJANGO_SETTINGS_MODULE": "queueproject.settings",
        "ENV_FILE": str(tmp / "no.env"),  # never the project's .env
        "DEBUG": "false",
        "SECRET_KEY": "bench-enqueue-path-" + "x" * 50,
        "ALLOWED_HOSTS": "127.0.0.1",
        "CSRF_TRUSTED_ORIGINS": "https://127.0.0.1",
        "SECURE_COOKIES": "false",
        "TLS_TERMINATED_BY_PROXY": "true",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "JOBS_MODULES": "bench.peers.product_jobs",
        "LOG_LEVEL": "WARNING",
        "MEDIA_ROOT": str(tmp / "media"),
    }
    code = f"import json, bench.enqueue_path as b; print(json.dumps(b.child({args.calls}, {args.gap})))"
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=PROJECT, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the run on {database_url} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--gap", type=float, default=0.05, help="seconds between two calls")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--redis-db", type=int, default=9)
    parser.add_argument("--force", action="store_true", help="empty the Redis database even if it holds keys")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args(argv)
    import psycopg
    import redis
    from psycopg import sql

    if args.redis_db == 0:
        parser.error("--redis-db 0 is never used")
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    conn = redis.Redis.from_url(redis_url)
    if conn.dbsize() and not args.force:
        parser.error(f"Redis database {args.redis_db} holds keys (--force empties it)")
    conn.flushdb()
    backends = [name.strip() for name in args.backends.split(",") if name.strip()]
    unknown = set(backends) - {"sqlite", "postgres"}
    if unknown or not backends:
        parser.error(f"--backends takes sqlite and postgres, not {', '.join(sorted(unknown)) or 'nothing'}")
    results: dict[str, dict[str, Any]] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-enqueue-path-") as tmp:
            for backend in backends:
                if backend == "sqlite":
                    results[backend] = run_child(f"sqlite:///{tmp}/bench.sqlite3", redis_url, args, Path(tmp))
                    continue
                with psycopg.connect(args.pg_url, autocommit=True) as admin:
                    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(PG_DB)))
                    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(PG_DB)))
                try:
                    url = urlunsplit(urlsplit(args.pg_url)._replace(path="/" + PG_DB))
                    results[backend] = run_child(url, redis_url, args, Path(tmp))
                finally:
                    with psycopg.connect(args.pg_url, autocommit=True) as admin:
                        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(PG_DB)))
    finally:
        conn.flushdb()

    print(f"medians of {args.calls} calls {args.gap * 1000:.0f} ms apart, in ms from the call's start")
    print(f"{'':58}" + "".join(f"{backend:>12}" for backend in backends))
    rows = [
        ("product: the request's validation begins", lambda r: r["product"]["validate"]),
        ("product: the row's insert begins", lambda r: r["product"]["insert"]),
        ("product: the Redis job's staging begins", lambda r: r["product"]["stage"]),
        ("product: the Redis transaction's sending begins", lambda r: r["product"]["send"]),
        ("product: the call returns", lambda r: r["product"]["call"]),
        ("bare RQ: Queue.enqueue returns (its push is its last)", lambda r: r["rq_enqueue"]),
        ("the least a row costs: BEGIN + one-row INSERT", lambda r: r.get("begin_insert")),
        ("the same in pipeline mode", lambda r: r.get("begin_insert_pipelined")),
    ]
    for label, read in rows:
        values = [read(results[backend]) for backend in backends]
        print(f"{label:58}" + "".join(f"{'-' if value is None else f'{value:.2f}':>12}" for value in values))
    return 0


if __name__ == "__main__":
    sys.exit(main())
