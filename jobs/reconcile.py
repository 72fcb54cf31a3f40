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
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone
from redis import Redis
from rq.job import Job as RQJob
from rq.worker import Worker as RQWorker

from jobs import events, queues, services
from jobs.mirror import Drainer, consumers, oldest_unapplied_ms
from jobs.models import Job
from jobs.statuses import ACTIVE, JobStatus
from jobs.worker import PRODUCT_WORKERS, alive_key

log = logging.getLogger(__name__)

#: The consumer name under which the reconciler applies what dead mirrors left.
RECONCILER = "reconciler"
LOST_REASON = "Redis no longer has this job"
#: A dead mirror with nothing pending is removed from the stream's group after this long.
FORGET_CONSUMER_AFTER = timedelta(minutes=10)
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
    """Whether each worker still beats: a product worker by its liveness key, another by RQ's key.

    A worker that has registered its death is dead at once: RQ keeps its key (with a `death`
    field) for 60 s after it left, and a product worker leaves `PRODUCT_WORKERS` on its way out
    (cold shutdown: its job was killed with it).
    """
    with conn.pipeline() as pipe:
        for name in names:
            rq_key = RQWorker.redis_worker_namespace_prefix + name
            pipe.exists(alive_key(name))
            pipe.sismember(PRODUCT_WORKERS, name)
            pipe.exists(rq_key)
            pipe.hexists(rq_key, "death")
        answers: Any = pipe.execute()
    alive = {}
    for index, name in enumerate(names):
        has_alive_key, is_product, has_rq_key, has_died = answers[index * 4 : index * 4 + 4]
        alive[name] = bool(has_alive_key) if is_product else bool(has_rq_key) and not has_died
    return alive


def _redis_younger_than(conn: Redis, seconds: float) -> bool:
    """Whether Redis (re)started less than `seconds` ago: a restart without persistence forgets
    every liveness key, and live workers write theirs again only within their beat."""
    info: Any = conn.info("server")
    return int(info.get("uptime_in_seconds", seconds)) < seconds


def _past_its_timeout(row: Job, now: datetime, margin: timedelta) -> bool:
    """Whether the row's attempt started longer ago than a run may last (its worker kills it at its timeout)."""
    if row.started_at is None:
        return True
    limit = timedelta(seconds=row.timeout) if row.timeout and row.timeout > 0 else timedelta(days=1)
    return row.started_at < now - limit - margin


def take_over_from_dead_mirrors(conn: Redis) -> int:
    """Apply the events that mirrors of dead workers had read but not applied; returns how many.

    A worker's mirror reads events in batches; killed with its worker, it leaves them pending,
    and other mirrors would take them only after `CLAIM_IDLE_MS`. A mirror that beats
    (product workers and schedulers keep a liveness key) is never robbed. Dead mirrors with
    nothing left are removed from the group after `FORGET_CONSUMER_AFTER`, so that the group
    does not grow with every worker ever started.
    """
    candidates = [consumer for consumer in consumers(conn) if consumer.name != RECONCILER]
    if not candidates:
        return 0
    with conn.pipeline() as pipe:
        for consumer in candidates:
            pipe.exists(alive_key(consumer.name))
        beating: Any = pipe.execute()
    dead = [consumer for consumer, beats in zip(candidates, beating, strict=True) if not beats]
    holders = [consumer.name for consumer in dead if consumer.pending]
    applied = 0
    if holders:
        drainer = Drainer(conn, consumer=RECONCILER)
        drainer.ensure_group()
        claimed = drainer.claim_from(holders)
        applied = drainer.apply_own_pending() if claimed else 0
        if claimed:
            log.info("reconciler: applied %s of %s events left by dead mirrors: %s", applied, claimed, holders)
    forget_ms = FORGET_CONSUMER_AFTER.total_seconds() * 1000
    for consumer in dead:
        if not consumer.pending and consumer.idle_ms > forget_ms:
            conn.xgroup_delconsumer(events.STREAM, events.GROUP, consumer.name)
    return applied


def reconcile() -> ReconcileReport:
    report = ReconcileReport()
    report.dispatched = services.jobs_dispatch_pending(older_than=GRACE)
    conn = queues.redis()
    if mirror_backlog_age(conn) > MIRROR_BEHIND_SECONDS:
        report.skipped_mirror_behind = True
        log.warning("reconciler: the mirror is behind; judging no job this round")
        return report

    # What dead workers' mirrors had read but not applied (a job's end, say) is applied first:
    # it is the truth the verdicts below would otherwise contradict.
    take_over_from_dead_mirrors(conn)

    dead_after = timedelta(seconds=settings.JOBS_WORKER_DEAD_AFTER)
    cutoff = timezone.now() - GRACE
    watched = [status for status in ACTIVE if status != JobStatus.PENDING]
    liveness_unknown: bool | None = None  # read once, when a started job is to be judged
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
                "timeout",
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
        if started_workers and liveness_unknown is None:
            liveness_unknown = _redis_younger_than(conn, settings.JOBS_WORKER_DEAD_AFTER)
        alive = _worker_alive(conn, started_workers) if started_workers else {}
        now = timezone.now()
        for row, in_redis in zip(chunk, exists, strict=True):
            if row.status != JobStatus.STARTED:
                if row.created_at > cutoff:
                    continue  # a waiting row may still be on its way
                if not in_redis:
                    services.job_give_up_on(job=row, outcome=JobStatus.LOST, reason=LOST_REASON)
                    report.lost += 1
                continue
            # A started job is judged by its worker first: one that still beats may still be
            # running it, even when Redis has forgotten the job (a restart without persistence).
            if liveness_unknown or (row.started_at and row.started_at > now - dead_after):
                continue
            worker_alive = alive.get(row.worker_name, True) if row.worker_name else True
            if worker_alive:
                if in_redis or not _past_its_timeout(row, now, dead_after):
                    continue
                # Redis forgot it and no run can last this long: its end was lost with Redis.
                services.job_give_up_on(job=row, outcome=JobStatus.LOST, reason=LOST_REASON)
                report.lost += 1
            elif not in_redis:
                services.job_give_up_on(job=row, outcome=JobStatus.LOST, reason=LOST_REASON)
                report.lost += 1
            else:
                services.job_give_up_on(
                    job=row, outcome=JobStatus.ABANDONED, reason=f"worker {row.worker_name} died while running this job"
                )
                report.abandoned += 1
    if report.abandoned or report.lost:
        log.info("reconciler: %s abandoned, %s lost", report.abandoned, report.lost)
    return report
