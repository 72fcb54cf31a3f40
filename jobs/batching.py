"""RQ's bookkeeping of a job in two Redis round trips instead of about eighteen (the pooled worker).

RQ's SimpleWorker talks to Redis some eighteen times per job: it sets its state, beats, waits for a
job (BLPOP), reads it, writes its start in two pipelines, beats the job at its end, watches the
job's dependents, writes its end, sets its state again and beats twice more. `BatchedWorkerMixin`
writes exactly the same keys and fields, in two round trips:

- **the start**: the execution, the worker's state, current job, working time and heartbeat, the
  job's start and the mirror's `started` event, in one pipeline (RQ's `prepare_execution` and
  `prepare_job_execution` in one), with the PERSIST of the job's key that RQ's `Job.perform` sends
  on its own just before the job's code runs (`BatchedJob`);
- **the end, and the next job**: the pipeline (MULTI/EXEC) that records the end (success, failure,
  retry, stop, with the mirror's event) also sets the worker idle, beats, and takes the next job:
  a Lua script (`TAKE`) pops the first id of the worker's queues in priority order, skipping paused
  queues, unless workers are suspended, and returns the job's hash. The next job needs no BLPOP and
  no read. When the script finds nothing, the worker waits on its queues as RQ does.

Priorities stay exact: every take looks at `high` before `default`, at the moment the last job ends.
A job taken and not started (its worker killed between the two round trips) is on no queue and
still `queued`: the reconciler puts it back (`jobs.reconcile.Adrift`), as for RQ's own BLPOP. A
worker that leaves with a job taken (a stop, `max_jobs`, its memory limit) puts it back at the
front of its queue first.

RQ's success path watches the job's dependents key (WATCH, then a read) so that dependents added
meanwhile are enqueued in the same transaction. The product never makes RQ dependencies
(`depends_on` appears nowhere in `jobs/`), so the end pipeline only asks whether the key exists, in
the same round trip; a job with dependents (enqueued through RQ by hand) has them enqueued right
after, by RQ's own `enqueue_dependents`, which watches the key itself.

This follows RQ 2.x's worker step by step; on RQ 3 (other executions, other hooks) the mixin steps
aside and RQ's own steps run (`ACTIVE`).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import rq
from redis.client import Pipeline
from rq.executions import Execution
from rq.job import Job as RQJob
from rq.suspension import WORKERS_SUSPENDED
from rq.utils import now, utcformat
from rq.worker import WorkerStatus

from jobs import queues, rqcompat
from jobs.errors import REDIS_ERRORS
from jobs.rqstore import MirroredJob

try:
    from rq.job import _job_stack  # RQ 2.x: the stack `get_current_job` reads
except ImportError:  # RQ 3 has none, and runs its own steps (`ACTIVE`)
    _job_stack = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: Whether the batched steps run (RQ 2.x); on RQ 3 the worker runs RQ's own.
ACTIVE = not rqcompat.RQ3

#: Takes the next job, inside the MULTI/EXEC that records the last one's end.
#: KEYS[1]: RQ's suspension flag; KEYS[2]: the paused-queue set; KEYS[3]: where the worker notes
#: what it took (`taken_key`); KEYS[4..]: the queues, highest priority first. ARGV[1]: the job key
#: prefix; ARGV[2]: the intermediate list to park the id in ('' for none: RQ keeps one only for a
#: worker on a single queue); ARGV[3]: seconds the note lives; ARGV[4..]: the queue names, in the
#: order of KEYS[4..]. Returns {queue key, job id, the job's hash as a flat list}, or nil.
#: An id whose job is gone is dropped, as RQ's dequeue does.
TAKE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
for i = 4, #KEYS do
  if redis.call('SISMEMBER', KEYS[2], ARGV[i]) == 0 then
    while true do
      local id = redis.call('LPOP', KEYS[i])
      if not id then break end
      local data = redis.call('HGETALL', ARGV[1] .. id)
      if #data > 0 then
        if ARGV[2] ~= '' then redis.call('RPUSH', ARGV[2], id) end
        redis.call('SET', KEYS[3], KEYS[i] .. ' ' .. id, 'EX', ARGV[3])
        return {KEYS[i], id, data}
      end
    end
  end
end
return false
"""

