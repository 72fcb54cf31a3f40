"""The pooled worker: jobs run in N long-lived child processes, none forked per job.

`manage.py jobs_pool -n 2 high default low` starts a pool (RQ's own `WorkerPool`, completed
here). Each child is a full RQ worker of its own (`PoolWorker`: RQ's SimpleWorker with the
product's mirror), so Redis holds exactly what it holds for `manage.py rqworker`: one worker key
and heartbeat per child, the queue lists, the job hashes, the started, finished and failed
registries. `rq info`, django-rq's dashboard and the reconciler read it as they always do.

**One mirror process** for the whole pool, forked before the children and started again if it
dies: it drains the history of every child and keeps the liveness key of each living child (the
pool writes a child's key before it forks it, and takes it off the mirror's list and deletes it
the moment the child is gone, `Pool._bury`). One process writing the history rather than one per
child: fewer database writers (on SQLite they queue for one lock), bigger batches, a process less
per child.

What the pool adds to RQ's:

- **a child is replaced** after it crashed (its job is judged abandoned by the reconciler, and run
  again where its type allows), after `max_jobs` jobs (± 10 %, so that children do not all leave
  at once), after a job that put it over `max_memory` MB, and after a job that was interrupted
  (a timeout, a stop): the others go on meanwhile;
- **a timeout** interrupts the job in its child (SIGALRM, in the child's main thread); a job that
  does not stop (a blocking call that ignores signals) is put down by the pool a margin past its
  timeout: the child is frozen, the failure recorded, the child killed and replaced;
- **stop** (`services.job_stop`, RQ's stop-job command, which a SimpleWorker ignores) raises
  `JobStopped` in the job, which ends `stopped`; a job that does not stop within `STOP_GRACE`
  seconds is put down by the pool, recorded `stopped`;
- **SIGTERM** (or SIGINT) lets the running jobs finish, then the pool exits 0; a second one more
  than a second later is a cold stop: the children abandon their jobs (recorded dead at once, so
  the reconciler judges them within a round) and the pool exits 1;
- the children die with the pool (a SIGKILLed pool leaves no child running a job unwatched).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import random
import signal
import time
from dataclasses import dataclass
from datetime import timedelta
from multiprocessing import get_context, parent_process
from multiprocessing.process import BaseProcess
from multiprocessing.sharedctypes import RawArray
from types import FrameType
from typing import TYPE_CHECKING, Any

import rq
from django.conf import settings
from rq.defaults import DEFAULT_JOB_MONITORING_INTERVAL
from rq.executions import Execution
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from rq.timeouts import JobTimeoutException, UnixSignalDeathPenalty
from rq.utils import now, utcformat
from rq.worker import Worker as RQWorker
from rq.worker_pool import WorkerData, WorkerPool
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY

from jobs import logs, queues, rqcompat, rqstore
from jobs.batching import BatchedWorkerMixin
from jobs.errors import REDIS_ERRORS
from jobs.mirror import MirrorProcess, alive_key
from jobs.worker import PRODUCT_WORKERS, MirrorWorkerMixin, Worker, _die_with

if TYPE_CHECKING:
    from jobs.threads import AliveNames

log = logging.getLogger(__name__)

#: The signal a child sends itself (from RQ's command thread) to stop the job its main thread runs.
STOP_SIGNAL = signal.SIGUSR1
#: Seconds a job may go on after it was asked to stop before the pool puts its child down.
STOP_GRACE = 5.0
#: How often the pool looks at its children (dead ones, overruns, the stop it was asked for).
CHECK_INTERVAL = 0.2
#: A child that dies younger than this counts as failing at its start: its respawn waits, longer each time.
QUICK_DEATH_SECONDS = 2.0
RESPAWN_BACKOFF_MAX = 5.0
#: RQ's worker TTL of each child: an idle child beats every TTL - 15 s.
DEFAULT_WORKER_TTL = 420
#: A job id longer than this is not watched by the pool (RQ's own ids are 36 characters).
SLOT_ID_BYTES = 128

_ForkProcess = get_context("fork").Process
#: The signals that stop a pool, and a child.
STOP_REQUESTS = {signal.SIGINT, signal.SIGTERM}


def overrun_margin(timeout: float) -> float:
    """Seconds past its timeout a job may run before the pool kills its child: the job's own
    alarm comes first; this is for a job that does not stop (between 5 and 60 s)."""
    return min(60.0, max(5.0, float(timeout)))


class JobStopped(BaseException):
    """Raised in a job asked to stop. A BaseException: a job's `except Exception` does not swallow it."""


