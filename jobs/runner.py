"""What a worker actually calls: look the job type up and run it.

Every RQ job the product enqueues calls `run(type_name, params)`, so the only
code a job can reach is a registered job type, whatever ends up in Redis.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from rq import get_current_job

from jobs import events, logs, registry
from jobs.errors import REDIS_ERRORS

log = logging.getLogger(__name__)


class JobRefused(RuntimeError):
    """A job in Redis names a callable that is neither the product's runner nor allowed."""


def allowed_external(callable_name: str | None) -> bool:
    """Whether a job the product did not create may run: its callable is listed in JOBS_EXTERNAL_CALLABLES."""
    from django.conf import settings

    return callable_name in getattr(settings, "JOBS_EXTERNAL_CALLABLES", ())


def refusal(callable_name: str | None) -> JobRefused:
    return JobRefused(
        f"refused to run {callable_name!r}: only registered job types run here "
        "(enqueue through jobs.services, or list the callable in JOBS_EXTERNAL_CALLABLES)"
    )


def run(type_name: str, params: dict[str, Any]) -> Any:
    """Run a job: its type's function with its params, validated again here.

    Stored params that no longer validate (the type changed while the job waited, or an
    old job is retried) fail the job with `InvalidParams`, which names the params and what
    is wrong, never their values: its text becomes the job's error and the worker's log.
    What the job logs carries its id and type (`jobs.logs`), whatever worker class runs it."""
    job = get_current_job()
    in_hand = logs.job_context(job.id, type_name) if job is not None else contextlib.nullcontext()
    with in_hand:
        job_type = registry.get(type_name)
        validated = job_type.parse(params)
        return job_type.func(validated)


def report_progress(percent: float, message: str = "") -> None:
    """Report how far the current job is, 0 to 100: shown live and kept in its row.

    Call it from a job function as often as you like: only changes of a whole
    percent (or of the message) reach Redis.
    """
    job = get_current_job()
    if job is None:
        return  # called outside a worker (e.g. a unit test calling the function directly)
    value = max(0, min(100, int(percent)))
    message = message[:200]
    last = getattr(job, "_last_reported_progress", None)
    if last == (value, message):
        return
    try:
        if events.backlog.over(job.connection):
            return  # the history is behind: progress is what the stream can do without (not remembered as sent)
        events.emit(job.connection, job.id, events.PROGRESS, events.attempt_number(job), p=value, m=message or None)
    except REDIS_ERRORS as exc:
        # A report is worth less than the job's work: Redis blinking (a restart) must not fail the
        # job and have its work done again. Not remembered as sent: the next report tries again.
        log.warning("job %s: progress %s%% not reported, Redis unavailable (%s)", job.id, value, exc)
        return
    job._last_reported_progress = (value, message)  # type: ignore[attr-defined]
