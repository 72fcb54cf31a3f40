"""Schedules: saving them, running the due ones exactly once, running one now.

The active scheduler process calls `run_due` every tick. Two may act at once (a leader that
stalled past its lock while a standby took over): each run locks its schedule's row and claims
its due time in `ScheduleRun` (unique per schedule and due time) in the same transaction as its
job, so a due time makes one job whoever acts. The job is created through `jobs.services` like
any other (history row, retries, dispatched when the transaction commits) with an audit entry
naming its schedule. Timing rules (cron in a time zone, intervals, daylight saving) are
`jobs.timing`'s.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from jobs import logs, queues, registry, services, timing
from jobs.errors import InvalidJobRequest
from jobs.models import Job, JobAudit, Schedule, ScheduleRun

log = logging.getLogger(__name__)

#: Schedules run per tick at most (the rest are due on the next one).
BATCH = 1000
#: A timing error's field, as the schedule's form and API name it.
TIMING_FIELDS = {"cron": "cron", "every": "every", "timezone": "timezone", "end": "end_at"}
#: The fields a schedule's next run time depends on: a change of one of them sets it anew.
TIMING = ("cron", "every", "timezone", "start_at", "end_at", "enabled")

User = AbstractBaseUser | AnonymousUser | None


def timing_of(schedule: Schedule) -> timing.Timing:
    return timing.Timing(
        cron=schedule.cron.strip(),
        every=schedule.every,
        timezone=schedule.timezone or settings.TIME_ZONE,
        start=schedule.start_at,
        end=schedule.end_at,
        anchor=schedule.created_at,
    )


def validate(schedule: Schedule) -> dict[str, list[str]]:
    """Every field error of a schedule (its timing, job type, params and queue); empty when valid.
    Sets its params to the type's validated form."""
    errors: dict[str, list[str]] = {}
    try:
        timing_of(schedule)
    except timing.InvalidTiming as exc:
        errors[TIMING_FIELDS.get(exc.field, "cron")] = [str(exc)]
    spec = registry.find(schedule.type)
    if spec is None:
        errors["type"] = [f"unknown job type {schedule.type!r}; types are {', '.join(sorted(registry.names()))}"]
    else:
        try:
            schedule.params = spec.validate(schedule.params)
        except InvalidJobRequest as exc:
            for key, messages in exc.errors.items():  # "params.duration": on the params, naming the field
                name = key.removeprefix("params.")
                errors.setdefault("params", []).extend(
                    messages if name in ("params", "non_field_errors") else [f"{name}: {m}" for m in messages]
                )
    if schedule.queue and schedule.queue not in queues.QUEUE_NAMES:
        errors["queue"] = [f"unknown queue {schedule.queue!r}; queues are {', '.join(queues.QUEUE_NAMES)}"]
    if schedule.missed not in Schedule.Missed.values:
        policies = " or ".join(Schedule.Missed.values)
        errors["missed"] = [f"{schedule.missed!r} is not a policy for missed runs; use {policies}"]
    return errors


def _set_next_due(schedule: Schedule, now: datetime) -> None:
    schedule.next_due_at = timing_of(schedule).next_after(now) if schedule.enabled else None


def _timing_changed(schedule: Schedule) -> bool:
    """Whether a schedule is new, or its stored timing (or enabled flag) differs from its own."""
    if schedule.pk is None:
        return True
    stored = Schedule.objects.filter(pk=schedule.pk).values(*TIMING).first()
    return stored is None or any(stored[name] != getattr(schedule, name) for name in TIMING)


def schedule_save(*, schedule: Schedule) -> Schedule:
    """Create or change a schedule; its next run time follows at once (the scheduler reads it every tick).

    A change of its timing (expression, interval, zone, start, end) or of its enabled flag sets its
    next run time anew, after now; any other change (its params, its queue, its name...) keeps it,
    so that a run that is due, or was missed while no scheduler ran, is still made by its policy.
    """
    if not schedule.timezone:
        schedule.timezone = settings.TIME_ZONE
    errors = validate(schedule)
    if errors:
        raise InvalidJobRequest(errors)
    if _timing_changed(schedule):
        _set_next_due(schedule, timezone.now())
    schedule.save()
    return schedule


def schedules_enable(*, schedules: list[Schedule], enabled: bool) -> int:
    now = timezone.now()
    changed = 0
    for schedule in schedules:
        if schedule.enabled != enabled:
            schedule.enabled = enabled
            _set_next_due(schedule, now)
            schedule.save(update_fields=["enabled", "next_due_at", "updated_at"])
            changed += 1
    return changed


def _create_job(schedule: Schedule, user: User, via: str, note: str) -> Job:
    """The schedule's job, in the caller's transaction (dispatched when it commits)."""
    job = services.job_enqueue(type=schedule.type, params=schedule.params, queue=schedule.queue or None, user=user)
    services.audit_created([job], user, via, [note])
    return job