# --- the child --------------------------------------------------------------------------------

#: The id of the job whose function this process runs now (set around `job.perform()` only).
_performing: str | None = None


class _JobPenalty(UnixSignalDeathPenalty):
    """RQ's SIGALRM timeout, which also tells this process which job's code runs, for `stop`."""

    def __init__(self, timeout: Any, exception: Any = JobTimeoutException, **kwargs: Any) -> None:
        super().__init__(timeout, exception, **kwargs)
        self._job_id = kwargs.get("job_id") if exception is JobTimeoutException else None

    def setup_death_penalty(self) -> None:
        global _performing
        super().setup_death_penalty()
        if self._job_id:
            _performing = self._job_id

    def cancel_death_penalty(self) -> None:
        global _performing
        _performing = None
        super().cancel_death_penalty()


class Slot:
    """What a child runs, shared with the pool without Redis: the job id, when it started (epoch
    seconds), its timeout, and when a stop of it was asked for (0: none)."""

    def __init__(self) -> None:
        self._job = RawArray(ctypes.c_char, SLOT_ID_BYTES)
        self._times = RawArray(ctypes.c_double, 3)

    def begin(self, job_id: str, timeout: float) -> None:
        raw = job_id.encode()
        if len(raw) >= SLOT_ID_BYTES:
            return
        self._times[1] = float(timeout)
        self._times[2] = 0.0
        self._times[0] = time.time()
        self._job.value = raw

    def stop_asked(self) -> None:
        self._times[2] = time.time()

    def end(self) -> None:
        self._job.value = b""
        self._times[0] = self._times[2] = 0.0

    def read(self) -> tuple[str, float, float, float]:
        return self._job.value.decode(errors="replace"), self._times[0], self._times[1], self._times[2]


