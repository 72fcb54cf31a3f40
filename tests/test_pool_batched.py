"""The pooled worker's batched bookkeeping (jobs/batching.py) on real processes: each job's end takes
the next one in the same round trip; the history, RQ's registries and counts stay what RQ writes;
priorities stay exact; a job taken and not started (its child killed) is put back and runs once."""

from __future__ import annotations

import signal
import time
from datetime import timedelta
from typing import Any

import pytest
import redis
import rq
from django.conf import settings
from django.utils import timezone
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from jobs import batching, queues, reconcile, services
from jobs.models import Job
from jobs.queue_names import DEFAULT, HIGH, LOW
from jobs.statuses import TERMINAL, JobStatus
from tests.conftest import wait_for
from tests.test_pool import MODULES, attempts, ended, live_workers, pool_types, row, running, start_pool

# One test of each module runs on both databases (the pooled worker is the deployment files' and the
# Procfile's); the others are `once`.
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

#: The batched steps are RQ 2.x's; on RQ 3 the pool runs RQ's own (`jobs.batching.ACTIVE`).
batched_only = pytest.mark.skipif(not batching.ACTIVE, reason="RQ 3: the pool runs RQ's own steps")

__all__ = ["pool_types"]  # the fixture, used by name


def work_in_this_process(worker: Any) -> None:
    """Run a pooled worker in the test's process until its queues are empty (or it is stopped); the
    process's signal handlers, which the worker replaces, are put back after."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        worker.work(burst=True, logging_level="WARNING")
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def registry_counts(queue_name: str) -> dict[str, int]:
    conn = queues.new_redis()
    return {
        "started": StartedJobRegistry(queue_name, connection=conn).count,
        "finished": FinishedJobRegistry(queue_name, connection=conn).count,
        "failed": FailedJobRegistry(queue_name, connection=conn).count,
        "queued": rq.Queue(queue_name, connection=conn).count,
    }


def test_200_jobs_of_mixed_outcomes_have_their_history_and_rq_counts_across_two_children(processes, pool_types):
    start_pool(processes, n=2)
    processes.scheduler(JOBS_MODULES=MODULES)  # moves the retries RQ schedules onto their queue
    kinds = [pool_types.SLEEP] * 140 + [pool_types.FAIL_ONCE] * 30 + [pool_types.FAIL] * 30
    jobs = services.jobs_enqueue(requests=[services.JobRequest(type=kind) for kind in kinds])

    wait_for(
        lambda: Job.objects.filter(pk__in=[job.pk for job in jobs], status__in=TERMINAL).count() == 200,
        90,
        message="200 jobs ended",
    )
    names: set[str] = set()
    for job, kind in zip(jobs, kinds, strict=True):
        row(job)
        outcomes = [(number, outcome) for number, outcome, _ in attempts(job)]
        if kind == pool_types.FAIL:
            assert (job.status, outcomes) == (JobStatus.FAILED, [(1, "failed")]), job.pk
            assert "pool-fail always fails" in job.error
        elif kind == pool_types.FAIL_ONCE:
            assert (job.status, outcomes) == (JobStatus.FINISHED, [(1, "failed"), (2, "finished")]), job.pk
        else:
            assert (job.status, outcomes) == (JobStatus.FINISHED, [(1, "finished")]), job.pk
        assert job.started_at <= job.ended_at
        names.update(name for _, _, name in attempts(job))
    assert len(names) == 2  # both children ran jobs

    # What `rq info` and django-rq's dashboard read.
    wait_for(lambda: {worker.get_state() for worker in live_workers()} == {"idle"}, 10, message="idle workers")
    workers = live_workers()
    assert {worker.name for worker in workers} == names
    assert {worker.get_current_job_id() for worker in workers} == {None}
    assert sum(worker.successful_job_count for worker in workers) == 170
    assert sum(worker.failed_job_count for worker in workers) == 60
    assert all(worker.total_working_time > 0 for worker in workers)
    assert registry_counts(DEFAULT) == {"started": 0, "finished": 170, "failed": 30, "queued": 0}
    conn = queues.redis()
    assert not conn.keys("rq:execution:*")  # every execution cleaned up
    assert conn.hget(f"rq:job:{jobs[0].rq_id}", "status") == b"finished"


@pytest.mark.once
def test_a_high_job_starts_before_the_low_ones_still_queued(processes, pool_types):
    start_pool(processes, n=1)
    lows = services.jobs_enqueue(
        requests=[services.JobRequest(type=pool_types.SLEEP, params={"seconds": 0.05}, queue=LOW) for _ in range(50)]
    )
    wait_for(lambda: running(lows[0]) or row(lows[0]).status == JobStatus.FINISHED, 15, message="the lows to start")
    wait_for(lambda: Job.objects.filter(pk__in=[low.pk for low in lows[:5]], status="finished").count() == 5, 15)
    low_queue = rq.Queue(LOW, connection=queues.redis())
    before = low_queue.count
    high = services.job_enqueue(type=pool_types.SLEEP, params={"seconds": 0.05}, queue=HIGH)
    # The child goes on taking lows while the high is written and pushed (a moment on a busy machine):
    # the lows still queued once it is pushed are between the counts taken before and after.
    after = low_queue.count
    ended(high)
    for low in lows:
        ended(low)
    started_after = sum(1 for low in lows if low.started_at > high.started_at)
    print(f"{before}-{after} lows queued when the high came; {started_after} started after it")
    assert after >= 20  # the high came while most lows waited
    # At most one of those queued at its push was taken before it (by the end of the job in hand).
    assert started_after >= after - 1


@pytest.mark.once
@batched_only
def test_a_child_killed_between_taking_a_job_and_starting_it_leaves_it_to_the_reconciler(processes, pool_types):
    pool = start_pool(processes, n=1)
    taker = services.job_enqueue(type=pool_types.DIE_AFTER_TAKE, params={"seconds": 1})
    wait_for(lambda: running(taker), 15, message="the taker to start")
    taken = services.job_enqueue(type=pool_types.SLEEP)
    first = {worker.name for worker in live_workers()}
    # The taker's end took `taken`, and its child died before starting it: queued, on no queue.
    ended(taker)
    conn = queues.redis()
    wait_for(lambda: not first & {worker.name for worker in live_workers()}, 15, message="the child to die")
    assert rq.Queue(DEFAULT, connection=conn).count == 0
    assert conn.hget(f"rq:job:{taken.rq_id}", "status") == b"queued"
    assert row(taken).status == JobStatus.QUEUED
    assert pool.poll() is None

    # The reconciler finds it adrift (seen long enough ago, its row old enough) and puts it back.
    Job.objects.filter(pk=taken.pk).update(created_at=timezone.now() - reconcile.GRACE - timedelta(seconds=1))
    conn.hset(reconcile.ADRIFT_KEY, taken.rq_id, time.time() - settings.JOBS_WORKER_DEAD_AFTER - 1)
    assert reconcile.reconcile().put_back == 1
    ended(taken)  # by the replacement child
    assert [(number, outcome) for number, outcome, _ in attempts(taken)] == [(1, "finished")]
    assert attempts(taken)[0][2] not in first


@pytest.mark.once
def test_a_worker_that_leaves_puts_the_job_it_took_back(processes, pool_types: Any):
    start_pool(processes, "--max-jobs", "1", n=1)
    jobs = services.jobs_enqueue(requests=[services.JobRequest(type=pool_types.SLEEP) for _ in range(5)])
    for job in jobs:
        ended(job)
        assert [(number, outcome) for number, outcome, _ in attempts(job)] == [(1, "finished")]
    assert len({job.worker_name for job in jobs}) >= 4  # a new child for (about) each job


@pytest.mark.once
@batched_only
def test_after_the_first_each_job_costs_two_round_trips_to_redis(redis_db, pool_types, monkeypatch):
    """Its start, and its end (which takes the next job): RQ's PERSIST of the job's key goes with the start."""
    from jobs.pool import PoolWorker

    jobs = services.jobs_enqueue(
        requests=[services.JobRequest(type=pool_types.MEMORY, params={"mb": 1}) for _ in range(5)]
    )
    trips: list[list[tuple[Any, ...]]] = []  # the commands of each round trip
    real_command, real_execute = redis.Redis.execute_command, redis.client.Pipeline.execute

    def command(self: redis.Redis, *args: Any, **options: Any) -> Any:
        trips.append([args])
        return real_command(self, *args, **options)

    def execute(self: redis.client.Pipeline, raise_on_error: bool = True) -> Any:
        trips.append([args for args, _ in self.command_stack])
        return real_execute(self, raise_on_error)

    monkeypatch.setattr(redis.Redis, "execute_command", command)
    monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
    # In this process: every command it sends is seen.
    work_in_this_process(PoolWorker([queues.get_queue(DEFAULT)], connection=queues.new_redis(), pool_mirror=True))
    sent = list(trips)

    def naming(job: Job) -> int:
        """How many of the worker's round trips named the job (its key, or it)."""
        return sum(1 for trip in sent if any(str(job.pk) in str(arg) for args in trip for arg in args))

    for job in jobs:
        assert row(job).status == JobStatus.QUEUED  # no mirror ran: the history is not this test's
    assert queues.redis().hget(f"rq:job:{jobs[-1].rq_id}", "status") == b"finished"
    # The first is dequeued as RQ does (and read); each next one was taken by the end of the one before.
    assert [naming(job) for job in jobs[1:]] == [2, 2, 2, 2]


