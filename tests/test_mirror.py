"""The mirror: transitions on the Redis stream become history rows, exactly once in effect."""

from __future__ import annotations

import time

import pytest
from django.db import OperationalError

from jobs import events, mirror, queues, services
from jobs.models import Job, JobAttempt
from jobs.statuses import AttemptOutcome, JobStatus

pytestmark = pytest.mark.django_db(transaction=True)


def emit(redis_db, job: Job, kind: str, attempt: int = 1, **data) -> None:
    events.emit(redis_db, str(job.id), kind, attempt, **data)


def drain(redis_db, consumer: str = "test") -> int:
    drainer = mirror.Drainer(redis_db, consumer)
    drainer.ensure_group()
    total = 0
    while applied := drainer.drain_once():
        total += applied
    return total


@pytest.fixture
def job(redis_db) -> Job:
    return services.job_enqueue(type="example")


def test_a_whole_life_reaches_the_row_and_the_timeline(redis_db, job):
    start = time.time()
    emit(redis_db, job, events.STARTED, w="worker-1")
    emit(redis_db, job, events.PROGRESS, p=40, m="step 4")
    emit(redis_db, job, events.FAILED, x="ValueError: boom", tb="Traceback...\nValueError: boom", n=start + 30)
    emit(redis_db, job, events.QUEUED, attempt=2)
    emit(redis_db, job, events.STARTED, attempt=2, w="worker-2")
    emit(redis_db, job, events.FINISHED, attempt=2, w="worker-2", r={"answer": 42})
    assert drain(redis_db) == 6

    job.refresh_from_db()
    assert job.status == JobStatus.FINISHED
    assert job.result == {"answer": 42}
    assert job.progress == 100
    assert job.attempts == 2
    assert job.error == ""
    assert job.worker_name == "worker-2"
    first, second = job.attempt_set.order_by("number")
    assert (first.outcome, first.worker_name, first.error) == (AttemptOutcome.FAILED, "worker-1", "ValueError: boom")
    assert first.retry_at is not None
    assert abs(first.retry_at.timestamp() - (start + 30)) < 1
    assert "Traceback" in first.traceback
    assert (second.outcome, second.worker_name) == (AttemptOutcome.FINISHED, "worker-2")


def test_a_failure_that_will_be_retried_shows_when(redis_db, job):
    due = time.time() + 60
    emit(redis_db, job, events.STARTED, w="w")
    emit(redis_db, job, events.FAILED, x="RuntimeError: no", n=due)
    drain(redis_db)
    job.refresh_from_db()
    assert job.status == JobStatus.SCHEDULED
    assert job.scheduled_for is not None
    assert abs(job.scheduled_for.timestamp() - due) < 1
    assert job.error == "RuntimeError: no"


def test_events_applied_twice_or_out_of_order_do_not_move_a_row_back(redis_db, job):
    emit(redis_db, job, events.FINISHED, w="w", r=1)
    emit(redis_db, job, events.STARTED, w="w")  # arrives late
    emit(redis_db, job, events.PROGRESS, p=10)  # arrives late
    drain(redis_db)
    emit(redis_db, job, events.FINISHED, w="w", r=1)  # delivered twice
    drain(redis_db)
    job.refresh_from_db()
    assert job.status == JobStatus.FINISHED
    assert job.progress == 100
    [attempt] = JobAttempt.objects.filter(job=job)
    assert attempt.outcome == AttemptOutcome.FINISHED
    assert attempt.started_at is not None


def test_a_stopped_job_is_recorded_as_stopped(redis_db, job):
    emit(redis_db, job, events.STARTED, w="w")
    emit(redis_db, job, events.STOPPED, w="w", x="stopped")
    drain(redis_db)
    job.refresh_from_db()
    assert job.status == JobStatus.STOPPED
    assert job.attempt_set.get().outcome == AttemptOutcome.STOPPED


def test_an_end_that_arrives_after_the_reconcilers_verdict_is_what_its_attempt_keeps(redis_db):
    """A worker frozen (not dead) past its liveness leaves its work horse running: the reconciler judges
    the run abandoned, and the run's own end arrives afterwards."""
    again = services.job_enqueue(type="example")  # runs lost work again
    once = services.job_enqueue(type="email", params={"to": ["ada@example.com"], "subject": "Hi", "body": "Hi"})
    for job in (again, once):
        redis_db.lrem(queues.get_queue(job.queue).key, 0, job.rq_id)  # a worker took it
        emit(redis_db, job, events.STARTED, w="frozen")
    drain(redis_db)
    for job in (again, once):
        job.refresh_from_db()
        services.job_give_up_on(job=job, outcome=JobStatus.ABANDONED, reason="worker frozen died while running it")
        emit(redis_db, job, events.FINISHED, w="frozen", r={"done": True})
    drain(redis_db)

    # Never run again: the job finished, and nothing of the verdict is left.
    once.refresh_from_db()
    assert (once.status, once.attempts, once.result, once.error) == (JobStatus.FINISHED, 1, {"done": True}, "")
    [attempt] = once.attempt_set.all()
    assert (attempt.outcome, attempt.error, attempt.retry_at) == (AttemptOutcome.FINISHED, "", None)
    # Run again: its next attempt is on its way; the first attempt keeps its true outcome.
    again.refresh_from_db()
    assert (again.status, again.attempts) == (JobStatus.QUEUED, 1)
    assert queues.get_queue("default").get_job_ids() == [again.rq_id]
    [attempt] = again.attempt_set.all()
    assert (attempt.outcome, attempt.error) == (AttemptOutcome.FINISHED, "")
    emit(redis_db, again, events.STARTED, attempt=2, w="healthy")
    emit(redis_db, again, events.FINISHED, attempt=2, w="healthy", r={"done": 2})
    drain(redis_db)
    again.refresh_from_db()
    assert (again.status, again.attempts, again.result) == (JobStatus.FINISHED, 2, {"done": 2})