def rss_mb() -> float:
    """This process's resident memory now, in MB (its peak where /proc is missing)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class PoolWorker(BatchedWorkerMixin, MirrorWorkerMixin, rq.SimpleWorker):
    """A pool's child: runs jobs in its own process, one after the other, with the mirror, and RQ's
    bookkeeping of each job in two Redis round trips (`jobs.batching`).

    Also usable under django-rq's `rqworker-pool --worker-class jobs.pool.PoolWorker` (stop,
    timeouts and replacement after an interrupted job work there too; `max_jobs`, the memory
    limit and the put-down of a job that does not stop need `manage.py jobs_pool`).
    """

    death_penalty_class = _JobPenalty

    def __init__(
        self,
        *args: Any,
        max_memory_mb: float | None = None,
        slot: Slot | None = None,
        pool_mirror: bool = False,
        **kwargs: Any,
    ):
        super().__init__(*args, **kwargs)
        self.max_memory_mb = max_memory_mb
        self._slot = slot
        self._pool_mirror = pool_mirror
        self._interrupted = False

    def work(self, *args: Any, **kwargs: Any) -> bool:
        """In a pool: RQ's loop, batched, without a mirror of its own (the pool's drains this worker's
        history and keeps its liveness key, which the pool wrote before forking it). Alone (django-rq's
        `rqworker-pool`): with a mirror process of its own, as `manage.py rqworker`."""
        if not self._pool_mirror:
            return super().work(*args, **kwargs)
        with self.batching():
            return rq.SimpleWorker.work(self, *args, **kwargs)

    def subscribe(self) -> None:
        """RQ's command thread, started with the signals the main thread acts on blocked (stops,
        the timeout's alarm): the kernel hands a signal to any thread that does not block it, and
        one taken by that thread leaves the main thread in its blocking call (a wait for a job, up
        to the worker TTL; a job's sleep) without running the handler. Seen: a pool that a SIGTERM
        did not stop."""
        signals = {signal.SIGINT, signal.SIGTERM, signal.SIGALRM, STOP_SIGNAL}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
        try:
            super().subscribe()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def _install_signal_handlers(self) -> None:
        super()._install_signal_handlers()
        signal.signal(STOP_SIGNAL, self._stop_signalled)

    def _stop_signalled(self, signum: int, frame: FrameType | None) -> None:
        job_id = _performing
        if job_id is not None and job_id == self._stopped_job_id:
            raise JobStopped("Job stopped by user")

    def kill_horse(self, *args: Any, **kwargs: Any) -> None:
        """RQ's stop-job command (in RQ's command thread) kills the horse; here, the job's code is
        interrupted in the main thread, and ends `stopped`. Nothing happens between jobs."""
        job_id = _performing
        if job_id is None or job_id != self._stopped_job_id:
            return
        if self._slot is not None:
            self._slot.stop_asked()
        os.kill(os.getpid(), STOP_SIGNAL)

    def execute_job(self, job: RQJob, queue: rq.Queue) -> None:
        self._interrupted = False
        if self._slot is not None:
            self._slot.begin(job.id, job.timeout or rq.Queue.DEFAULT_TIMEOUT)
        try:
            super().execute_job(job, queue)
        finally:
            if self._slot is not None:
                self._slot.end()
        self._leave_if_spent()

    def handle_job_failure(
        self, job: RQJob, queue: rq.Queue, started_job_registry: Any = None, exc_string: str = "", execution: Any = None
    ) -> None:
        if self._stopped_job_id == job.id or "JobTimeoutException" in exc_string:
            self._interrupted = True  # its job was cut short: whatever it left behind goes with this process
        super().handle_job_failure(
            job, queue, started_job_registry=started_job_registry, exc_string=exc_string, execution=execution
        )

    def _leave_if_spent(self) -> None:
        reason = ""
        if self._interrupted:
            reason = "its job was interrupted"
        elif self.max_memory_mb:
            used = rss_mb()
            if used > self.max_memory_mb:
                reason = f"it uses {used:.0f} MB (limit {self.max_memory_mb:.0f} MB)"
        if reason:
            log.info("worker %s leaves the pool: %s", self.name, reason)
            self._stop_requested = True  # RQ's loop stops before the next job; the pool replaces it

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        """Cold stop: the job is abandoned, this worker recorded dead at once (so the reconciler
        judges its job within a round, and runs it again where its type allows), and the process exits."""
        asked = self._shutdown_requested_date
        if asked is not None and now() - asked < timedelta(seconds=1):
            return  # the same stop, delivered twice (by the pool and to the process group)
        log.warning("worker %s: cold shut down; job %s abandoned", self.name, self.get_current_job_id_safe())
        self.put_back_held()  # a job taken and not started yet
        with contextlib.suppress(Exception):
            if self._mirror is not None:
                self._mirror.stop(timeout=5.0)
        with contextlib.suppress(Exception):
            self.connection.srem(PRODUCT_WORKERS, self.name)
            self.register_death()
        os._exit(1)

    def get_current_job_id_safe(self) -> str | None:
        return _performing or (self._slot.read()[0] if self._slot is not None else None) or None


@dataclass
class ChildOptions:
    worker_ttl: int
    max_jobs: int | None
    max_memory_mb: float | None
    logging_level: str
    burst: bool = False  # each child leaves once the queues are empty


def _run_child(name: str, queue_names: list[str], pool_pid: int, slot: Slot, options: ChildOptions) -> None:
    """A child's life: a PoolWorker serving the queues until it is spent or asked to stop."""
    # Forked with the stop signals held (`Pool.start_worker`) and the pool's handlers: a stop that came
    # meanwhile ends the child now, by default; one that comes later, once its worker's handlers are set.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_REQUESTS)
    _die_with(pool_pid)
    from django.db import connections

    connections.close_all()
    queues.reset()  # connections of this process's own
    max_jobs = options.max_jobs
    if max_jobs:
        max_jobs += random.randint(0, max_jobs // 10)
    worker = PoolWorker(
        [queues.get_queue(queue_name) for queue_name in queue_names],
        name=name,
        connection=queues.redis(),
        worker_ttl=options.worker_ttl,
        max_memory_mb=options.max_memory_mb,
        slot=slot,
        pool_mirror=True,
    )
    worker.work(burst=options.burst, max_jobs=max_jobs, logging_level=options.logging_level)


def record_dead(connection: Any, name: str, queue_names: list[str]) -> None:
    """Record a worker dead in Redis at once (a pool's child, a threaded worker): off RQ's worker sets
    (rq info, the dashboard), its key marked with its death, off the product's workers, its liveness
    key gone, so the reconciler judges its job at its next round."""
    key = RQWorker.redis_worker_namespace_prefix + name
    try:
        with connection.pipeline() as pipe:
            pipe.srem(REDIS_WORKER_KEYS, key)
            for queue_name in queue_names:
                pipe.srem(WORKERS_BY_QUEUE_KEY % queue_name, key)
            pipe.hset(key, "death", utcformat(now()))
            pipe.expire(key, 60)
            pipe.srem(PRODUCT_WORKERS, name)
            pipe.delete(alive_key(name))
            pipe.execute()
    except REDIS_ERRORS as exc:
        log.warning("could not record worker %s dead (%s)", name, exc)


def record_put_down(
    worker_class: type[Any], connection: Any, name: str, job_id: str, *, stopped: bool, timeout: float, left: str
) -> None:
    """Record the end of a job its worker did not stop (asked to, or at its timeout) and that was put
    down (`left` says how), as that worker would have: stopped, or failed on its timeout. Nothing when
    the job ended meanwhile or another worker runs it now."""
    job = rqstore.fetch(job_id)
    if job is None or job.get_status(refresh=False) != RQStatus.STARTED or job.worker_name != name:
        return
    queue = queues.get_queue(job.origin)
    proxy: Any = worker_class([queue], name=name, connection=connection)
    # The run's entry, read from the started registry (its score is when it expires: the latest is this
    # run's). Not from the execution's own hash: it expires `timeout + 60` seconds after the start, and
    # a job past its timeout is put down up to a minute later.
    members = rqstore.executions_of(queue, [job_id], connection)
    execution = Execution.from_composite_key(members[-1], connection) if members else None
    if execution is not None:
        execution.worker_name = name
    proxy.execution = execution  # RQ 2.x reads the worker's; RQ 3 takes it as an argument
    if stopped:
        proxy._stopped_job_id = job_id
        exc_string = f"jobs.pool.JobStopped: Job stopped by user; it did not stop within {STOP_GRACE:.0f} s, and {left}"
    else:
        exc_string = (
            f"rq.timeouts.JobTimeoutException: Task exceeded maximum timeout value ({timeout:.0f} seconds); "
            f"it did not stop, and {left}"
        )
    job.ended_at = now()
    with logs.job_context(job.id, rqstore.type_name(job)):
        log.warning("worker %s did not stop job %s; %s", name, job_id, left)
        proxy.handle_job_failure(job, queue, exc_string=exc_string, **rqcompat.execution_kwargs(execution))
    if len(members) > 1:  # entries of earlier runs that nothing cleaned up
        connection.zrem(queue.started_job_registry.key, *members[:-1])


# --- the pool ---------------------------------------------------------------------------------


class Pool(WorkerPool):
    """RQ's WorkerPool of `PoolWorker` children, with replacement, the watch over jobs that do not
    stop, and warm and cold stops."""

    def __init__(
        self,
        queue_names: list[str],
        *,
        num_workers: int,
        max_jobs: int | None = None,
        max_memory_mb: float | None = None,
        worker_ttl: int = DEFAULT_WORKER_TTL,
        job_monitoring_interval: float = DEFAULT_JOB_MONITORING_INTERVAL,
    ):
        super().__init__(
            queue_names,
            connection=queues.redis(),
            num_workers=num_workers,
            worker_class=PoolWorker,
            serializer=queues.SERIALIZER,
            job_class=rqstore.MirroredJob,
        )
        self.log = log
        self.options = ChildOptions(worker_ttl, max_jobs, max_memory_mb, "INFO")
        self.job_monitoring_interval = job_monitoring_interval
        self._beaten: dict[str, float] = {}  # a child: when the pool last beat for it (while busy)
        self._slots: dict[str, Slot] = {}
        self._born: dict[str, float] = {}
        self._quick_deaths = 0
        self._respawn_at = 0.0
        self._stop_asked_at = 0.0
        self._cold = False
        self._cold_sent = False
        self._mirror: MirrorProcess | None = None
        self._alive: AliveNames | None = None  # slot 0: the pool (the mirror's consumer); then a child each
        self._alive_slots: dict[str, int] = {}

    # -- the mirror --

    def _start_mirror(self) -> None:
        """Fork the pool's mirror (before any child, and before this process opens the database)."""
        from jobs.threads import AliveNames  # not at the top: jobs.threads imports this module

        if self._alive is None:
            self._alive = AliveNames(self.num_workers + 1)
            self._alive.put(0, self.name)
        with contextlib.suppress(*REDIS_ERRORS):  # else its first beat writes it
            self.connection.set(alive_key(self.name), "1", ex=settings.JOBS_WORKER_DEAD_AFTER)
        self._mirror = MirrorProcess({"socket_timeout": 10}, consumer=self.name, alive_key=self._alive, own_group=True)
        self._mirror.start()

    def _check_mirror(self) -> None:
        """A mirror that died (killed, out of memory) is started again: without it no child's history
        is written, and every child's liveness key lapses, its jobs judged abandoned while they run."""
        if self._mirror is None or not self._mirror.pid:
            return
        try:
            done, status = os.waitpid(self._mirror.pid, os.WNOHANG)
        except ChildProcessError:
            done, status = self._mirror.pid, 0
        if not done:
            return
        log.warning("pool %s: its mirror (pid %s) died (status %s); starting another", self.name, done, status)
        self._mirror.pid = 0
        self._start_mirror()

    def _stop_mirror(self) -> None:
        if self._mirror is not None:
            self._mirror.stop()  # what the children did is in the database before the pool exits

    # -- children --

    def get_worker_process(self, name: str, burst: bool, _sleep: float = 0, logging_level: str = "INFO") -> BaseProcess:
        slot = self._slots[name] = Slot()
        self._born[name] = time.monotonic()
        self._vouch_for(name)
        return _ForkProcess(
            target=_run_child,
            args=(name, self._queue_names, os.getpid(), slot, self.options),
            name=f"rq:pool-worker:{name}",
        )

    def start_worker(
        self, count: int | None = None, burst: bool = True, _sleep: float = 0, logging_level: str = "INFO"
    ) -> None:
        """RQ's, with the stop signals held from the look at the pool's status until the new child is
        one of `worker_dict`, and none started once the pool is stopping. A stop asked in between
        stopped only the children entered before it, and the pool then waited for the new one for
        ever (seen: `rqworker` asked to stop as it replaced a child after `--max-jobs`)."""
        held = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_REQUESTS)
        try:
            if self.status != self.Status.STOPPED:
                super().start_worker(count, burst=burst, _sleep=_sleep, logging_level=logging_level)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)

    def reap_workers(self) -> None:
        """RQ's waits 0.1 s for each child; this only looks."""
        for data in list(self.worker_dict.values()):
            if not data.process.is_alive():
                self.handle_dead_worker(data)

    def handle_dead_worker(self, worker_data: WorkerData) -> None:
        super().handle_dead_worker(worker_data)
        name, code = worker_data.name, worker_data.process.exitcode
        self._slots.pop(name, None)
        self._beaten.pop(name, None)
        lived = time.monotonic() - self._born.pop(name, time.monotonic())
        self._bury(name)
        stopped_early = self.status == self.Status.STOPPED and code is not None and -code in STOP_REQUESTS
        if code == 0 or stopped_early:  # stopped_early: by the pool's stop, before its worker's handlers were set
            log.info("pool %s: worker %s (pid %s) left", self.name, name, worker_data.pid)
            self._quick_deaths = 0
            return
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        log.warning(
            "pool %s: worker %s (pid %s) died (%s); a job it was running is judged by the reconciler",
            self.name,
            name,
            worker_data.pid,
            how,
        )
        if lived < QUICK_DEATH_SECONDS and self.status != self.Status.STOPPED:
            self._quick_deaths += 1
            wait = min(RESPAWN_BACKOFF_MAX, 0.25 * 2**self._quick_deaths)
            self._respawn_at = time.monotonic() + wait
        else:
            self._quick_deaths = 0

    def _vouch_for(self, name: str) -> None:
        """A child about to be forked: one of the product's workers, its liveness key written now (before
        it can take a job) and kept by the pool's mirror from now on."""
        if self._alive is not None:
            used = set(self._alive_slots.values())
            slot = next((index for index in range(1, self._alive.slots) if index not in used), None)
            if slot is None:  # never more children than workers: a bug, which the reconciler would show
                log.error("pool %s: no liveness slot left for worker %s", self.name, name)
            else:
                self._alive.put(slot, name)
                self._alive_slots[name] = slot
        try:
            with self.connection.pipeline() as pipe:
                pipe.sadd(PRODUCT_WORKERS, name)
                pipe.set(alive_key(name), "1", ex=settings.JOBS_WORKER_DEAD_AFTER)
                pipe.execute()
        except REDIS_ERRORS as exc:  # the mirror's next beat writes the key
            log.warning("pool %s: could not register worker %s (%s)", self.name, name, exc)

    def _bury(self, name: str) -> None:
        """Record a child dead in Redis at once: off RQ's worker sets (rq info, the dashboard), its
        key marked with its death, off the product's workers, its liveness key gone (and no longer
        kept by the mirror)."""
        slot = self._alive_slots.pop(name, None)
        if slot is not None and self._alive is not None:
            self._alive.clear(slot)
        record_dead(self.connection, name, self._queue_names)

    def _respawn(self, burst: bool, logging_level: str) -> None:
        if time.monotonic() < self._respawn_at:
            return
        for _ in range(self.num_workers - len(self.worker_dict)):
            self.start_worker(burst=burst, logging_level=logging_level)

    # -- busy children --

    def _beat_for_busy(self) -> None:
        """Beat for each child running a job, every `job_monitoring_interval` seconds, as RQ's forking
        worker beats while its work horse runs: a child runs its job in its main thread and beats
        between jobs only, and a job longer than a liveness probe's threshold (`manage.py jobs_alive`)
        would have its child judged frozen, its pod restarted mid-job. Only the pool's own loop beats
        for them, and it puts down a job past its timeout: a frozen pool beats for no one."""
        moment = time.time()
        due = []
        for data in list(self.worker_dict.values()):
            slot = self._slots.get(data.name)
            job_id, started, _, _ = slot.read() if slot is not None else ("", 0.0, 0.0, 0.0)
            last = max(started, self._beaten.get(data.name, 0.0))  # a new job starts the count again
            if job_id and started and moment - last >= self.job_monitoring_interval:
                due.append(data.name)
        if not due:
            return
        ttl = max(self.options.worker_ttl, int(self.job_monitoring_interval) + 60)  # never shorter than its own
        try:
            with self.connection.pipeline(transaction=False) as pipe:
                for name in due:
                    key = PoolWorker.redis_worker_namespace_prefix + name
                    pipe.hset(key, "last_heartbeat", utcformat(now()))
                    pipe.expire(key, ttl)
                added = pipe.execute()[::2]
                gone = [name for name, fields in zip(due, added, strict=True) if fields]
                if gone:  # its hash was gone (the child just died): leave none with a beat alone
                    pipe.delete(*(PoolWorker.redis_worker_namespace_prefix + name for name in gone))
                    pipe.execute()
        except REDIS_ERRORS as exc:  # the next loop tries again
            log.warning("pool %s: could not beat for its busy workers (%s)", self.name, exc)
            return
        for name in due:
            self._beaten[name] = moment

    # -- jobs that do not stop --

    def _watch(self) -> None:
        for data in list(self.worker_dict.values()):
            slot = self._slots.get(data.name)
            if slot is None:
                continue
            job_id, started, timeout, stop_at = slot.read()
            if not job_id or not started:
                continue
            moment = time.time()
            if stop_at and moment >= stop_at + STOP_GRACE:
                self._put_down(data, slot, job_id, stopped=True, timeout=timeout)
            elif timeout > 0 and moment >= started + timeout + overrun_margin(timeout):
                self._put_down(data, slot, job_id, stopped=False, timeout=timeout)

    def _put_down(self, data: WorkerData, slot: Slot, job_id: str, *, stopped: bool, timeout: float) -> None:
        """Freeze the child, record its job's end (stopped, or failed on its timeout), kill the child.

        Frozen, the child can write nothing more, and its mirror still vouches for it: the
        reconciler cannot judge the job meanwhile, so the end is recorded once."""
        with contextlib.suppress(ProcessLookupError):
            os.kill(data.pid, signal.SIGSTOP)
        if slot.read()[0] != job_id:  # it finished just now
            with contextlib.suppress(ProcessLookupError):
                os.kill(data.pid, signal.SIGCONT)
            return
        try:
            self._record_end(data.name, job_id, stopped=stopped, timeout=timeout)
        except REDIS_ERRORS as exc:
            log.warning("pool %s: end of job %s not recorded (%s); the reconciler judges it", self.name, job_id, exc)
        except Exception:
            log.exception("pool %s: end of job %s not recorded; the reconciler judges it", self.name, job_id)
        finally:
            slot.end()
            with contextlib.suppress(ProcessLookupError):
                os.kill(data.pid, signal.SIGKILL)

    def _record_end(self, name: str, job_id: str, *, stopped: bool, timeout: float) -> None:
        record_put_down(
            PoolWorker, self.connection, name, job_id, stopped=stopped, timeout=timeout, left="its process was killed"
        )

    # -- stopping --

    def request_stop(self, signum: Any = None, frame: Any = None) -> None:
        if self.status == self.Status.STOPPED:
            if time.monotonic() - self._stop_asked_at >= 1.0:
                self._cold = True  # the loop passes it on to the children
            return
        log.info("pool %s: stopping once the running jobs are done (again for a cold stop)", self.name)
        self.status = self.Status.STOPPED
        self._stop_asked_at = time.monotonic()
        self.stop_workers()

    def _pass_cold_stop_on(self) -> None:
        # A child takes a second signal within a second of the first for the same stop: wait it out.
        if self._cold_sent or time.monotonic() - self._stop_asked_at < 1.1:
            return
        log.warning("pool %s: cold stop; the running jobs are abandoned", self.name)
        self._cold_sent = True
        for data in list(self.worker_dict.values()):
            self.stop_worker(data, sig=signal.SIGTERM)

    def start(self, burst: bool = False, logging_level: str = "INFO") -> int:
        """Run until stopped; the exit status: 0, or 1 after a cold stop."""
        self._burst = self.options.burst = burst
        self.options.logging_level = logging_level
        self.status = self.Status.STARTED
        self._install_signal_handlers()
        log.info(
            "pool %s (pid %s): %s workers on %s", self.name, os.getpid(), self.num_workers, ", ".join(self._queue_names)
        )
        self._start_mirror()
        try:
            self._run(burst, logging_level)
        finally:
            self._stop_mirror()
            with contextlib.suppress(*REDIS_ERRORS):
                self.connection.delete(alive_key(self.name))
        log.info("pool %s: stopped", self.name)
        return 1 if self._cold else 0

    def _run(self, burst: bool, logging_level: str) -> None:
        self.start_workers(burst=burst, logging_level=logging_level)
        while True:
            self._check_mirror()
            self.reap_workers()
            self._beat_for_busy()
            # Stopping too: a warm stop waits for the running jobs, and one that does not stop at its
            # timeout (or a stop) is put down as at any other time, not waited for.
            self._watch()
            if self.status == self.Status.STOPPED:
                if self._cold:
                    self._pass_cold_stop_on()
                if not self.worker_dict:
                    break
            else:
                if burst and not self.worker_dict:
                    break
                if not burst:
                    self._respawn(burst, logging_level)
            time.sleep(CHECK_INTERVAL)