@pytest.mark.once
@batched_only
@pytest.mark.parametrize("moment", ["while the end is sent", "once the end took the next job"])
def test_a_warm_stop_as_a_job_ends_lets_that_end_land_and_puts_the_next_job_back(
    redis_db, pool_types, monkeypatch, moment
):
    """The end's transaction writes the worker idle; a warm stop that came while it was on its way (a
    round trip, or a wait for Redis) or while the worker held the job it took found the worker idle
    and interrupted it: the finished job was recorded failed, and the job the end took was lost."""
    from jobs.pool import PoolWorker

    first, second = services.jobs_enqueue(requests=[services.JobRequest(type=pool_types.SLEEP) for _ in range(2)])
    worker = PoolWorker([queues.get_queue(DEFAULT)], connection=queues.new_redis(), pool_mirror=True)
    real_execute = redis.client.Pipeline.execute
    stops: list[bool] = []

    def stop() -> None:
        if not stops:
            stops.append(True)
            worker.request_stop(signal.SIGTERM, None)  # what the signal handler runs, at this moment

    def execute(self: redis.client.Pipeline, raise_on_error: bool = True) -> Any:
        ends_a_job = any(args[:2] == ("EVAL", batching.TAKE) for args, _ in self.command_stack)
        if moment == "while the end is sent" and ends_a_job:
            stop()
        return real_execute(self, raise_on_error)

    monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
    if moment == "once the end took the next job":
        monkeypatch.setattr(batching, "on_take", lambda job_id: stop())
    work_in_this_process(worker)

    assert stops
    conn = queues.redis()
    assert conn.hget(f"rq:job:{first.rq_id}", "status") == b"finished"
    # The job the end took was put back, at the front of its queue, for the next worker.
    assert conn.hget(f"rq:job:{second.rq_id}", "status") == b"queued"
    assert rq.Queue(DEFAULT, connection=conn).job_ids == [second.rq_id]
    assert StartedJobRegistry(DEFAULT, connection=conn).count == 0


