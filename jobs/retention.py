"""History retention: how long ended jobs are kept, and pruning the older ones in short batches.

A job is pruned once it has been in a final status (`statuses.TERMINAL`) for longer than its
status's age (`JOBS_RETENTION_*_DAYS`, 0 keeps it for good), counted from its end (`ended_at`; its
creation when it has none). Whatever their age, the newest `JOBS_RETENTION_KEEP_LAST` ended jobs of
every job type, and the jobs of the newest `JOBS_RETENTION_KEEP_LAST` runs of every schedule, are
kept: a weekly job's history is not crowded out by a per-minute one. An active job is never pruned
(only final statuses are candidates, checked again under the row lock).

`prune()` walks the candidates oldest first by an index (`job_ended_idx`), a batch at a time by
key, and deletes each batch in one short transaction: the rows are locked (`SKIP LOCKED`: a row
someone is changing is left for the next prune) and checked again, then their attempts, audit
entries and schedule runs go with them, and the files their results name (`result["file"]`, the
report's CSV) are deleted through the storage after the commit.

The statistics keep their figures. The per-minute and per-hour rollups, the per-type figures and
the all-time totals are written when a job ends, never lowered by a delete. The status counters
are lowered by the database's delete trigger (migration 0003), so each batch adds, in its own
transaction, `+n` per queue and status back: the counters count every job the history recorded,
pruned ones included. It also adds `n` under the status `pruned:<status>`, the tally that tells
how many of them are gone (`present_counts()`, for the admin's list, which counts rows).

The active scheduler prunes once a day (`prune_if_due`, `JOBS_RETENTION_HOUR`), in a thread of
its own; `manage.py prunehistory` prunes on demand.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import reduce
from operator import or_
from typing import Any

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, transaction
from django.db.models import Q, QuerySet
from django.db.models.expressions import RawSQL
from django.utils import timezone

from jobs import stats
from jobs.models import Job, JobAttempt, JobAudit, JobCountDelta, ScheduleRun
from jobs.statuses import TERMINAL, JobStatus

log = logging.getLogger(__name__)

#: The statuses each age setting covers (its name in `Policy`): failures are kept longest.
AGE_GROUPS: dict[str, tuple[JobStatus, ...]] = {
    "finished": (JobStatus.FINISHED,),
    "failed": (JobStatus.FAILED, JobStatus.ABANDONED, JobStatus.LOST),
    "canceled": (JobStatus.CANCELED, JobStatus.STOPPED),
}
assert {s for group in AGE_GROUPS.values() for s in group} == set(TERMINAL), "every final status needs an age"

#: The status counters' tally of pruned jobs: `JobCount` rows with this prefix on the status.
PRUNED_PREFIX = "pruned:"
#: Where the active scheduler records when it last started the daily prune (epoch seconds).
LAST_RUN_KEY = "jobs:retention:last-run"
#: Claims the day's prune for one scheduler: only if the last one started before this day's due time.
_CLAIM = """
local last = tonumber(redis.call('get', KEYS[1]) or '0')
if last < tonumber(ARGV[1]) then
    redis.call('set', KEYS[1], ARGV[2])
    return 1
end
return 0
"""

Row = tuple[Any, str, str, str, datetime]  # id, type, queue, status, created_at


@dataclass(frozen=True)
class Policy:
    """Days each group of final statuses is kept (0: for good), and how many jobs of each type and
    schedule are kept whatever their age."""

    finished_days: int
    failed_days: int
    canceled_days: int
    keep_last: int

    @classmethod
    def from_settings(cls, **overrides: int | None) -> Policy:
        values = {
            "finished_days": settings.JOBS_RETENTION_FINISHED_DAYS,
            "failed_days": settings.JOBS_RETENTION_FAILED_DAYS,
            "canceled_days": settings.JOBS_RETENTION_CANCELED_DAYS,
            "keep_last": settings.JOBS_RETENTION_KEEP_LAST,
        }
        values.update({key: value for key, value in overrides.items() if value is not None})
        for key, value in values.items():
            if value < 0:
                raise ValueError(f"{key} must be 0 or more, got {value}")
        return cls(**values)

    def days(self, group: str) -> int:
        return int(getattr(self, f"{group}_days"))

    def cutoffs(self, now: datetime) -> dict[str, datetime]:
        """The moment before which each status's jobs are past their age (statuses kept for good left out)."""
        found = {}
        for group, statuses in AGE_GROUPS.items():
            days = self.days(group)
            if days > 0:
                found.update({status.value: now - timedelta(days=days) for status in statuses})
        return found

    def describe(self) -> str:
        """As the admin says it: "finished 30 days, failed 90 days, canceled 30 days"."""
        return ", ".join(
            f"{group} {days} days" if (days := self.days(group)) else f"{group} for good" for group in AGE_GROUPS
        )


