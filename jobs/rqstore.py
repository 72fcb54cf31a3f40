"""The product's jobs as RQ stores them in Redis: the RQ job class, building and staging RQ jobs for
history rows, forgetting them, and the atomic moves that actions race against workers and the scheduler.

Below `jobs.services` (the public actions) and `jobs.worker`: both use it, it uses neither.

What must not happen twice or half is done by one Lua script each, so it is atomic with what a worker
or the scheduler does to the same job:

- `take_off`: a waiting job leaves its queue or the schedule for good, only if it is still there
  (a worker that has already popped it wins: the cancel is refused, the job runs and is recorded);
- `promote_now`: a delayed job moves from the schedule to its queue, only if it is still scheduled
  (the scheduler and a user promoting at once push it once);
- `put_back`: a queued job that a worker took off its queue and died with before starting it goes
  back to the front of its queue, only if it is still queued and on no queue;
- `take_back`: the jobs of a creation whose answer was lost leave Redis, only if they still wait
  (a worker that has already popped one wins: the creation stands, rows and all).
"""

from __future__ import annotations

import calendar
import contextlib
import enum
import logging
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import redis as redis_lib
from rq.job import Job as RQJob
from rq.job import JobStatus, Retry
from rq.queue import Queue

from jobs import events, queues, registry, runner
from jobs.errors import REDIS_ERRORS, QueueUnavailable

if TYPE_CHECKING:
    from redis.client import Pipeline

    from jobs.models import Job

log = logging.getLogger(__name__)

#: What every RQ job of the product calls: nothing else can run (see `jobs.runner`).
RUN_FUNC = f"{runner.run.__module__}.{runner.run.__qualname__}"


def unavailable(exc: BaseException) -> QueueUnavailable:
    """The `QueueUnavailable` to raise (``from exc``) for a Redis failure: the failure is logged
    here, and only a generic message goes on (Redis's own names its host and port)."""
    log.warning("the job queue is unavailable: %s: %s", type(exc).__name__, exc)
    return QueueUnavailable()


@contextlib.contextmanager
def unavailable_on_error() -> Iterator[None]:
    """Turn a Redis failure into `QueueUnavailable` (also usable as a decorator)."""
    try:
        yield
    except REDIS_ERRORS as exc:
        raise unavailable(exc) from exc


class MirroredJob(RQJob):
    """RQ's job, whose start is also appended to the event stream, in the pipeline RQ sends anyway.

    A job the product did not create (its callable is not the runner) is announced first, so
    the history gets a row for it, and it runs only when its callable is listed in
    JOBS_EXTERNAL_CALLABLES: otherwise it fails, with a message saying why, without running.
    """

    def prepare_for_execution(self, worker_name: str, pipeline: Pipeline) -> None:
        super().prepare_for_execution(worker_name, pipeline)
        attempt = events.attempt_number(self)
        if self.func_name != RUN_FUNC:
            enqueued = self.enqueued_at.timestamp() if self.enqueued_at else None
            events.emit(
                pipeline,
                self.id,
                events.EXTERNAL,
                attempt,
                f=self.func_name,
                o=self.origin,
                c=enqueued,
                ar=_preview(self),
            )
        events.emit(pipeline, self.id, events.STARTED, attempt, w=worker_name, mx=events.max_attempts(self))

    #: Set by the worker on a run that must not be retried whatever retries are left (see
    #: `jobs.worker`); `retries_left` itself still counts the attempts.
    no_retry = False

    @property
    def should_retry(self) -> bool:
        return not self.no_retry and super().should_retry

    def retry(self, queue: Queue, pipeline: Pipeline) -> None:
        """RQ's, with a delayed retry written in the transaction that records the failure (`schedule`)."""
        interval = self.get_retry_interval()
        if not interval:
            super().retry(queue, pipeline)
            return
        assert self.retries_left
        self.retries_left -= 1
        due = datetime.now(tz=UTC) + timedelta(seconds=interval)
        schedule(queue, self, due, pipeline)
        log.info("job %s: scheduled for retry at %s, %s remaining", self.id, due, self.retries_left)

    def _execute(self) -> Any:
        if self.func_name != RUN_FUNC and not runner.allowed_external(self.func_name):
            raise runner.refusal(self.func_name)
        return super()._execute()


