"""The reconciler: finds jobs that will never report back, and relays the outbox.

Run by the scheduler process every `JOBS_RECONCILE_INTERVAL` seconds and by
`manage.py reconcile_jobs`. It

- dispatches rows left `pending` (their transaction committed while Redis was away);
- marks a started job `abandoned` once its worker is dead: a product worker's
  liveness key expires `JOBS_WORKER_DEAD_AFTER` seconds after it stopped
  beating (RQ alone notices after up to 11 minutes); for other worker classes,
  once RQ's own worker key is gone;
- marks a waiting or started job `lost` when Redis no longer has it;
- puts a queued job back on its queue when a worker took it off and died before starting it
  (`Adrift`);
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
from rq.job import JobStatus as RQStatus
from rq.worker import Worker as RQWorker

from jobs import events, logs, queues, rqcompat, rqstore, services
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
#: When the reconciler first saw each queued job that is on no queue (hash: job id, epoch seconds).
ADRIFT_KEY = "jobs:reconcile:adrift"
#: A queue longer than this is not read whole every round: a job adrift is found once it is shorter
#: (while it is longer, the workers are busy with the jobs in front anyway).
ADRIFT_QUEUE_LIMIT = 100_000


#: A waiting row whose job Redis has so is recorded canceled (`services.job_cancel_settled`).
CANCELED_IN_REDIS = RQStatus.CANCELED.value


@dataclass
class ReconcileReport:
    dispatched: int = 0
    abandoned: int = 0
    lost: int = 0
    canceled: int = 0  # cancels Redis had and the rows did not (`services.job_cancel_settled`)
    put_back: int = 0
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
        # A liveness key is only ever written by a live product worker: alive, even when a Redis
        # restart without persistence has emptied the set of product workers.
        alive[name] = bool(has_alive_key) or (not is_product and bool(has_rq_key) and not has_died)
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


class Adrift:
    """Queued jobs on no queue: a worker took them off (RQ's BLPOP) and died before starting them.

    RQ would leave such a job queued for ever: a worker listening on several queues keeps no
    intermediate list, and the started registry's entry it may have written (before forking its work
    horse) is only cleaned, as a failure, after its worker's maintenance interval. A job still found
    adrift `JOBS_WORKER_DEAD_AFTER` seconds after it was first seen (a live worker starts what it took
    within milliseconds), whose started-registry entries name no live worker, goes back to the front
    of its queue: it never started, so nothing of it ran, and its row stays queued.
    """

    def __init__(self, conn: Redis) -> None:
        self.conn = conn
        self.on_queue: dict[str, set[str]] = {}  # queue name: the job ids on it (queues short enough)
        self.executions: dict[str, list[str]] = {}  # job id: its members of a started registry
        self.found: dict[str, str] = {}  # job id: queue name
        for queue in queues.all_queues():
            length: Any = conn.llen(queue.key)
            if length <= ADRIFT_QUEUE_LIMIT:
                ids: Any = conn.lrange(queue.key, 0, -1)
                self.on_queue[queue.name] = {raw.decode() for raw in ids}
            members: Any = conn.zrange(queue.started_job_registry.key, 0, -1)
            for raw in members:
                member = raw.decode()
                self.executions.setdefault(member.split(":", 1)[0], []).append(member)

    def look_at(self, rows: list[Job]) -> None:
        """Note the queued rows (older than the grace) whose RQ job is queued and on no queue."""
        rows = [row for row in rows if row.queue in self.on_queue]
        if not rows:
            return
        with self.conn.pipeline(transaction=False) as pipe:
            for row in rows:
                pipe.hget(RQJob.key_for(row.rq_id), "status")
            statuses: Any = pipe.execute()
        for row, status in zip(rows, statuses, strict=True):
            if status == b"queued" and row.rq_id not in self.on_queue[row.queue]:
                self.found[row.rq_id] = row.queue

    def put_back(self) -> int:
        """Put back the jobs adrift long enough; returns how many."""
        now = time.time()
        with self.conn.pipeline(transaction=False) as pipe:
            for job_id in self.found:
                pipe.hsetnx(ADRIFT_KEY, job_id, str(now))
            pipe.hgetall(ADRIFT_KEY)
            first_seen: Any = pipe.execute()[-1]
        seen = {key.decode(): float(value) for key, value in first_seen.items()}
        gone = [job_id for job_id in seen if job_id not in self.found]
        if gone:
            self.conn.hdel(ADRIFT_KEY, *gone)
        ripe = [job_id for job_id in self.found if seen.get(job_id, now) <= now - settings.JOBS_WORKER_DEAD_AFTER]
        if not ripe:
            return 0
        holders = self._holders(ripe)
        alive = _worker_alive(self.conn, sorted({name for names in holders.values() for name in names}))
        put = 0
        for job_id in ripe:
            if any(alive.get(name, False) for name in holders.get(job_id, [])):
                continue  # its worker lives: it starts the job, or records why it could not
            if rqstore.put_back(self.found[job_id], job_id, self.executions.get(job_id, [])):
                log.warning(
                    "reconciler: job %s was taken off its queue by a worker that died; put back",
                    job_id,
                    extra=logs.job_extra(job_id, None),
                )
                put += 1
            self.conn.hdel(ADRIFT_KEY, job_id)
        return put

    def _holders(self, job_ids: list[str]) -> dict[str, list[str]]:
        """The workers named by each job's started-registry entries."""
        members = [(job_id, member) for job_id in job_ids for member in self.executions.get(job_id, [])]
        if not members:
            return {}
        with self.conn.pipeline(transaction=False) as pipe:
            for _, member in members:
                pipe.hget(rqcompat.execution_key(member), "worker_name")
            names: Any = pipe.execute()
        holders: dict[str, list[str]] = {}
        for (job_id, _), name in zip(members, names, strict=True):
            if name:
                holders.setdefault(job_id, []).append(name.decode())
        return holders