def _log_run(schedule: Schedule, due: datetime | str, job: Job) -> None:
    """The line linking a schedule's run to its job (whose own lines follow it across processes)."""
    when = local_time(schedule, due) if isinstance(due, datetime) else due
    log.info("schedule %r, %s: job %s", schedule.name, when, job.id, extra=logs.job_extra(job.id, job.type))


def local_time(schedule: Schedule, moment: datetime | None, seconds: bool = True) -> str:
    """A moment as the schedule's own zone shows it ("—" for none)."""
    if moment is None:
        return "—"
    try:
        shown = moment.astimezone(timing.zone(schedule.timezone))
    except timing.InvalidTiming:
        shown = moment
    return f"{shown:%Y-%m-%d %H:%M{':%S' if seconds else ''} %Z}"


def next_due(after: datetime) -> datetime | None:
    """The earliest next run time of the enabled schedules later than `after` (one indexed query)."""
    return (
        Schedule.objects.filter(enabled=True, next_due_at__gt=after)
        .order_by("next_due_at")
        .values_list("next_due_at", flat=True)
        .first()
    )


def run_due(now: datetime | None = None) -> int:
    """Create the jobs of the schedules due at `now` (at most `BATCH`); returns how many were created.

    A batch is one transaction: its schedules' rows locked (those another scheduler holds are
    skipped), their jobs inserted at once and dispatched in one Redis round trip when it commits.
    Should a due time be claimed already (two schedulers on a database without row locks) or a
    job not be creatable (its type gone), the batch is made again one schedule at a time.
    """
    now = now or timezone.now()
    due = list(
        Schedule.objects.filter(enabled=True, next_due_at__lte=now)
        .order_by("next_due_at")
        .values_list("pk", flat=True)[:BATCH]
    )
    if not due:
        return 0
    try:
        return _run_batch(due, now)
    except (IntegrityError, InvalidJobRequest) as exc:
        log.info("schedules: a batch of %s made one by one (%s)", len(due), exc)
        return sum(_run(pk, now) for pk in due)


def _run_batch(pks: list[Any], now: datetime) -> int:
    with transaction.atomic():
        due = list(
            Schedule.objects.select_for_update(skip_locked=True).filter(pk__in=pks, enabled=True, next_due_at__lte=now)
        )
        plans = [
            (schedule, timing.plan(timing_of(schedule), schedule.next_due_at, now, schedule.missed))
            for schedule in due
            if schedule.next_due_at is not None  # filtered on it: for the type checker
        ]
        to_run = [(schedule, plan, plan.run_for) for schedule, plan in plans if plan.run_for is not None]
        jobs = services.jobs_enqueue(
            requests=[
                services.JobRequest(type=schedule.type, params=schedule.params, queue=schedule.queue or None)
                for schedule, _, _ in to_run
            ]
        )
        with transaction.atomic():  # the claims: unique per schedule and due time
            ScheduleRun.objects.bulk_create(
                [
                    ScheduleRun(schedule=schedule, due_at=run_for, missed=plan.missed, job=job)
                    for (schedule, plan, run_for), job in zip(to_run, jobs, strict=True)
                ]
            )
        services.audit_created(
            jobs, None, JobAudit.Via.SCHEDULE, [_note(schedule, plan) for schedule, plan, _ in to_run]
        )
        for schedule, plan in plans:
            schedule.last_due_at = plan.run_for or schedule.last_due_at
            schedule.next_due_at = plan.next_due
            if plan.missed and plan.run_for is None:
                log.info("schedule %s: runs missed until %s skipped", schedule, local_time(schedule, now))
        Schedule.objects.bulk_update(due, ["last_due_at", "next_due_at"])
    for (schedule, _, run_for), job in zip(to_run, jobs, strict=True):
        _log_run(schedule, run_for, job)
    return len(jobs)


def _note(schedule: Schedule, plan: timing.Plan) -> str:
    assert plan.run_for is not None
    how = "missed, run once" if plan.missed else "due"
    return f"schedule {schedule.name!r}, {how} {local_time(schedule, plan.run_for)}"[:300]


