"""Log lines as plain text or as JSON, each carrying the job it concerns.

`LOG_FORMAT=plain` (the default, for local runs): `time LEVEL logger: message job=<id> type=<type>`.
`LOG_FORMAT=json`: one JSON object per line, with `time` (ISO 8601, UTC), `level`, `logger`,
`message`, `role` (web, worker or scheduler: what this process is), `pid`, and, when the line
concerns one job, `job_id` and `job_type`; an exception's traceback is in `exception`.

A line concerns a job when its call passes `extra=logs.job_extra(...)`, or when it is logged while a
job is in hand: the worker sets `job_context` around each job it runs (the work horse inherits it),
so RQ's own lines about the job and whatever the job's code logs carry it without saying so.
`JobContextFilter`, on the handler, adds it to the record. This module imports nothing of Django:
the settings' LOGGING names its classes.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

#: What a process is, by the management command it runs; any other process serves the site.
WEB, WORKER, SCHEDULER = "web", "worker", "scheduler"
ROLE_BY_COMMAND = {
    "rqworker": WORKER,
    "rqworker-pool": WORKER,
    "jobs_pool": WORKER,
    "jobs_threads": WORKER,
    "runscheduler": SCHEDULER,
    "runserver": WEB,
}

_job: contextvars.ContextVar[tuple[str, str | None] | None] = contextvars.ContextVar("log_job", default=None)
_COLOURS = re.compile(r"\x1b\[[0-9;]*m")  # RQ colours its lines when it writes to a terminal
#: RQ's line for a job a worker has just taken, logged before the worker has the job in hand: its
#: last argument is the job's id, and the one before its description ("<type> <id>" for the product's).
RQ_TAKEN = frozenset({"Worker %s: %s: %s (%s)", "Worker %s: %s: %s"})


@contextmanager
def job_context(job_id: Any, job_type: str | None) -> Iterator[None]:
    """Every line logged inside (in this thread, and in a process forked inside) concerns this job."""
    token = _job.set((str(job_id), job_type))
    try:
        yield
    finally:
        _job.reset(token)


def job_extra(job_id: Any, job_type: str | None) -> dict[str, Any]:
    """`extra=` for a line about one job."""
    return {"job_id": str(job_id), "job_type": job_type}


def username(user: Any) -> str:
    """Who acted, for a log line: a user's name, or `system` (the scheduler, your own code)."""
    if user is not None and getattr(user, "is_authenticated", False):
        return str(user.get_username())
    return "system"


def process_role(argv: Sequence[str] | None = None) -> str:
    """This process's role, from its command line (read once, when logging is configured):
    `manage.py rqworker` is a worker, `manage.py runscheduler` the scheduler, another command its
    own name, anything else (gunicorn, uvicorn, any WSGI or ASGI server) the web."""
    argv = list(sys.argv if argv is None else argv)
    program = os.path.basename(argv[0]) if argv else ""
    via_django = program in ("manage.py", "django-admin") or (
        program == "__main__.py" and os.path.basename(os.path.dirname(argv[0])) == "django"
    )
    if via_django and len(argv) > 1:
        return ROLE_BY_COMMAND.get(argv[1], argv[1])
    return WEB


class JobContextFilter(logging.Filter):
    """Adds the job in hand (see `job_context`) to a record that names none itself."""

    def filter(self, record: logging.LogRecord) -> bool:
        current = _job.get()
        if current is None:
            if record.name == "rq.worker" and isinstance(record.msg, str) and record.msg in RQ_TAKEN:
                _name_taken_job(record)
            return True
        named = getattr(record, "job_id", None)
        if named is None:
            record.job_id, record.job_type = current
        elif getattr(record, "job_type", None) is None and str(named) == current[0]:
            record.job_type = current[1]  # RQ names the job's id, not its type
        return True


def _name_taken_job(record: logging.LogRecord) -> None:
    args = record.args
    if not isinstance(args, tuple) or len(args) < 3:
        return
    job_id = str(args[-1])
    description = _COLOURS.sub("", str(args[-2])).split()
    record.job_id = job_id
    record.job_type = description[0] if len(description) == 2 and description[1] == job_id else None


def _job_of(record: logging.LogRecord) -> tuple[str | None, str | None]:
    job_id = getattr(record, "job_id", None)
    return (None, None) if job_id is None else (str(job_id), getattr(record, "job_type", None))


class PlainFormatter(logging.Formatter):
    """`2025-01-31 12:00:00,123 INFO jobs.worker: job … finished in 1.20s job=<id> type=<type>`."""

    def __init__(self, fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s", **kwargs: Any) -> None:
        super().__init__(fmt, **kwargs)

    def formatMessage(self, record: logging.LogRecord) -> str:
        text = super().formatMessage(record)
        job_id, job_type = _job_of(record)
        if job_id is None:
            return text
        return f"{text} job={job_id}" + (f" type={job_type}" if job_type else "")


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message or a traceback are escaped)."""

    def __init__(self, role: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.role = role or process_role()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "level": record.levelname,
            "logger": record.name,
            "message": _COLOURS.sub("", record.getMessage()),
            "role": self.role,
            "pid": record.process,
        }
        job_id, job_type = _job_of(record)
        if job_id is not None:
            entry["job_id"] = job_id
            entry["job_type"] = job_type
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)