def test_events_for_a_row_not_committed_yet_wait_and_then_apply(redis_db, job):
    ghost_id = "00000000-0000-0000-0000-000000000001"
    events.emit(redis_db, ghost_id, events.STARTED, 1, w="w")
    drainer = mirror.Drainer(redis_db, "test")
    drainer.ensure_group()
    drainer.drain_once()
    # Not acknowledged: still pending for this consumer.
    assert redis_db.xpending(events.STREAM, events.GROUP)["pending"] == 1
    Job.objects.create(id=ghost_id, type="example", queue="default", timeout=60, status=JobStatus.QUEUED)
    drainer._last_pending_read = 0  # the 1 s re-read timer, without sleeping
    drainer.drain_once()
    assert Job.objects.get(id=ghost_id).status == JobStatus.STARTED
    assert redis_db.xpending(events.STREAM, events.GROUP)["pending"] == 0


def test_events_for_a_row_that_never_appears_are_dropped_after_the_grace_period(redis_db, monkeypatch):
    events.emit(redis_db, "00000000-0000-0000-0000-000000000002", events.STARTED, 1, w="w")
    monkeypatch.setattr(mirror, "ORPHAN_GRACE_SECONDS", 0.0)
    drain(redis_db)
    assert redis_db.xpending(events.STREAM, events.GROUP)["pending"] == 0


def test_a_database_error_keeps_the_events_until_they_can_be_applied(redis_db, job, monkeypatch):
    emit(redis_db, job, events.STARTED, w="w")
    emit(redis_db, job, events.FINISHED, w="w", r="done")
    real_apply = mirror.apply_events
    calls = {"n": 0}

    def flaky(batch):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("database is away")
        return real_apply(batch)

    monkeypatch.setattr(mirror, "apply_events", flaky)
    drainer = mirror.Drainer(redis_db, "test")
    drainer.ensure_group()
    with pytest.raises(OperationalError):
        drainer.drain_once()
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED
    assert redis_db.xpending(events.STREAM, events.GROUP)["pending"] == 2
    assert drainer.drain_once() == 2
    job.refresh_from_db()
    assert job.status == JobStatus.FINISHED
    assert job.result == "done"


def test_a_bad_event_is_set_aside_without_stalling_the_others(redis_db, job, monkeypatch):
    other = services.job_enqueue(type="example")
    emit(redis_db, job, events.STARTED, w="w")
    emit(redis_db, other, events.STARTED, w="w")
    real_apply = mirror.apply_events

    def breaks_on_first_job(batch):
        if any(event.job_id == str(job.id) for event in batch):
            raise KeyError("bug")
        return real_apply(batch)

    monkeypatch.setattr(mirror, "apply_events", breaks_on_first_job)
    drain(redis_db)
    assert Job.objects.get(pk=other.pk).status == JobStatus.STARTED
    assert redis_db.xpending(events.STREAM, events.GROUP)["pending"] == 0


def test_another_drainer_takes_over_events_of_a_dead_one(redis_db, job, monkeypatch):
    emit(redis_db, job, events.STARTED, w="w")
    dead = mirror.Drainer(redis_db, "dead")
    dead.ensure_group()
    redis_db.xreadgroup(events.GROUP, "dead", {events.STREAM: ">"}, count=10)  # delivered, never applied
    monkeypatch.setattr(mirror, "CLAIM_IDLE_MS", 0)
    alive = mirror.Drainer(redis_db, "alive")
    alive.housekeeping(every=0)
    alive.drain_once()
    assert Job.objects.get(pk=job.pk).status == JobStatus.STARTED


def test_trimming_keeps_every_event_not_applied_yet(redis_db, job, monkeypatch):
    emit(redis_db, job, events.STARTED, w="w")
    drainer = mirror.Drainer(redis_db, "test")
    drainer.ensure_group()
    monkeypatch.setattr(mirror, "RETENTION_SECONDS", -60)  # everything counts as old
    drainer.housekeeping(every=0)
    assert redis_db.xlen(events.STREAM) == 1  # not delivered yet: kept
    drainer.drain_once()
    drainer._last_housekeeping = 0
    drainer.housekeeping(every=0)
    assert Job.objects.get(pk=job.pk).status == JobStatus.STARTED