#: Seconds a worker's note of the job it took lives (it is deleted when the job starts).
TAKEN_TTL = 3600


def taken_key(worker_name: str) -> str:
    """Where a batching worker notes the job its last take popped (`<queue key> <job id>`), until
    the job starts: what it took when the answer of a transaction Redis applied never arrived."""
    return f"jobs:taken:{worker_name}"


#: Seconds a heartbeat written in a pipeline counts as fresh: RQ's loop beats again right after a
#: job, and before and after each wait; within this, those beats are not sent again.
BEAT_FRESH = 1.0

#: Called with the id of each job taken at a job's end, before it starts (tests only: a worker
#: killed between the two).
on_take: Callable[[str], None] | None = None


class BatchedJob(MirroredJob):
    """The product's job, as a batching worker runs it: its key was made persistent with its start
    (`prepare_job_execution`), so `perform` does not send RQ's PERSIST again on its own."""

    _persisted = False

    def perform(self) -> Any:
        if not self._persisted:
            return super().perform()
        self._persisted = False
        # RQ 2.x's `Job.perform` from here on (`ACTIVE`): the job on RQ's stack (`get_current_job`), its code run.
        assert _job_stack is not None
        _job_stack.push(self)
        try:
            self._result = self._execute()
        finally:
            assert self is _job_stack.pop()
        return self._result