def _still_started(conn: Redis, rows: list[Job]) -> set[str]:
    """The ids of the rows whose RQ job Redis still has as started."""
    if not rows:
        return set()
    with conn.pipeline(transaction=False) as pipe:
        for row in rows:
            pipe.hget(RQJob.key_for(row.rq_id), "status")
        statuses: Any = pipe.execute()
    return {row.rq_id for row, status in zip(rows, statuses, strict=True) if status == b"started"}


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


def _mirror_behind(conn: Redis, report: ReconcileReport) -> bool:
    """Whether the mirror is too far behind for any verdict (the round then judges nothing)."""
    if mirror_backlog_age(conn) <= MIRROR_BEHIND_SECONDS:
        return False
    report.skipped_mirror_behind = True
    log.warning("reconciler: the mirror is behind; judging no job this round")
    return True


def reconcile() -> ReconcileReport:
    report = ReconcileReport()
    conn = queues.redis()
    # Read from Redis alone, first: while the database is away the round says why it judges
    # nothing before the dispatch below fails on the database.
    behind = _mirror_behind(conn, report)
    report.dispatched = services.jobs_dispatch_pending(older_than=GRACE)
    if behind:
        return report

    # What dead workers' mirrors had read but not applied (a job's end, say) is applied first:
    # it is the truth the verdicts below would otherwise contradict.
    take_over_from_dead_mirrors(conn)

    dead_after = timedelta(seconds=settings.JOBS_WORKER_DEAD_AFTER)
    cutoff = timezone.now() - GRACE
    watched = [status for status in ACTIVE if status != JobStatus.PENDING]
    liveness_unknown: bool | None = None  # read once, when a started job is to be judged
    adrift = Adrift(conn)
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
        # Again once the rows are read: a busy database (SQLite waits up to its busy timeout) may
        # have held the round long enough for the mirror to fall behind since the last look.
        if _mirror_behind(conn, report):
            return report
        last_pk = chunk[-1].pk
        with conn.pipeline() as pipe:
            for row in chunk:
                pipe.exists(RQJob.key_for(row.rq_id))
                pipe.hget(RQJob.key_for(row.rq_id), "status")
            replies = pipe.execute()
        exists = replies[::2]
        rq_statuses = [raw.decode() if isinstance(raw, bytes) else raw for raw in replies[1::2]]
        rq_started = _still_started(conn, [row for row in chunk if row.status == JobStatus.STARTED])
        started_workers = sorted(
            {row.worker_name for row in chunk if row.status == JobStatus.STARTED and row.worker_name}
        )
        if started_workers and liveness_unknown is None:
            liveness_unknown = _redis_younger_than(conn, settings.JOBS_WORKER_DEAD_AFTER)
        alive = _worker_alive(conn, started_workers) if started_workers else {}
        adrift.look_at(
            [
                row
                for row, in_redis in zip(chunk, exists, strict=True)
                if in_redis and row.status == JobStatus.QUEUED and row.created_at <= cutoff
            ]
        )
        now = timezone.now()
        for row, in_redis, rq_status in zip(chunk, exists, rq_statuses, strict=True):
            if row.status != JobStatus.STARTED:
                if row.created_at > cutoff:
                    continue  # a waiting row may still be on its way
                if not in_redis:
                    services.job_give_up_on(job=row, outcome=JobStatus.LOST, reason=LOST_REASON)
                    report.lost += 1
                elif rq_status == CANCELED_IN_REDIS and services.job_cancel_settled(job=row) is not None:
                    report.canceled += 1
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
            elif row.rq_id in rq_started:
                services.job_give_up_on(
                    job=row, outcome=JobStatus.ABANDONED, reason=f"worker {row.worker_name} died while running this job"
                )
                report.abandoned += 1
            # Else Redis has its end already (the work horse wrote it, with its event, as its worker
            # died): the mirror brings it to the row, which is not judged meanwhile.
    report.put_back = adrift.put_back()
    if report.abandoned or report.lost or report.canceled:
        log.info(
            "reconciler: %s abandoned, %s lost, %s canceled in Redis recorded",
            report.abandoned,
            report.lost,
            report.canceled,
        )
    return report
