"""Job counts that stay cheap to read however long the history grows.

Database triggers (migration 0003) append a +1/-1 row to `JobCountDelta` for
every status change of a job, whatever code made it, and (migration 0007) a
`JobRunDelta` row, with its end time and its run and wait time, for every job
that finished or failed. `fold()` (run by the scheduler every second) adds
those rows into `JobCount` (totals per queue and status), `JobEndMinute` (jobs
that ended, per minute and queue) and `JobEndHour` (per hour, queue, type and
status, with run and wait time histograms), then deletes them. Readers add the few rows not folded yet,
so counts are exact at any time. The same rows go, in the same transaction, into `JobTypeTotal`
(every job that ever ended, per queue, type and status, with the same histograms): it is never
deleted, so the metrics' counters (`jobs.metrics`) never go down when old rollups or history rows go.

Percentiles come from the histograms: buckets a quarter of a power of two wide
(`bucket`), so a p50 or p95 is within 9 % of the exact figure.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import Count, F, Sum
from django.utils import timezone

from jobs.models import JobCount, JobCountDelta, JobEndHour, JobEndMinute, JobRunDelta, JobTypeTotal, RunRollup
from jobs.statuses import JobStatus

#: Statuses counted as "ended" in the per-minute history.
ENDED = (JobStatus.FINISHED, JobStatus.FAILED)
#: Per-minute rows older than this are deleted.
MINUTE_RETENTION = timedelta(days=8)
#: Per-hour rows older than this are deleted.
HOUR_RETENTION = timedelta(days=90)
FOLD_BATCH = 50_000
#: Histogram buckets per doubling of a duration.
BUCKETS_PER_DOUBLING = 4


def _minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def bucket(ms: float) -> int:
    """The histogram bucket of a duration in milliseconds: 0 below 1 ms, then 4 per doubling."""
    if ms < 1:
        return 0
    return math.floor(BUCKETS_PER_DOUBLING * math.log2(ms)) + 1


def bucket_value(index: int) -> float:
    """The duration (ms) a bucket stands for: the geometric middle of its bounds."""
    if index <= 0:
        return 0.5
    return float(2 ** ((index - 0.5) / BUCKETS_PER_DOUBLING))


@dataclass
class Histogram:
    """Counts of durations per bucket (keys are strings: the histogram is stored as JSON)."""

    counts: Counter[str] = field(default_factory=Counter)

    def add(self, ms: float | None, times: int = 1) -> None:
        if ms is not None:
            self.counts[str(bucket(max(0.0, ms)))] += times

    def merge(self, other: dict[str, int]) -> None:
        self.counts.update({key: int(value) for key, value in other.items()})

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def percentile(self, pct: float) -> float | None:
        """The duration (ms) under which `pct` percent of the durations fall, or None when empty."""
        total = self.total
        if not total:
            return None
        rank = pct / 100 * total
        seen = 0
        for key in sorted(self.counts, key=int):
            seen += self.counts[key]
            if seen >= rank:
                return round(bucket_value(int(key)), 1)
        return round(bucket_value(max(int(key) for key in self.counts)), 1)


def fold(batch: int = FOLD_BATCH) -> int:
    """Fold pending delta rows into the totals and rollups; returns how many rows were folded."""
    with transaction.atomic():
        rows = list(JobCountDelta.objects.order_by("id").values_list("id", "queue", "status", "delta")[:batch])
        totals: Counter[tuple[str, str]] = Counter()
        for _id, queue, status, delta in rows:
            totals[(queue, status)] += delta
        for (queue, status), delta in totals.items():
            if delta and not JobCount.objects.filter(queue=queue, status=status).update(count=F("count") + delta):
                JobCount.objects.create(queue=queue, status=status, count=delta)
        if rows:
            JobCountDelta.objects.filter(id__in=[row[0] for row in rows]).delete()
    return len(rows) + _fold_runs(batch)


def _fold_runs(batch: int) -> int:
    """Fold `JobRunDelta` rows into `JobEndMinute` and `JobEndHour`, by the minute and hour each job ended,
    and into the all-time `JobTypeTotal`."""
    with transaction.atomic():
        runs = list(
            JobRunDelta.objects.order_by("id").values_list("id", "type", "queue", "status", "run_ms", "wait_ms", "at")[
                :batch
            ]
        )
        if not runs:
            return 0
        groups: dict[tuple[datetime, str, str, str], HourRollup] = {}
        ended: Counter[tuple[datetime, str, str]] = Counter()
        for _id, type_, queue, status, run_ms, wait_ms, at in runs:
            groups.setdefault((_hour(at), queue, type_, status), HourRollup()).add(run_ms, wait_ms)
            ended[(_minute(at), queue, status)] += 1
        for (minute, queue, status), count in ended.items():
            updated = JobEndMinute.objects.filter(minute=minute, queue=queue, status=status).update(
                count=F("count") + count
            )
            if not updated:
                JobEndMinute.objects.create(minute=minute, queue=queue, status=status, count=count)
        hours = {key[0] for key in groups}
        existing = {
            (row.hour, row.queue, row.type, row.status): row
            for row in JobEndHour.objects.select_for_update().filter(hour__in=hours)
        }
        for key, rollup in groups.items():
            row = existing.get(key)
            if row is None:
                hour, queue, type_, status = key
                row = JobEndHour(hour=hour, queue=queue, type=type_, status=status)
            HourRollup.merged(rollup, row).store(row)
            row.save()
        _fold_totals(groups)
        JobRunDelta.objects.filter(id__in=[run[0] for run in runs]).delete()
        JobEndHour.objects.filter(hour__lt=timezone.now() - HOUR_RETENTION).delete()
        JobEndMinute.objects.filter(minute__lt=timezone.now() - MINUTE_RETENTION).delete()
    return len(runs)


def _fold_totals(groups: dict[tuple[datetime, str, str, str], HourRollup]) -> None:
    """Add the hour groups of a fold into the all-time `JobTypeTotal` rows (inside the fold's transaction)."""
    totals: dict[tuple[str, str, str], HourRollup] = {}
    for (_, queue, type_, status), rollup in groups.items():
        totals[(queue, type_, status)] = HourRollup.merged(rollup, totals.get((queue, type_, status)))
    existing = {
        (row.queue, row.type, row.status): row
        for row in JobTypeTotal.objects.select_for_update().filter(
            queue__in={key[0] for key in totals}, type__in={key[1] for key in totals}
        )
    }
    for (queue, type_, status), rollup in totals.items():
        row = existing.get((queue, type_, status)) or JobTypeTotal(queue=queue, type=type_, status=status)
        HourRollup.merged(rollup, row).store(row)
        row.save()


@dataclass
class HourRollup:
    """Jobs that ended, with the sums and histograms of their run and wait times."""

    count: int = 0
    run_ms_sum: int = 0
    wait_ms_sum: int = 0
    run: Histogram = field(default_factory=Histogram)
    wait: Histogram = field(default_factory=Histogram)

    def add(self, run_ms: int | None, wait_ms: int | None) -> None:
        self.count += 1
        self.run_ms_sum += max(0, run_ms or 0)
        self.wait_ms_sum += max(0, wait_ms or 0)
        self.run.add(run_ms)
        self.wait.add(wait_ms)

    def merge_row(self, row: RunRollup | HourRollup) -> None:
        if isinstance(row, HourRollup):
            self.count += row.count
            self.run_ms_sum += row.run_ms_sum
            self.wait_ms_sum += row.wait_ms_sum
            self.run.merge(row.run.counts)
            self.wait.merge(row.wait.counts)
            return
        self.count += row.count
        self.run_ms_sum += row.run_ms_sum
        self.wait_ms_sum += row.wait_ms_sum
        self.run.merge(row.run_hist or {})
        self.wait.merge(row.wait_hist or {})

    @classmethod
    def merged(cls, *parts: RunRollup | HourRollup | None) -> HourRollup:
        """A new rollup holding all of `parts` (None: nothing)."""
        total = cls()
        for part in parts:
            if part is not None:
                total.merge_row(part)
        return total

    def store(self, row: RunRollup) -> None:
        row.count = self.count
        row.run_ms_sum = self.run_ms_sum
        row.wait_ms_sum = self.wait_ms_sum
        row.run_hist = dict(self.run.counts)
        row.wait_hist = dict(self.wait.counts)


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
    pending = JobRunDelta.objects.filter(at__gte=_minute(since))
    for row in pending.values("status").annotate(total=Count("id")):
        counts[row["status"]] += row["total"]
    return {status: counts[status] for status in ENDED}


def ended_per_minute(since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Jobs finished and failed in each minute from `since` to `until`, all queues together."""
    counts: Counter[tuple[datetime, str]] = Counter()
    rows = JobEndMinute.objects.filter(minute__gte=_minute(since), minute__lte=until)
    for row in rows.values("minute", "status").annotate(total=Sum("count")):
        counts[(row["minute"], row["status"])] += row["total"]
    for status, at in JobRunDelta.objects.filter(at__gte=_minute(since)).values_list("status", "at"):
        counts[(_minute(at), status)] += 1
    return _series(counts, _minute(since), _minute(until), timedelta(minutes=1))


def ended_per_hour(since: datetime, until: datetime) -> list[dict[str, Any]]:
    """Jobs finished and failed in each hour from `since` to `until`, all queues and types together."""
    counts: Counter[tuple[datetime, str]] = Counter()
    rows = JobEndHour.objects.filter(hour__gte=_hour(since), hour__lte=until)
    for row in rows.values("hour", "status").annotate(total=Sum("count")):
        counts[(row["hour"], row["status"])] += row["total"]
    for status, at in JobRunDelta.objects.filter(at__gte=_hour(since)).values_list("status", "at"):
        counts[(_hour(at), status)] += 1
    return _series(counts, _hour(since), _hour(until), timedelta(hours=1))


def _series(
    counts: Counter[tuple[datetime, str]], start: datetime, end: datetime, step: timedelta
) -> list[dict[str, Any]]:
    points = []
    moment = start
    while moment <= end:
        finished = counts[(moment, JobStatus.FINISHED)]
        failed = counts[(moment, JobStatus.FAILED)]
        points.append({"at": moment, "processed": finished + failed, "failed": failed})
        moment += step
    return points


@dataclass
class TypeFigures:
    """One job type's runs over a window: how many, how many failed, run and wait time percentiles."""

    type: str
    runs: int = 0
    failed: int = 0
    run: Histogram = field(default_factory=Histogram)
    wait: Histogram = field(default_factory=Histogram)

    @property
    def failure_rate(self) -> float:
        return self.failed / self.runs if self.runs else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "runs": self.runs,
            "failed": self.failed,
            "failure_rate": round(self.failure_rate, 4),
            "run_ms_p50": self.run.percentile(50),
            "run_ms_p95": self.run.percentile(95),
            "wait_ms_p50": self.wait.percentile(50),
            "wait_ms_p95": self.wait.percentile(95),
        }


def per_type(since: datetime) -> list[dict[str, Any]]:
    """Runs, failure rate, and run and wait time p50/p95 of every job type that ended a job since
    `since` (to the hour), busiest first."""
    figures: dict[str, TypeFigures] = {}

    def add(
        type_: str, status: str, count: int, run: Iterable[tuple[str, int]], wait: Iterable[tuple[str, int]]
    ) -> None:
        entry = figures.setdefault(type_, TypeFigures(type=type_))
        entry.runs += count
        if status == JobStatus.FAILED:
            entry.failed += count
        entry.run.merge(dict(run))
        entry.wait.merge(dict(wait))

    hours = JobEndHour.objects.filter(hour__gte=_hour(since))
    for type_, status, count, run_hist, wait_hist in hours.values_list(
        "type", "status", "count", "run_hist", "wait_hist"
    ):
        add(type_, status, count, (run_hist or {}).items(), (wait_hist or {}).items())
    for type_, status, run_ms, wait_ms in JobRunDelta.objects.filter(at__gte=_hour(since)).values_list(
        "type", "status", "run_ms", "wait_ms"
    ):
        single = HourRollup()
        single.add(run_ms, wait_ms)
        add(type_, status, 1, single.run.counts.items(), single.wait.counts.items())
    return [entry.as_dict() for entry in sorted(figures.values(), key=lambda entry: (-entry.runs, entry.type))]


@dataclass
class TypeTotal:
    """Every job of one type on one queue that ever ended in one status (as folded so far)."""

    queue: str
    type: str
    status: str
    rollup: HourRollup


def type_totals() -> list[TypeTotal]:
    """The all-time totals per queue, type and status, as folded (one read of a small table, never of the
    history). Deltas not folded yet are left out, so a total only ever grows between two reads."""
    rows = JobTypeTotal.objects.order_by("queue", "type", "status")
    return [TypeTotal(row.queue, row.type, row.status, HourRollup.merged(row)) for row in rows]
