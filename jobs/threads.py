"""The threaded worker: one process runs up to N jobs at once, each in a thread of its own.

`manage.py jobs_threads --concurrency 4 high` serves queues whose jobs mostly wait (sending e-mail,
calling web services): while one job waits on the network, the others run. Jobs share the
process's interpreter lock, so CPU-bound jobs gain nothing here (use `jobs_pool`).

Redis holds exactly what it holds for N `manage.py rqworker` processes: each thread is a full RQ
worker of its own (`ThreadWorker`: RQ's SimpleWorker with the product's mirror), named
`<base>.t<i>`, with its own worker key, heartbeat and current job, registered with its queues.
`rq info`, django-rq's dashboard and the reconciler read it as they always do. What the process
shares between its N workers:

- **one mirror process**, forked before any thread starts: it drains the history and keeps the
  liveness key of every worker of the process (`jobs.mirror.MirrorProcess` with several keys);
- **one listener** for RQ's worker commands (one pubsub connection, not one per worker): a stop
  (`services.job_stop`, RQ's stop-job command) raises `jobs.pool.JobStopped` in the thread of that
  job only, which ends `stopped`; the others go on. RQ's `shutdown` command stops the whole process
  (as it stops a worker process), warm;
- **the signals**, in the main thread: SIGTERM (or SIGINT) lets every running job finish, takes no
  new job, and exits 0 once every end is in the history; a second one a second or more later is a
  cold stop: the running jobs are abandoned (the workers recorded dead at once, so the reconciler
  judges the jobs at its next round, and runs them again where their type allows) and the process
  exits 1. A SIGKILLed process leaves its jobs to the reconciler once the liveness keys lapse
  (`JOBS_WORKER_DEAD_AFTER`).

**Timeouts** are RQ's `TimerDeathPenalty`: a timer raises `JobTimeoutException` in the job's
thread, and the job fails with RQ's message. An exception can only be raised in a thread while it
runs Python code: a job blocked in a C call (a socket read without a timeout, `time.sleep`) sees
its timeout or its stop only when the call returns. One that has not stopped a margin past its
timeout (`jobs.pool.overrun_margin`), or `STOP_GRACE` seconds after a stop, is put down: its
failure (or stop) is recorded, its worker recorded dead, and a new worker (`<base>.t<i>.<k>`)
takes its place. Nothing can kill a thread: the old one is left behind, and whatever it does when
its call returns is not recorded (it ends there). Give such calls timeouts of their own.

Each thread has its Django database connections (Django keeps them per thread): they are closed
or renewed between jobs as after a request (`CONN_MAX_AGE`), and closed when the thread ends.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from multiprocessing.sharedctypes import RawArray
from types import FrameType
from typing import Any
from uuid import uuid4

import redis as redis_lib
import rq
from django.conf import settings
from django.db import close_old_connections, connections
from redis import Redis
from redis.client import Pipeline
from rq.command import handle_shutdown_command, parse_payload
from rq.exceptions import StopRequested
from rq.job import Job as RQJob
from rq.timeouts import JobTimeoutException, TimerDeathPenalty
from rq.utils import now

from jobs import queues
from jobs.errors import REDIS_ERRORS
from jobs.mirror import MirrorProcess, alive_key
from jobs.pool import STOP_GRACE, JobStopped, overrun_margin, record_dead, record_put_down
from jobs.worker import PRODUCT_WORKERS, MirrorWorkerMixin

log = logging.getLogger(__name__)

#: Longest wait for a job in one go (RQ's BLPOP): a worker looks at its stop flag this often when idle.
POLL_SECONDS = 2
#: How often the main thread looks at the workers (threads that ended, jobs that do not stop, signals).
CHECK_INTERVAL = 0.2
#: Seconds a heartbeat counts as fresh: RQ's loop beats before and after each wait and after each
#: job; within this, those beats are not sent again.
BEAT_FRESH = 1.0
#: A worker's thread that ends younger than this counts as failing at its start: its replacement waits.
QUICK_DEATH_SECONDS = 2.0
RESPAWN_BACKOFF_MAX = 5.0
#: Room for one name in the names the mirror keeps alive (RQ's names and ours are far shorter).
NAME_BYTES = 200
STOP_MESSAGE = "Job stopped by user"

_local = threading.local()


class JobStoppedInThread(JobStopped):
    """`jobs.pool.JobStopped`, raised in a job's thread from its class alone (an asynchronous
    exception carries no arguments): it says why by itself, and reads as JobStopped in tracebacks."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*(args or (STOP_MESSAGE,)))


