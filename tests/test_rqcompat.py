"""The worker on either RQ major (2.12, 3.x): what RQ 3 changed and the product adapts to (`jobs.rqcompat`)."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from jobs import mirror, queues, rqcompat, rqstore, services
from jobs.models import Job
from jobs.statuses import AttemptOutcome, JobStatus
from jobs.worker import END_NOT_RECORDED, SimpleWorker, Worker
from tests.helpers import started_entries

pytestmark = pytest.mark.django_db(transaction=True)


def drain(conn: Any) -> None:
    drainer = mirror.Drainer(conn, "test")
    drainer.ensure_group()
    while drainer.drain_once():
        pass


def refuse_the_failure_once(monkeypatch: Any, worker: Any, counter: str = "increment_failed_job_count") -> list[bool]:
    """Have Redis refuse the pipeline that records the worker's next failure (or, with the success
    `counter`, its next finish) once, as a Redis going away at that moment: RQ adds the count to that
    pipeline. True is added to the list returned when it has been refused."""
    refused: list[bool] = []
    count = getattr(worker, counter)

    def refuse_once(pipeline: Any = None) -> None:
        if pipeline is not None and not refused:

            def execute(*args: Any, **kwargs: Any) -> Any:
                pipeline.reset()
                refused.append(True)
                raise redis.ConnectionError("Redis went away")

            pipeline.execute = execute
        count(pipeline)

    monkeypatch.setattr(worker, counter, refuse_once)
    return refused


def test_a_failure_redis_refused_to_record_is_recorded_once_redis_answers(monkeypatch):
    """RQ logs a failure its pipeline could not write and goes on (RQ 3 writes it all in one pipeline):
    the job stayed started in Redis and in the history, under a worker that lives on, and nothing
    ever judged it."""
    conn = queues.new_redis()  # RQ's Worker raises its client's socket timeout: not the shared one
    job = services.job_enqueue(type="example", params={"duration": 0, "fail": True})
    worker = SimpleWorker([queues.get_queue(name) for name in queues.QUEUE_NAMES], connection=conn)
    taken = worker.dequeue_job_and_maintain_ttl(None)
    assert taken is not None
    rq_job, queue = taken
    assert rq_job.id == job.rq_id
    # Its last attempt, in hand and in Redis (RQ writes the status of a retry with a delay outside the
    # pipeline, in both majors; the worker settles an end by the count Redis has).
    rq_job.retries_left = None
    conn.hdel(rq_job.key, "retries_left")

    refused = refuse_the_failure_once(monkeypatch, worker)
    worker.execute_job(rq_job, queue)

    assert refused
    assert rqstore.status(job.rq_id) == "failed"
    drain(conn)
    row = Job.objects.get(pk=job.pk)
    assert row.status == JobStatus.FAILED
    [first, *_] = row.attempt_set.order_by("number")
    assert first.outcome == AttemptOutcome.FAILED
    # RQ 2.x had written the failure itself before the refused part of its pipeline.
    assert END_NOT_RECORDED in first.error if rqcompat.RQ3 else first.error


def test_the_keys_follow_rqs_prefix():
    assert rqcompat.execution_key("j:e") == f"{rqcompat.KEY_PREFIX}:execution:j:e"
    assert rqstore.MirroredJob.key_for("j").startswith(f"{rqcompat.KEY_PREFIX}:job:")


def test_a_stop_that_comes_after_the_job_finished_leaves_it_finished():
    """A stop kills the work horse; a horse that had already written its job's end (finished) as the
    stop arrived dies all the same, and RQ then records the stop on top of the finish: the history said
    the job finished and its last attempt was stopped (found by the chaos run)."""
    conn = queues.new_redis()  # RQ's Worker raises its client's socket timeout: not the shared one
    job = services.job_enqueue(type="example", params={"duration": 0})
    worker = SimpleWorker([queues.get_queue(name) for name in queues.QUEUE_NAMES], connection=conn)
    taken = worker.dequeue_job_and_maintain_ttl(None)
    assert taken is not None
    rq_job, queue = taken
    worker.execute_job(rq_job, queue)
    assert rqstore.status(job.rq_id) == "finished"

    # What the forking worker does when its horse dies after a stop: RQ's monitor records the stop.
    worker._stopped_job_id = rq_job.id
    worker.handle_job_failure(rq_job, queue, exc_string="Job stopped by user, work-horse terminated.")

    drain(conn)
    row = Job.objects.get(pk=job.pk)
    assert row.status == JobStatus.FINISHED
    assert [attempt.outcome for attempt in row.attempt_set.order_by("number")] == [AttemptOutcome.FINISHED]
    assert rqstore.status(job.rq_id) == "finished"


class _NoMirror:
    """Stands in for the worker's mirror process (not what this test is about)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def start(self) -> None:
        pass

    def stop(self, timeout: float = 15.0) -> None:
        pass


