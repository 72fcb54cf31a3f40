"""Job transitions as events on a Redis stream.

Workers append an event for every transition inside the Redis pipelines RQ
already executes (so mirroring adds no round trip to a job's life); the mirror
(`jobs.mirror`) drains the stream into the database in batches; live pages can
read the same stream. An event is one stream entry with one field, `e`, holding
compact JSON:

    j  job id            k  kind (queued, started, progress, finished, failed, stopped)
    a  attempt number    t  time (epoch seconds)
    w  worker name       p, m  progress percent and message
    r  result            x, tb  error line and traceback
    mx how many attempts the row allows (on started)
    f, o, ar  the callable, queue and arguments of a job the product did not create (external)
    n  when the next attempt is due (epoch seconds), for a failure that will be retried
    q  1 when a failed attempt was put straight back on its queue
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from redis import Redis
    from redis.client import Pipeline
    from rq.job import Job as RQJob

STREAM = "jobs:events"
GROUP = "mirror"

#: What the services change themselves (jobs created, retried, canceled, promoted, removed,
#: given up on), for live pages: the workers' transitions are on `STREAM`. An entry has one
#: field, `e`: {"k": "created" | "changed" | "removed", "jobs": [row, ...]} or, for more rows
#: than `NOTICE_ROWS`, {"k": ..., "n": how many}. Capped: only live pages read it.
LIVE_STREAM = "jobs:live"
LIVE_MAXLEN = 10_000
NOTICE_ROWS = 50
CREATED = "created"
CHANGED = "changed"
REMOVED = "removed"

QUEUED = "queued"
STARTED = "started"
PROGRESS = "progress"
FINISHED = "finished"
FAILED = "failed"
STOPPED = "stopped"
#: A worker took a job the product did not create (a plain django-rq enqueue): the mirror
#: gives it a history row of type `EXTERNAL_TYPE` before its other transitions.
EXTERNAL = "external"
EXTERNAL_TYPE = "external"

#: Order of a transition within one attempt: an event only moves a row forward.
PHASE = {EXTERNAL: 0, QUEUED: 0, STARTED: 1, PROGRESS: 2, FINISHED: 3, FAILED: 3, STOPPED: 3}

#: Results bigger than this are kept as a preview only.
MAX_RESULT_BYTES = 64 * 1024
#: The stream is bounded by what cannot be dropped: while it holds more than
#: `JOBS_STREAM_BACKLOG_LIMIT` entries (the mirror is behind: the database is away, no
#: drainer runs), progress reports are not written (the next one after it catches up is)
#: and results are kept as previews. Transitions are always written: they are the history.
BACKLOG_LIMIT = 50_000
#: A result's size while the stream is over BACKLOG_LIMIT.
BACKLOG_RESULT_BYTES = 1024
MAX_TRACEBACK_CHARS = 20_000


@dataclass(frozen=True)
class Event:
    id: str  # the stream entry id
    job_id: str
    kind: str
    attempt: int
    at: float
    data: dict[str, Any]

    @property
    def seq(self) -> int:
        return self.attempt * 4 + PHASE[self.kind]

    @property
    def stream_time(self) -> float:
        """When Redis received the event (from the entry id), in epoch seconds."""
        return int(self.id.split("-", 1)[0]) / 1000


def seq_after(attempts: int) -> int:
    """The sequence past every event of a job's first `attempts` attempts: what a row
    set back to queued (a retry) carries, so no late event of an old attempt undoes it."""
    return attempts * 4 + PHASE[FINISHED]


def seq_before_end(attempt: int) -> int:
    """The sequence past an attempt's start and progress but not its end: what a verdict on a
    running attempt (abandoned, lost) carries, so that the worker's own end, if it still comes,
    wins over the verdict."""
    return attempt * 4 + PHASE[PROGRESS]


def decode(entry_id: bytes | str, fields: dict[bytes, bytes]) -> Event | None:
    raw = fields.get(b"e")
    entry = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return from_dict(entry, data)


def from_dict(entry_id: str, data: Any) -> Event | None:
    """An event from its decoded JSON (a copy: `data` is left as it is); None when malformed."""
    try:
        rest = dict(data)
        return Event(
            id=entry_id,
            job_id=str(rest.pop("j")),
            kind=str(rest.pop("k")),
            attempt=int(rest.pop("a", 0)),
            at=float(rest.pop("t")),
            data=rest,
        )
    except (ValueError, KeyError, TypeError):
        return None


def attempt_number(job: RQJob) -> int:
    """Which attempt of the history row this run of the RQ job is.

    The service stores in the job's meta how many attempts the row had before
    this RQ job was enqueued (`attempt_base`) and how many retries RQ may make
    (`retries`); RQ counts down `retries_left` as it retries.
    """
    meta = job.meta or {}
    base = int(meta.get("attempt_base", 0))
    retries = int(meta.get("retries", 0))
    left = job.retries_left if job.retries_left is not None else retries
    return base + (retries - left) + 1


def max_attempts(job: RQJob) -> int:
    """How many attempts the history row allows in all (the attempts before this RQ job, and its round)."""
    meta = job.meta or {}
    return int(meta.get("attempt_base", 0)) + int(meta.get("retries", 0)) + 1


def emit(conn: Redis | Pipeline, job_id: str, kind: str, attempt: int, **data: Any) -> None:
    """Append one event (to a pipeline when given one: then it costs no round trip)."""
    payload = {"j": job_id, "k": kind, "a": attempt, "t": round(time.time(), 6)}
    payload.update({key: value for key, value in data.items() if value is not None})
    conn.xadd(STREAM, {"e": json.dumps(payload, default=str, separators=(",", ":"))})


def announce(conn: Redis | Pipeline, kind: str, rows: list[dict[str, Any]] | int) -> None:
    """Tell live pages that jobs were created, changed or removed by the services (one entry):
    their rows, or how many there were when that is more than `NOTICE_ROWS`."""
    notice: dict[str, Any] = {"k": kind}
    if isinstance(rows, int):
        notice["n"] = rows
    else:
        notice["jobs"] = rows
    conn.xadd(
        LIVE_STREAM,
        {"e": json.dumps(notice, default=str, separators=(",", ":"))},
        maxlen=LIVE_MAXLEN,
        approximate=True,
    )


def encode_result(value: Any, limit: int = MAX_RESULT_BYTES) -> Any:
    """A JSON-safe, bounded copy of a job's return value."""
    try:
        text = json.dumps(value, default=str)
    except (TypeError, ValueError):
        text = json.dumps(repr(value))
    if len(text) > limit:
        return {"truncated": True, "bytes": len(text), "preview": text[:1000]}
    return json.loads(text)


class Backlog:
    """Whether the stream is over BACKLOG_LIMIT, read at most once a second per process."""

    def __init__(self) -> None:
        self._over = False
        self._read_at = 0.0

    def over(self, conn: Redis) -> bool:
        now = time.monotonic()
        if now - self._read_at >= 1.0:
            self._read_at = now
            try:
                from django.conf import settings

                limit = int(getattr(settings, "JOBS_STREAM_BACKLOG_LIMIT", BACKLOG_LIMIT))
                self._over = int(conn.xlen(STREAM)) > limit  # type: ignore[arg-type]
            except Exception:  # Redis trouble shows up where it matters: in the job's own pipelines
                self._over = False
        return self._over


backlog = Backlog()


def error_line(exc_string: str) -> str:
    """The last non-empty line of a traceback: 'ValueError: boom'."""
    for line in reversed(exc_string.strip().splitlines()):
        if line.strip():
            return line.strip()[:1000]
    return ""
