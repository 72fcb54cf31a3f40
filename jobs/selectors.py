"""Every read of jobs: lists, filters, one job, statistics, health."""

from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import django_filters
import redis as redis_lib
from django.conf import settings
from django.db.models import Prefetch, Q, QuerySet, Value
from django.db.models.functions import Upper
from django.utils import timezone
from rq.worker import Worker as RQWorker

from jobs import events, queues, registry, retention, rqstore, stats
from jobs.errors import InvalidJobRequest
from jobs.mirror import oldest_unapplied_ms
from jobs.models import SEARCH_TEXT, Job, JobAttempt, JobAudit
from jobs.scheduler import LOCK_KEY as SCHEDULER_LOCK
from jobs.statuses import JobStatus
from jobs.worker import PRODUCT_WORKERS, alive_key

#: An RQ worker (not the product's) is stale when its heartbeat is older than RQ's worker TTL.
RQ_WORKER_STALE_AFTER = 420
#: The history is shown as behind when an unapplied transition is older than this (seconds).
MIRROR_BEHIND_WARNING = 30.0
#: A failure spike: at least this many failures in 15 minutes, a rate at least twice the
#: last day's and this much above it.
FAILURE_SPIKE_MIN_FAILED = 5
FAILURE_SPIKE_MIN_GAP = 0.1

#: The columns a list needs (not the traceback, which can be large).
LIST_FIELDS = (
    "id",
    "type",
    "queue",
    "status",
    "progress",
    "progress_message",
    "error",
    "attempts",
    "max_attempts",
    "created_at",
    "enqueued_at",
    "scheduled_for",
    "started_at",
    "ended_at",
    "worker_name",
    "created_by_id",
    "params",
    "result",
    "timeout",
)


class JobFilter(django_filters.FilterSet):
    # distinct=False: no join can duplicate a row, and DISTINCT over every column is slow.
    status = django_filters.MultipleChoiceFilter(
        choices=JobStatus.choices, distinct=False, help_text="One or more statuses."
    )
    type = django_filters.CharFilter(field_name="type", help_text="A job type name.")
    queue = django_filters.ChoiceFilter(
        choices=[(name, name) for name in queues.QUEUE_NAMES], help_text="A queue name."
    )
    created_by = django_filters.NumberFilter(
        field_name="created_by_id", min_value=1, max_value=2**63 - 1, help_text="The creating user's id."
    )
    created_after = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="gte")
    created_before = django_filters.IsoDateTimeFilter(field_name="created_at", lookup_expr="lt")
    ended_after = django_filters.IsoDateTimeFilter(field_name="ended_at", lookup_expr="gte")
    ended_before = django_filters.IsoDateTimeFilter(field_name="ended_at", lookup_expr="lt")
    search = django_filters.CharFilter(
        method="filter_search", max_length=200, help_text="Text in the job's id, params or error."
    )

    class Meta:
        model = Job
        fields: list[str] = []

    def filter_search(self, queryset: QuerySet[Job], name: str, value: str) -> QuerySet[Job]:
        term = value.strip()
        if not term:
            return queryset
        # SEARCH_TEXT as it is: on PostgreSQL its trigram index serves the search. Upper-case
        # the term with the database's own UPPER, as the text is: Python's differs (ß -> SS;
        # SQLite's UPPER leaves non-ASCII letters alone).
        queryset = queryset.alias(search_text=SEARCH_TEXT)
        condition = Q(search_text__contains=Upper(Value(term)))
        escaped = json.dumps(term)[1:-1]
        if escaped != term:
            # SQLite keeps params as Django wrote them, with non-ASCII letters as \uXXXX.
            condition |= Q(search_text__contains=Upper(Value(escaped)))
        with contextlib.suppress(ValueError):
            condition |= Q(id=uuid.UUID(term))
        return queryset.filter(condition)


def job_list(*, filters: dict[str, Any] | None = None) -> QuerySet[Job]:
    """Jobs newest first, filtered; raises InvalidJobRequest for bad filter values."""
    queryset = Job.objects.only(*LIST_FIELDS).order_by("-created_at", "-id")
    if not filters:
        return queryset
    empty = [name for name, value in filters.items() if value == "" or value == []]
    if empty:
        raise InvalidJobRequest({name: ["must not be empty"] for name in empty})
    filterset = JobFilter(data=filters, queryset=queryset)
    if not filterset.is_valid():
        raise InvalidJobRequest({field: [str(e) for e in errors] for field, errors in filterset.errors.items()})
    return cast(QuerySet[Job], filterset.qs)


@dataclass
class JobPage:
    """One page of the jobs list, newest first, and the cursor of the next (older) one."""

    jobs: list[Job]
    next_cursor: str | None