def schedule(queue: Queue, job: RQJob, due: datetime, pipe: Pipeline) -> None:
    """What `Queue.schedule_job` writes, all of it in `pipe`.

    RQ 2.12 adds the job to the scheduled registry at once, outside the caller's transaction (and
    its retry writes the job's status at once too). A transaction Redis then refused, or lost with a
    restart, left the job due all the same: a failure's retry then ran as the same attempt again,
    its count never written; a creation refused left an entry for a job never saved.
    """
    pipe.sadd(queue.redis_queues_keys, queue.key)
    job.set_status(JobStatus.SCHEDULED, pipeline=pipe)
    job.save(pipeline=pipe)
    job.cleanup(ttl=job.ttl, pipeline=pipe)
    pipe.zadd(queue.scheduled_job_registry.key, {job.id: calendar.timegm(due.utctimetuple())})


def job_type(rq_job: RQJob) -> registry.JobType | None:
    """The registered type an RQ job runs, or None (a job the product did not create, or a type since removed)."""
    if rq_job.func_name != RUN_FUNC or not rq_job.args:
        return None
    return registry.find(rq_job.args[0])


def type_name(rq_job: RQJob) -> str:
    """The name of the job type an RQ job runs (`external` for one the product did not create), for the logs."""
    try:
        if rq_job.func_name == RUN_FUNC and rq_job.args:
            return str(rq_job.args[0])
    except Exception:  # a job whose data cannot be read is still logged, as external
        pass
    return events.EXTERNAL_TYPE


def _preview(job: RQJob) -> str:
    """A job's arguments as text, bounded (they are only shown)."""
    try:
        text = repr((tuple(job.args or ()), dict(job.kwargs or {})))
    except Exception:  # arguments that cannot be read are shown as such
        text = "(unreadable)"
    return text[:1000]


def setting(name: str) -> Any:
    from django.conf import settings

    return getattr(settings, name)


def build_rq_job(row: Job, spec: registry.JobType) -> RQJob:
    """The RQ job for a row's next attempts: the rest of its retry policy's round."""
    rq_job = queues.get_queue(row.queue).create_job(
        RUN_FUNC,
        job_id=row.rq_id,
        timeout=row.timeout,
        result_ttl=setting("JOBS_RESULT_TTL"),
        failure_ttl=setting("JOBS_FAILURE_TTL"),
    )
    return point_at(rq_job, row, spec)


def point_at(rq_job: RQJob, row: Job, spec: registry.JobType) -> RQJob:
    """Make an RQ job of the row's queue and timeout the one for the row's next attempts.

    Everything of a job that is the row's own, set through RQ's public
    attributes as `Job.create` sets them: a bulk enqueue re-points one RQ job
    object at each row in turn and saves it, rather than creating thousands.
    """
    retries = max(0, row.max_attempts - row.attempts - 1)
    retry = Retry(max=retries, interval=spec.retry.delays()) if retries else None
    rq_job.id = row.rq_id
    rq_job.args = (row.type, row.params)
    rq_job.description = f"{row.type} {row.rq_id}"
    rq_job.meta = {"attempt_base": row.attempts, "retries": retries}
    rq_job.retries_left = retry.max if retry else None
    rq_job.retry_intervals = retry.intervals if retry else None
    return rq_job


def push(rows: Sequence[Job]) -> None:
    """Put the rows' jobs on their queues (or in the scheduled registry) in one round trip."""
    with queues.redis().pipeline() as pipe:
        pipe.multi()
        landing = stage(rows, pipe)
        send(pipe, landing)


@dataclass
class Landing:
    """What a staged transaction adds, for `send` to take back when Redis runs it too late."""

    #: queue key -> how many ids the transaction pushes at its tail
    pushed: dict[str, int] = field(default_factory=dict)
    #: the scheduled registries it adds to, and the jobs it schedules
    scheduled: set[str] = field(default_factory=set)
    scheduled_ids: list[str] = field(default_factory=list)


