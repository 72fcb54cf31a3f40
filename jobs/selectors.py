"""Every read of jobs: lists, filters, one job, statistics, health."""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import django_filters
from django.db.models import Prefetch, Q, QuerySet, Value
from django.db.models.functions import Upper
from django.utils import timezone
from rq.worker import Worker as RQWorker

from jobs import queues, registry, stats
from jobs.errors import InvalidJobRequest
from jobs.models import Job, JobAttempt
from jobs.statuses import JobStatus

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
        # Upper-case the term with the database's own UPPER, as the column was: Python's
        # differs (ß -> SS; SQLite's UPPER leaves non-ASCII letters alone).
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
            pipe.hget(f"rq:job:{job_id}", "enqueued_at") if job_id else pipe.echo("")
        enqueued: Any = pipe.execute()
    for name, raw in zip(queues.QUEUE_NAMES, enqueued, strict=True):
        if raw:
            moment = datetime.fromisoformat(raw.decode().replace("Z", "+00:00"))
            result[name]["oldest_waiting_age"] = _age(moment.replace(tzinfo=moment.tzinfo or UTC), now)
    return result


def workers() -> list[dict[str, Any]]:
    """The workers alive now (RQ removes a worker's key when it stops beating)."""
    found = []
    for worker in RQWorker.all(connection=queues.redis(), serializer=queues.SERIALIZER):
        found.append(
            {
                "name": worker.name,
                "queues": worker.queue_names(),
                "state": worker.get_state(),
                "current_job": worker.get_current_job_id(),
                "last_heartbeat": worker.last_heartbeat,
                "successful_jobs": worker.successful_job_count,
                "failed_jobs": worker.failed_job_count,
            }
        )
    return sorted(found, key=lambda worker: worker["name"])


def job_stats() -> dict[str, Any]:
    """Counts for every status (per queue and in total), queue health, workers, recent throughput."""
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
    health = queue_health()
    worker_list = workers()
    now = timezone.now()
    last_hour = stats.ended_counts(now - timedelta(hours=1))
    last_day = stats.ended_counts(now - timedelta(days=1))
    return {
        "queues": {
            name: {"counts": per_queue.get(name, dict.fromkeys([*statuses, "total"], 0)), **health.get(name, {})}
            for name in per_queue
        },
        "totals": totals,
        "paused_queues": sorted(name for name, info in health.items() if info["paused"]),
        "workers": {"alive": len(worker_list), "busy": sum(1 for w in worker_list if w["current_job"])},
        "processed": {
            "last_hour": last_hour[JobStatus.FINISHED] + last_hour[JobStatus.FAILED],
            "last_day": last_day[JobStatus.FINISHED] + last_day[JobStatus.FAILED],
        },
        "failed": {"last_hour": last_hour[JobStatus.FAILED], "last_day": last_day[JobStatus.FAILED]},
        "generated_at": now,
    }
