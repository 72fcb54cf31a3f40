"""Job types for the pooled worker's tests only (tests/test_pool.py).

The pools the tests start import this module through `JOBS_MODULES`; the test process registers
the types with the `pool_types` fixture and takes them out again afterwards. Never import it at
the top of a test module: importing it registers the types.

- `pool-sleep` works `seconds` in `steps`, reporting progress, and returns its process id;
  `pool-sleep-once` is the same, but like `email` never runs again by itself after its worker died.
- `pool-crash` ends its process (`os._exit(1)`) on its first attempt and finishes on the next;
  `pool-crash-once` never runs again by itself (its first run may have done its work).
- `pool-slow` sleeps far past its timeout of 2 s (an ordinary sleep: the alarm interrupts it).
- `pool-stuck` blocks the signals a worker interrupts a job with (the timeout's and the stop's),
  then sleeps: only the pool can put it down.
- `pool-memory` keeps `mb` MB of memory for the rest of its process's life.
- `pool-fail` always raises; `pool-fail-once` raises on its first attempt and finishes on the next.
- `pool-die-after-take` sleeps `seconds`, finishes, and its process dies (`os._exit`) as soon as
  the end of the job took the next one (`jobs.batching.on_take`): a job taken and not started.
"""

from __future__ import annotations

import os
import signal
import time

from pydantic import BaseModel, Field

from jobs.registry import RetryPolicy, job_type
from jobs.runner import report_progress

SLEEP = "pool-sleep"
SLEEP_ONCE = "pool-sleep-once"
CRASH = "pool-crash"
CRASH_ONCE = "pool-crash-once"
SLOW = "pool-slow"
STUCK = "pool-stuck"
MEMORY = "pool-memory"
FAIL = "pool-fail"
FAIL_ONCE = "pool-fail-once"
DIE_AFTER_TAKE = "pool-die-after-take"
NAMES: tuple[str, ...] = (SLEEP, SLEEP_ONCE, CRASH, CRASH_ONCE, SLOW, STUCK, MEMORY, FAIL, FAIL_ONCE, DIE_AFTER_TAKE)
TIMEOUT_SECONDS = 2

#: Memory kept by `pool-memory` jobs (never freed: the process keeps it).
_kept: list[bytes] = []


class SleepParams(BaseModel):
    seconds: float = Field(0.0, ge=0, le=600)
    steps: int = Field(1, ge=1, le=600)


def sleep(params: SleepParams) -> dict[str, object]:
    step = params.seconds / params.steps
    for done in range(1, params.steps + 1):
        time.sleep(step)
        report_progress(100 * done / params.steps, f"step {done}")
    return {"pid": os.getpid(), "slept": params.seconds}


class NoParams(BaseModel):
    pass


def crash(params: NoParams) -> dict[str, object]:
    from rq import get_current_job

    from jobs import events

    job = get_current_job()
    if job is not None and events.attempt_number(job) == 1:
        os._exit(1)
    return {"pid": os.getpid()}


def slow(params: NoParams) -> None:
    time.sleep(TIMEOUT_SECONDS * 30)


def stuck(params: NoParams) -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM, signal.SIGUSR1})
    time.sleep(300)


class MemoryParams(BaseModel):
    mb: int = Field(100, ge=1, le=2000)


def memory(params: MemoryParams) -> dict[str, object]:
    _kept.append(b"m" * (params.mb * 2**20))
    return {"pid": os.getpid(), "kept_mb": params.mb}


def fail(params: NoParams) -> None:
    raise RuntimeError("pool-fail always fails")


def fail_once(params: NoParams) -> dict[str, object]:
    from rq import get_current_job

    from jobs import events

    job = get_current_job()
    if job is not None and events.attempt_number(job) == 1:
        raise RuntimeError("pool-fail-once fails its first attempt")
    return {"pid": os.getpid()}


def die_after_take(params: SleepParams) -> dict[str, object]:
    from jobs import batching

    batching.on_take = lambda job_id: os._exit(1)
    time.sleep(params.seconds)
    return {"pid": os.getpid()}


def register() -> None:
    job_type(SLEEP, params=SleepParams, retry=RetryPolicy(max_attempts=2, base=1, cap=1), timeout=600)(sleep)
    job_type(SLEEP_ONCE, params=SleepParams, retry=RetryPolicy(max_attempts=2, retry_lost=False), timeout=600)(sleep)
    job_type(CRASH, params=NoParams, retry=RetryPolicy(max_attempts=2, base=1, cap=1), timeout=60)(crash)
    job_type(CRASH_ONCE, params=NoParams, retry=RetryPolicy(max_attempts=2, retry_lost=False), timeout=60)(crash)
    once = RetryPolicy(max_attempts=1)
    job_type(SLOW, params=NoParams, retry=once, timeout=TIMEOUT_SECONDS)(slow)
    job_type(STUCK, params=NoParams, retry=once, timeout=TIMEOUT_SECONDS)(stuck)
    job_type(MEMORY, params=MemoryParams, retry=once, timeout=60)(memory)
    job_type(FAIL, params=NoParams, retry=once, timeout=60)(fail)
    job_type(FAIL_ONCE, params=NoParams, retry=RetryPolicy(max_attempts=2, base=1, cap=1), timeout=60)(fail_once)
    job_type(DIE_AFTER_TAKE, params=SleepParams, retry=once, timeout=60)(die_after_take)


def unregister() -> None:
    from jobs import registry

    for name in (*NAMES, *THREAD_NAMES):
        registry._registry.pop(name, None)


register()


# --- the threaded worker's (tests/test_threads.py; `register_thread_types`) ---------------------
#
# - `pool-slow-steps` sleeps in short steps far past its timeout of 2 s: in a thread, the timeout is
#   raised between two Python instructions (never inside one call, such as a long `time.sleep`).
# - `pool-flaky` sleeps `seconds` and raises on its first attempt, finishes on the next (1 s later);
#   `pool-fail-twice` sleeps `seconds` and raises on both its attempts.

SLOW_STEPS = "pool-slow-steps"
FLAKY = "pool-flaky"
FAIL_TWICE = "pool-fail-twice"
THREAD_NAMES: tuple[str, ...] = (SLOW_STEPS, FLAKY, FAIL_TWICE)
NAMES = (*NAMES, SLOW_STEPS, FLAKY, FAIL_TWICE)


def slow_steps(params: NoParams) -> None:
    for _ in range(TIMEOUT_SECONDS * 600):
        time.sleep(0.05)


def flaky(params: SleepParams) -> dict[str, object]:
    from rq import get_current_job

    from jobs import events

    time.sleep(params.seconds)
    job = get_current_job()
    if job is not None and events.attempt_number(job) == 1:
        raise RuntimeError("pool-flaky fails its first attempt")
    return {"pid": os.getpid(), "slept": params.seconds}


def fail_twice(params: SleepParams) -> None:
    time.sleep(params.seconds)
    raise RuntimeError("pool-fail-twice always fails")


def register_thread_types() -> None:
    retried = RetryPolicy(max_attempts=2, base=1, cap=1)
    job_type(SLOW_STEPS, params=NoParams, retry=RetryPolicy(max_attempts=1), timeout=TIMEOUT_SECONDS)(slow_steps)
    job_type(FLAKY, params=SleepParams, retry=retried, timeout=60)(flaky)
    job_type(FAIL_TWICE, params=SleepParams, retry=retried, timeout=60)(fail_twice)


register_thread_types()