class PooledWorker(Worker):
    """`manage.py rqworker`'s worker class by default (settings `RQ["WORKER_CLASS"]`): the pool, with
    one child, where RQ's default forks a work horse per job.

    django-rq's command makes its worker class with the queues and its options and calls `work`:
    this one starts a `Pool` of `JOBS_RQWORKER_PROCESSES` children (1: one job at a time, as RQ's
    worker) on those queues. What `rqworker` promises holds: `--burst` stops once the queues are
    empty; `--worker-ttl` is each child's; `--max-jobs` replaces the child after that many jobs
    (what a supervisor restarting RQ's worker gave); SIGTERM lets the job finish, a second one
    abandons it. The child runs jobs one after the other in a long-lived process, with the batched
    bookkeeping (`jobs.batching`), and is replaced if it crashes. `--worker-class jobs.worker.Worker`
    gives RQ's fork per job.

    Made in a child of RQ's own `WorkerPool` (django-rq's `rqworker-pool`, which takes this same
    setting for its children), it makes the forking worker instead: a pool per child would be a pool
    of pools.
    """

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        if parent_process() is not None:  # a child of RQ's WorkerPool
            return Worker(*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)  # RQ's: what django-rq and RQ read of a worker class holds
        self._name_given: str | None = kwargs.get("name")
        self._ttl_given: int | None = kwargs.get("worker_ttl")

    def work(  # type: ignore[override]
        self,
        burst: bool = False,
        logging_level: str = "INFO",
        max_jobs: int | None = None,
        max_idle_time: int | None = None,
        with_scheduler: bool = False,
        **kwargs: Any,
    ) -> bool:
        """Start the pool on this worker's queues, instead of working as RQ's forking worker."""
        if max_idle_time is not None:
            raise SystemExit(
                "--max-idle-time is RQ's forking worker's: add --worker-class jobs.worker.Worker "
                "(the pooled worker waits for work until it is stopped, or until the queues are empty with --burst)"
            )
        if with_scheduler:
            log.warning("--with-scheduler ignored: the product's scheduler is its own process (manage.py runscheduler)")
        if max_jobs is not None and max_jobs < 1:
            raise SystemExit("--max-jobs must be at least 1")
        pool = Pool(
            [queue.name for queue in self.queues],
            num_workers=settings.JOBS_RQWORKER_PROCESSES,
            max_jobs=max_jobs,
            worker_ttl=self._ttl_given or DEFAULT_WORKER_TTL,
        )
        if self._name_given:
            pool.name = self._name_given
        status = pool.start(burst=burst, logging_level=logging_level)
        if status:
            raise SystemExit(status)
        return True


__all__ = ["STOP_GRACE", "JobStopped", "Pool", "PoolWorker", "PooledWorker", "overrun_margin", "rss_mb"]
