"""Every write to jobs: the only module that calls RQ.

Views, the API, the admin and your own code call these functions; each checks
the job's status and raises a `jobs.errors` exception when the action does not
apply, and `QueueUnavailable` when Redis cannot be reached (nothing is then
written).

The history row is the outbox. Outside a transaction, `job_enqueue` writes the
row and pushes the job to Redis inside one database transaction: if Redis fails
the row is rolled back, and the caller gets `QueueUnavailable` (a transaction
Redis applied but whose answer was lost is taken back first; one a worker has
already started on stands, row and all). Inside a
caller's transaction, the row is written as `pending` and dispatched when the
transaction commits (the job must not run if the caller rolls back); if Redis
is down at that moment the row stays pending and the reconciler dispatches it.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import Count, Q, QuerySet
from django.utils import timezone
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from rq.registry import ScheduledJobRegistry

from jobs import events, logs, queues, registry, rqstore, sql
from jobs.errors import ActionNotAllowed, InvalidJobRequest
from jobs.models import Job, JobAudit
from jobs.statuses import (
    ACTION_DONE,
    ALLOWED_BY_ACTION,
    CANCELABLE,
    PROMOTABLE,
    REMOVABLE,
    RETRYABLE,
    STOPPABLE,
    JobStatus,
)

log = logging.getLogger(__name__)

#: At most this many jobs in one `jobs_enqueue` call.
MAX_BULK = 10_000
#: A job may be delayed at most this far ahead.
MAX_DELAY = timedelta(days=365)

RUN_FUNC = rqstore.RUN_FUNC

#: Who acts: a user (or None for the system and your own code).
User = AbstractBaseUser | AnonymousUser | None
#: Where an action comes from, recorded in the audit trail (`JobAudit.Via`).
VIA_CODE = JobAudit.Via.CODE
#: The reason a bulk action gives for a job whose type is no longer registered.
UNREGISTERED = "unregistered type"
#: The columns an action reads of a job.
ACTION_FIELDS = ("id", "type", "queue", "status", "attempts", "max_attempts", "timeout", "params", "scheduled_for")


@dataclass
class JobRequest:
    """What a caller asks for; validated by `job_enqueue` / `jobs_enqueue`."""

    type: str = "example"
    params: dict[str, Any] | None = None
    queue: str | None = None
    delay_seconds: float | None = None
    run_at: datetime | None = None
    extra: dict[str, Any] = field(default_factory=dict)


#: A row's fields that live pages show.
LIVE_FIELDS = (
    "type",
    "queue",
    "status",
    "progress",
    "progress_message",
    "attempts",
    "max_attempts",
    "created_at",
    "enqueued_at",
    "scheduled_for",
    "started_at",
    "ended_at",
)


def _announce(kind: str, rows: Sequence[Job]) -> None:
    """Tell live pages; after the change committed. A Redis error here loses only a live update."""
    if not rows:
        return
    try:
        many = len(rows) > events.NOTICE_ROWS
        events.announce(queues.redis(), kind, len(rows) if many else [live_row(row) for row in rows])
    except rqstore.REDIS_ERRORS as exc:
        log.warning("live pages were not told of %s %s jobs: %s", len(rows), kind, exc)


def live_row(row: Job) -> dict[str, Any]:
    """What a live page needs to draw a row (`jobs.live` turns it back into an unsaved Job)."""
    data: dict[str, Any] = {"id": str(row.pk)}
    for name in LIVE_FIELDS:
        value = getattr(row, name)
        data[name] = value.isoformat() if isinstance(value, datetime) else value
    return data


def _log_created(rows: Sequence[Job], user: User, *, on_commit: bool = False) -> None:
    """One line per job created (its id and type in the line's fields, `jobs.logs`)."""
    if not log.isEnabledFor(logging.INFO):
        return
    by = logs.username(user)
    then = ", sent to its queue when the transaction commits" if on_commit else ""
    for row in rows:
        due = f", due {row.scheduled_for.isoformat()}" if row.scheduled_for else ""
        log.info(
            "job %s created: %s on %s%s by %s%s",
            row.id,
            row.type,
            row.queue,
            due,
            by,
            then,
            extra=logs.job_extra(row.id, row.type),
        )


def _log_action(action: str, rows: Sequence[Job], user: User, via: str) -> None:
    """One line per job an action was taken on (after it was)."""
    if not log.isEnabledFor(logging.INFO):
        return
    by = logs.username(user)
    for row in rows:
        log.info("job %s %s by %s (%s)", row.id, ACTION_DONE[action], by, via, extra=logs.job_extra(row.id, row.type))


def _validate(request: JobRequest, now: datetime) -> tuple[registry.JobType, dict[str, Any], str, datetime | None]:
    errors: dict[str, list[str]] = {}
    spec = None
    params: dict[str, Any] = {}
    try:
        spec = registry.get(request.type)
        params = spec.validate(request.params)
    except InvalidJobRequest as exc:
        errors.update(exc.errors)
    queue = request.queue or (spec.queue if spec else queues.DEFAULT)
    if queue not in queues.QUEUE_NAMES:
        errors["queue"] = [f"unknown queue {queue!r}; queues are {', '.join(queues.QUEUE_NAMES)}"]
    run_at = None
    if request.delay_seconds is not None and request.run_at is not None:
        errors["delay_seconds"] = ["give delay_seconds or run_at, not both"]
    elif request.delay_seconds is not None:
        if not 0 <= request.delay_seconds <= MAX_DELAY.total_seconds():
            errors["delay_seconds"] = [f"must be between 0 and {int(MAX_DELAY.total_seconds())}"]
        elif request.delay_seconds > 0:
            run_at = now + timedelta(seconds=request.delay_seconds)
    elif request.run_at is not None:
        if timezone.is_naive(request.run_at):
            errors["run_at"] = ["must include a time zone"]
        elif request.run_at > now + MAX_DELAY:
            errors["run_at"] = ["must be within a year"]
        elif request.run_at > now:
            run_at = request.run_at
    if errors:
        raise InvalidJobRequest(errors)
    assert spec is not None
    return spec, params, queue, run_at


def job_enqueue(
    *,
    type: str = "example",
    params: dict[str, Any] | None = None,
    queue: str | None = None,
    delay_seconds: float | None = None,
    run_at: datetime | None = None,
    user: AbstractBaseUser | AnonymousUser | None = None,
) -> Job:
    """Create a job of a registered type and put it on its way."""
    request = JobRequest(type=type, params=params, queue=queue, delay_seconds=delay_seconds, run_at=run_at)
    return jobs_enqueue(requests=[request], user=user)[0]


def jobs_enqueue(*, requests: Sequence[JobRequest], user: AbstractBaseUser | AnonymousUser | None = None) -> list[Job]:
    """Create many jobs, all or nothing: one insert and one Redis round trip."""
    if not requests:
        return []
    if len(requests) > MAX_BULK:
        raise InvalidJobRequest({"non_field_errors": [f"at most {MAX_BULK} jobs in one request"]})
    now = timezone.now()
    rows: list[Job] = []
    errors: dict[str, list[str]] = {}
    for index, request in enumerate(requests):
        try:
            spec, params, queue_name, run_at = _validate(request, now)
        except InvalidJobRequest as exc:
            prefix = f"{index}." if len(requests) > 1 else ""
            errors.update({f"{prefix}{key}": value for key, value in exc.errors.items()})
            continue
        rows.append(
            Job(
                type=spec.name,
                queue=queue_name,
                params=params,
                max_attempts=spec.retry.max_attempts,
                timeout=spec.timeout,
                scheduled_for=run_at,
                created_by_id=user.pk if user is not None and user.is_authenticated else None,
            )
        )
    if errors:
        raise InvalidJobRequest(errors)

    if transaction.get_connection().in_atomic_block:
        # The caller's transaction may still roll back: dispatch on commit.
        for row in rows:
            row.status = JobStatus.PENDING
        sql.insert_rows(Job, rows)
        ids = [row.id for row in rows]
        transaction.on_commit(lambda: jobs_dispatch_pending(job_ids=ids))
        _log_created(rows, user, on_commit=True)
        return rows

    for row in rows:
        row.status = JobStatus.SCHEDULED if row.scheduled_for else JobStatus.QUEUED
        row.enqueued_at = None if row.scheduled_for else now
    sent = False
    try:
        with rqstore.unavailable_on_error(), transaction.atomic(), queues.redis().pipeline() as pipe:
            pipe.multi()
            with sql.inserting(Job, rows):
                landing = rqstore.stage(rows, pipe)  # built while the database takes the rows; nothing sent yet
            # The rows are in but not committed: if Redis fails, they roll back. A worker
            # may see a job before the commit; the mirror waits for its row.
            try:
                rqstore.send(pipe, landing)
            except rqstore.REDIS_ERRORS as exc:
                if not _kept_after_lost_answer(rows, exc):
                    raise
            sent = True
    except DatabaseError as exc:
        if sent:
            # Redis took the jobs but the database refused the rows at commit (a deferred
            # check, a lost connection): take the jobs back so none runs without a row.
            _take_back(rows)
        if isinstance(exc, IntegrityError):
            raise InvalidJobRequest({"non_field_errors": [f"the database refused the jobs: {exc}"]}) from exc
        raise
    _log_created(rows, user)
    _announce(events.CREATED, rows)
    return rows


def _kept_after_lost_answer(rows: Sequence[Job], exc: BaseException) -> bool:
    """After Redis failed on the transaction that creates the rows' jobs: True when Redis had applied
    it and a worker has already taken one of the jobs, so the creation stands, rows and all.

    Redis may have applied a transaction whose answer was lost (the connection dropped, the socket
    timed out). Its jobs are then taken back, all or none (`rqstore.take_back`), so that the caller's
    refusal (503) is the truth: no row, and no job left for a worker. A job a worker popped before
    the take-back runs (the take-back cannot stop it), so then every job stays and so do the rows:
    the caller is told the jobs were created, and the run is recorded. When the take-back cannot
    reach Redis either, the caller is refused while the jobs may still be in Redis: they then run
    without rows (docs/faults.md).
    """
    if not rqstore.maybe_applied(exc):
        return False
    why = f"the answer to the transaction creating {len(rows)} jobs was lost ({type(exc).__name__}: {exc})"
    return rqstore.take_back(rows, all_or_none=True, why=why, after=exc) is rqstore.TakeBack.RUNNING


def _take_back(rows: Sequence[Job]) -> None:
    """Remove jobs that reached Redis for rows that never committed (logged). A job a worker has
    already popped runs without its row: the database refused the row, there is nothing to keep."""
    rqstore.take_back(rows, all_or_none=False, why="the database refused the rows of jobs sent to Redis")


def jobs_dispatch_pending(*, job_ids: Iterable[Any] | None = None, older_than: timedelta | None = None) -> int:
    """Push pending rows to Redis (the outbox relay). Returns how many were dispatched.

    Safe to run concurrently: a row is claimed by moving it out of `pending`
    before its job is pushed, and put back if Redis fails.
    """
    pending = Job.objects.filter(status=JobStatus.PENDING)
    if job_ids is not None:
        pending = pending.filter(id__in=list(job_ids))
    if older_than is not None:
        pending = pending.filter(created_at__lt=timezone.now() - older_than)
    now = timezone.now()
    dispatched: list[Job] = []
    # Claimed row by row (an UPDATE only from `pending`: of two relays, one claims each row), in one
    # transaction, then pushed in one round trip.
    with transaction.atomic():
        for row in pending.order_by("created_at")[:1000]:
            new_status = JobStatus.SCHEDULED if row.scheduled_for and row.scheduled_for > now else JobStatus.QUEUED
            enqueued_at = None if new_status == JobStatus.SCHEDULED else now
            if Job.objects.filter(id=row.id, status=JobStatus.PENDING).update(
                status=new_status, enqueued_at=enqueued_at
            ):
                row.status, row.enqueued_at = new_status, enqueued_at
                dispatched.append(row)
    if not dispatched:
        return 0
    try:
        rqstore.push(dispatched)
    except rqstore.REDIS_ERRORS as exc:
        if not _kept_after_lost_answer(dispatched, exc):  # else Redis has them after all: they stay sent
            Job.objects.filter(
                id__in=[row.id for row in dispatched], status__in=[JobStatus.QUEUED, JobStatus.SCHEDULED]
            ).update(status=JobStatus.PENDING, enqueued_at=None)
            log.warning("%s jobs stay pending: Redis unavailable (%s)", len(dispatched), exc)
            return 0
    if log.isEnabledFor(logging.INFO):
        for row in dispatched:
            log.info("job %s sent to %s (%s)", row.id, row.queue, row.status, extra=logs.job_extra(row.id, row.type))
    _announce(events.CREATED, dispatched)
    return len(dispatched)


def _require(row: Job, action: str, allowed: frozenset[str]) -> None:
    if row.status not in allowed:
        raise ActionNotAllowed(action, row.status, allowed)


def _locked(job: Job) -> Job:
    """The row, re-read under a lock so two actions on one job do not interleave."""
    return Job.objects.select_for_update().get(pk=job.pk)


def audit_created(rows: Sequence[Job], user: User, via: str, notes: Sequence[str]) -> None:
    """Record who created the rows, and how (a schedule's run)."""
    _audit(rows, "create", user, via, notes)


def _audit(rows: Sequence[Job], action: str, user: User, via: str, notes: Sequence[str] = ()) -> None:
    """Record who did `action` to the rows (call it before changing their status); `notes`, one a row,
    say more (which schedule created a job)."""
    actor = user if user is not None and user.is_authenticated else None
    username = actor.get_username() if actor is not None else ""
    now = timezone.now()
    sql.insert_rows(
        JobAudit,
        [
            JobAudit(
                job_id=row.id,
                job_type=row.type,
                action=action,
                status_before=row.status,
                user_id=actor.pk if actor is not None else None,
                username=username,
                via=via,
                note=note[:300],
                at=now,
            )
            for row, note in zip(rows, notes or [""] * len(rows), strict=True)
        ],
    )


#: What a retry changes in a row.
RETRY_FIELDS = [
    "status",
    "max_attempts",
    "enqueued_at",
    "scheduled_for",
    "started_at",
    "ended_at",
    "progress",
    "progress_message",
    "mirror_seq",
    "updated_at",
]


def jobs_retry(*, job_ids: Sequence[Any], user: User = None, via: str = VIA_CODE) -> tuple[list[Job], Counter[str]]:
    """Run the given jobs again, from their rows, in one transaction and one Redis round trip.

    Jobs whose status does not allow a retry (or whose type is no longer
    registered) are left alone and counted by status (or "unregistered type").
    Each retry gets a fresh round of the type's retry policy; earlier attempts
    stay in the timeline. Works even after Redis forgot the jobs.
    """
    skipped: Counter[str] = Counter()
    now = timezone.now()
    with rqstore.unavailable_on_error(), transaction.atomic():
        rows = list(Job.objects.select_for_update().filter(pk__in=list(job_ids)).order_by("pk"))
        retried: list[Job] = []
        for row in rows:
            if row.status not in RETRYABLE:
                skipped[row.status] += 1
            elif row.type not in registry.names():
                skipped[UNREGISTERED] += 1
            else:
                retried.append(row)
        if not retried:
            return [], skipped
        _audit(retried, "retry", user, via)
        for row in retried:
            row.status = JobStatus.QUEUED
            row.max_attempts = row.attempts + registry.get(row.type).retry.max_attempts
            row.enqueued_at = now
            row.scheduled_for = None
            row.started_at = None  # the last attempt's start is in its timeline; the next one sets its own
            row.ended_at = None
            row.progress = 0
            row.progress_message = ""
            row.mirror_seq = events.seq_after(row.attempts)
            row.updated_at = now
        sql.update_rows(Job, retried, RETRY_FIELDS)
        with queues.redis().pipeline() as pipe:
            pipe.multi()
            rqstore.forget(retried, pipe)
            try:
                rqstore.send(pipe, rqstore.stage(retried, pipe))
            except rqstore.REDIS_ERRORS as exc:
                # As for a creation: a retry whose answer was lost is taken back (the rows stay as
                # they were, failed), unless a worker already runs one of its jobs.
                if not _kept_after_lost_answer(retried, exc):
                    raise
    _log_action("retry", retried, user, via)
    _announce(events.CHANGED, retried)
    return retried, skipped


def job_retry(*, job: Job, user: User = None, via: str = VIA_CODE) -> Job:
    """Run a failed (or stopped, canceled, abandoned, lost) job again, from its row."""
    registry.get(job.type)  # an unknown type is a bad request, not a state conflict
    retried, skipped = jobs_retry(job_ids=[job.pk], user=user, via=via)
    if not retried:
        if not skipped:
            raise Job.DoesNotExist(f"no job {job.pk}")
        raise ActionNotAllowed("retry", next(iter(skipped)), RETRYABLE)
    return retried[0]


def job_cancel(*, job: Job, user: User = None, via: str = VIA_CODE) -> Job:
    """Take a waiting job off its queue (or the schedule) for good: it will never run.

    Atomic against the workers: a job a worker has already popped is not canceled
    (ActionNotAllowed: it runs, and the history says so).
    """
    with rqstore.unavailable_on_error(), transaction.atomic():
        row = _locked(job)
        _require(row, "cancel", CANCELABLE)
        taken_off = row.status == JobStatus.PENDING or rqstore.take_off(row.queue, row.rq_id)
        # Not on its queue nor the schedule: a worker took it meanwhile (the mirror will say so),
        # unless Redis has forgotten the job altogether (then nothing can run it), or has it canceled
        # already (an earlier cancel whose answer was lost: this one records it).
        if not taken_off and rqstore.status(row.rq_id) not in (None, RQStatus.CANCELED.value):
            raise ActionNotAllowed("cancel", "already taken by a worker", CANCELABLE)
        _audit([row], "cancel", user, via)
        _mark_canceled(row)
    _log_action("cancel", [row], user, via)
    _announce(events.CHANGED, [row])
    return row


#: The audit note of a cancel the reconciler records (`job_cancel_settled`).
CANCEL_SETTLED_NOTE = (
    "recorded by the reconciler: Redis had the job canceled (a cancel whose answer was lost, "
    "or one made through RQ itself)"
)


def job_cancel_settled(*, job: Job) -> Job | None:
    """Record a cancel Redis has and the row does not: the job canceled in Redis, on no queue, its
    row still waiting. Redis applied a cancel and went away before it answered (the caller was told
    503, the row rolled back), or the process that asked died before its commit, or the job was
    canceled through RQ itself (its dashboard, its command line). Left so, the row waited for ever
    for a job nothing would run. Called by the reconciler; None when the row or Redis changed
    meanwhile (the next round looks again)."""
    with transaction.atomic():
        row = _locked(job)
        if row.status != job.status or row.mirror_seq != job.mirror_seq or row.status not in CANCELABLE:
            return None
        if rqstore.status(row.rq_id) != RQStatus.CANCELED.value:
            return None
        _audit([row], "cancel", None, VIA_CODE, notes=[CANCEL_SETTLED_NOTE])
        _mark_canceled(row)
    _log_action("cancel", [row], None, VIA_CODE)
    _announce(events.CHANGED, [row])
    return row


def _mark_canceled(row: Job) -> None:
    row.status = JobStatus.CANCELED
    row.ended_at = timezone.now()
    row.scheduled_for = None
    # Past any event of the attempt that will now never run (a "queued" from a promotion
    # still on the stream must not undo the cancel).
    row.mirror_seq = max(row.mirror_seq, events.seq_after(row.attempts + 1))
    row.save(update_fields=["status", "ended_at", "scheduled_for", "mirror_seq", "updated_at"])


def job_stop(*, job: Job, user: User = None, via: str = VIA_CODE) -> Job:
    """Ask the worker running the job to stop it now.

    The worker kills the job and records it as stopped; the row follows through
    the mirror within moments.
    """
    _require(job, "stop", STOPPABLE)
    with rqstore.unavailable_on_error():
        try:
            send_stop_job_command(queues.redis(), job.rq_id, serializer=queues.SERIALIZER)
        except (InvalidJobOperation, NoSuchJobError) as exc:
            # Redis has it waiting, or has forgotten it: no worker runs it (the mirror or the reconciler will tell).
            raise ActionNotAllowed("stop", "not running on any worker", STOPPABLE) from exc
    _audit([job], "stop", user, via)
    _log_action("stop", [job], user, via)
    return job


def job_promote(*, job: Job, user: User = None, via: str = VIA_CODE) -> Job:
    """Run a delayed job (or one waiting for its next retry) now.

    Atomic against the scheduler: a job it has promoted meanwhile is pushed once.
    """
    with rqstore.unavailable_on_error(), transaction.atomic():
        row = _locked(job)
        _require(row, "promote", PROMOTABLE)
        moved = rqstore.promote_now(row.queue, [row.rq_id])
        if not moved or not moved[0]:
            if rqstore.status(row.rq_id) is not None:
                raise ActionNotAllowed("promote", "already on its queue", PROMOTABLE)
            rqstore.push([_due_now(row)])  # Redis forgot it: enqueue it again from the row
        _audit([row], "promote", user, via)
        row.status = JobStatus.QUEUED
        row.scheduled_for = None
        row.enqueued_at = timezone.now()
        row.save(update_fields=["status", "scheduled_for", "enqueued_at", "updated_at"])
    _log_action("promote", [row], user, via)
    _announce(events.CHANGED, [row])
    return row


def _due_now(row: Job) -> Job:
    row.scheduled_for = None
    return row


#: Statuses in which a job waits in Redis for a worker (on a queue, the schedule or its dependencies).
WAITING = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED})


