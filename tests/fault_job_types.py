"""Job types for the fault tests only.

Worker processes (and the web server) started by the tests import this module
through `JOBS_MODULES`; the test process registers the types with the
`fault_job_types` / `downstream_job_type` fixtures and takes them out again
afterwards, so no other test ever sees them. Never import this module at the
top of a test module: importing it registers the types.

- `faults-downstream-call` calls a "downstream service" that may be down. The
  failure depends on the worker's world, not on the job's params: a retry runs
  with the very params stored in the row, so only a job that failed for an
  outside reason can succeed when it is retried.
- `faults-record` and `faults-record-once` write a line to a run log (a file the
  worker's environment names) when they start and when they end, so a test can
  count how many times each job ran; a run that starts while an earlier run of
  the same job still runs in another process writes an `overlap` line. The first
  retries work lost with its worker; the second, like `email`, never does (its
  first run may have done its work), but retries ordinary failures.
- `faults-raises`, `faults-times-out`, `faults-not-json` and `faults-big-result`
  end badly or strangely, each in its own way.
- `faults-end-lost` (logged like `faults-record`) loses, on its first attempt, the
  transaction that records its end: the process that runs it sends it and the
  connection drops, before Redis gets it or after Redis applied it. It finishes,
  or raises on its first attempt and finishes on its second.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from pydantic import BaseModel, Field

from jobs.registry import RetryPolicy, job_type
from jobs.runner import report_progress

NAME = "faults-downstream-call"
#: The worker's environment names a file; while it exists, the downstream is down.
DOWN_FLAG_ENV = "FAULTS_DOWNSTREAM_DOWN_FLAG"

RECORD = "faults-record"
RECORD_ONCE = "faults-record-once"
RAISES = "faults-raises"
TIMES_OUT = "faults-times-out"
NOT_JSON = "faults-not-json"
BIG_RESULT = "faults-big-result"
END_LOST = "faults-end-lost"
#: The worker's environment names the run log: one line per start and per end of a run.
RUN_LOG_ENV = "FAULTS_RUN_LOG"
#: Seconds `faults-times-out` may run (it would work far longer).
TIMEOUT_SECONDS = 2
#: How big the result of `faults-big-result` is, in characters.
BIG_RESULT_CHARS = 10 * 1024 * 1024

NAMES = (NAME, RECORD, RECORD_ONCE, RAISES, TIMES_OUT, NOT_JSON, BIG_RESULT, END_LOST)


class DownstreamParams(BaseModel):
    pass


def call_downstream(params: DownstreamParams) -> dict[str, object]:
    """Fails while the downstream service is down."""
    flag = os.environ.get(DOWN_FLAG_ENV)
    if flag and Path(flag).exists():
        raise ConnectionError("the downstream service is down")
    return {"called": True}


class RecordParams(BaseModel):
    seconds: float = Field(0.0, ge=0, le=600, description="Seconds the job works.")
    steps: int = Field(1, ge=1, le=600, description="Progress reports while it works.")


def _log_line(kind: str, extra: str = "") -> None:
    """Append `<kind> <job id> <attempt> <pid> <epoch> [extra]` to the run log (one write: atomic with O_APPEND)."""
    from rq import get_current_job

    from jobs import events

    path = os.environ.get(RUN_LOG_ENV)
    job = get_current_job()
    if not path or job is None:
        return
    line = f"{kind} {job.id} {events.attempt_number(job)} {os.getpid()} {time.time():.6f} {extra}".rstrip()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


def _running(pid: int) -> bool:
    """Whether a process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def under_way_dir(run_log: str, job_id: str) -> Path:
    """Where each run of a job under way keeps a file named by its pid: `<run log>.running/<job id>/`."""
    return Path(f"{run_log}.running") / job_id


@contextlib.contextmanager
def logged_run() -> Iterator[None]:
    """Log the run of the current job: its start, an `overlap` line for each earlier run of the same
    job still under way in another process, and how it ended (`end`, or `fail` and the exception)."""
    from rq import get_current_job

    path = os.environ.get(RUN_LOG_ENV)
    job = get_current_job()
    if not path or job is None:
        yield
        return
    _log_line("start")
    marker = under_way_dir(path, job.id) / str(os.getpid())
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    # Looked at after leaving its own mark: of two runs starting at once, the later to look sees the other.
    for other in sorted(marker.parent.iterdir()):
        if int(other.name) != os.getpid() and _running(int(other.name)):
            _log_line("overlap", other.name)
    try:
        yield
    except BaseException as exc:
        _log_line("fail", type(exc).__name__)
        raise
    finally:
        marker.unlink(missing_ok=True)  # a killed run leaves its mark: its pid no longer runs
    _log_line("end")