def stage(rows: Sequence[Job], pipe: Any) -> Landing:
    """Add to a pipeline what puts the rows' jobs on their queues (or in the scheduled registry).

    What `Queue.enqueue_job` writes, but with one RPUSH per queue for all its
    jobs instead of a status write, a queue-set write and a push per job, and
    one RQ job object per queue and timeout, re-pointed at each row and saved.
    Send the pipeline with `send`.
    """
    from django.utils import timezone

    now = timezone.now()
    landing = Landing()
    ready: dict[str, list[str]] = {}
    shared: dict[tuple[str, int], RQJob] = {}
    for row in rows:
        queue = queues.get_queue(row.queue)
        spec = registry.get(row.type)
        due = row.scheduled_for
        if due is not None and due > now:
            schedule(queue, build_rq_job(row, spec), due, pipe)
            landing.scheduled.add(queue.scheduled_job_registry.key)
            landing.scheduled_ids.append(row.rq_id)
            continue
        rq_job = shared.get((row.queue, row.timeout))
        if rq_job is None:
            rq_job = shared[row.queue, row.timeout] = build_rq_job(row, spec)
            queue._prepare_for_queue(rq_job)  # origin, enqueued_at, status: queued
        else:
            point_at(rq_job, row, spec)
        rq_job.save(pipeline=pipe)
        ready.setdefault(row.queue, []).append(rq_job.id)
    for name, job_ids in ready.items():
        queue = queues.get_queue(name)
        pipe.sadd(queue.redis_queues_keys, queue.key)
        pipe.rpush(queue.key, *job_ids)
        landing.pushed[queue.key] = len(job_ids)
    return landing


#: Run last in a staged transaction. KEYS: the queue lists pushed to, the scheduled registries
#: added to. ARGV: the deadline (Redis clock, seconds), how many queue lists, the job hash key
#: prefix, how many ids were pushed at the tail of each list, then the scheduled job ids.
#: Returns 1 when in time; when late, takes back all the transaction added and returns 0.
_VOID_IF_LATE = """
local clock = redis.call('time')
if tonumber(clock[1]) + tonumber(clock[2]) / 1000000 <= tonumber(ARGV[1]) then return 1 end
local lists, prefix = tonumber(ARGV[2]), ARGV[3]
for i = 1, lists do
    local pushed = tonumber(ARGV[3 + i])
    for _, id in ipairs(redis.call('lrange', KEYS[i], -pushed, -1)) do redis.call('del', prefix .. id) end
    redis.call('ltrim', KEYS[i], 0, -pushed - 1)
end
for j = 4 + lists, #ARGV do
    for i = lists + 1, #KEYS do redis.call('zrem', KEYS[i], ARGV[j]) end
    redis.call('del', prefix .. ARGV[j])
end
return 0
"""

#: Per connection pool (one Redis server): (Redis clock - this process's clock, when measured).
_clocks: weakref.WeakKeyDictionary[Any, tuple[float, float]] = weakref.WeakKeyDictionary()
CLOCK_CHECK_SECONDS = 300.0


def _redis_clock_offset(pool: Any) -> float:
    """How far the Redis server's clock is ahead of this process's (measured every few minutes)."""
    now = time.monotonic()
    known = _clocks.get(pool)
    if known is None or now - known[1] > CLOCK_CHECK_SECONDS:
        before = time.time()
        seconds, micros = cast(tuple[int, int], redis_lib.Redis(connection_pool=pool).time())
        after = time.time()
        known = _clocks[pool] = (seconds + micros / 1_000_000 - (before + after) / 2, now)
    return known[0]


