"""The reconciler: finds jobs that will never report back, and relays the outbox.

Run by the scheduler process every `JOBS_RECONCILE_INTERVAL` seconds and by
`manage.py reconcile_jobs`. It

- dispatches rows left `pending` (their transaction committed while Redis was away);
- marks a started job `abandoned` once its worker is dead: a product worker's
  liveness key expires `JOBS_WORKER_DEAD_AFTER` seconds after it stopped
  beating (RQ alone notices after up to 11 minutes); for other worker classes,
  once RQ's own worker key is gone;
- marks a waiting or started job `lost` when Redis no longer has it;
- retries both where the job type's retry policy allows.

It judges nothing while the mirror is behind: a row that looks stale may only
be waiting for its events.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from redis import Redis
from rq.job import Job as RQJob
from rq.worker import Worker as RQWorker

from jobs import queues, services
from jobs.mirror import oldest_unapplied_ms
from jobs.models import Job
from jobs.statuses import ACTIVE, JobStatus
from jobs.worker import PRODUCT_WORKERS, alive_key

log = logging.getLogger(__name__)

#: A waiting row younger than this is not judged: its job may still be on its way.
GRACE = timedelta(seconds=30)
#: The mirror counts as behind when an unapplied event is older than this.
MIRROR_BEHIND_SECONDS = 30.0
CHUNK = 1000


@dataclass
class ReconcileReport:
    dispatched: int = 0
    abandoned: int = 0
    lost: int = 0
    skipped_mirror_behind: bool = False


def mirror_backlog_age(conn: Redis) -> float:
    """Seconds since the oldest event the mirror has not applied yet (0 when none)."""
    oldest_ms = oldest_unapplied_ms(conn)
    return 0.0 if oldest_ms is None else max(0.0, time.time() - oldest_ms / 1000)


def _worker_alive(conn: Redis, names: list[str]) -> dict[str, bool]:
    with conn.pipeline() as pipe:
        for name in names:
            pipe.exists(alive_key(name))
            pipe.sismember(PRODUCT_WORKERS, name)
            pipe.exists(RQWorker.redis_worker_namespace_prefix + name)
        answers: Any = pipe.execute()
    alive = {}
    for index, name in enumerate(names):
        has_alive_key, is_product, has_rq_key = answers[index * 3 : index * 3 + 3]
        alive[name] = bool(has_alive_key) if is_product else bool(has_rq_key)
    return alive


def reconcile() -> ReconcileReport:
    report = ReconcileReport()
    report.dispatched = services.jobs_dispatch_pending(older_than=GRACE)
    conn = queues.redis()
    if mirror_backlog_age(conn) > MIRROR_BEHIND_SECONDS:
        report.skipped_mirror_behind = True
        log.warning("reconciler: the mirror is behind; judging no job this round")
        return report

    dead_after = timedelta(seconds=settings.JOBS_WORKER_DEAD_AFTER)
    cutoff = timezone.now() - GRACE
    watched = [status for status in ACTIVE if status != JobStatus.PENDING]
    last_pk = None
    while True:
        chunk_qs = Job.objects.filter(status__in=watched).order_by("pk")
        if last_pk is not None:
            chunk_qs = chunk_qs.filter(pk__gt=last_pk)
        chunk = list(
            chunk_qs.only(
                "id",
                "type",
                "queue",
                "status",
                "worker_name",
                "attempts",
                "mirror_seq",
                "created_at",
                "started_at",
                "max_attempts",
            )[:CHUNK]
        )
        if not chunk:
            break
        last_pk = chunk[-1].pk
        with conn.pipeline() as pipe:
            for row in chunk:
                pipe.exists(RQJob.key_for(row.rq_id))
            exists = pipe.execute()
        started_workers = sorted(
            {row.worker_name for row in chunk if row.status == JobStatus.STARTED and row.worker_name}
        )
        alive = _worker_alive(conn, started_workers) if started_workers else {}
        for row, in_redis in zip(chunk, exists, strict=True):
            if row.status != JobStatus.STARTED and row.created_at > cutoff:
                continue  # a waiting row may still be on its way; a started one was seen by a worker
            if not in_redis:
                services.job_give_up_on(job=row, outcome=JobStatus.LOST, reason="Redis no longer has this job")
                report.lost += 1
            elif row.status == JobStatus.STARTED and row.worker_name and not alive.get(row.worker_name, True):
                if row.started_at and row.started_at > timezone.now() - dead_after:
                    continue
                services.job_give_up_on(
                    job=row, outcome=JobStatus.ABANDONED, reason=f"worker {row.worker_name} died while running this job"
                )
                report.abandoned += 1
    if report.abandoned or report.lost:
        log.info("reconciler: %s abandoned, %s lost", report.abandoned, report.lost)
    return report