JobStoppedInThread.__module__ = JobStopped.__module__
JobStoppedInThread.__qualname__ = JobStopped.__qualname__


class _LeftBehind(BaseException):
    """Ends a worker's thread that was put down while its job did not stop: its job's end is
    already recorded, and it must write nothing more."""


def _raise_in(thread_id: int, exc_class: type[BaseException] | None) -> None:
    """Raise `exc_class` in the thread `thread_id` at its next Python instruction (None: forget
    one raised that way and not delivered yet)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), None if exc_class is None else ctypes.py_object(exc_class)
    )


def _named_like(exception: type[BaseException]) -> type[BaseException]:
    """A subclass of `exception` of the same name, for one penalty's message alone: RQ's
    TimerDeathPenalty puts its message on the class it raises, and jobs of other timeouts run
    beside this one."""
    return type(
        exception.__name__, (exception,), {"__module__": exception.__module__, "__qualname__": exception.__qualname__}
    )


class ThreadDeathPenalty(TimerDeathPenalty):
    """RQ's timer timeout (an exception raised in the job's thread), which also tells the thread's
    worker which job's code runs now: a stop or a timeout is raised into a job's code only, never
    into RQ's bookkeeping around it."""

    def __init__(self, timeout: Any, exception: Any = JobTimeoutException, **kwargs: Any) -> None:
        super().__init__(timeout, _named_like(exception), **kwargs)
        self.job_id: str | None = kwargs.get("job_id")
        self.worker: ThreadWorker | None = getattr(_local, "worker", None)
        self.raised = False
        self.started = 0.0

    def new_timer(self) -> threading.Timer:
        """RQ's timer, as a daemon thread: the timer of a job left behind must not keep its process
        from exiting."""
        timer = super().new_timer()
        timer.daemon = True
        return timer

    def setup_death_penalty(self) -> None:
        if self.worker is not None:
            self.worker._performing(self)
        super().setup_death_penalty()

    def handle_death_penalty(self) -> None:
        """In the timer's thread."""
        if self.worker is None:
            super().handle_death_penalty()
            return
        if self.worker._interrupt(self, self._exception):
            log.info("job %s: over its timeout of %s s; interrupted", self.job_id, self._timeout)

    def __exit__(self, *exc_info: Any) -> bool:
        try:
            return bool(super().__exit__(*exc_info))
        finally:
            if self.worker is not None:
                self.worker._performed(self)