class BatchedWorkerMixin:
    """Mix into a SimpleWorker (before the mirror's mixin): RQ's per-job bookkeeping in two round trips."""

    name: str
    connection: Any
    queues: list[rq.Queue]
    _ordered_queues: list[rq.Queue]
    _stop_requested: bool
    job_class: type[RQJob]
    serializer: Any
    execution: Any
    _execution_in_hand: Any
    default_result_ttl: int
    log: logging.Logger

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        job_class = kwargs.get("job_class")
        if job_class is None or isinstance(job_class, str) or not issubclass(job_class, BatchedJob):
            kwargs["job_class"] = BatchedJob
        super().__init__(*args, **kwargs)
        self._batching = False  # set by work(): a worker built only to record an end takes nothing
        self._held: tuple[RQJob, rq.Queue] | None = None
        self._start_pipe: Pipeline | None = None
        self._state_written: str | None = None
        self._beat_at = 0.0
        self._end_beat = False
        self._take_error: Exception | None = None
        self._take_unanswered = False
        self._taken_at: int | None = None  # where the take's reply is in the end's transaction

    def work(self, *args: Any, **kwargs: Any) -> bool:
        with self.batching():
            return super().work(*args, **kwargs)  # type: ignore[misc]

    @contextlib.contextmanager
    def batching(self) -> Iterator[None]:
        """Around the worker's loop: the batched steps run inside it (RQ 2.x)."""
        self._batching = ACTIVE
        try:
            yield
        finally:
            self._batching = False

    def _may_take(self) -> bool:
        """Whether a job's end may take the next: not when this worker leaves after it."""
        return self._batching and not self._stop_requested and not getattr(self, "_interrupted", False)

    # --- the loop: a job in hand needs no wait, no suspension check, no beat ---

    def check_for_suspension(self, burst: bool) -> None:
        if self._held is not None:
            return  # the take found workers not suspended
        super().check_for_suspension(burst)  # type: ignore[misc]

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        if self._take_error is not None:
            error, self._take_error = self._take_error, None
            raise error  # as RQ's dequeue raises on a job it cannot read: the worker stops
        if self._take_unanswered:
            with contextlib.suppress(*REDIS_ERRORS):  # Redis failed again: the next round tries again
                self._recover_take()
        held, self._held = self._held, None
        if held is None:
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)  # type: ignore[misc]
        self.reorder_queues(reference_queue=held[1])  # type: ignore[attr-defined]
        return held

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        if pipeline is None and timeout is None and time.monotonic() - self._beat_at < BEAT_FRESH:
            return
        super().heartbeat(timeout, pipeline=pipeline)  # type: ignore[misc]
        if pipeline is None:
            self._beat_at = time.monotonic()

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        if pipeline is None and state == self._state_written:
            self._state = state
            return
        busy = getattr(self, "_state", None) == WorkerStatus.BUSY
        super().set_state(state, pipeline=pipeline)  # type: ignore[misc]
        # Written now, or by a pipeline that may fail: known once it did not (`_executed`).
        self._state_written = state if pipeline is None else None
        self._pipe_state = state
        if busy and pipeline is not None:
            # A warm stop reads this state (RQ's `_shutdown`): idle, it raises StopRequested wherever
            # the worker is. The end's transaction writes the worker idle in Redis, but here the worker
            # stays busy until it next waits on its queues (RQ's dequeue writes it idle then): while
            # the end is on its way (a round trip, or a wait for Redis) and while it holds the job the
            # end took, a warm stop is noted and the loop stops before the next job.
            self._state = WorkerStatus.BUSY

    _state: str
    _pipe_state: str | None = None
    _start_sent: bool

    def _executed(self) -> None:
        """A batched pipeline went through: its state and heartbeat are in Redis."""
        self._state_written = self._pipe_state
        self._beat_at = time.monotonic()

    # --- the start, in one pipeline ---

    def prepare_execution(self, job: RQJob) -> Any:
        """RQ's, written with the job's start (`prepare_job_execution`) in one pipeline."""
        if not self._batching:
            return super().prepare_execution(job)  # type: ignore[misc]
        pipe = self.connection.pipeline()
        ttl = self.get_heartbeat_ttl(job)  # type: ignore[attr-defined]
        self.execution = Execution.create(job, ttl, pipeline=pipe, worker_name=self.name)
        self.set_state(WorkerStatus.BUSY, pipeline=pipe)
        self._start_pipe = pipe
        self._execution_in_hand = self.execution
        self._start_sent = False  # sent with the job's start (`prepare_job_execution`)
        return self.execution

    def prepare_job_execution(self, job: RQJob, remove_from_intermediate_queue: bool = False) -> None:
        pipe, self._start_pipe = self._start_pipe, None
        if pipe is None:
            super().prepare_job_execution(job, remove_from_intermediate_queue)  # type: ignore[misc]
            return
        try:  # RQ 2.x's, in the pipeline the execution is in
            self.set_current_job_id(job.id, pipeline=pipe)  # type: ignore[attr-defined]
            self.set_current_job_working_time(0, pipeline=pipe)  # type: ignore[attr-defined]
            heartbeat_ttl = self.get_heartbeat_ttl(job)  # type: ignore[attr-defined]
            self.heartbeat(heartbeat_ttl, pipeline=pipe)
            job.heartbeat(now(), heartbeat_ttl, pipeline=pipe)
            job.prepare_for_execution(self.name, pipeline=pipe)
            pipe.delete(taken_key(self.name))
            if remove_from_intermediate_queue:
                pipe.lrem(rq.Queue(job.origin, connection=self.connection).intermediate_queue_key, 1, job.id)
            if isinstance(job, BatchedJob):
                pipe.persist(job.key)  # RQ's `perform` sends it right after this pipeline otherwise
            pipe.execute()
            self._start_sent = True
            self._executed()
            if isinstance(job, BatchedJob):
                job._persisted = True
        finally:
            pipe.reset()
        self.procline(f"Processing {job.func_name} from {job.origin} since {time.time()}")  # type: ignore[attr-defined]

    # --- the end, with the next job ---

    def handle_execution_ended(self, job: RQJob, queue: rq.Queue, heartbeat_ttl: int) -> None:
        """RQ's beats the job before its callbacks run; without callbacks, the beat goes with the end."""
        if not self._batching or job._success_callback_name or job._failure_callback_name:
            super().handle_execution_ended(job, queue, heartbeat_ttl)  # type: ignore[misc]
            return
        job.ended_at = now()
        job.last_heartbeat = now()
        self._end_beat = True

    def _beat_job(self, job: RQJob, pipeline: Pipeline) -> None:
        if self._end_beat:
            self._end_beat = False
            assert job.last_heartbeat is not None
            pipeline.hset(job.key, "last_heartbeat", utcformat(job.last_heartbeat))

    def handle_job_success(self, job: RQJob, queue: rq.Queue, *args: Any, **kwargs: Any) -> None:
        """RQ 2.x's, in one MULTI/EXEC without RQ's WATCH of the dependents (see the module). A run
        whose job has moved on to a later attempt (`MirrorWorkerMixin._handed_on`) records only its end.
        (RQ 3 passes the execution too: its own steps run.)"""
        if not self._batching or self._handed_on(job):  # type: ignore[attr-defined]
            super().handle_job_success(job, queue, *args, **kwargs)  # type: ignore[misc]
            return
        self._until_recorded(job, lambda: self._record_success(job, queue))  # type: ignore[attr-defined]

    def _record_success(self, job: RQJob, queue: rq.Queue) -> None:
        with self.connection.pipeline() as pipeline:
            self._beat_job(job, pipeline)
            dependents_at = len(pipeline.command_stack)
            pipeline.exists(job.dependents_key)
            self.increment_successful_job_count(pipeline=pipeline)  # type: ignore[attr-defined]
            assert job.started_at is not None
            assert job.ended_at is not None
            took = job.ended_at - job.started_at
            self.increment_total_working_time(took, pipeline)  # type: ignore[attr-defined]
            result_ttl = job.get_result_ttl(self.default_result_ttl)
            if result_ttl != 0:
                execution = self.execution
                job._handle_success(
                    result_ttl,
                    pipeline=pipeline,
                    worker_name=self.name,
                    execution_id=execution.id if execution else None,
                    execution_started_at=execution.created_at if execution else None,
                    execution_ended_at=job.ended_at,
                )
            if job.repeats_left is not None and job.repeats_left > 0:
                from rq.repeat import Repeat

                self.log.info("Worker %s: job %s scheduled to repeat (%s left)", self.name, job.id, job.repeats_left)
                Repeat.schedule(job, queue, pipeline=pipeline)
            else:
                job.cleanup(result_ttl, pipeline=pipeline, remove_from_queue=False)
            self.cleanup_execution(job, pipeline=pipeline)  # the mirror's event, the next job
            results = pipeline.execute()
        if results[dependents_at]:
            queue.enqueue_dependents(job)
        self.log.info("Successfully completed job %s in %ss on worker %s", job.id, took, self.name)

    def cleanup_execution(self, job: RQJob, pipeline: Pipeline, execution: Any = None) -> None:
        """Runs in every pipeline that records a job's end: the worker's state and beat go with it,
        and the next job is taken there."""
        if self._batching:
            self._beat_job(job, pipeline)
        super().cleanup_execution(job, pipeline, **rqcompat.execution_kwargs(execution))  # type: ignore[misc]
        if not self._batching:
            return
        self.set_state(WorkerStatus.IDLE, pipeline=pipeline)
        self.heartbeat(pipeline=pipeline)
        self._taken_at = self._take(pipeline) if self._may_take() else None

    def _take(self, pipeline: Pipeline) -> int:
        """Append the take of the next job to the pipeline; the index of its reply."""
        ordered = self._ordered_queues
        intermediate = ordered[0].intermediate_queue_key if len(self.queues) == 1 else ""
        at = len(pipeline.command_stack)
        pipeline.eval(
            TAKE,
            3 + len(ordered),
            WORKERS_SUSPENDED,
            queues.PAUSED_KEY,
            taken_key(self.name),
            *(queue.key for queue in ordered),
            self.job_class.redis_job_namespace_prefix,
            intermediate,
            TAKEN_TTL,
            *(queue.name for queue in ordered),
        )
        return at

    def _end_sent(self, results: list[Any]) -> None:
        """The end's transaction went through (`MirrorWorkerMixin._note_landing`): the worker's state
        and beat are written, and the job it took is held for the loop's next round."""
        super()._end_sent(results)  # type: ignore[misc]
        taken_at, self._taken_at = self._taken_at, None
        if not self._batching:
            return
        self._take_unanswered = False
        self._executed()
        if taken_at is not None and taken_at < len(results):
            self._hold(results[taken_at])

    def _end_not_sent(self) -> None:
        super()._end_not_sent()  # type: ignore[misc]
        taken_at, self._taken_at = self._taken_at, None
        self._take_unanswered = taken_at is not None

    def _hold(self, reply: Any) -> None:
        """Keep the job the take returned, read as `Job.fetch` reads it, for the loop's next round."""
        if not reply or isinstance(reply, Exception):
            return
        queue_key, job_id, flat = reply
        queue = next((queue for queue in self.queues if queue.key == queue_key.decode()), None)
        if queue is None:
            return
        job = self.job_class(job_id.decode(), connection=self.connection, serializer=self.serializer)
        try:
            job.restore(dict(zip(flat[::2], flat[1::2], strict=True)))
        except Exception as exc:  # raised from the loop's next dequeue, not from this job's end
            exc.job_id = job.id  # type: ignore[attr-defined]
            self._take_error = exc
            return
        job.redis_server_version = self.get_redis_server_version()  # type: ignore[attr-defined]
        self._held = (job, queue)
        self.log.debug("Worker %s: took job %s from %s", self.name, job.id, queue.name)
        if on_take is not None:
            on_take(job.id)

    def _recover_take(self) -> None:
        """A transaction with a take in it failed, maybe after Redis applied it (only its answer
        lost): the job it popped is on no queue, and only this worker knows. Hold it, as the answer
        would have (without this, the reconciler puts it back once it has been adrift a while)."""
        if not self._wait_for_redis():  # type: ignore[attr-defined]
            return  # asked to stop: the reconciler puts it back
        note: Any = self.connection.get(taken_key(self.name))
        self._take_unanswered = False
        if not note:
            return  # the transaction never ran: nothing was taken
        queue_key, job_id = note.decode().split(" ", 1)
        flat: Any = self.connection.hgetall(self.job_class.key_for(job_id))
        if flat.get(b"status") != b"queued":
            return
        log.info("worker %s: job %s taken in a transaction whose answer was lost; running it", self.name, job_id)
        self._hold([queue_key.encode(), job_id.encode(), [item for pair in flat.items() for item in pair]])

    # --- leaving with a job in hand ---

    def put_back_held(self) -> None:
        """Put a job taken and not started back at the front of its queue (this worker leaves)."""
        held, self._held = self._held, None
        if held is None:
            return
        job, queue = held
        try:
            with self.connection.pipeline() as pipe:
                if len(self.queues) == 1:
                    pipe.lrem(queue.intermediate_queue_key, 1, job.id)
                pipe.lpush(queue.key, job.id)
                pipe.execute()
            log.info("worker %s: job %s put back on %s", self.name, job.id, queue.name)
        except REDIS_ERRORS as exc:
            log.warning("worker %s: job %s not put back (%s); the reconciler will", self.name, job.id, exc)

    def teardown(self) -> None:
        with contextlib.suppress(Exception):
            self.put_back_held()
        super().teardown()  # type: ignore[misc]


__all__ = ["ACTIVE", "TAKE", "BatchedJob", "BatchedWorkerMixin"]