def job_remove(*, job: Job, user: User = None, via: str = VIA_CODE) -> None:
    """Delete a job from Redis and from the history (its audit trail stays). A running job must be stopped first."""
    with rqstore.unavailable_on_error(), transaction.atomic():
        row = _locked(job)
        _require(row, "remove", REMOVABLE)
        # A waiting job is taken off its queue first, atomically against the workers' pops: one a
        # worker has just taken runs, and is not removed behind its back (as for a cancel).
        taken_by_a_worker = (
            row.status in WAITING
            and not rqstore.take_off(row.queue, row.rq_id)
            and rqstore.status(row.rq_id) is not None  # Redis forgot it: nothing can run it
        )
        if taken_by_a_worker:
            raise ActionNotAllowed("remove", "already taken by a worker", REMOVABLE)
        rq_job = rqstore.fetch(row.rq_id)
        if rq_job is not None:
            if rq_job.get_status(refresh=False) == RQStatus.STARTED:
                raise ActionNotAllowed("remove", JobStatus.STARTED, REMOVABLE)
            rq_job.delete()
        _audit([row], "remove", user, via)
        removed = live_row(row)
        row.delete()
    _log_action("remove", [row], user, via)
    try:
        events.announce(queues.redis(), events.REMOVED, [removed])
    except rqstore.REDIS_ERRORS as exc:
        log.warning("live pages were not told of a removed job: %s", exc)