def send(pipe: Any, landing: Landing) -> list[Any]:
    """Execute a transaction built with `stage`; its answers, without the guard's.

    A client that waits longer than its socket timeout gives up (the caller answers 503 and
    rolls its rows back), but a Redis that was only slow (paused, swapping) still runs the
    transaction it received: its jobs would run without rows. So the transaction ends with a
    guard that takes back all it added when Redis runs it after half the client's timeout,
    and a late run is refused here too: the caller's rows roll back, nothing runs.
    """
    timeout = pipe.connection_pool.connection_kwargs.get("socket_timeout")
    if not timeout:
        return list(pipe.execute())  # the client waits as long as Redis takes: it always hears
    deadline = time.time() + _redis_clock_offset(pipe.connection_pool) + timeout / 2
    keys = [*landing.pushed, *landing.scheduled]
    pipe.eval(
        _VOID_IF_LATE,
        len(keys),
        *keys,
        f"{deadline:.6f}",
        len(landing.pushed),
        RQJob.redis_job_namespace_prefix,
        *landing.pushed.values(),
        *landing.scheduled_ids,
    )
    *answers, in_time = pipe.execute()
    if not in_time:
        log.warning("the job queue ran a transaction too late to answer in time: taken back")
        raise QueueUnavailable()
    return answers


#: A transaction sent with `send` whose answer was lost (the connection dropped, or the socket timed
#: out, after Redis ran EXEC) may have been applied: its jobs are then taken back through a fresh
#: connection, trying again while this many seconds last (short: the caller waits for them), or
#: longer after a dropped connection (`take_back_seconds`).
TAKE_BACK_SECONDS = 0.3


def take_back_seconds(after: BaseException | None) -> float:
    """How long a take-back may try to reach Redis after `after`, the error that lost the answer.

    After a socket timeout the caller has waited that long already: `TAKE_BACK_SECONDS` more. After a
    dropped connection (Redis killed just after EXEC, restarting from its append-only file) it has
    waited nothing: up to the socket timeout, time for a restart to come back, and the caller's
    answer still comes within the same bound. (Given up too soon, the jobs stayed in Redis without
    rows, their creator told they were refused; the chaos run found it.)
    """
    if after is None or isinstance(after, redis_lib.TimeoutError):
        return TAKE_BACK_SECONDS
    return max(TAKE_BACK_SECONDS, float(setting("REDIS_SOCKET_TIMEOUT")))


#: Run in one step on a transaction's jobs. KEYS: for each queue, its list and its scheduled registry.
#: ARGV: the job hash key prefix, "all" (take back all or none) or "waiting" (take back whatever
#: waits), then for each job the index of its queue (1-based) and its id.
#: A job waits when it is on its queue or in the schedule; it is in a worker's hands when Redis has
#: it and it waits nowhere (popped, maybe not started yet). With "all", a job in a worker's hands
#: leaves every job as it is. Returns {taken back, in a worker's hands}.
#: The queued jobs are looked for from the tail of their list, where the transaction pushed them,
#: a chunk at a time, and the part of the tail that holds them is written back without them: the
#: work grows with the jobs and what was pushed after them, not with the whole queue.
_TAKE_BACK = """
local prefix, all, chunk_size = ARGV[1], ARGV[2] == 'all', 1000
local queue_of, wanted, scheduled = {}, {}, {}
for i = 3, #ARGV, 2 do
    local q, id = tonumber(ARGV[i]), ARGV[i + 1]
    if redis.call('zscore', KEYS[2 * q], id) then
        scheduled[#scheduled + 1] = {q, id}
    else
        queue_of[id] = q
        wanted[q] = (wanted[q] or 0) + 1
    end
end
local found, depth = {}, {}
for q, count in pairs(wanted) do
    local seen, scanned = 0, 0
    while seen < count do
        local chunk = redis.call('lrange', KEYS[2 * q - 1], -(scanned + chunk_size), -(scanned + 1))
        for j = #chunk, 1, -1 do
            if queue_of[chunk[j]] == q and not found[chunk[j]] then
                found[chunk[j]] = true
                seen = seen + 1
                depth[q] = scanned + #chunk - j + 1
            end
        end
        scanned = scanned + #chunk
        if #chunk < chunk_size then break end
    end
end
local held = 0
for id in pairs(queue_of) do
    if not found[id] and redis.call('exists', prefix .. id) == 1 then held = held + 1 end
end
if all and held > 0 then return {0, held} end
local taken = 0
for _, job in ipairs(scheduled) do
    redis.call('zrem', KEYS[2 * job[1]], job[2])
    redis.call('del', prefix .. job[2])
    taken = taken + 1
end
for q, d in pairs(depth) do
    local key = KEYS[2 * q - 1]
    local tail, kept = redis.call('lrange', key, -d, -1), {}
    redis.call('ltrim', key, 0, -d - 1)
    for _, id in ipairs(tail) do
        if found[id] then
            redis.call('del', prefix .. id)
            taken = taken + 1
        else
            kept[#kept + 1] = id
        end
    end
    for k = 1, #kept, chunk_size do
        redis.call('rpush', key, unpack(kept, k, math.min(k + chunk_size - 1, #kept)))
    end
end
return {taken, held}
"""


