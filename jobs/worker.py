"""The product's RQ worker and job classes: RQ's own, plus mirroring.

`manage.py rqworker --worker-class jobs.worker.Worker` forks a work horse per
job, as RQ's own default; `--worker-class jobs.worker.SimpleWorker` runs jobs in
the worker process itself. (The command's default is the pooled worker,
`jobs.pool.PooledWorker`, whose processes are RQ workers with the same mixin.) What they add to RQ:

- every transition is appended to the event stream inside the Redis pipeline
  RQ already executes for it (start, success, failure, stop), so mirroring
  costs no extra round trip per job;
- a mirror process beside the worker (forked at start) drains the stream into the database
  and keeps the worker's liveness key fresh for the reconciler;
- jobs are always read with the JSON serializer (never pickle), whatever the
  command line says.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

import redis as redis_lib
import rq
from django.conf import settings
from redis import Redis
from redis.client import Pipeline
from rq.exceptions import InvalidJobOperation, StopRequested
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from rq.worker import WorkerStatus

from jobs import events, logs, queues, rqcompat, rqstore
from jobs.errors import REDIS_ERRORS
from jobs.mirror import MirrorProcess, alive_key
from jobs.rqstore import MirroredJob

#: Seconds a worker trusts what it read of the paused queues.
PAUSE_REFRESH = 1.0
#: Longest wait on the queues not paused before looking at the pauses again.
PAUSE_POLL = 5
#: Names of the workers that keep a liveness key (the reconciler trusts only theirs).
PRODUCT_WORKERS = "jobs:product-workers"
#: The error of a run whose end is unknown: RQ's for a horse that died, ours for an end Redis refused.
HORSE_DIED = "Work-horse terminated unexpectedly"
END_NOT_RECORDED = "Redis was unavailable when the job ended: its outcome could not be recorded"
OUTCOME_UNKNOWN = (HORSE_DIED, END_NOT_RECORDED)

log = logging.getLogger(__name__)


def _result_limit(conn: Redis) -> int:
    return events.BACKLOG_RESULT_BYTES if events.backlog.over(conn) else events.MAX_RESULT_BYTES


class MirrorWorkerMixin:
    """Mix into an RQ worker class (before it) to mirror its jobs."""

    name: str
    connection: Redis
    _stopped_job_id: str | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["serializer"] = queues.SERIALIZER
        job_class = kwargs.get("job_class")
        if job_class is None or isinstance(job_class, str) or not issubclass(job_class, MirroredJob):
            kwargs["job_class"] = MirroredJob
        super().__init__(*args, **kwargs)
        self._failure: tuple[str, bool] | None = None
        self._mirror: MirrorProcess | None = None

    def _set_ip_address(self, connection: Redis) -> None:
        """RQ asks Redis for this worker's address as it is made: a worker started while Redis is
        away (a machine booting, Redis restarting) waits for it rather than exit."""
        while True:
            try:
                connection.ping()
                break
            except REDIS_ERRORS as exc:
                log.warning("worker %s: waiting for Redis to start (%s)", self.name, exc)
                time.sleep(1.0)
        super()._set_ip_address(connection)  # type: ignore[misc]

    # --- transitions ----------------------------------------------------------

    def prepare_execution(self, job: RQJob) -> Any:
        """RQ's; the execution is kept for an end recorded after Redis came back (RQ 3 passes it
        to the hooks rather than keep it on the worker).

        This worker runs one job at a time: RQ 3 enters an execution in `executions` before its
        pipeline is sent, so one whose start Redis refused stayed there. RQ's `execution` is the
        first entered: it named the stale one as the worker's current job, and a forking worker's
        work horse ran every later job under it, whose end then cleaned up the stale one instead of
        its own, left in the started registry (the chaos run on RQ 3). A start that did not reach
        Redis, or whose answer alone was lost, is put back by the worker (`_put_back_unstarted`).
        """
        self._execution_in_hand, self._start_sent = None, False
        if rqcompat.RQ3:
            self.executions.clear()  # type: ignore[attr-defined]
        self._execution_in_hand = super().prepare_execution(job)  # type: ignore[misc]
        self._start_sent = True
        return self._execution_in_hand

    _execution_in_hand: Any = None
    #: Whether the job in hand's start reached Redis (False: RQ's start pipeline raised; the job never ran).
    _start_sent = True

    def handle_job_success(self, job: RQJob, queue: rq.Queue, *args: Any, **kwargs: Any) -> None:
        if self._handed_on(job):
            self._record_end_only(job, kwargs.get("execution"))
            return
        rq_success = super().handle_job_success  # type: ignore[misc]
        self._until_recorded(job, lambda: rq_success(job, queue, *args, **kwargs))

    def handle_job_failure(
        self, job: RQJob, queue: rq.Queue, started_job_registry: Any = None, exc_string: str = "", execution: Any = None
    ) -> None:
        in_hand = self._execution_in_hand
        if not self._start_sent and in_hand is not None and in_hand.job_id == job.id:
            # The job's start did not reach Redis (the batched worker sends it as the job begins, in
            # RQ's `perform_job`): the job never ran, and is put back once Redis answers, not failed.
            raise redis_lib.ConnectionError(f"the start of job {job.id} did not reach Redis")
        stopped = self._stopped_job_id == job.id
        if self._handed_on(job):
            self._failure = (exc_string, stopped)
            try:
                self._record_end_only(job, execution)
            finally:
                self._failure = None
            return
        if stopped and _status_now(job) == RQStatus.FINISHED:
            # The stop came as the job ended: its horse had written the job's end before it was
            # killed. RQ would record the stop on top of the finish; the job finished.
            log.info("job %s finished before its stop took effect", job.id)
            return
        if not stopped and exc_string.startswith(OUTCOME_UNKNOWN):
            # The run was cut short (its horse killed, by the out-of-memory killer say) and may have
            # done its work: run again only where the type allows lost work to run again.
            spec = rqstore.job_type(job)
            if isinstance(job, MirroredJob) and (spec is None or not spec.retry.retry_lost):
                job.no_retry = True
        # RQ forgets both facts before it cleans the execution up, where the event is written.
        self._failure = (exc_string, stopped)
        self._failure_recorded = False
        rq_failure = super().handle_job_failure  # type: ignore[misc]
        try:
            self._until_recorded(
                job,
                lambda: rq_failure(
                    job,
                    queue,
                    started_job_registry=started_job_registry,
                    exc_string=exc_string,
                    **rqcompat.execution_kwargs(execution),
                ),
            )
        finally:
            self._failure = None
        if rqcompat.RQ3 and not self._failure_recorded:
            # RQ logs a failure Redis refused and goes on (RQ 3 writes it in one pipeline): the job
            # would stay started in Redis, and its row too, under a live worker. Raised, the end is
            # recorded once Redis is back (`_settle`; in a work horse, by its worker, as its death).
            raise redis_lib.ConnectionError(f"the failure of job {job.id} could not be recorded")

    _failure_recorded = False

    # --- an end Redis did not take ----------------------------------------------

    _end_landed = False

    def _until_recorded(self, job: RQJob, record: Callable[[], None]) -> None:
        """Record the job's end (`record`: RQ's success or failure path) until its transaction reaches Redis.

        RQ 2 logs a failure's transaction Redis refused and goes on, and a success's refused one
        turns into a failure of the job: either way the job stayed started in Redis, its retry
        not counted (a later verdict ran the attempt again under the same number), or a finished job
        was recorded as failed and run again. This run knows how the job ended: the worker waits
        for Redis and records the same end again, unless Redis has it after all (it applied the
        transaction and only its answer was lost) or the job moved on meanwhile (a stop, a verdict).
        On RQ 3 the failure path raises instead, and the worker records the end as one whose outcome
        is unknown (`handle_job_failure`, `_settle`).
        """
        if rqcompat.RQ3:
            record()
            return
        execution, stopped_job_id = getattr(self, "execution", None), self._stopped_job_id
        retries_left = job.retries_left  # RQ's retry counts the one in hand down before it sends
        pause = 0.5
        while True:
            self._end_landed = False
            error: Exception | None = None
            try:
                record()
            except REDIS_ERRORS as exc:
                error = exc
            if self._end_landed:
                return
            log.warning(
                "worker %s: the end of job %s did not reach Redis (%s); recording it again once Redis takes it",
                self.name,
                job.id,
                error or "its transaction failed",
            )
            job.retries_left = retries_left
            if not self._still_runs_here(job, execution):
                log.info("job %s: its end is in Redis, or the job moved on meanwhile", job.id)
                return
            time.sleep(pause)  # Redis answers but may refuse writes (maxmemory): not in a tight loop
            pause = min(pause * 2, 5.0)
            self.execution, self._stopped_job_id = execution, stopped_job_id

    def _still_runs_here(self, job: RQJob, execution: Any) -> bool:
        """`_runs_here`, asked once Redis answers, and again until Redis answers the question too: an
        error raised from it (Redis failed again) came out of the job's end, and RQ recorded a
        finished job as failed."""
        while True:
            self._wait_for_redis(even_if_stopping=True)  # a warm stop promises the end recorded
            try:
                return self._runs_here(job, execution)
            except REDIS_ERRORS as exc:
                log.warning("worker %s: Redis failed again as job %s ended (%s)", self.name, job.id, exc)

    def _runs_here(self, job: RQJob, execution: Any) -> bool:
        """Whether Redis still has this run of the job under way in this worker, its end not recorded:
        its execution in the started registry (an end's transaction removes it, and so does a verdict
        that moves the job on; the execution names this run, where the status would not tell it from
        a later run of the same job). Without an execution in hand, the job's status says. When it
        does, the job in hand takes the attempt count Redis has (RQ's retry counts down the one in
        hand before its transaction is sent).

        A job Redis forgot altogether (restarted without persistence while the job ran) is this
        run's too: nothing else can have moved it on (a started job cannot be removed, and a
        verdict that runs it again writes it anew), and only this worker knows how it ended. Left
        unrecorded, its row would stay started under a live worker until the job's timeout.
        """
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.hmget(job.key, ["status", "worker_name", "retries_left"])
            if execution is not None:
                pipe.zscore(job.started_job_registry.key, execution.composite_key)
            replies: list[Any] = pipe.execute()
        status, worker, left = replies[0]
        if status is None and worker is None:
            return True
        under_way = replies[1] is not None if execution is not None else status == RQStatus.STARTED.value.encode()
        if not under_way or worker != self.name.encode():
            return False
        job.retries_left = int(left) if left else None
        return True

    def _note_landing(self, pipeline: Pipeline) -> None:
        """Have the transaction that records a job's end say whether it reached Redis (its next
        execution only: RQ's failure path executes the pipeline twice, the end in the first), and
        call `_end_sent` or `_end_not_sent` (what a worker that adds to that transaction hooks)."""
        self._end_landed = False
        original = pipeline.execute

        def execute(raise_on_error: bool = True) -> list[Any]:
            pipeline.execute = original  # type: ignore[method-assign]
            try:
                results: list[Any] = original(raise_on_error)
            except REDIS_ERRORS:
                self._end_not_sent()
                raise
            self._end_landed = True
            self._end_sent(results)
            return results

        pipeline.execute = execute  # type: ignore[method-assign]

    def _end_sent(self, results: list[Any]) -> None:
        """The transaction of a job's end went through; `results`: its replies."""

    def _end_not_sent(self) -> None:
        """The transaction of a job's end failed (Redis may have applied it, its answer lost)."""

    def _handed_on(self, job: RQJob) -> bool:
        """Whether the job in Redis has moved on to a later attempt than this run's.

        The reconciler judges a run abandoned once its worker stops beating. A worker frozen
        (SIGSTOP, a paused VM or container) rather than dead leaves its work horse running, and where
        the type runs lost work again the reconciler has staged the next attempt under the same id by
        the time this run ends: RQ would write this run's end over it, and the next run would then
        count as this attempt again. (A job Redis forgot is not handed on: RQ records its end.)

        Only a run longer than the silence after which a worker is judged dead can have been judged
        (half of it, for clocks that disagree): a shorter one costs no read.
        """
        started = job.started_at
        if started is not None and time.time() - started.timestamp() < settings.JOBS_WORKER_DEAD_AFTER / 2:
            return False
        while True:
            # Redis away as the job ends (the end itself then waits for it, `_until_recorded`): an
            # error here would end the run without any end recorded.
            try:
                raw: Any = self.connection.hget(job.key, "meta")
                break
            except REDIS_ERRORS as exc:
                log.warning("worker %s: Redis unavailable as job %s ended (%s); waiting for it", self.name, job.id, exc)
                self._wait_for_redis(even_if_stopping=True)  # a warm stop promises the end recorded
        try:
            stored = job.serializer.loads(raw) if raw else {}
            return int(stored.get("attempt_base", 0)) != int((job.meta or {}).get("attempt_base", 0))
        except (ValueError, TypeError, AttributeError):  # meta the product did not write: not its to judge
            return False

    def _record_end_only(self, job: RQJob, execution: Any) -> None:
        """Record the end of a run whose job has moved on (`_handed_on`): its event, for the
        attempt's place in the history, and its execution gone; the next attempt is left as it is."""
        if isinstance(job, MirroredJob):
            job.no_retry = True  # the next attempt is staged already
        with self.connection.pipeline() as pipe:
            self._emit_end(job, pipe)
            super().cleanup_execution(job, pipe, **rqcompat.execution_kwargs(execution))  # type: ignore[misc]
            pipe.execute()
        log.warning(
            "job %s: attempt %s ended after the job had moved on to a later attempt (its worker had stopped "
            "beating); only its end is recorded",
            job.id,
            events.attempt_number(job),
        )

    def _release_slot_safely(self, job: RQJob) -> None:
        """RQ 3's; it runs once a job's failure is recorded, and only then."""
        self._failure_recorded = True
        super()._release_slot_safely(job)  # type: ignore[misc]

    def cleanup_execution(self, job: RQJob, pipeline: Pipeline, execution: Any = None) -> None:
        """Runs inside the pipeline that records every end of a job (success, failure, stop)."""
        self._emit_end(job, pipeline)
        self._note_landing(pipeline)
        if self._failure is None:
            # A finish can arrive after the reconciler judged the job abandoned (its worker was frozen
            # while the horse ran on) and put it in the failed registry: it failed no more.
            pipeline.zrem(job.failed_job_registry.key, job.id)
        super().cleanup_execution(job, pipeline, **rqcompat.execution_kwargs(execution))  # type: ignore[misc]

    def _emit_end(self, job: RQJob, pipeline: Pipeline) -> None:
        attempt = events.attempt_number(job)
        started = job.started_at.timestamp() if job.started_at else None
        ran = f"{time.time() - started:.2f}s" if started else "an unknown time"
        if self._failure is None:
            events.emit(
                pipeline,
                job.id,
                events.FINISHED,
                attempt,
                w=self.name,
                s=started,
                r=events.encode_result(job._result, _result_limit(self.connection)),
            )
            log.info("job %s finished (attempt %s) in %s", job.id, attempt, ran)
            return
        exc_string, stopped = self._failure
        error = events.error_line(exc_string)
        traceback = exc_string[-events.MAX_TRACEBACK_CHARS :]
        if stopped:
            events.emit(pipeline, job.id, events.STOPPED, attempt, w=self.name, s=started, x=error or "stopped")
            log.warning("job %s stopped (attempt %s) after %s", job.id, attempt, ran)
            return
        next_at = requeued = None
        if job.should_retry:
            # RQ retries right after this pipeline, with the interval it picks here.
            interval = job.get_retry_interval()
            if interval:
                next_at = round(time.time() + interval, 3)
            else:
                requeued = 1
        events.emit(
            pipeline,
            job.id,
            events.FAILED,
            attempt,
            w=self.name,
            s=started,
            x=error,
            tb=traceback,
            n=next_at,
            q=requeued,
        )
        then = "run again now" if requeued else f"retried in {next_at - time.time():.0f}s" if next_at else "no retry"
        log.warning("job %s failed (attempt %s) after %s: %s; %s", job.id, attempt, ran, error, then)

    # --- Redis blinking around a job ------------------------------------------------

    def execute_job(self, job: RQJob, queue: rq.Queue) -> None:
        """Run the job with it in hand for the logs: every line about it (RQ's, the job's own, in the
        work horse too) carries its id and type (`jobs.logs`)."""
        with logs.job_context(job.id, rqstore.type_name(job)):
            log.info("job %s started on %s (attempt %s)", job.id, self.name, events.attempt_number(job))
            self._execute_job(job, queue)

    def _execute_job(self, job: RQJob, queue: rq.Queue) -> None:
        """RQ's, but a Redis failure around the job does not end the worker (RQ's loop quits on one).

        The worker waits for Redis, watches a horse still running to its end, and records an end
        the horse could not write as a run whose outcome is unknown.
        """
        try:
            super().execute_job(job, queue)  # type: ignore[misc]
            return
        except REDIS_ERRORS as exc:
            log.warning("worker %s: Redis failed around job %s (%s); waiting for it", self.name, job.id, exc)
        while True:
            # A warm stop waits too: it promises the job's end, recorded (a second signal, a cold stop,
            # raises out of the wait). Left at once, the worker took its horse with it.
            self._wait_for_redis(even_if_stopping=True)
            try:
                if not self._start_sent:
                    if not self._put_back_unstarted(job, queue):
                        # Its start reached Redis after all (only the answer was lost): the job is
                        # started there, under this worker. Its end is recorded as unknown.
                        self._settle(job, queue)
                else:
                    if getattr(self, "_horse_pid", 0):
                        self.monitor_work_horse(job, queue, **rqcompat.execution_kwargs(self._execution_in_hand))  # type: ignore[attr-defined]
                    self._settle(job, queue)
                self.set_state(WorkerStatus.IDLE)  # type: ignore[attr-defined]
                return
            except REDIS_ERRORS as exc:
                log.warning("worker %s: Redis failed again (%s)", self.name, exc)

    def check_for_suspension(self, burst: bool) -> None:
        """RQ's; with Redis away, the worker waits for it (RQ's loop quits on any error, and a
        supervisor such as honcho then stops every process with it)."""
        while True:
            try:
                super().check_for_suspension(burst)  # type: ignore[misc]
                return
            except REDIS_ERRORS as exc:
                log.warning("worker %s: Redis unavailable (%s); waiting for it", self.name, exc)
                if not self._wait_for_redis():
                    return  # asked to stop: RQ's loop stops next

    def run_maintenance_tasks(self) -> None:
        """RQ's registry cleaning; Redis away skips it (the next round does it) after waiting for Redis."""
        try:
            super().run_maintenance_tasks()  # type: ignore[misc]
        except REDIS_ERRORS as exc:
            log.warning("worker %s: maintenance skipped, Redis unavailable (%s)", self.name, exc)
            self._wait_for_redis()

    def _wait_for_redis(self, even_if_stopping: bool = False) -> bool:
        """Wait until Redis answers; False when the worker was asked to stop meanwhile, unless
        `even_if_stopping`: with a job in hand, whose end a warm stop promises to record. A cold stop
        ends the wait: its SystemExit may have been caught on the way (RQ's job runner catches
        everything, then records the failure, which waits here again)."""
        wait = 0.5
        while even_if_stopping or not getattr(self, "_stop_requested", False):
            if self._cold_stop:
                raise SystemExit()
            try:
                self.connection.ping()
                return True
            except REDIS_ERRORS:
                time.sleep(wait)
                wait = min(wait * 2, 5.0)
        return False

    def _put_back_unstarted(self, job: RQJob, queue: rq.Queue) -> bool:
        """After Redis came back: a job whose start did not reach Redis (or whose answer alone was lost)
        never ran; it goes back to the front of its queue with the execution that start may have
        entered. The reconciler puts back a job taken by a worker that died; this worker lives on, and
        the job would have waited on no queue until it died. False when it was not put back (not
        queued: the batched start, which writes the job started, reached Redis after all)."""
        put = rqstore.put_back(queue.name, job.id, rqstore.executions_of(queue, [job.id], self.connection))
        if put:
            log.warning("job %s: its start did not reach Redis; put back on %s", job.id, queue.name)
        if rqcompat.RQ3:
            self.executions.clear()  # type: ignore[attr-defined]
        self._start_sent = True  # nothing of it is in hand any more
        return put

    def _settle(self, job: RQJob, queue: rq.Queue) -> None:
        """After Redis came back: record the job's end if nobody could (a job Redis forgot in a
        restart too: `_runs_here`)."""
        if self._runs_here(job, self._execution_in_hand):
            self.handle_job_failure(
                job, queue, exc_string=END_NOT_RECORDED, **rqcompat.execution_kwargs(self._execution_in_hand)
            )

    _cold_stop = False

    def request_stop(self, signum: int, frame: Any) -> None:
        """RQ's warm stop, remembered first in `_stop_requested`, which RQ's loop reads before each job.
        RQ raises StopRequested from the signal handler when no job runs, and an exception raised there
        lands wherever the worker was: inside a log line being written, logging prints it and goes on,
        and the stop was lost (seen in the chaos run: the worker ran on until it was killed)."""
        self._stop_requested = True
        super().request_stop(signum, frame)  # type: ignore[misc]

    def request_force_stop(self, signum: int, frame: Any) -> None:
        """RQ's cold stop (a second signal), remembered: `_wait_for_redis` ends on it. Only when RQ
        takes it: a second signal within a second of the first is the same stop delivered twice (by a
        pool and to the process group), which RQ ignores, and the warm stop holds."""
        try:
            super().request_force_stop(signum, frame)  # type: ignore[misc]
        except SystemExit:
            self._cold_stop = True
            raise

    def set_shutdown_requested_date(self) -> None:
        """RQ's note of a warm stop in the worker's hash, written from the signal handler; Redis away,
        it is skipped. Raised there, the error came out of whatever the worker was doing: the wait
        for Redis to record a job's end, or the job itself."""
        try:
            super().set_shutdown_requested_date()  # type: ignore[misc]
        except REDIS_ERRORS as exc:
            log.warning("worker %s: stop noted, but not in Redis (%s)", self.name, exc)

    def kill_horse(self, *args: Any, **kwargs: Any) -> None:
        """RQ's, but never without a horse: RQ kills the group of `os.getpgid(horse_pid)`, and with no
        horse (0) that is the worker's own. A stop command that arrives after the job's horse ended,
        while its end could not be recorded yet (Redis away), killed the worker itself (seen in the
        chaos run)."""
        if not getattr(self, "horse_pid", 0):
            return
        super().kill_horse(*args, **kwargs)  # type: ignore[misc]

    def handle_execution_ended(self, job: RQJob, queue: rq.Queue, heartbeat_ttl: int) -> None:
        """RQ's last beat of the job as it returns, before its end is recorded; a beat Redis refuses is
        skipped (the end, recorded once Redis takes it, says when the job ended). Raised, it turned
        a finished job into a failed one, and that failure's own beat raised again and ended the work
        horse with no end recorded at all."""
        try:
            super().handle_execution_ended(job, queue, heartbeat_ttl)  # type: ignore[misc]
        except REDIS_ERRORS as exc:
            log.warning("worker %s: last beat of job %s not written (%s)", self.name, job.id, exc)

    def heartbeat(self, *args: Any, **kwargs: Any) -> None:
        """RQ's heartbeat; a beat Redis refuses is logged and skipped (the next one comes soon)."""
        try:
            super().heartbeat(*args, **kwargs)  # type: ignore[misc]
        except REDIS_ERRORS as exc:
            if kwargs.get("pipeline") is not None:
                raise
            log.warning("worker %s: heartbeat not written, Redis unavailable (%s)", self.name, exc)

    def maintain_heartbeats(self, job: RQJob, execution: Any = None) -> None:
        try:
            super().maintain_heartbeats(job, **rqcompat.execution_kwargs(execution))  # type: ignore[misc]
        except REDIS_ERRORS as exc:
            log.warning("worker %s: heartbeat of job %s not written (%s)", self.name, job.id, exc)

    def set_current_job_working_time(self, working_time: float, pipeline: Pipeline | None = None) -> None:
        """RQ 2.x's (RQ 3 writes no working time to the worker's hash)."""
        try:
            super().set_current_job_working_time(working_time, pipeline=pipeline)  # type: ignore[misc]
        except REDIS_ERRORS as exc:
            if pipeline is not None:
                raise
            log.warning("worker %s: working time not written (%s)", self.name, exc)

    # --- paused queues ----------------------------------------------------------

    _paused: frozenset[str] = frozenset()
    _paused_read_at = 0.0
    queues: list[rq.Queue]
    _ordered_queues: list[rq.Queue]

    def _paused_queues(self) -> frozenset[str]:
        """The paused queue names, read from Redis at most once a second."""
        now = time.monotonic()
        if now - self._paused_read_at >= PAUSE_REFRESH:
            self._paused = frozenset(queues.paused_queues(self.connection))
            self._paused_read_at = now
        return self._paused

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """RQ's dequeue, skipping paused queues; Redis away, the worker waits for it (RQ retries
        only refused connections, and its loop quits on a timeout). A job taken off its queue just
        before Redis failed is put back by the reconciler (`jobs.reconcile.Adrift`)."""
        while True:
            try:
                return self._dequeue(timeout, max_idle_time)
            except REDIS_ERRORS as exc:
                log.warning("worker %s: Redis unavailable while waiting for a job (%s)", self.name, exc)
                if not self._wait_for_redis():
                    return None  # asked to stop: RQ's loop ends
            except StopRequested:
                # Raised by the signal handler inside BLPOP: the interrupted connection still has
                # BLPOP's reply coming. redis-py drops such a connection, except through Sentinel
                # (its connections keep it), and RQ's goodbye would then wait minutes behind it.
                # Only the connections not in use: RQ's pubsub thread keeps its own to the end.
                self.connection.connection_pool.disconnect(inuse_connections=False)
                raise

    def _dequeue(self, timeout: int | None, max_idle_time: int | None) -> Any:
        """RQ's dequeue, skipping paused queues (a pause takes effect within about a second)."""
        idle_since = time.monotonic()
        while True:
            left = None if max_idle_time is None else max_idle_time - (time.monotonic() - idle_since)
            if left is not None and left <= 0:
                return None
            paused = self._paused_queues()
            active = [queue for queue in self._ordered_queues if queue.name not in paused]
            # RQ parks a job taken from a single queue in an intermediate list, and
            # clears it itself only when the worker serves a single queue.
            from_one_queue = len(active) == 1
            if not paused:
                result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)  # type: ignore[misc]
                if result is None:
                    return None  # burst mode done, or idle for max_idle_time
            elif not active:
                if timeout is None:  # burst mode: nothing this worker may take
                    return None
                self.heartbeat()
                time.sleep(PAUSE_REFRESH)
                continue
            else:
                everything = self._ordered_queues
                self._ordered_queues = active
                try:
                    # Wait a few seconds at a time, to notice a queue being resumed.
                    poll = PAUSE_POLL if left is None else max(1, min(PAUSE_POLL, math.ceil(left)))
                    result = super().dequeue_job_and_maintain_ttl(  # type: ignore[misc]
                        None if timeout is None else min(timeout, poll), None if timeout is None else poll
                    )
                finally:
                    self._ordered_queues = everything
                if result is None:
                    if timeout is None:
                        return None
                    continue
                if from_one_queue and len(self.queues) > 1:
                    self._leave_intermediate(result[1], result[0].id)
            job, queue = result
            if queue.name in self._paused_queues():
                # Paused while we were waiting: put the job back where it was.
                if from_one_queue and len(self.queues) == 1:
                    self._leave_intermediate(queue, job.id)
                queue.push_job_id(job.id, at_front=True)
                continue
            return result

    def _leave_intermediate(self, queue: rq.Queue, job_id: str) -> None:
        from rq.intermediate_queue import IntermediateQueue

        self.connection.lrem(IntermediateQueue(queue.key, self.connection).key, 1, job_id)

    # --- the mirror thread ----------------------------------------------------

    def work(self, *args: Any, **kwargs: Any) -> bool:
        conn = queues.new_redis(**self.redis_kwargs())
        with conn.pipeline() as pipe:
            pipe.sadd(PRODUCT_WORKERS, self.name)
            pipe.set(alive_key(self.name), "1", ex=settings.JOBS_WORKER_DEAD_AFTER)
            pipe.execute()
        # Forked now, before RQ starts its threads and before any job runs.
        self._mirror = MirrorProcess(self.redis_kwargs(), consumer=self.name, alive_key=alive_key(self.name))
        self._mirror.start()
        try:
            return super().work(*args, **kwargs)  # type: ignore[misc]
        finally:
            # Graceful shutdown: what this worker did is in the database before it exits.
            self._mirror.stop()
            with contextlib.suppress(redis_lib.RedisError):
                conn.srem(PRODUCT_WORKERS, self.name)

    def redis_kwargs(self) -> dict[str, Any]:
        """Options for the mirror's own connection, over the queues' (RQ raises the worker's timeout for BLPOP)."""
        return {"socket_timeout": 10}