def _encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.pk}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        moment, key = raw.split("|", 1)
        when = datetime.fromisoformat(moment)
        if when.tzinfo is None:
            raise ValueError("naive")
        return when, uuid.UUID(key)
    except (ValueError, UnicodeDecodeError):
        raise InvalidJobRequest({"cursor": ["invalid cursor"]}) from None


def job_page(*, filters: dict[str, Any] | None = None, cursor: str | None = None, size: int = 50) -> JobPage:
    """A page of `job_list`, by keyset on (created_at, id): as fast a million rows deep as on top."""
    jobs = job_list(filters=filters)
    if cursor:
        moment, key = _decode_cursor(cursor)
        jobs = jobs.filter(Q(created_at__lt=moment) | Q(created_at=moment, id__lt=key))
    rows = list(jobs[: size + 1])
    more = len(rows) > size
    rows = rows[:size]
    return JobPage(jobs=rows, next_cursor=_encode_cursor(rows[-1]) if more and rows else None)


def job_get(*, job_id: Any) -> Job:
    """One job with its attempt timeline; raises InvalidJobRequest for a malformed id, Job.DoesNotExist."""
    try:
        key = uuid.UUID(str(job_id))
    except ValueError:
        raise InvalidJobRequest({"id": [f"{job_id!r} is not a job id (a UUID)"]}) from None
    return Job.objects.prefetch_related(Prefetch("attempt_set", queryset=JobAttempt.objects.order_by("number"))).get(
        pk=key
    )


def job_types() -> list[registry.JobType]:
    return registry.all_types()


def _age(moment: datetime | None, now: datetime) -> float | None:
    return None if moment is None else round(max(0.0, (now - moment).total_seconds()), 3)


@rqstore.unavailable_on_error()
def queue_health() -> dict[str, dict[str, Any]]:
    """Live state of each queue, from Redis: waiting jobs, the oldest one's age, paused."""
    conn = queues.redis()
    paused = queues.paused_queues()
    now = datetime.now(tz=UTC)
    result: dict[str, dict[str, Any]] = {}
    with conn.pipeline(transaction=False) as pipe:
        for queue in queues.all_queues():
            pipe.llen(queue.key)
            pipe.lindex(queue.key, 0)
            pipe.zcard(queue.scheduled_job_registry.key)
            pipe.zcard(queue.started_job_registry.key)
        answers: Any = pipe.execute()
    oldest_ids = []
    for index, name in enumerate(queues.QUEUE_NAMES):
        waiting, oldest, scheduled, started = answers[index * 4 : index * 4 + 4]
        oldest_ids.append(oldest.decode() if oldest else None)
        result[name] = {
            "waiting": waiting,
            "scheduled": scheduled,
            "running": started,
            "paused": name in paused,
            "oldest_waiting_age": None,
        }
    with conn.pipeline(transaction=False) as pipe:
        for job_id in oldest_ids:
            pipe.hget(rqstore.MirroredJob.key_for(job_id), "enqueued_at") if job_id else pipe.echo("")
        enqueued: Any = pipe.execute()
    for name, raw in zip(queues.QUEUE_NAMES, enqueued, strict=True):
        if raw:
            moment = datetime.fromisoformat(raw.decode().replace("Z", "+00:00"))
            result[name]["oldest_waiting_age"] = _age(moment.replace(tzinfo=moment.tzinfo or UTC), now)
    return result


@rqstore.unavailable_on_error()
def workers() -> list[dict[str, Any]]:
    """The workers registered in Redis, with how long ago each last showed it was alive.

    A product worker's mirror process refreshes a liveness key every few seconds
    (the reconciler's signal): its heartbeat age comes from that key, and it is
    `stale` once the key has expired while RQ still lists the worker (it died
    without signing off). Other workers are judged by RQ's own heartbeat.
    """
    # RQ's Worker raises its client's socket timeout to its own dequeue timeout (minutes): it reads
    # through a client of its own, or every later request of this process would wait minutes on a
    # hung Redis instead of answering 503 within seconds.
    listing = queues.new_redis()
    try:
        return _workers(listing)
    finally:
        listing.close()