def record(params: RecordParams) -> dict[str, object]:
    """Writes its start to the run log, works, reports progress, writes how it ended."""
    with logged_run():
        step = params.seconds / params.steps
        for done in range(1, params.steps + 1):
            time.sleep(step)
            report_progress(100 * done / params.steps)
    return {"worked": params.seconds}


class NoParams(BaseModel):
    pass


class FaultsJobError(RuntimeError):
    pass


def raises(params: NoParams) -> None:
    """Raises an error of its own."""
    raise FaultsJobError("the faults job raised on purpose")


def times_out(params: NoParams) -> None:
    """Works far longer than its type's timeout allows."""
    time.sleep(TIMEOUT_SECONDS * 30)


def not_json(params: NoParams) -> object:
    """Returns values JSON cannot represent (a decimal, a datetime)."""
    return {"amount": Decimal("12.50"), "when": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)}


def big_result(params: NoParams) -> str:
    """Returns ten megabytes of text."""
    return "x" * BIG_RESULT_CHARS


class EndLostParams(BaseModel):
    fail: bool = Field(False, description="Raise on the first attempt (and finish on the second).")
    applied: bool = Field(False, description="Redis applies the lost transaction; only its answer never arrives.")


def _lose_the_next_end(applied: bool) -> None:
    """The next transaction this process sends with a job's end in it (the mirror's finished or
    failed event) fails with a dropped connection: before Redis got it, or after Redis applied it."""
    import redis.client

    from jobs import events

    real = redis.client.Pipeline.execute
    ends = (f'"k":"{events.FINISHED}"', f'"k":"{events.FAILED}"')

    def carries_an_end(pipeline: redis.client.Pipeline) -> bool:
        return any(
            args[:2] == ("XADD", events.STREAM) and any(end in str(args) for end in ends)
            for args, _ in pipeline.command_stack
        )

    def execute(self: redis.client.Pipeline, raise_on_error: bool = True) -> list[object]:
        if not carries_an_end(self):
            return real(self, raise_on_error)
        redis.client.Pipeline.execute = real  # type: ignore[method-assign]
        if applied:
            real(self, raise_on_error)
        else:
            self.reset()  # as redis-py does after a failed execution
        raise redis.ConnectionError("Connection reset by peer (the test's fault)")

    redis.client.Pipeline.execute = execute  # type: ignore[method-assign]


def end_lost(params: EndLostParams) -> dict[str, object]:
    """Logged like `record`; on its first attempt the transaction of its end is lost (and it raises, with `fail`)."""
    from rq import get_current_job

    from jobs import events

    job = get_current_job()
    first = job is not None and events.attempt_number(job) == 1
    with logged_run():
        if first:
            _lose_the_next_end(params.applied)
            if params.fail:
                raise FaultsJobError("the faults job raised on purpose")
    return {"fail": params.fail, "applied": params.applied}


def register() -> None:
    # One attempt per round: the job fails for good at once, with no backoff to wait for.
    job_type(NAME, params=DownstreamParams, retry=RetryPolicy(max_attempts=1), timeout=60)(call_downstream)
    # Two attempts, one second apart: lost work runs again, once.
    job_type(RECORD, params=RecordParams, retry=RetryPolicy(max_attempts=2, base=1, cap=1), timeout=600)(record)
    # Like `email`: ordinary failures are retried, lost work never is.
    job_type(
        RECORD_ONCE,
        params=RecordParams,
        retry=RetryPolicy(max_attempts=3, base=1, cap=1, retry_lost=False),
        timeout=600,
    )(record)
    once = RetryPolicy(max_attempts=1)
    job_type(RAISES, params=NoParams, retry=once, timeout=60)(raises)
    job_type(TIMES_OUT, params=NoParams, retry=once, timeout=TIMEOUT_SECONDS)(times_out)
    job_type(NOT_JSON, params=NoParams, retry=once, timeout=60)(not_json)
    job_type(BIG_RESULT, params=NoParams, retry=once, timeout=60)(big_result)
    # Like `email`: a failure is retried (one second later), lost work never is.
    job_type(
        END_LOST, params=EndLostParams, retry=RetryPolicy(max_attempts=2, base=1, cap=1, retry_lost=False), timeout=60
    )(end_lost)


def unregister() -> None:
    from jobs import registry

    for name in NAMES:
        registry._registry.pop(name, None)


register()