class ThreadWorker(MirrorWorkerMixin, rq.SimpleWorker):
    """One of a `Threads` process's workers: RQ's SimpleWorker with the mirror, run in a thread.

    Its process installs the signal handlers, listens for RQ's commands and runs the mirror; this
    worker runs RQ's own loop (waits at most `POLL_SECONDS` at a time, to see a stop)."""

    death_penalty_class = ThreadDeathPenalty

    def __init__(self, *args: Any, owner: Threads | None = None, maintains: bool = True, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.owner = owner
        self.maintains = maintains
        self.thread: threading.Thread | None = None
        self.thread_id = 0
        self.born = time.monotonic()
        self.left_behind = False
        self._lock = threading.Lock()
        self._penalty: ThreadDeathPenalty | None = None
        self._in_hand: str | None = None
        self._stop_early: str | None = None
        self.stop_asked_at = 0.0
        self._beat_at = 0.0

    # --- what the process does for its workers ---

    def work(self, *args: Any, **kwargs: Any) -> bool:
        """RQ's loop, without a mirror of its own: the process runs one for all its workers."""
        if self.owner is None:
            raise RuntimeError("a ThreadWorker runs inside `manage.py jobs_threads`, which runs its mirror and signals")
        return rq.SimpleWorker.work(self, *args, **kwargs)

    def _install_signal_handlers(self) -> None:
        """Signals are the main thread's (Python runs their handlers there alone)."""

    def subscribe(self) -> None:
        """The process listens for RQ's commands to all its workers on one connection."""

    def unsubscribe(self) -> None:
        pass

    def procline(self, message: str) -> None:
        """One process title for N workers: the process sets it."""

    @property
    def dequeue_timeout(self) -> int:
        return POLL_SECONDS

    @property
    def should_run_maintenance_tasks(self) -> bool:
        """One worker of the process cleans RQ's registries (every 10 minutes), not each."""
        return self.maintains and bool(super().should_run_maintenance_tasks)

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        """Wait for a job `POLL_SECONDS` at a time, until the process asks this worker to stop
        (a signal cannot interrupt a wait in another thread than the main one)."""
        if timeout is None:  # burst: RQ's, which does not wait
            return super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)
        while True:
            if self._stop_requested:
                raise StopRequested()
            result = super().dequeue_job_and_maintain_ttl(POLL_SECONDS, POLL_SECONDS)
            if result is not None:
                return result

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        if pipeline is None and timeout is None and time.monotonic() - self._beat_at < BEAT_FRESH:
            return
        super().heartbeat(timeout, pipeline=pipeline)
        if pipeline is None:
            self._beat_at = time.monotonic()

    # --- a job ---

    def execute_job(self, job: RQJob, queue: rq.Queue) -> None:
        self._in_hand = job.id
        close_old_connections()  # as at the start of a request: CONN_MAX_AGE, broken connections
        try:
            super().execute_job(job, queue)
        except _LeftBehind:
            raise StopRequested() from None
        finally:
            with self._lock:  # the job's code is over, however its penalty ended
                self._penalty = None
                self._in_hand = self._stop_early = None
                self.stop_asked_at = 0.0
        close_old_connections()
        if self.owner is not None:
            self.owner.job_done()

    def _performing(self, penalty: ThreadDeathPenalty) -> None:
        """The job's code starts (the penalty is set up), unless a stop of the job came first."""
        with self._lock:
            if penalty.job_id is not None and self._stop_early == penalty.job_id:
                self._stop_early = None
                raise JobStoppedInThread()
            penalty.started = time.time()
            self._penalty = penalty

    def _performed(self, penalty: ThreadDeathPenalty) -> None:
        """The job's code is over: nothing is raised in this thread any more (one raised and not
        delivered yet is forgotten), unless the thread was left behind."""
        with self._lock:
            if self._penalty is penalty:
                self._penalty = None
            if penalty.raised and not self.left_behind:
                _raise_in(self.thread_id, None)

    def _interrupt(self, penalty: ThreadDeathPenalty, exc_class: type[BaseException]) -> bool:
        """Raise `exc_class` in the job's code, once per run, if it still runs."""
        with self._lock:
            return self._interrupt_locked(penalty, exc_class)

    def _interrupt_locked(self, penalty: ThreadDeathPenalty, exc_class: type[BaseException]) -> bool:
        if self.left_behind or self._penalty is not penalty or penalty.raised or not self.thread_id:
            return False
        penalty.raised = True
        _raise_in(self.thread_id, exc_class)
        return True

    def stop_job(self, job_id: str) -> None:
        """RQ's stop-job command (in the process's listener thread)."""
        with self._lock:
            penalty = self._penalty
            if penalty is not None and penalty.job_id == job_id:
                if penalty.raised:
                    return  # interrupted already (its timeout): it is ending
                self._stopped_job_id = job_id
                self.stop_asked_at = time.time()
                self._interrupt_locked(penalty, JobStoppedInThread)
            elif self._in_hand == job_id:
                # Started in Redis, its code not running yet: it stops as it would begin.
                self._stopped_job_id = self._stop_early = job_id
                self.stop_asked_at = time.time()
            else:
                log.info("worker %s: not running job %s; stop ignored", self.name, job_id)
                return
        log.info("worker %s: stopping job %s", self.name, job_id)

    def running(self) -> tuple[str, float, float, float] | None:
        """The job whose code runs now: its id, start (epoch seconds), timeout, and when a stop of it
        was asked (0: none); None between jobs."""
        with self._lock:
            penalty = self._penalty
            if penalty is None or penalty.job_id is None:
                return None
            return penalty.job_id, penalty.started, float(penalty._timeout), self.stop_asked_at

    def leave_behind(self, job_id: str) -> bool:
        """Give up on the thread whose job `job_id` does not stop; False if the job ended meanwhile."""
        with self._lock:
            penalty = self._penalty
            if self.left_behind or penalty is None or penalty.job_id != job_id:
                return False
            self.left_behind = True
            self._stop_requested = True
            _raise_in(self.thread_id, _LeftBehind)  # replaces a timeout or stop not delivered yet
            return True

    # --- a thread left behind writes nothing more ---

    def handle_execution_ended(self, job: RQJob, queue: rq.Queue, heartbeat_ttl: int) -> None:
        if self.left_behind:
            raise _LeftBehind()
        super().handle_execution_ended(job, queue, heartbeat_ttl)

    def handle_job_success(self, job: RQJob, queue: rq.Queue, *args: Any, **kwargs: Any) -> None:
        if self.left_behind:
            raise _LeftBehind()
        super().handle_job_success(job, queue, *args, **kwargs)

    def handle_job_failure(
        self, job: RQJob, queue: rq.Queue, started_job_registry: Any = None, exc_string: str = "", execution: Any = None
    ) -> None:
        if self.left_behind:
            raise _LeftBehind()
        super().handle_job_failure(
            job, queue, started_job_registry=started_job_registry, exc_string=exc_string, execution=execution
        )

    def teardown(self) -> None:
        if not self.left_behind:  # else its process recorded its death already
            super().teardown()