@pytest.mark.once
@batched_only
@pytest.mark.parametrize("applied", [False, True], ids=["refused", "answer-lost"])
def test_a_job_whose_start_redis_refused_runs_once_redis_answers_and_is_not_failed(
    redis_db, pool_types, monkeypatch, applied
):
    """The batched worker sends a job's start as the job begins (inside RQ's `perform_job`): a start
    Redis refused was recorded as the job's failure, an attempt spent on a run that never happened."""
    from jobs.pool import PoolWorker

    job = services.job_enqueue(type=pool_types.SLEEP)
    worker = PoolWorker([queues.get_queue(DEFAULT)], connection=queues.new_redis(), pool_mirror=True)
    real_execute = redis.client.Pipeline.execute
    refused: list[bool] = []

    def execute(self: redis.client.Pipeline, raise_on_error: bool = True) -> Any:
        starts_the_job = any(args == ("PERSIST", f"rq:job:{job.rq_id}") for args, _ in self.command_stack)
        if starts_the_job and not refused:
            refused.append(True)
            if applied:  # Redis applied the start; only its answer was lost
                real_execute(self, raise_on_error)
            self.reset()
            raise redis.ConnectionError("Redis went away")
        return real_execute(self, raise_on_error)

    monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
    work_in_this_process(worker)

    assert refused
    conn = queues.redis()
    assert StartedJobRegistry(DEFAULT, connection=conn).count == 0
    if applied:
        # Started in Redis under this worker, though its code never ran: recorded as an end whose
        # outcome is unknown (run again where its type allows), not left started for ever.
        assert conn.hget(f"rq:job:{job.rq_id}", "status") != b"started"
        return
    assert conn.hget(f"rq:job:{job.rq_id}", "status") == b"finished"  # put back, then run
    assert FailedJobRegistry(DEFAULT, connection=conn).count == 0
    assert worker.failed_job_count == 0