def _workers(listing: redis_lib.Redis) -> list[dict[str, Any]]:
    found = list(RQWorker.all(connection=listing, serializer=queues.SERIALIZER))
    # ...and the reads below (each worker's current job) keep the queues' timeout.
    listing.connection_pool.connection_kwargs["socket_timeout"] = settings.REDIS_SOCKET_TIMEOUT
    conn = queues.redis()
    with conn.pipeline(transaction=False) as pipe:
        for worker in found:
            pipe.pttl(alive_key(worker.name))
            pipe.sismember(PRODUCT_WORKERS, worker.name)
        answers: Any = pipe.execute()
    now = datetime.now(tz=UTC)
    dead_after = float(settings.JOBS_WORKER_DEAD_AFTER)
    result = []
    for index, worker in enumerate(found):
        alive_ms, is_product = answers[index * 2 : index * 2 + 2]
        rq_heartbeat = worker.last_heartbeat
        if rq_heartbeat is not None and rq_heartbeat.tzinfo is None:
            rq_heartbeat = rq_heartbeat.replace(tzinfo=UTC)
        if is_product:
            stale = alive_ms is None or alive_ms < 0
            age = None if stale else round(max(0.0, dead_after - alive_ms / 1000), 1)
        else:
            age = _age(rq_heartbeat, now)
            stale = age is None or age > RQ_WORKER_STALE_AFTER
        result.append(
            {
                "name": worker.name,
                "queues": worker.queue_names(),
                "state": worker.get_state(),
                "current_job": worker.get_current_job_id(),
                "heartbeat_age": age,
                "stale": stale,
                "successful_jobs": worker.successful_job_count,
                "failed_jobs": worker.failed_job_count,
            }
        )
    return sorted(result, key=lambda worker: worker["name"])


@rqstore.unavailable_on_error()
def scheduler_state() -> dict[str, Any]:
    """Whether a scheduler process is active: it holds a lock in Redis that it renews every tick."""
    conn = queues.redis()
    with conn.pipeline(transaction=False) as pipe:
        pipe.get(SCHEDULER_LOCK)
        pipe.pttl(SCHEDULER_LOCK)
        holder, ttl_ms = pipe.execute()
    return {
        "alive": holder is not None,
        "name": holder.decode() if isinstance(holder, bytes) else holder,
        "lock_expires_in": round(ttl_ms / 1000, 1) if holder is not None and ttl_ms > 0 else None,
    }


@rqstore.unavailable_on_error()
def mirror_state() -> dict[str, Any]:
    """The mirror's backlog: transitions written by workers that are not in the database yet."""
    conn = queues.redis()
    backlog = 0
    try:
        groups: Any = conn.xinfo_groups(events.STREAM)
    except redis_lib.ResponseError:  # no stream yet: nothing was ever written
        groups = []
    for group in groups:
        name = group["name"].decode() if isinstance(group["name"], bytes) else group["name"]
        if name == events.GROUP:
            backlog = int(group.get("pending") or 0) + int(group.get("lag") or 0)
    oldest_ms = oldest_unapplied_ms(conn)
    age = None if oldest_ms is None else round(max(0.0, time.time() - oldest_ms / 1000), 1)
    return {"backlog": backlog, "oldest_age": age}


def failure_rates(now: datetime | None = None) -> dict[str, Any]:
    """Failed / processed over the last 15 minutes and the last day."""
    now = now or timezone.now()
    recent = stats.ended_counts(now - timedelta(minutes=15))
    day = stats.ended_counts(now - timedelta(days=1))

    def rate(counts: dict[str, int]) -> float | None:
        processed = counts[JobStatus.FINISHED] + counts[JobStatus.FAILED]
        return round(counts[JobStatus.FAILED] / processed, 4) if processed else None

    return {
        "last_15_minutes": rate(recent),
        "last_day": rate(day),
        "failed_last_15_minutes": recent[JobStatus.FAILED],
    }


def health_warnings(
    queue_info: dict[str, dict[str, Any]],
    worker_list: list[dict[str, Any]],
    scheduler: dict[str, Any],
    mirror: dict[str, Any],
    failures: dict[str, Any],
) -> list[dict[str, str]]:
    """What an operator should look at now, most urgent first."""
    found: list[dict[str, str]] = []
    listening = {name for worker in worker_list if not worker["stale"] for name in worker["queues"]}
    for name, info in queue_info.items():
        if info["waiting"] and not info["paused"] and name not in listening:
            found.append(
                {
                    "code": "no_worker",
                    "queue": name,
                    "message": f"Queue {name} has {info['waiting']} waiting jobs and no worker listening to it.",
                }
            )
    for worker in worker_list:
        if worker["stale"]:
            found.append(
                {
                    "code": "stale_worker",
                    "message": f"Worker {worker['name']} has stopped beating: it died or hangs.",
                }
            )
    if not scheduler["alive"]:
        found.append(
            {
                "code": "no_scheduler",
                "message": "No scheduler is running: delayed jobs and retries wait, dead workers go unnoticed "
                "(start manage.py runscheduler).",
            }
        )
    if mirror["oldest_age"] is not None and mirror["oldest_age"] > MIRROR_BEHIND_WARNING:
        found.append(
            {
                "code": "mirror_behind",
                "message": f"The history is {mirror['oldest_age']:.0f} s behind the workers "
                f"({mirror['backlog']} transitions not written yet): is the database reachable?",
            }
        )
    recent, day = failures["last_15_minutes"], failures["last_day"]
    if (
        recent is not None
        and failures["failed_last_15_minutes"] >= FAILURE_SPIKE_MIN_FAILED
        and recent >= 2 * (day or 0)
        and recent - (day or 0) >= FAILURE_SPIKE_MIN_GAP
    ):
        found.append(
            {
                "code": "failure_spike",
                "message": f"{recent:.0%} of the jobs of the last 15 minutes failed, against {day or 0:.0%} "
                "over the last day.",
            }
        )
    return found