@dataclass
class PruneResult:
    """What a prune did (or, dry, would do)."""

    dry_run: bool = False
    examined: int = 0
    deleted: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    by_type: Counter[str] = field(default_factory=Counter)
    kept_by_type: int = 0
    kept_by_schedule: int = 0
    skipped_locked: int = 0
    batches: int = 0
    attempts: int = 0
    audits: int = 0
    schedule_runs: int = 0
    files: int = 0
    file_errors: int = 0
    oldest: datetime | None = None
    newest: datetime | None = None
    seconds: float = 0.0
    stopped: bool = False

    @property
    def rate(self) -> float:
        return self.deleted / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "examined": self.examined,
            "deleted": self.deleted,
            "by_status": dict(self.by_status),
            "kept_by_type": self.kept_by_type,
            "kept_by_schedule": self.kept_by_schedule,
            "batches": self.batches,
            "attempts": self.attempts,
            "audits": self.audits,
            "schedule_runs": self.schedule_runs,
            "files": self.files,
            "seconds": round(self.seconds, 3),
        }


def _in(ids: list[Any]) -> Any:
    """The right side of `__in` for a batch of job ids: on PostgreSQL one array parameter, so that a
    batch's statements are not thousands of placeholders to build and parse."""
    if connection.vendor == "postgresql":
        return RawSQL("SELECT unnest(%s::uuid[])", [ids])
    return ids


def _past_age(cutoffs: dict[str, datetime]) -> tuple[Q, Q]:
    """(ended, never ended): the rows past their age, with an end time and without one."""
    by_cutoff: dict[datetime, list[str]] = {}
    for status, cutoff in cutoffs.items():
        by_cutoff.setdefault(cutoff, []).append(status)
    ended = reduce(or_, [Q(status__in=statuses, ended_at__lt=cutoff) for cutoff, statuses in by_cutoff.items()])
    unended = reduce(or_, [Q(status__in=statuses, created_at__lt=cutoff) for cutoff, statuses in by_cutoff.items()])
    return ended, unended


def _passes(cutoffs: dict[str, datetime]) -> list[tuple[QuerySet[Job], str]]:
    """The candidates, in two walks by index: ended jobs by end time (`job_ended_idx`, only the range
    before the latest cutoff), then the few final rows without an end time by creation."""
    if not cutoffs:
        return []
    ended, unended = _past_age(cutoffs)
    latest = max(cutoffs.values())
    return [
        (Job.objects.filter(ended_at__isnull=False, ended_at__lt=latest).filter(ended), "ended_at"),
        (Job.objects.filter(ended_at__isnull=True, created_at__lt=latest).filter(unended), "created_at"),
    ]


def count_candidates(policy: Policy | None = None, now: datetime | None = None) -> int:
    """How many jobs are past their age (before the keep-last rule): the progress bar's total."""
    policy = policy or Policy.from_settings()
    cutoffs = policy.cutoffs(now or timezone.now())
    return sum(queryset.count() for queryset, _ in _passes(cutoffs))


class _Keeper:
    """The keep-last rule: the newest `keep` ended jobs of each type and the jobs of the newest `keep`
    runs of each schedule. Each type's and schedule's threshold is read once, when first met."""

    def __init__(self, keep: int):
        self.keep = keep
        self.type_threshold: dict[str, tuple[datetime, Any] | None] = {}
        self.schedule_threshold: dict[int, int | None] = {}

    def _type_threshold(self, type_: str) -> tuple[datetime, Any] | None:
        """(created_at, id) of the type's `keep`-th newest ended job; None when it has no more than `keep`."""
        if type_ not in self.type_threshold:
            newest: list[tuple[datetime, Any]] = []
            for status in TERMINAL:  # one short index scan each (job_type_status_idx)
                newest += (
                    Job.objects.filter(type=type_, status=status)
                    .order_by("-created_at", "-id")
                    .values_list("created_at", "id")[: self.keep]
                )
            newest.sort(reverse=True)
            self.type_threshold[type_] = newest[self.keep - 1] if len(newest) >= self.keep else None
        return self.type_threshold[type_]

    def _schedule_threshold(self, schedule_id: int) -> int | None:
        """The id of the schedule's `keep`-th newest run; None when it has no more than `keep`."""
        if schedule_id not in self.schedule_threshold:
            ids = list(
                ScheduleRun.objects.filter(schedule_id=schedule_id)
                .order_by("-id")
                .values_list("id", flat=True)[self.keep - 1 : self.keep]
            )
            self.schedule_threshold[schedule_id] = ids[0] if ids else None
        return self.schedule_threshold[schedule_id]

    def split(self, rows: list[Row]) -> tuple[list[Row], int, int]:
        """(rows that may go, kept for their type, kept for their schedule)."""
        if self.keep <= 0:
            return rows, 0, 0
        by_type = set()
        for job_id, type_, _queue, _status, created_at in rows:
            threshold = self._type_threshold(type_)
            if threshold is None or (created_at, job_id) >= threshold:
                by_type.add(job_id)
        by_schedule = set()
        runs = ScheduleRun.objects.filter(job_id__in=_in([row[0] for row in rows if row[0] not in by_type]))
        for job_id, schedule_id, run_id in runs.values_list("job_id", "schedule_id", "id"):
            newest_from = self._schedule_threshold(schedule_id)
            if newest_from is None or run_id >= newest_from:
                by_schedule.add(job_id)
        return (
            [row for row in rows if row[0] not in by_type and row[0] not in by_schedule],
            len(by_type),
            len(by_schedule),
        )