def promote_due_jobs(*, now: datetime | None = None) -> int:
    """Move delayed jobs whose time has come onto their queues (the scheduler's duty).

    Like RQ's own scheduler, but it also records the move as a transition, and
    each job moves only if it is still scheduled (a user's promote, or a second
    scheduler, may have moved it): never twice.
    """
    conn = queues.redis()
    timestamp = int((now or datetime.now(tz=UTC)).timestamp())
    moved = 0
    for queue in queues.all_queues():
        scheduled = ScheduledJobRegistry(queue=queue)
        job_ids = scheduled.get_jobs_to_schedule(timestamp)
        if not job_ids:
            continue
        rq_jobs = rqstore.MirroredJob.fetch_many(job_ids, connection=conn, serializer=queues.SERIALIZER)
        with conn.pipeline(transaction=False) as pipe:
            rqstore.promote_now(queue.name, job_ids, pipe, at_front=False)
            answers = pipe.execute()
        with conn.pipeline() as pipe:
            for rq_job, promoted in zip(rq_jobs, answers, strict=True):
                if rq_job is not None and promoted:
                    events.emit(pipe, rq_job.id, events.QUEUED, events.attempt_number(rq_job))
                    moved += 1
            pipe.execute()
        if log.isEnabledFor(logging.INFO):
            for rq_job, promoted in zip(rq_jobs, answers, strict=True):
                if rq_job is not None and promoted:
                    extra = logs.job_extra(rq_job.id, rqstore.type_name(rq_job))
                    log.info("job %s promoted: due, moved to %s", rq_job.id, queue.name, extra=extra)
    return moved