class Worker(MirrorWorkerMixin, rq.Worker):
    """Forks a work horse per job, like RQ's Worker; the horse dies with its worker."""

    _worker_pid = 0

    def fork_work_horse(self, job: RQJob, queue: rq.Queue) -> None:
        self._worker_pid = os.getpid()
        super().fork_work_horse(job, queue)

    def setup_work_horse_signals(self) -> None:
        super().setup_work_horse_signals()
        _die_with(self._worker_pid)


#: prctl(2) option: the signal a process gets when its parent dies.
_PR_SET_PDEATHSIG = 1
#: Loaded once in the worker, not in every horse.
_LIBC = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with(worker_pid: int) -> None:
    """Make the work horse die when its worker does (Linux).

    RQ puts the horse in a process group of its own, so a worker killed alone
    would leave it running the job unwatched while the reconciler gives the
    job to another worker: the job would run twice at once.
    """
    if _LIBC is not None:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != worker_pid:  # the worker died before prctl took effect
        os._exit(1)


def _status_now(job: RQJob) -> RQStatus | None:
    """The job's status as Redis has it now (None: Redis forgot the job)."""
    try:
        return job.get_status(refresh=True)
    except InvalidJobOperation:
        return None


class SimpleWorker(MirrorWorkerMixin, rq.SimpleWorker):
    """Runs jobs in the worker process, like RQ's SimpleWorker."""


__all__ = ["PRODUCT_WORKERS", "MirroredJob", "RQStatus", "SimpleWorker", "Worker", "alive_key"]