def health() -> dict[str, Any]:
    """Queue health: queues, workers, the scheduler, the mirror, failure rates, and warnings.

    Raises `QueueUnavailable` when Redis cannot be reached."""
    queue_info = queue_health()
    worker_list = workers()
    for name, info in queue_info.items():
        info["workers"] = sum(1 for worker in worker_list if name in worker["queues"] and not worker["stale"])
    scheduler = scheduler_state()
    mirror = mirror_state()
    failures = failure_rates()
    return {
        "queues": queue_info,
        "workers": worker_list,
        "scheduler": scheduler,
        "mirror": mirror,
        "failure_rate": failures,
        "warnings": health_warnings(queue_info, worker_list, scheduler, mirror, failures),
    }


def job_stats() -> dict[str, Any]:
    """Counts for every status (per queue and in total; pruned jobs still counted: `jobs.retention`), queue
    health, workers, recent throughput, and how far back the history goes.

    Raises `QueueUnavailable` when Redis cannot be reached."""
    counts = stats.status_counts()
    statuses = [status.value for status in JobStatus]
    per_queue: dict[str, dict[str, int]] = {}
    totals = dict.fromkeys(statuses, 0)
    for name in sorted(set(queues.QUEUE_NAMES) | set(counts)):
        row = {status: counts.get(name, {}).get(status, 0) for status in statuses}
        row["total"] = sum(row.values())
        per_queue[name] = row
        for status in statuses:
            totals[status] += row[status]
    totals["total"] = sum(totals[status] for status in statuses)
    state = health()
    health_info, worker_list = state["queues"], state["workers"]
    now = timezone.now()
    last_hour = stats.ended_counts(now - timedelta(hours=1))
    last_day = stats.ended_counts(now - timedelta(days=1))
    return {
        "queues": {
            name: {"counts": per_queue.get(name, dict.fromkeys([*statuses, "total"], 0)), **health_info.get(name, {})}
            for name in per_queue
        },
        "totals": totals,
        "paused_queues": sorted(name for name, info in health_info.items() if info["paused"]),
        "workers": {"alive": len(worker_list), "busy": sum(1 for w in worker_list if w["current_job"])},
        "health": {
            "workers": worker_list,
            "scheduler": state["scheduler"],
            "mirror": state["mirror"],
            "failure_rate": state["failure_rate"],
            "warnings": state["warnings"],
        },
        "processed": {
            "last_hour": last_hour[JobStatus.FINISHED] + last_hour[JobStatus.FAILED],
            "last_day": last_day[JobStatus.FINISHED] + last_day[JobStatus.FAILED],
        },
        "failed": {"last_hour": last_hour[JobStatus.FAILED], "last_day": last_day[JobStatus.FAILED]},
        "history": retention.history_info(counts),
        "generated_at": now,
    }


def history_kept() -> dict[str, Any]:
    """How far back the history goes: the ages kept per final status and the oldest job (`jobs.retention`)."""
    return retention.history_info()


def job_audit(*, job_id: Any, limit: int = 200) -> list[JobAudit]:
    """Who did what to a job, newest first (also for a job that was removed)."""
    return list(JobAudit.objects.filter(job_id=job_id).order_by("-at", "-id")[:limit])


#: How many types the statistics view lists as the slowest and the most failing.
TOP_TYPES = 5


def job_statistics(*, now: datetime | None = None) -> dict[str, Any]:
    """Everything the statistics view shows, from counters and rollups only (never a scan of the history)."""
    now = now or timezone.now()
    summary = job_stats()
    types = stats.per_type(now - timedelta(hours=24))
    failing = [entry for entry in types if entry["failed"]]
    timed = [entry for entry in types if entry["run_ms_p95"] is not None]
    return {
        **summary,
        "statuses": [status.value for status in JobStatus],
        "per_minute": stats.ended_per_minute(now - timedelta(minutes=59), now),
        "per_hour": stats.ended_per_hour(now - timedelta(days=30), now),
        "per_type": types,
        "slowest": sorted(timed, key=lambda entry: -entry["run_ms_p95"])[:TOP_TYPES],
        "most_failing": sorted(failing, key=lambda entry: (-entry["failure_rate"], -entry["failed"]))[:TOP_TYPES],
    }