class TakeBack(enum.Enum):
    """What `take_back` found."""

    #: None of the jobs is in Redis any more: none will run.
    DONE = "taken back"
    #: A worker had already taken one of them (with `all_or_none`, every job was left as it was;
    #: without, the others were taken back).
    RUNNING = "in a worker's hands"
    #: Redis could not be reached: what it holds of them is unknown.
    UNREACHABLE = "unreachable"


def maybe_applied(exc: BaseException) -> bool:
    """Whether a transaction that failed with `exc` may have been applied all the same: always,
    but when no connection could even be opened (then nothing was sent)."""
    return "connecting to" not in str(exc)


def take_back(rows: Sequence[Job], *, all_or_none: bool, why: str, after: BaseException | None = None) -> TakeBack:
    """Take back from Redis the jobs a transaction built with `stage` may have added (its answer was
    lost, or the database refused the rows), in one atomic step through a fresh connection, trying
    again for at most `take_back_seconds(after)` (`after`: the error that lost the answer); `why` goes
    in the log.

    Only jobs still on their queue or in the schedule are taken back, their hash deleted with them.
    A job a worker has already popped is the worker's (atomically against the pop, as for a cancel):
    it runs. So with `all_or_none`, such a job leaves every job as it is (`RUNNING`): the transaction
    was applied and cannot be undone whole, and the caller keeps it whole, rows and all. Without,
    whatever waits is taken back and a job a worker has runs without its row (logged).
    """
    queue_names = sorted({row.queue for row in rows})
    keys: list[str] = []
    for name in queue_names:
        queue = queues.get_queue(name)
        keys += [queue.key, queue.scheduled_job_registry.key]
    args: list[Any] = [RQJob.redis_job_namespace_prefix, "all" if all_or_none else "waiting"]
    for row in rows:
        args += [queue_names.index(row.queue) + 1, row.rq_id]
    deadline = time.monotonic() + take_back_seconds(after)
    failure: BaseException | None = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        conn = queues.new_redis(socket_timeout=left, socket_connect_timeout=left)
        try:
            taken, held = cast(list[int], conn.eval(_TAKE_BACK, len(keys), *keys, *args))
        except REDIS_ERRORS as exc:
            failure = exc
            time.sleep(max(0.0, min(0.05, deadline - time.monotonic())))
            continue
        finally:
            conn.close()
        if held:
            then = "all left in Redis" if all_or_none else f"{taken} taken back; the others run without their rows"
            log.warning("%s: %s of %s jobs were already in a worker's hands: %s", why, held, len(rows), then)
            return TakeBack.RUNNING
        if taken:
            log.warning("%s: %s jobs were taken back from Redis", why, taken)
        return TakeBack.DONE
    log.error(
        "%s: %s jobs could not be taken back either (%s: %s); a worker may run them without their rows",
        why,
        len(rows),
        type(failure).__name__,
        failure,
    )
    return TakeBack.UNREACHABLE


def fetch(job_id: str) -> RQJob | None:
    from rq.exceptions import NoSuchJobError

    try:
        return MirroredJob.fetch(job_id, connection=queues.redis(), serializer=queues.SERIALIZER)
    except NoSuchJobError:
        return None