def job_give_up_on(*, job: Job, outcome: str, reason: str) -> Job:
    """Record that a job's current attempt will never report back, and retry it if its type allows.

    `outcome` is `abandoned` (its worker died) or `lost` (Redis no longer has it).
    Called by the reconciler; a transition the worker does report later still
    wins over this verdict.
    """
    from jobs.models import JobAttempt

    spec = registry.find(job.type)  # None for a job the product did not create: never retried
    now = timezone.now()
    with transaction.atomic():
        row = _locked(job)
        if row.status != job.status or row.mirror_seq != job.mirror_seq:
            return row  # something happened meanwhile: judge again next time
        if row.status == JobStatus.STARTED:
            JobAttempt.objects.update_or_create(
                job=row,
                number=row.attempts,
                defaults={"outcome": outcome, "ended_at": now, "error": reason, "worker_name": row.worker_name},
            )
        row.error = reason
        row.traceback = ""
        row.ended_at = now
        row.mirror_seq = max(row.mirror_seq, events.seq_before_end(row.attempts))
        retry = spec is not None and spec.retry.retry_lost and row.attempts < row.max_attempts
        # A delayed job Redis forgot is scheduled again for its time, not run at once.
        still_delayed = row.status == JobStatus.SCHEDULED and row.scheduled_for is not None and row.scheduled_for > now
        if not retry:
            row.status = JobStatus(outcome if outcome in JobStatus.values else "lost")
        elif still_delayed:
            row.status = JobStatus.SCHEDULED
            row.ended_at = None
        else:
            row.status = JobStatus.QUEUED
            row.enqueued_at = now
            row.scheduled_for = None
            row.ended_at = None
            row.progress = 0
        row.save()
        conn = queues.redis()
        with rqstore.unavailable_on_error(), conn.pipeline() as pipe:
            pipe.multi()
            queue = queues.get_queue(row.queue)
            rqstore.forget_executions(queue, [row.rq_id], pipe)
            if retry:
                pipe.delete(RQJob.key_for(row.rq_id))
                rqstore.send(pipe, rqstore.stage([row], pipe))  # on its queue, or scheduled for its time
            else:
                rq_job = rqstore.fetch(row.rq_id)
                if rq_job is not None:
                    rq_job.set_status(RQStatus.FAILED, pipeline=pipe)
                    queue.failed_job_registry.add(
                        rq_job, ttl=rqstore.setting("JOBS_FAILURE_TTL"), exc_string=reason, pipeline=pipe
                    )
                pipe.execute()
    then = "scheduled again for its time" if retry and still_delayed else "run again" if retry else "not retried"
    log.warning("job %s %s: %s; %s", row.id, outcome, reason, then, extra=logs.job_extra(row.id, row.type))
    _announce(events.CHANGED, [row])
    return row