def _delete_batch(rows: list[Row], cutoffs: dict[str, datetime], result: PruneResult) -> list[str]:
    """Delete the rows still past their age, with what belongs to them, in one transaction; returns
    the names of the files their results name (deleted after the commit)."""
    ended, unended = _past_age(cutoffs)
    with transaction.atomic():
        locked = list(
            Job.objects.select_for_update(skip_locked=True)
            .filter(pk__in=_in([row[0] for row in rows]))
            .filter(Q(ended_at__isnull=False) & ended | Q(ended_at__isnull=True) & unended)
            .values_list("id", "type", "queue", "status")
        )
        result.skipped_locked += len(rows) - len(locked)
        if not locked:
            return []
        ids = [row[0] for row in locked]
        files = [
            value["file"]
            for value in Job.objects.filter(pk__in=_in(ids), result__has_key="file").values_list("result", flat=True)
            if isinstance(value, dict) and isinstance(value.get("file"), str) and value["file"]
        ]
        result.attempts += JobAttempt.objects.filter(job_id__in=_in(ids)).delete()[0]
        result.audits += JobAudit.objects.filter(job_id__in=_in(ids)).delete()[0]
        result.schedule_runs += ScheduleRun.objects.filter(job_id__in=_in(ids)).delete()[0]
        # Not .delete(): its collector would read every column of every row first.
        deleted = Job.objects.filter(pk__in=_in(ids))._raw_delete(DEFAULT_DB_ALIAS)
        counts = Counter((queue, status) for _id, _type, queue, status in locked)
        now = timezone.now()
        JobCountDelta.objects.bulk_create(
            [JobCountDelta(queue=queue, status=status, delta=n, at=now) for (queue, status), n in counts.items()]
            + [
                JobCountDelta(queue=queue, status=f"{PRUNED_PREFIX}{status}", delta=n, at=now)
                for (queue, status), n in counts.items()
            ]
        )
    result.deleted += deleted
    result.by_status.update(status for _id, _type, _queue, status in locked)
    result.by_type.update(type_ for _id, type_, _queue, _status in locked)
    return files


def _delete_files(names: Iterable[str], result: PruneResult) -> None:
    from django.core.files.storage import default_storage  # the storage jobs.files writes to

    for name in names:
        try:
            default_storage.delete(name)
            result.files += 1
        except Exception as exc:  # a file left behind must not stop the prune
            result.file_errors += 1
            log.warning("retention: file %s of a pruned job not deleted: %s", name, exc)