def forget(rows: Sequence[Job], pipe: Any) -> None:
    """Take the rows' old RQ jobs out of every registry and delete them, before they are enqueued anew.

    Left in the started registry, RQ's own registry cleanup would later treat a job
    as abandoned and retry or fail it behind our back.
    """
    by_queue: dict[str, list[Job]] = {}
    for row in rows:
        by_queue.setdefault(row.queue, []).append(row)
    for name, queue_rows in by_queue.items():
        queue = queues.get_queue(name)
        ids = [row.rq_id for row in queue_rows]
        for registry_ in (
            queue.failed_job_registry,
            queue.finished_job_registry,
            queue.canceled_job_registry,
            queue.scheduled_job_registry,
            queue.deferred_job_registry,
        ):
            pipe.zrem(registry_.key, *ids)
        forget_executions(queue, ids, pipe)
        pipe.delete(*(RQJob.key_for(job_id) for job_id in ids))


def executions_of(queue: Any, job_ids: Sequence[str], conn: Any = None) -> list[str]:
    """The jobs' entries (`<job id>:<execution id>`) in the queue's started registry (one read)."""
    ids = set(job_ids)
    members: list[bytes] = cast(list[bytes], (conn or queues.redis()).zrange(queue.started_job_registry.key, 0, -1))
    return [member.decode() for member in members if member.split(b":", 1)[0].decode() in ids]


def forget_executions(queue: Any, job_ids: Sequence[str], pipe: Any) -> None:
    """Drop the jobs' entries from the started registry (`executions_of`)."""
    stale = executions_of(queue, job_ids)
    if stale:
        pipe.zrem(queue.started_job_registry.key, *stale)


# --- atomic moves ---------------------------------------------------------------------------------

#: The first lines of an action's script: a script Redis runs after its deadline (ARGV[1], Redis
#: clock, seconds; '' for none) does nothing and answers -1. Redis paused or swapping runs what it
#: was sent once it wakes, after the client has given up and answered 503: the action must not
#: happen then behind the caller's back.
_UNLESS_LATE = """
if ARGV[1] ~= '' then
    local clock = redis.call('time')
    if tonumber(clock[1]) + tonumber(clock[2]) / 1000000 > tonumber(ARGV[1]) then return -1 end
end
"""

#: KEYS: queue list, scheduled registry, deferred registry, job hash, canceled registry.
#: ARGV: deadline, job id, now (epoch seconds), canceled registry expiry (epoch seconds).
#: Returns 1 when the job was taken off (and marked canceled), 0 when it was nowhere to take it from.
_TAKE_OFF = (
    _UNLESS_LATE
    + """
local removed = redis.call('lrem', KEYS[1], 0, ARGV[2])
removed = removed + redis.call('zrem', KEYS[2], ARGV[2]) + redis.call('zrem', KEYS[3], ARGV[2])
if removed == 0 then return 0 end
if redis.call('exists', KEYS[4]) == 1 then
    redis.call('hset', KEYS[4], 'status', 'canceled')
end
redis.call('zadd', KEYS[5], ARGV[4], ARGV[2])
return 1
"""
)

#: KEYS: scheduled registry, queue list, job hash, the set of queue keys.
#: ARGV: deadline, job id, enqueued_at (RQ's format), queue key, "front" or "back".
#: Returns 1 when the job moved onto its queue, 0 when it was not scheduled any more.
_PROMOTE = (
    _UNLESS_LATE
    + """
if redis.call('zrem', KEYS[1], ARGV[2]) == 0 then return 0 end
redis.call('hset', KEYS[3], 'status', 'queued', 'enqueued_at', ARGV[3])
redis.call('sadd', KEYS[4], ARGV[4])
if ARGV[5] == 'front' then redis.call('lpush', KEYS[2], ARGV[2]) else redis.call('rpush', KEYS[2], ARGV[2]) end
return 1
"""
)