def _run(worker: ThreadWorker, burst: bool, logging_level: str) -> None:
    """A worker's thread."""
    _local.worker = worker
    worker.thread_id = threading.get_ident()
    try:
        worker.work(burst=burst, logging_level=logging_level)
    except _LeftBehind:
        pass
    except BaseException:
        log.exception("worker %s: its thread failed", worker.name)
    finally:
        with contextlib.suppress(BaseException):
            connections.close_all()  # this thread's own


class AliveNames:
    """The names whose liveness keys the mirror process keeps, in memory shared with it (a worker
    that replaces one left behind is kept alive too). Iterating gives their liveness keys.

    A slot is written with its first byte last and emptied by its first byte, so that the mirror
    never reads half a name."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self._raw = RawArray(ctypes.c_char, slots * NAME_BYTES)

    def put(self, slot: int, name: str) -> None:
        raw = name.encode()
        if not 0 < len(raw) < NAME_BYTES:
            raise ValueError(f"a worker name of 1 to {NAME_BYTES - 1} bytes, not {name!r}")
        at = slot * NAME_BYTES
        self._raw[at] = b"\0"
        ctypes.memmove(ctypes.addressof(self._raw) + at + 1, raw[1:] + b"\0", len(raw))
        self._raw[at] = raw[:1]

    def clear(self, slot: int) -> None:
        self._raw[slot * NAME_BYTES] = b"\0"

    def names(self) -> list[str]:
        data = bytes(self._raw)
        found = []
        for slot in range(self.slots):
            chunk = data[slot * NAME_BYTES : (slot + 1) * NAME_BYTES]
            if chunk[:1] != b"\0":
                found.append(chunk.split(b"\0", 1)[0].decode(errors="replace"))
        return found

    def __iter__(self) -> Iterator[str]:
        return iter([alive_key(name) for name in self.names()])


class Threads:
    """A process of `concurrency` RQ workers, each in a thread, with one mirror and one listener."""

    def __init__(
        self,
        queue_names: list[str],
        *,
        concurrency: int,
        max_jobs: int | None = None,
        worker_ttl: int = 420,
        name: str | None = None,
    ) -> None:
        self.queue_names = queue_names
        self.concurrency = concurrency
        self.max_jobs = max_jobs
        self.worker_ttl = worker_ttl
        self.name = name or uuid4().hex
        self.connection: Redis = queues.new_redis()
        self.workers: dict[int, ThreadWorker] = {}  # by slot: the worker serving it now
        self.left_behind: list[ThreadWorker] = []
        self._by_name: dict[str, ThreadWorker] = {}
        self._names = AliveNames(concurrency + 1)  # slot 0: the mirror itself (the stream's consumer)
        self._generation = [0] * concurrency
        self._respawn_at = [0.0] * concurrency
        self._quick_deaths = [0] * concurrency
        self._lock = threading.Lock()
        self._done = 0
        self._stopping = False
        self._stop_asked_at = 0.0
        self._stop_passed = False
        self._cold = False
        self._mirror: MirrorProcess | None = None
        self._listener_connection: Redis | None = None
        self._listener: threading.Thread | None = None
        self._burst = False
        self._logging_level = "INFO"

    def worker_name(self, slot: int) -> str:
        generation = self._generation[slot]
        return f"{self.name}.t{slot}" + (f".{generation}" if generation else "")

    # --- starting ---

    def start(self, burst: bool = False, logging_level: str = "INFO") -> int:
        """Run until stopped; the exit status: 0, or 1 after a cold stop."""
        self._burst = burst
        self._logging_level = logging_level
        signal.signal(signal.SIGTERM, self._signalled)
        signal.signal(signal.SIGINT, self._signalled)
        names = [self.worker_name(slot) for slot in range(self.concurrency)]
        self._names.put(0, self.name)
        for slot, name in enumerate(names):
            self._names.put(slot + 1, name)
        with self.connection.pipeline() as pipe:
            pipe.sadd(PRODUCT_WORKERS, *names)
            for key in self._names:
                pipe.set(key, "1", ex=settings.JOBS_WORKER_DEAD_AFTER)
            pipe.execute()
        # Forked before any thread starts and before any database connection is opened here.
        self._mirror = MirrorProcess({"socket_timeout": 10}, consumer=self.name, alive_key=self._names)
        self._mirror.start()
        with contextlib.suppress(ImportError):
            from setproctitle import setproctitle

            setproctitle(f"rq:threads:{self.name}: {self.concurrency} workers on {','.join(self.queue_names)}")
        log.info(
            "threads %s (pid %s): %s workers on %s",
            self.name,
            os.getpid(),
            self.concurrency,
            ", ".join(self.queue_names),
        )
        with _signals_blocked():  # the threads started here, and theirs, leave the signals to the main thread
            self._listen()
            for slot in range(self.concurrency):
                self._start_worker(slot)
        return self._loop()

    def _start_worker(self, slot: int) -> None:
        name = self.worker_name(slot)
        worker = ThreadWorker(
            self.queue_names,
            name=name,
            connection=queues.new_redis(),
            worker_ttl=self.worker_ttl,
            owner=self,
            maintains=slot == 0,
        )
        worker.thread = threading.Thread(
            target=_run, args=(worker, self._burst, self._logging_level), name=f"worker:{name}", daemon=True
        )
        with self._lock:
            self.workers[slot] = worker
            self._by_name[name] = worker
        worker.thread.start()

    def _listen(self) -> None:
        """One pubsub connection for RQ's commands to every worker of the process (RQ's worker
        subscribes to `rq:pubsub:<its name>`; the pattern takes the replacements' too)."""
        # Kept: a client that is collected closes its connections, the listener's too.
        self._listener_connection = queues.new_redis(socket_timeout=70)
        pubsub = self._listener_connection.pubsub(ignore_subscribe_messages=True)
        pubsub.psubscribe(**{f"rq:pubsub:{_glob_escaped(self.name)}.t*": self._command})
        self._listener = pubsub.run_in_thread(sleep_time=60, daemon=True, exception_handler=_listener_failed)

    def _command(self, message: dict[str, Any]) -> None:
        channel = message["channel"]
        name = (channel.decode() if isinstance(channel, bytes) else str(channel)).split(":", 2)[-1]
        with self._lock:
            worker = self._by_name.get(name)
        if worker is None:
            return
        try:
            payload = parse_payload(message)
        except ValueError:
            log.warning("threads %s: unreadable command for %s: %r", self.name, name, message.get("data"))
            return
        command = payload.get("command")
        if command == "stop-job":
            worker.stop_job(str(payload.get("job_id")))
        elif command == "shutdown":
            handle_shutdown_command(worker)  # SIGINT to this process: every worker stops, warm
        else:
            log.info("worker %s: command %r ignored (no work horse to kill)", name, command)

    # --- the loop ---

    def _loop(self) -> int:
        while True:
            if self._cold:
                self._cold_stop()
            if self._stopping and not self._stop_passed:
                self._pass_stop_on()
            self._reap()
            self._watch()
            if (self._stopping or self._burst) and not any(
                worker.thread is not None and worker.thread.is_alive() for worker in self.workers.values()
            ):
                break
            time.sleep(CHECK_INTERVAL)
        if self._mirror is not None:
            self._mirror.stop()  # what the workers did is in the database before the process exits
        with contextlib.suppress(redis_lib.RedisError):
            self.connection.srem(PRODUCT_WORKERS, *self._all_names())
        log.info("threads %s: stopped", self.name)
        return 0

    def _all_names(self) -> list[str]:
        return [worker.name for worker in [*self.workers.values(), *self.left_behind]]

    def job_done(self) -> None:
        """A worker ended a job (in its thread): after `max_jobs` in all, every worker stops."""
        with self._lock:
            self._done += 1
            if self.max_jobs is None or self._done < self.max_jobs or self._stopping:
                return
            self._stopping = True
        log.info("threads %s: %s jobs done; stopping", self.name, self._done)
        for worker in list(self.workers.values()):
            worker._stop_requested = True

    def _reap(self) -> None:
        """Workers whose thread ended: recorded dead, and replaced unless the process stops."""
        for slot, worker in list(self.workers.items()):
            if worker.thread is None or worker.thread.is_alive():
                continue
            if worker.name not in self._by_name:
                if not self._stopping and not self._burst and time.monotonic() >= self._respawn_at[slot]:
                    self._replace(slot)
                continue
            self._bury(worker)
            if self._stopping or self._burst:
                continue
            log.warning("threads %s: worker %s ended by itself; replaced", self.name, worker.name)
            if time.monotonic() - worker.born < QUICK_DEATH_SECONDS:
                self._quick_deaths[slot] += 1
                wait = min(RESPAWN_BACKOFF_MAX, 0.25 * 2 ** self._quick_deaths[slot])
                self._respawn_at[slot] = time.monotonic() + wait
            else:
                self._quick_deaths[slot] = 0
            if time.monotonic() >= self._respawn_at[slot]:
                self._replace(slot)

    def _replace(self, slot: int) -> None:
        self._generation[slot] += 1
        name = self.worker_name(slot)
        self._names.put(slot + 1, name)
        try:
            with self.connection.pipeline() as pipe:
                pipe.sadd(PRODUCT_WORKERS, name)
                pipe.set(alive_key(name), "1", ex=settings.JOBS_WORKER_DEAD_AFTER)
                pipe.execute()
        except REDIS_ERRORS as exc:
            log.warning("threads %s: worker %s not registered yet (%s)", self.name, name, exc)
        with _signals_blocked():
            self._start_worker(slot)

    def _bury(self, worker: ThreadWorker) -> None:
        """Record a worker dead in Redis at once: off RQ's worker sets (rq info, the dashboard), its
        key marked with its death, off the product's workers, its liveness key gone."""
        with self._lock:
            self._by_name.pop(worker.name, None)
        for slot, current in self.workers.items():
            if current is worker:
                self._names.clear(slot + 1)
        record_dead(self.connection, worker.name, self.queue_names)

    # --- jobs that do not stop ---

    def _watch(self) -> None:
        for worker in list(self.workers.values()):
            running = worker.running()
            if running is None:
                continue
            job_id, started, timeout, stop_at = running
            moment = time.time()
            if stop_at and moment >= stop_at + STOP_GRACE:
                self._put_down(worker, job_id, stopped=True, timeout=timeout)
            elif timeout > 0 and moment >= started + timeout + overrun_margin(timeout):
                self._put_down(worker, job_id, stopped=False, timeout=timeout)

    def _put_down(self, worker: ThreadWorker, job_id: str, *, stopped: bool, timeout: float) -> None:
        """Record the end of a job that did not stop (stopped, or failed on its timeout), leave its
        thread behind, and put a new worker in its place."""
        if not worker.leave_behind(job_id):
            return  # it ended just now
        self.left_behind.append(worker)
        try:
            self._record_end(worker.name, job_id, stopped=stopped, timeout=timeout)
        except REDIS_ERRORS as exc:
            log.warning("threads %s: end of job %s not recorded (%s); the reconciler judges it", self.name, job_id, exc)
        except Exception:
            log.exception("threads %s: end of job %s not recorded; the reconciler judges it", self.name, job_id)
        self._bury(worker)
        for slot, current in list(self.workers.items()):
            if current is worker:
                del self.workers[slot]  # the process no longer waits for it
                if not self._stopping:
                    self._replace(slot)

    def _record_end(self, name: str, job_id: str, *, stopped: bool, timeout: float) -> None:
        record_put_down(
            ThreadWorker,
            self.connection,
            name,
            job_id,
            stopped=stopped,
            timeout=timeout,
            left="its thread was left behind",
        )

    # --- stopping ---

    def _signalled(self, signum: int, frame: FrameType | None) -> None:
        if not self._stopping:
            log.info("threads %s: stopping once the running jobs are done (again for a cold stop)", self.name)
            self._stopping = True
            self._stop_asked_at = time.monotonic()
        elif self._stop_asked_at and time.monotonic() - self._stop_asked_at >= 1.0:
            self._cold = True  # the same stop delivered twice within a second is one stop
        elif not self._stop_asked_at:
            self._stop_asked_at = time.monotonic()  # stopping after max_jobs: this is the first signal

    def _pass_stop_on(self) -> None:
        self._stop_passed = True
        for worker in list(self.workers.values()):
            worker._stop_requested = True
            if worker.running() is not None:
                worker._shutdown_requested_date = now()
                with contextlib.suppress(*REDIS_ERRORS):
                    worker.set_shutdown_requested_date()

    def _cold_stop(self) -> None:
        running = [found[0] for worker in self.workers.values() if (found := worker.running()) is not None]
        log.warning("threads %s: cold stop; running jobs abandoned: %s", self.name, ", ".join(running) or "none")
        with contextlib.suppress(Exception):
            if self._mirror is not None:
                self._mirror.stop(timeout=5.0)
        for worker in [*self.workers.values(), *self.left_behind]:
            self._bury(worker)
        os._exit(1)


def _glob_escaped(text: str) -> str:
    return "".join(f"\\{char}" if char in "*?[]\\" else char for char in text)


def _listener_failed(exc: BaseException, pubsub: Any, thread: Any) -> None:
    """The listener waits for Redis and listens again (redis-py subscribes again on reconnection)."""
    if isinstance(exc, redis_lib.ConnectionError | redis_lib.TimeoutError):
        log.warning("threads: the command listener lost Redis (%s); retrying in 2 s", exc)
        time.sleep(2.0)
        return
    log.error("threads: the command listener failed; listening again in 2 s", exc_info=exc)
    with contextlib.suppress(Exception):
        pubsub.connection.disconnect()  # the next read connects and subscribes again
    time.sleep(2.0)


@contextlib.contextmanager
def _signals_blocked() -> Any:
    """Threads started inside block SIGTERM and SIGINT: the kernel then hands them to the main
    thread, whose wait they interrupt, rather than to any thread."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


__all__ = ["POLL_SECONDS", "AliveNames", "JobStoppedInThread", "ThreadDeathPenalty", "ThreadWorker", "Threads"]