def queue_pause(*, name: str) -> None:
    """Workers stop taking jobs from the queue (the running ones finish); jobs keep arriving."""
    queues.get_queue(name)  # raises ValueError for an unknown queue
    with rqstore.unavailable_on_error():
        queues.redis().sadd(queues.PAUSED_KEY, name)


def queue_resume(*, name: str) -> None:
    queues.get_queue(name)
    with rqstore.unavailable_on_error():
        queues.redis().srem(queues.PAUSED_KEY, name)


#: The actions on one job, by the name the API, the admin and the page use.
ACTIONS = tuple(ALLOWED_BY_ACTION)


def job_act(*, job: Job, action: str, user: User = None, via: str = VIA_CODE) -> Job | None:
    """Apply a named action; returns the job (None once removed)."""
    if action == "retry":
        return job_retry(job=job, user=user, via=via)
    if action == "cancel":
        return job_cancel(job=job, user=user, via=via)
    if action == "stop":
        return job_stop(job=job, user=user, via=via)
    if action == "promote":
        return job_promote(job=job, user=user, via=via)
    if action == "remove":
        job_remove(job=job, user=user, via=via)
        return None
    raise InvalidJobRequest({"action": [f"unknown action {action!r}; actions are {', '.join(ACTIONS)}"]})


