"""The database side of the mirror benchmark: one process per database, driven over stdin/stdout.

`bench/mirror_throughput.py` starts `python -m bench.agent` with DATABASE_URL
(and the rest of the worker's environment) set, then sends one JSON object per
line and reads one JSON object per line back:

    {"op": "reset"}             empty the jobs app's tables (before every run)
    {"op": "enqueue", "n": N}   N no-op jobs through jobs.services.jobs_enqueue (rows + RQ jobs)
    {"op": "check"}             how many rows / attempts are finished
    {"op": "stats"}             per-job mirror lag (updated_at - ended_at) and the first start
    {"op": "quit"}

The connection is closed after every command, so the agent holds no lock or
snapshot while a worker runs.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any


def _setup() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "queueproject.settings")
    import django

    django.setup()


def _vendor() -> str:
    from django.db import connection

    return connection.vendor


def reset() -> dict[str, Any]:
    """Empty every table of the jobs app (the history, and the counters its triggers feed)."""
    from django.apps import apps
    from django.db import connection
    from django.db.models import Model

    from jobs.models import Job

    models = list(apps.get_app_config("jobs").get_models())
    referencing = [
        model
        for model in models
        if model is not Job and any(f.is_relation and f.related_model is Job for f in model._meta.concrete_fields)
    ]
    # Rows that point at a job first, then the jobs (whose delete triggers may write), then the rest.
    ordered: list[type[Model]] = [
        *referencing,
        Job,
        *[model for model in models if model not in referencing and model is not Job],
    ]
    tables = [connection.ops.quote_name(model._meta.db_table) for model in ordered]
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"TRUNCATE {', '.join(tables)}")
        else:
            for table in tables:
                cursor.execute(f"DELETE FROM {table}")
    if connection.vendor == "sqlite":
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return {"tables": len(tables)}


def enqueue(n: int) -> dict[str, Any]:
    from django.db import connection

    from jobs.services import MAX_BULK, JobRequest, jobs_enqueue

    done = 0
    while done < n:
        chunk = min(MAX_BULK // 2, n - done)
        jobs_enqueue(requests=[JobRequest(type="noop") for _ in range(chunk)])
        done += chunk
    # A long-lived table has planner statistics (autovacuum keeps them on Postgres).
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    return {"enqueued": done}


def check() -> dict[str, Any]:
    from jobs.models import Job, JobAttempt
    from jobs.statuses import AttemptOutcome, JobStatus

    return {
        "rows": Job.objects.count(),
        "finished": Job.objects.filter(status=JobStatus.FINISHED).count(),
        "attempts_finished": JobAttempt.objects.filter(outcome=AttemptOutcome.FINISHED).count(),
    }


def stats() -> dict[str, Any]:
    from django.db.models import Min

    from jobs.models import Job
    from jobs.statuses import JobStatus

    finished = Job.objects.filter(status=JobStatus.FINISHED)
    lags_ms = [
        round((updated_at - ended_at).total_seconds() * 1000, 2)
        for ended_at, updated_at in finished.values_list("ended_at", "updated_at").iterator()
        if ended_at is not None
    ]
    first = finished.aggregate(first=Min("started_at"))["first"]
    return {"lags_ms": lags_ms, "first_started": first.timestamp() if first else None}


def handle(request: dict[str, Any]) -> dict[str, Any]:
    op = request.get("op")
    if op == "reset":
        return reset()
    if op == "enqueue":
        return enqueue(int(request["n"]))
    if op == "check":
        return check()
    if op == "stats":
        return stats()
    if op == "hello":
        return {"vendor": _vendor()}
    raise ValueError(f"unknown op {op!r}")


def main() -> None:
    from django.db import connection

    _setup()
    out = sys.stdout
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        if request.get("op") == "quit":
            break
        try:
            reply: dict[str, Any] = {"ok": True, **handle(request)}
        except Exception as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
        finally:
            connection.close()
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