def _run(pk: Any, now: datetime) -> int:
    try:
        with transaction.atomic():
            schedule = Schedule.objects.select_for_update().filter(pk=pk, enabled=True).first()
            if schedule is None or schedule.next_due_at is None or schedule.next_due_at > now:
                return 0  # disabled, deleted or run by another scheduler meanwhile
            plan = timing.plan(timing_of(schedule), schedule.next_due_at, now, schedule.missed)
            made = 0
            if plan.run_for is not None:
                try:
                    with transaction.atomic():
                        run = ScheduleRun.objects.create(schedule=schedule, due_at=plan.run_for, missed=plan.missed)
                except IntegrityError:
                    log.info("schedule %s: the run due %s was made by another scheduler", schedule, plan.run_for)
                else:
                    run.job = _create_job(schedule, None, JobAudit.Via.SCHEDULE, _note(schedule, plan))
                    run.save(update_fields=["job"])
                    made = 1
                    _log_run(schedule, plan.run_for, run.job)
            elif plan.missed:
                log.info("schedule %s: runs missed until %s skipped", schedule, local_time(schedule, now))
            schedule.last_due_at = plan.run_for or schedule.last_due_at
            schedule.next_due_at = plan.next_due
            schedule.save(update_fields=["last_due_at", "next_due_at"])
            return made
    except InvalidJobRequest as exc:
        # The type was unregistered or its params no longer validate: this due time is skipped,
        # said in the log, and the next one comes (an edit in the admin mends it).
        log.error("schedule %s: its job could not be created: %s", pk, exc)
        schedule = Schedule.objects.get(pk=pk)
        schedule.next_due_at = timing_of(schedule).next_after(now)
        schedule.save(update_fields=["next_due_at"])
        return 0


def schedule_run_now(*, schedule: Schedule, user: User = None, via: str = services.VIA_CODE) -> Job:
    """Create the schedule's job now, whatever its timing (the admin's and the API's "run now")."""
    now = timezone.now()
    with transaction.atomic():
        run = ScheduleRun.objects.create(schedule=schedule, due_at=now, by_hand=True)
        run.job = _create_job(schedule, user, via, f"schedule {schedule.name!r}, run now")
        run.save(update_fields=["job"])
    _log_run(schedule, f"run now by {logs.username(user)}", run.job)
    return run.job


def sync_declared(declared: list[dict[str, Any]] | None = None) -> list[Schedule]:
    """Make the schedules declared in code (`JOBS_SCHEDULES`, and `schedules=` of `registry.job_type`)
    exist as declared; remove the declared
    ones no longer there. Whether one is enabled stays as the admin set it, and so does its next run
    time while its timing is the same (a run due, or missed while no scheduler ran, is still made).

    Each is applied on its own: a bad one (an unknown type, a start that is not a date...) is left as
    it was while the others are applied, then all the bad ones are refused together, as
    `InvalidJobRequest` errors keyed "JOBS_SCHEDULES '<name>'.<field>".
    """
    if declared is None:
        declared = [*settings.JOBS_SCHEDULES, *registry.declared_schedules()]
    kept: list[Schedule] = []
    errors: dict[str, list[str]] = {}
    for entry in declared:
        try:
            with transaction.atomic():
                kept.append(_sync_one(entry))
        except InvalidJobRequest as exc:
            errors.update({f"JOBS_SCHEDULES {entry['name']!r}.{k}": v for k, v in exc.errors.items()})
    Schedule.objects.filter(declared=True).exclude(name__in=[entry["name"] for entry in declared]).delete()
    if errors:
        raise InvalidJobRequest(errors)
    return kept


def _sync_one(entry: dict[str, Any]) -> Schedule:
    schedule = Schedule.objects.select_for_update().filter(name=entry["name"]).first() or Schedule(name=entry["name"])
    schedule.declared = True
    schedule.type = entry["type"]
    schedule.params = dict(entry.get("params") or {})
    schedule.queue = entry.get("queue") or ""
    schedule.cron = entry.get("cron") or ""
    schedule.every = entry.get("every")
    schedule.timezone = entry.get("timezone") or settings.TIME_ZONE
    schedule.missed = entry.get("missed") or Schedule.Missed.ONCE
    errors: dict[str, list[str]] = {}
    if schedule.every is not None and (isinstance(schedule.every, bool) or not isinstance(schedule.every, int)):
        errors["every"] = [f"{schedule.every!r} is not a number of seconds"]
    for field in ("start_at", "end_at"):
        try:
            setattr(schedule, field, _declared_moment(entry.get(field), schedule.timezone))
        except ValueError as exc:
            errors[field] = [str(exc)]
    if errors:
        raise InvalidJobRequest(errors)
    return schedule_save(schedule=schedule)


def _declared_moment(value: Any, zone_name: str) -> datetime | None:
    """A declared schedule's start or end: ISO 8601 text (or a datetime); without an offset, a wall
    time of the schedule's zone. ValueError, with a message, for anything else."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"{value!r} is not a date and time in ISO 8601, such as 2027-01-01T09:00:00+01:00 "
                "(without an offset: in the schedule's time zone)"
            ) from None
    elif isinstance(value, datetime):
        moment = value
    else:
        raise ValueError(f"{value!r} is not a date and time: give ISO 8601 text, such as 2027-01-01T09:00:00+01:00")
    if moment.tzinfo is None:
        try:
            moment = moment.replace(tzinfo=timing.zone(zone_name))
        except timing.InvalidTiming:
            moment = moment.replace(tzinfo=timing.zone(settings.TIME_ZONE))  # the zone's own error says why
    return moment