def prune(
    *,
    policy: Policy | None = None,
    now: datetime | None = None,
    batch_size: int | None = None,
    dry_run: bool = False,
    progress: Callable[[PruneResult], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PruneResult:
    """Delete the jobs past their age, `batch_size` at a time, each batch its own short transaction.

    `progress` is called after every batch; `should_stop` before every batch (the scheduler stops
    when it stands down). Dry, nothing is deleted and the result says what would go.
    """
    policy = policy or Policy.from_settings()
    now = now or timezone.now()
    size = batch_size or settings.JOBS_RETENTION_BATCH
    cutoffs = policy.cutoffs(now)
    keeper = _Keeper(policy.keep_last)
    result = PruneResult(dry_run=dry_run)
    started = time.monotonic()
    for queryset, key in _passes(cutoffs):
        after: tuple[datetime, Any] | None = None
        while True:
            if should_stop is not None and should_stop():
                result.stopped = True
                break
            page = queryset.order_by(key, "id")
            if after is not None:
                page = page.filter(**{f"{key}__gte": after[0]}).filter(
                    Q(**{f"{key}__gt": after[0]}) | Q(**{key: after[0], "id__gt": after[1]})
                )
            found = list(page.values_list("id", "type", "queue", "status", "created_at", key)[:size])
            if not found:
                break
            after = (found[-1][5], found[-1][0])
            rows: list[Row] = [(r[0], r[1], r[2], r[3], r[4]) for r in found]
            result.examined += len(rows)
            doomed, kept_type, kept_schedule = keeper.split(rows)
            result.kept_by_type += kept_type
            result.kept_by_schedule += kept_schedule
            going = {row[0] for row in doomed}
            moments = [r[5] for r in found if r[0] in going]
            if moments:
                result.oldest = min(filter(None, [result.oldest, *moments]))
                result.newest = max(filter(None, [result.newest, *moments]))
            if doomed:
                result.batches += 1
                if dry_run:
                    result.deleted += len(doomed)
                    result.by_status.update(row[3] for row in doomed)
                    result.by_type.update(row[1] for row in doomed)
                else:
                    _delete_files(_delete_batch(doomed, cutoffs, result), result)
            result.seconds = time.monotonic() - started
            if progress is not None:
                progress(result)
            if len(found) < size:
                break
        if result.stopped:
            break
    result.seconds = time.monotonic() - started
    return result


# --- the daily prune of the active scheduler ------------------------------------------------------


def due_moment(now: datetime, hour: int) -> datetime:
    """The latest moment at `hour` o'clock (the project's time zone) not after `now`."""
    local = timezone.localtime(now)
    moment = local.replace(hour=hour, minute=0, second=0, microsecond=0)
    if moment > local:
        moment = (local - timedelta(days=1)).replace(hour=hour, minute=0, second=0, microsecond=0)
    return moment


def prune_if_due(
    conn: Any, *, now: datetime | None = None, should_stop: Callable[[], bool] | None = None
) -> PruneResult | None:
    """Prune if today's prune is due (`JOBS_RETENTION_HOUR` passed) and no scheduler has started it
    yet: claimed in Redis, so two schedulers (a stalled leader and its successor) prune once.
    A prune cut short (the scheduler stopped) is finished by the next day's."""
    hour = settings.JOBS_RETENTION_HOUR
    if hour < 0:
        return None
    now = now or timezone.now()
    due = due_moment(now, hour)
    if not conn.eval(_CLAIM, 1, LAST_RUN_KEY, due.timestamp(), now.timestamp()):
        return None
    policy = Policy.from_settings()
    log.info("retention: pruning the history (%s; keeping the last %s)", policy.describe(), policy.keep_last)
    result = prune(policy=policy, now=now, should_stop=should_stop)
    log.info(
        "retention: %s jobs pruned in %s batches, %.1f s (%.0f rows/s)%s",
        result.deleted,
        result.batches,
        result.seconds,
        result.rate,
        ", stopped early" if result.stopped else "",
    )
    return result


# --- how far back the history goes ----------------------------------------------------------------


def pruned_counts(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """{queue: {status: jobs pruned}} from `stats.status_counts()`."""
    found: dict[str, dict[str, int]] = {}
    for queue, by_status in counts.items():
        for status, count in by_status.items():
            if status.startswith(PRUNED_PREFIX) and count:
                found.setdefault(queue, {})[status.removeprefix(PRUNED_PREFIX)] = count
    return found


def present_counts(counts: dict[str, dict[str, int]]) -> dict[str, dict[str, int]]:
    """{queue: {status: rows in the history now}}: the counters less the pruned jobs they still count."""
    pruned = pruned_counts(counts)
    found: dict[str, dict[str, int]] = {}
    for queue, by_status in counts.items():
        for status, count in by_status.items():
            if status in JobStatus.values:
                found.setdefault(queue, {})[status] = count - pruned.get(queue, {}).get(status, 0)
    return found


def history_info(counts: dict[str, dict[str, int]] | None = None) -> dict[str, Any]:
    """How far back the history goes: the ages kept, the oldest job (one index read), and how many
    pruned jobs the statistics still count."""
    policy = Policy.from_settings()
    counts = stats.status_counts() if counts is None else counts
    oldest = Job.objects.order_by("created_at", "id").values_list("created_at", flat=True).first()
    return {
        "since": oldest,
        "finished_days": policy.finished_days,
        "failed_days": policy.failed_days,
        "canceled_days": policy.canceled_days,
        "keep_last": policy.keep_last,
        "pruned": sum(n for by_status in pruned_counts(counts).values() for n in by_status.values()),
        "kept": policy.describe(),
    }