#: KEYS: job hash, queue list, started registry, the queue's intermediate list (single-queue workers).
#: ARGV: job id, then the job's members of the started registry ("<job id>:<execution id>").
#: Returns 1 when the job went back to the front of its queue, 0 when a worker has it after all.
_PUT_BACK = """
if redis.call('hget', KEYS[1], 'status') ~= 'queued' then return 0 end
if redis.call('lpos', KEYS[2], ARGV[1]) then return 0 end
for i = 2, #ARGV do redis.call('zrem', KEYS[3], ARGV[i]) end
redis.call('lrem', KEYS[4], 0, ARGV[1])
redis.call('lpush', KEYS[2], ARGV[1])
return 1
"""


def take_off(queue_name: str, job_id: str) -> bool:
    """Take a waiting job off its queue, the schedule and its dependencies, atomically; False when
    it was on none of them (a worker has taken it, or Redis has forgotten it)."""
    queue = queues.get_queue(queue_name)
    keys = [
        queue.key,
        queue.scheduled_job_registry.key,
        queue.deferred_job_registry.key,
        RQJob.key_for(job_id),
        queue.canceled_job_registry.key,
    ]
    now = time.time()
    expires = now + int(setting("JOBS_FAILURE_TTL"))
    conn = queues.redis()
    return _in_time(conn.eval(_TAKE_OFF, len(keys), *keys, _deadline(conn), job_id, now, expires))


def put_back(queue_name: str, job_id: str, executions: Sequence[str] = ()) -> bool:
    """Put a queued job that is on no queue back at the front of its queue, atomically; False when
    it is started or on its queue after all. `executions`: its stale members of the started registry
    (a worker that died between taking it and starting it), removed with it."""
    queue = queues.get_queue(queue_name)
    keys = [RQJob.key_for(job_id), queue.key, queue.started_job_registry.key, queue.intermediate_queue_key]
    return bool(queues.redis().eval(_PUT_BACK, len(keys), *keys, job_id, *executions))


def promote_now(
    queue_name: str, job_ids: Sequence[str], pipe: Pipeline | None = None, *, at_front: bool = True
) -> list[bool] | None:
    """Move scheduled jobs onto their queue (its front: they are due), each only if it is still scheduled.

    With `pipe`, the scripts are added to it (their answers come with its results); without,
    they run now and the answers (True: moved) are returned in order.
    """
    from django.utils import timezone
    from rq.utils import utcformat

    queue = queues.get_queue(queue_name)
    enqueued_at = utcformat(timezone.now())
    target = pipe if pipe is not None else queues.redis().pipeline(transaction=False)
    # The scheduler's promotions (with `pipe`) have no deadline: it has no answer to give anyone
    # and nothing to roll back, and a move Redis runs late is recorded when the job starts.
    deadline = _deadline(queues.redis()) if pipe is None else ""
    for job_id in job_ids:
        keys = [queue.scheduled_job_registry.key, queue.key, RQJob.key_for(job_id), queue.redis_queues_keys]
        target.eval(
            _PROMOTE, len(keys), *keys, deadline, job_id, enqueued_at, queue.key, "front" if at_front else "back"
        )
    if pipe is not None:
        return None
    return [_in_time(answer) for answer in target.execute()]


def _deadline(conn: Any) -> str:
    """The moment (Redis's clock) after which an action's script does nothing: half the client's
    socket timeout from now, as for a creation (`send`); '' when the client waits as long as it takes."""
    pool = conn.connection_pool
    timeout = pool.connection_kwargs.get("socket_timeout")
    if not timeout:
        return ""
    return f"{time.time() + _redis_clock_offset(pool) + timeout / 2:.6f}"


def _in_time(answer: Any) -> bool:
    """An action script's answer: True done, False not possible; run too late (-1): `QueueUnavailable`."""
    if answer == -1:
        log.warning("the job queue ran an action too late to answer in time: not done")
        raise QueueUnavailable()
    return bool(answer)


def status(job_id: str) -> str | None:
    """The RQ status of a job as Redis has it now (None when Redis has forgotten the job)."""
    raw: Any = queues.redis().hget(RQJob.key_for(job_id), "status")
    return raw.decode() if isinstance(raw, bytes) else raw