def test_a_stop_that_lands_in_a_log_line_being_written_still_stops_the_worker(monkeypatch):
    """RQ's warm stop raises StopRequested from the signal handler when no job runs; raised while a log
    line was being written, logging printed it and went on, and the worker ran on as if never asked
    (seen in the chaos run: a worker sent SIGTERM ran jobs until it was killed 80 s later)."""
    import io
    import logging
    import signal

    from jobs import worker as worker_module

    monkeypatch.setattr(worker_module, "MirrorProcess", _NoMirror)
    job = services.job_enqueue(type="example", params={"duration": 0})
    worker = SimpleWorker([queues.get_queue(name) for name in queues.QUEUE_NAMES], connection=queues.new_redis())

    class SignalledWhileWriting(io.StringIO):
        def write(self, text: str) -> int:
            worker.request_stop(signal.SIGTERM, None)  # the signal lands in the write
            return super().write(text)

    handler = logging.StreamHandler(SignalledWhileWriting())
    logger = logging.getLogger("tests.signalled")
    logger.addHandler(handler)
    monkeypatch.setattr(logging, "raiseExceptions", False)  # as deployed: no traceback printed either
    try:
        logger.warning("a line")  # logging swallows what the write raised
    finally:
        logger.removeHandler(handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # RQ's handler set the next stop to a cold one
        signal.signal(signal.SIGINT, signal.default_int_handler)

    worker.work(burst=True)
    queue = queues.get_queue(job.queue)
    assert queue.job_ids == [job.rq_id]  # stopped before taking a job: it still waits, never run
    assert queue.fetch_job(job.rq_id).get_status() == "queued"


def test_a_stop_delivered_twice_within_a_second_stays_a_warm_stop():
    """The same SIGTERM can arrive twice (from a pool and to the process group): RQ ignores a second
    signal within a second of the first, and the worker must too, still waiting for Redis to record
    the job in hand rather than leaving it as after a cold stop."""
    import signal

    from rq.worker import WorkerStatus

    worker = SimpleWorker([queues.get_queue(name) for name in queues.QUEUE_NAMES], connection=queues.new_redis())
    worker.set_state(WorkerStatus.BUSY)  # a job in hand: the warm stop waits for it
    try:
        worker.request_stop(signal.SIGTERM, None)
        worker.request_force_stop(signal.SIGTERM, None)  # the same stop, a moment later: ignored
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    assert worker._wait_for_redis(even_if_stopping=True) is True  # waits on, for the job's end


@pytest.mark.parametrize("worker_class", [SimpleWorker, Worker], ids=["in-process", "forking"])
def test_a_job_whose_start_redis_refused_is_put_back_and_leaves_nothing_to_later_jobs(monkeypatch, worker_class):
    """A job's start refused by Redis (gone at that moment): the job never ran, and waited on no queue
    under a worker that lived on (the reconciler puts back only the jobs of dead workers). It goes
    back on its queue. And RQ 3 enters the start's execution on the worker before the pipeline is
    sent: it stayed, and RQ's `execution` (the first entered) was every later job's, so a forking
    worker's work horse cleaned up the stale one at each end and left its own in the started
    registry, a finished job shown as running by `rq info` and django-rq's pages."""
    conn = queues.new_redis()
    first = services.job_enqueue(type="example", params={"duration": 0})
    worker = worker_class([queues.get_queue(name) for name in queues.QUEUE_NAMES], connection=conn)
    taken = worker.dequeue_job_and_maintain_ttl(None)
    assert taken is not None
    assert taken[0].id == first.rq_id
    refused: list[bool] = []
    set_state = worker.set_state

    def refuse_the_first_start(state: Any, pipeline: Any = None) -> None:
        if pipeline is not None and not refused:  # the start's pipeline, after the execution is entered
            refused.append(True)
            raise redis.ConnectionError("Redis went away")
        set_state(state, pipeline=pipeline)

    monkeypatch.setattr(worker, "set_state", refuse_the_first_start)
    worker.execute_job(*taken)
    assert refused
    queue = queues.get_queue(taken[1].name)
    assert queue.get_job_ids() == [first.rq_id]

    later = [services.job_enqueue(type="example", params={"duration": 0}) for _ in range(2)]
    for job in [first, *later]:
        taken = worker.dequeue_job_and_maintain_ttl(None)
        assert taken is not None
        assert taken[0].id == job.rq_id
        worker.execute_job(*taken)
        assert rqstore.status(job.rq_id) == "finished"
    assert conn.zrange(queue.started_job_registry.key, 0, -1) == []
    if rqcompat.RQ3:
        assert not worker.executions


def test_a_failure_with_a_delayed_retry_redis_refused_is_retried_once_redis_answers(monkeypatch):
    """RQ writes the `scheduled` status of a retry with a delay outside the pipeline that records the
    failure: with that pipeline refused, the job was scheduled in Redis but in no registry."""
    conn = queues.new_redis()
    job = services.job_enqueue(type="example", params={"duration": 0, "fail": True})
    worker = SimpleWorker([queues.get_queue(name) for name in queues.QUEUE_NAMES], connection=conn)
    taken = worker.dequeue_job_and_maintain_ttl(None)
    assert taken is not None
    rq_job, queue = taken
    retries = rq_job.retries_left
    assert retries  # the type retries...
    assert rq_job.get_retry_interval() > 0  # ...after a delay

    refused = refuse_the_failure_once(monkeypatch, worker)
    worker.execute_job(rq_job, queue)

    assert refused
    assert rqstore.status(job.rq_id) == "scheduled"
    assert job.rq_id in queue.scheduled_job_registry.get_job_ids()  # it runs again when due
    assert started_entries(job) == []
    assert int(conn.hget(rq_job.key, "retries_left")) == retries - 1  # this failure counted once
    drain(conn)
    row = Job.objects.get(pk=job.pk)
    assert row.status == JobStatus.SCHEDULED, (row.status, row.error)
    [first] = row.attempt_set.all()
    assert first.outcome == AttemptOutcome.FAILED


@pytest.mark.skipif(
    rqcompat.RQ3, reason="RQ 2's steps: on RQ 3 a refused end is recorded as one whose outcome is unknown"
)
def test_redis_failing_again_as_a_refused_finish_is_checked_does_not_turn_it_into_a_failure(monkeypatch):
    """A finish Redis refused is recorded again once Redis answers, after a look at whether Redis has it
    after all (`_runs_here`): Redis failing again at that look raised out of the job's end, and RQ
    recorded the finished job as failed (and ran it again)."""
    conn = queues.new_redis()
    job = services.job_enqueue(type="example", params={"duration": 0})
    worker = SimpleWorker([queues.get_queue(name) for name in queues.QUEUE_NAMES], connection=conn)
    taken = worker.dequeue_job_and_maintain_ttl(None)
    assert taken is not None
    rq_job, queue = taken
    refused = refuse_the_failure_once(monkeypatch, worker, "increment_successful_job_count")
    looks: list[bool] = []
    runs_here = worker._runs_here

    def failing_once(*args: Any) -> bool:
        if not looks:
            looks.append(True)
            raise redis.ConnectionError("Redis failed again")
        return runs_here(*args)

    monkeypatch.setattr(worker, "_runs_here", failing_once)
    worker.execute_job(rq_job, queue)

    assert refused
    assert looks
    assert rqstore.status(job.rq_id) == "finished"
    drain(conn)
    row = Job.objects.get(pk=job.pk)
    assert row.status == JobStatus.FINISHED, (row.status, row.error)
    assert [attempt.outcome for attempt in row.attempt_set.all()] == [AttemptOutcome.FINISHED]