@dataclass
class BulkResult:
    """What an action over many jobs did: how many it matched, did and skipped, and why it skipped them."""

    action: str
    matched: int = 0
    done: int = 0
    skipped: int = 0
    #: Skipped jobs by the status that did not allow the action (or "unregistered type").
    skipped_by_status: dict[str, int] = field(default_factory=dict)

    def skip(self, reasons: Counter[str] | dict[str, int]) -> None:
        for status, count in reasons.items():
            self.skipped += count
            self.matched += count
            self.skipped_by_status[status] = self.skipped_by_status.get(status, 0) + count


def jobs_act(
    *,
    jobs: QuerySet[Job],
    action: str,
    user: User = None,
    via: str = VIA_CODE,
    batch_size: int = 500,
    progress: Callable[[BulkResult, int], None] | None = None,
) -> BulkResult:
    """Apply an action to every job of a queryset, in batches, each in its own transaction.

    Jobs whose status does not allow the action are counted by status, without
    being read one by one. The others are walked newest first, by keyset (the
    order the list's indexes serve); retries go a batch at a time, other actions
    job by job. A job whose status changed meanwhile is skipped. A Redis outage
    stops the run with QueueUnavailable (what was done stays done).
    `progress(result, total)` is called after every batch.
    """
    if action not in ALLOWED_BY_ACTION:
        raise InvalidJobRequest({"action": [f"unknown action {action!r}; actions are {', '.join(ACTIONS)}"]})
    allowed = ALLOWED_BY_ACTION[action]
    result = BulkResult(action=action)
    others = jobs.exclude(status__in=allowed).order_by().values_list("status").annotate(n=Count("pk"))
    result.skip(dict(others))
    candidates = jobs.filter(status__in=allowed).order_by("-created_at", "-id")
    total = result.matched + (candidates.count() if progress is not None else 0)
    last: tuple[datetime, Any] | None = None
    while True:
        page = candidates
        if last is not None:
            page = page.filter(Q(created_at__lt=last[0]) | Q(created_at=last[0], id__lt=last[1]))
        batch = list(page.values_list("pk", "created_at")[:batch_size])
        if not batch:
            return result
        last = (batch[-1][1], batch[-1][0])
        ids = [pk for pk, _ in batch]
        if action == "retry":
            retried, skipped = jobs_retry(job_ids=ids, user=user, via=via)
            result.matched += len(retried)
            result.done += len(retried)
            result.skip(skipped)
        else:
            for row in Job.objects.filter(pk__in=ids).only(*ACTION_FIELDS):
                try:
                    job_act(job=row, action=action, user=user, via=via)
                except (ActionNotAllowed, Job.DoesNotExist) as exc:
                    result.skip({getattr(exc, "status", "gone"): 1})
                else:
                    result.matched += 1
                    result.done += 1
        if progress is not None:
            progress(result, total)
