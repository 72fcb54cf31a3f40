"""Job counts that stay cheap to read however long the history grows.

Database triggers (migration 0003) append a +1/-1 row to `JobCountDelta` for
every status change of a job, whatever code made it. `fold()` (run by the
scheduler every few seconds) adds those rows into `JobCount` (totals per queue
and status) and `JobEndMinute` (jobs that ended, per minute), then deletes
them. Readers add the few rows not folded yet, so counts are exact at any time.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone

from jobs.models import JobCount, JobCountDelta, JobEndMinute
from jobs.statuses import JobStatus

#: Statuses counted as "ended" in the per-minute history.
ENDED = (JobStatus.FINISHED, JobStatus.FAILED)
#: Per-minute rows older than this are deleted.
MINUTE_RETENTION = timedelta(days=8)
FOLD_BATCH = 50_000


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def fold(batch: int = FOLD_BATCH) -> int:
    """Fold pending delta rows into the totals; returns how many rows were folded."""
    with transaction.atomic():
        rows = list(JobCountDelta.objects.order_by("id").values_list("id", "queue", "status", "delta", "at")[:batch])
        if not rows:
            return 0
        totals: Counter[tuple[str, str]] = Counter()
        ended: Counter[tuple[datetime, str, str]] = Counter()
        for _id, queue, status, delta, at in rows:
            totals[(queue, status)] += delta
            if delta > 0 and status in ENDED:  # a row can count several jobs (Postgres groups them)
                ended[(_minute(at), queue, status)] += delta
        for (queue, status), delta in totals.items():
            if delta and not JobCount.objects.filter(queue=queue, status=status).update(count=F("count") + delta):
                JobCount.objects.create(queue=queue, status=status, count=delta)
        for (minute, queue, status), count in ended.items():
            updated = JobEndMinute.objects.filter(minute=minute, queue=queue, status=status).update(
                count=F("count") + count
            )
            if not updated:
                JobEndMinute.objects.create(minute=minute, queue=queue, status=status, count=count)
        JobCountDelta.objects.filter(id__in=[row[0] for row in rows]).delete()
        JobEndMinute.objects.filter(minute__lt=timezone.now() - MINUTE_RETENTION).delete()
    return len(rows)


def status_counts() -> dict[str, dict[str, int]]:
    """{queue: {status: count}} for every queue and status that has jobs."""
    counts: Counter[tuple[str, str]] = Counter()
    for queue, status, count in JobCount.objects.values_list("queue", "status", "count"):
        counts[(queue, status)] += count
    for row in JobCountDelta.objects.values("queue", "status").annotate(total=Sum("delta")):
        counts[(row["queue"], row["status"])] += row["total"]
    result: dict[str, dict[str, int]] = {}
    for (queue, status), count in counts.items():
        if count:
            result.setdefault(queue, {})[status] = count
    return result


def ended_counts(since: datetime) -> dict[str, int]:
    """How many jobs finished and failed since `since` (to the minute), all queues together."""
    counts: Counter[str] = Counter()
    for row in JobEndMinute.objects.filter(minute__gte=_minute(since)).values("status").annotate(total=Sum("count")):
        counts[row["status"]] += row["total"]
    pending = JobCountDelta.objects.filter(status__in=ENDED, delta__gt=0, at__gte=_minute(since))
    for row in pending.values("status").annotate(total=Sum("delta")):
        counts[row["status"]] += row["total"]
    return {status: counts[status] for status in ENDED}
