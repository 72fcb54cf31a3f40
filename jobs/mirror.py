"""RQ -> database: drain the transition stream into the history rows, in batches.

Each worker runs a `MirrorThread` beside its job loop (the parent process, whose
database connection lives as long as the worker), and the scheduler process
runs one too. They read the stream through one Redis consumer group, so each
event reaches one of them; an event is acknowledged only after its batch is
committed, so a database outage delays transitions but never loses them.
Events may be applied twice or out of order (a batch re-read after a crash, two
drainers): applying them is idempotent and only moves a row forward.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis as redis_lib
from django.db import (
    DatabaseError,
    close_old_connections,
    connection,
    transaction,
)
from redis import Redis

from jobs import events, logs, sql
from jobs.events import Event
from jobs.models import Job, JobAttempt
from jobs.signals import stop_on_signal
from jobs.statuses import AttemptOutcome, JobStatus

log = logging.getLogger(__name__)

#: An event whose row is not in the database yet (its transaction has not
#: committed) is retried until it is this old, then dropped with a warning.
ORPHAN_GRACE_SECONDS = 60.0
#: Bounds of the back-off for re-reading events whose row was not visible yet.
WAITING_RETRY_MIN = 0.02
WAITING_RETRY_MAX = 1.0
#: How long a caught-up mirror lets events gather before its next batch. The
#: mirror shares the worker's process and its GIL: one transaction per event
#: would cost a busy worker most of its throughput. The most it adds to the lag.
BATCH_LINGER_SECONDS = 0.2
#: A lingering mirror looks at the stream this often. It applies at once when this many events have
#: come (the batch is big enough), or, once a burst of at least LINGER_BUSY_BATCH events has come (within
#: one linger's time, over however many batches, counting those come since the last read), when none
#: came since it last looked: the end of a burst reaches the history without waiting out the linger,
#: and a trickle is still gathered.
LINGER_POLL_SECONDS = 0.025
LINGER_ENOUGH = 200
LINGER_BUSY_BATCH = 20
#: A stopping mirror tries again after an error for this long, every STOP_RETRY_PAUSE seconds at most:
#: what its worker did reaches the database before it exits, also through a Redis just back from a
#: restart (which has lost the consumer group until the next round makes it) or a database that blinked.
STOP_RETRY_SECONDS = 3.0
STOP_RETRY_PAUSE = 0.25
#: Pending events of a consumer idle this long are taken over by another.
CLAIM_IDLE_MS = 30_000
#: The key a mirror keeps fresh while it (and the worker or scheduler it serves) is alive.
ALIVE_KEY = "jobs:worker-alive:{}"
#: Applied events stay on the stream this long for live readers.
RETENTION_SECONDS = 120

JOB_FIELDS = [
    "status",
    "progress",
    "progress_message",
    "progress_at",
    "result",
    "error",
    "traceback",
    "attempts",
    "enqueued_at",
    "scheduled_for",
    "started_at",
    "ended_at",
    "worker_name",
    "mirror_seq",
    "updated_at",
]
ATTEMPT_FIELDS = ["worker_name", "started_at", "ended_at", "outcome", "error", "traceback", "retry_at"]

ENDED_OUTCOME = {
    events.FINISHED: AttemptOutcome.FINISHED,
    events.FAILED: AttemptOutcome.FAILED,
    events.STOPPED: AttemptOutcome.STOPPED,
}


def _dt(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, tz=UTC)


@dataclass
class ApplyResult:
    applied: list[str] = field(default_factory=list)  # entry ids done with (ack them)
    waiting: list[Event] = field(default_factory=list)  # rows not visible yet


def apply_events(batch: Iterable[Event]) -> ApplyResult:
    """Apply a batch of events to the database in one transaction."""
    batch = list(batch)
    result = ApplyResult()
    if not batch:
        return result
    keyed = [event for event in batch if _is_uuid(event.job_id)]
    # A job id that is not a UUID cannot have a row (an external job with an id of its own).
    result.applied += [event.id for event in batch if not _is_uuid(event.job_id)]
    batch = keyed
    job_ids = {event.job_id for event in batch}
    with transaction.atomic():
        _add_external_rows([event for event in batch if event.kind == events.EXTERNAL])
        # Locked, in one order: another drainer applying events of the same job waits,
        # then sees what this one wrote, instead of writing back a row it read before.
        rows = Job.objects.select_for_update().only(*JOB_FIELDS).order_by("pk").in_bulk(list(job_ids))
        rows = {str(key): row for key, row in rows.items()}
        numbers = {event.attempt for event in batch if event.kind != events.PROGRESS}
        attempts = {
            (str(attempt.job_id), attempt.number): attempt
            for attempt in JobAttempt.objects.filter(job_id__in=list(rows), number__in=numbers)
        }
        new_attempts: dict[tuple[str, int], JobAttempt] = {}
        changed_rows: set[str] = set()
        changed_attempts: set[tuple[str, int]] = set()
        now = datetime.now(tz=UTC)

        for event in batch:
            row = rows.get(event.job_id)
            if row is None:
                if time.time() - event.stream_time < ORPHAN_GRACE_SECONDS:
                    result.waiting.append(event)
                else:
                    extra = logs.job_extra(event.job_id, None)
                    log.warning("dropping %s event for job %s: no such row", event.kind, event.job_id, extra=extra)
                    result.applied.append(event.id)
                continue
            result.applied.append(event.id)
            if event.kind == events.PROGRESS:
                reported = _dt(event.at)
                newer = row.progress_at is None or (reported is not None and reported > row.progress_at)
                if row.status == JobStatus.STARTED and row.attempts == event.attempt and newer:
                    row.progress = int(event.data.get("p", row.progress))
                    row.progress_message = str(event.data.get("m", ""))[:200]
                    row.progress_at = reported
                    changed_rows.add(event.job_id)
                continue
            if event.kind in (events.STARTED, *ENDED_OUTCOME):
                key = (event.job_id, event.attempt)
                if key in attempts:
                    attempt = attempts[key]
                    changed_attempts.add(key)
                else:
                    attempt = new_attempts.setdefault(key, JobAttempt(job=row, number=event.attempt))
                _apply_to_attempt(attempt, event)
            if event.seq > row.mirror_seq and not _moved_past(row, event):
                _apply_to_row(row, event)
                row.mirror_seq = event.seq
                changed_rows.add(event.job_id)

        for job_id in changed_rows:
            rows[job_id].updated_at = now
        if changed_rows:
            sql.update_rows(Job, [rows[job_id] for job_id in changed_rows], JOB_FIELDS)
        if new_attempts:
            sql.insert_rows(JobAttempt, list(new_attempts.values()))
        if changed_attempts:
            sql.update_rows(JobAttempt, [attempts[key] for key in changed_attempts], ATTEMPT_FIELDS)
    return result


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _add_external_rows(found: list[Event]) -> None:
    """Rows for jobs the product did not create, from what the worker said of them."""
    if not found:
        return
    existing = {str(key) for key in Job.objects.filter(pk__in=[e.job_id for e in found]).values_list("pk", flat=True)}
    rows: dict[str, Job] = {}
    for event in found:
        if event.job_id in existing or event.job_id in rows:
            continue
        data = event.data
        rows[event.job_id] = Job(
            id=uuid.UUID(event.job_id),
            type=events.EXTERNAL_TYPE,
            queue=str(data.get("o", ""))[:50],
            params={"callable": str(data.get("f", "")), "args": str(data.get("ar", ""))[:1000]},
            status=JobStatus.QUEUED,
            max_attempts=1,
            timeout=0,
            enqueued_at=_dt(data.get("c")),
        )
    if rows:
        sql.insert_rows(Job, list(rows.values()))


def _moved_past(row: Job, event: Event) -> bool:
    """Whether the row waits for a later attempt than the one this end belongs to.

    The reconciler judges a run abandoned once its worker stops beating (or lost), and queues the
    job again where its type allows, before the run's own end may arrive: a worker frozen rather
    than dead leaves its work horse running. That end belongs to its attempt in the timeline; the
    row goes on waiting for the next attempt.
    """
    waiting = row.status in (JobStatus.QUEUED, JobStatus.SCHEDULED)
    return event.kind in ENDED_OUTCOME and waiting and row.attempts >= event.attempt


def _apply_to_attempt(attempt: JobAttempt, event: Event) -> None:
    data = event.data
    if event.kind == events.STARTED:
        attempt.started_at = attempt.started_at or _dt(event.at)
        attempt.worker_name = attempt.worker_name or str(data.get("w", ""))
        return
    attempt.ended_at = _dt(event.at)
    attempt.outcome = ENDED_OUTCOME[event.kind]
    attempt.worker_name = attempt.worker_name or str(data.get("w", ""))
    if "s" in data and attempt.started_at is None:
        attempt.started_at = _dt(data["s"])
    # Also for a finish: it replaces a verdict written before it arrived (the reconciler's
    # "died while running this job" when the worker was only frozen and its horse ran on).
    attempt.error = "" if event.kind == events.FINISHED else str(data.get("x", ""))
    attempt.traceback = "" if event.kind == events.FINISHED else str(data.get("tb", ""))
    attempt.retry_at = None if event.kind == events.FINISHED else _dt(data.get("n"))


def _apply_to_row(row: Job, event: Event) -> None:
    data = event.data
    at = _dt(event.at)
    kind = event.kind
    if kind == events.EXTERNAL:
        return  # the row was made from it
    if kind == events.QUEUED:
        row.status = JobStatus.QUEUED
        row.scheduled_for = None
        row.enqueued_at = at
        return
    row.worker_name = str(data.get("w", row.worker_name))
    row.attempts = max(row.attempts, event.attempt)
    if kind == events.STARTED:
        row.status = JobStatus.STARTED
        row.started_at = at
        row.ended_at = None
        row.scheduled_for = None
        row.progress = 0
        row.progress_message = ""
        row.progress_at = None
        return
    if "s" in data:
        row.started_at = _dt(data["s"])
    if kind == events.FINISHED:
        row.status = JobStatus.FINISHED
        row.ended_at = at
        row.progress = 100
        row.result = data.get("r")
        row.error = ""
        row.traceback = ""
        return
    row.error = str(data.get("x", ""))
    row.traceback = str(data.get("tb", ""))
    if kind == events.STOPPED:
        row.status = JobStatus.STOPPED
        row.ended_at = at
    elif data.get("n") is not None:
        row.status = JobStatus.SCHEDULED
        row.scheduled_for = _dt(data["n"])
    elif data.get("q"):
        row.status = JobStatus.QUEUED
        row.enqueued_at = at
    else:
        row.status = JobStatus.FAILED
        row.ended_at = at


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _entry_ms(entry_id: Any) -> int:
    return int(_text(entry_id).split("-", 1)[0])


def oldest_unapplied_ms(conn: Redis) -> int | None:
    """Stream time (ms) of the oldest event the mirror has not applied, or None.

    That is the oldest event delivered but not acknowledged, or the first one
    not delivered to any drainer yet.
    """
    oldest: int | None = None
    try:
        summary: Any = conn.xpending(events.STREAM, events.GROUP)
        groups: Any = conn.xinfo_groups(events.STREAM)
    except redis_lib.ResponseError:  # no stream or no group yet
        return None
    if summary and summary.get("pending"):
        oldest = _entry_ms(summary["min"])
    for group in groups:
        if _text(group["name"]) != events.GROUP:
            continue
        undelivered: Any = conn.xrange(events.STREAM, min=f"({_text(group['last-delivered-id'])}", count=1)
        if undelivered:
            first = _entry_ms(undelivered[0][0])
            oldest = first if oldest is None else min(oldest, first)
    return oldest


def alive_key(name: str) -> str:
    """The liveness key of the worker (or scheduler) `name`, kept fresh by its mirror."""
    return ALIVE_KEY.format(name)


@dataclass
class Consumer:
    name: str
    pending: int  # events read but not acknowledged
    idle_ms: int  # since it last read or claimed


def consumers(conn: Redis) -> list[Consumer]:
    """The consumers of the mirror group: every mirror that ever read the stream, until removed."""
    try:
        found: Any = conn.xinfo_consumers(events.STREAM, events.GROUP)
    except redis_lib.ResponseError:  # no stream or no group yet
        return []
    return [Consumer(_text(item["name"]), int(item["pending"]), int(item["idle"])) for item in found]


def pending_by_consumer(conn: Redis) -> dict[str, int]:
    """How many events each consumer of the mirror group has read but not acknowledged."""
    return {consumer.name: consumer.pending for consumer in consumers(conn)}


class Drainer:
    """Reads the event stream as one consumer of the mirror group and applies it."""

    def __init__(self, conn: Redis, consumer: str, batch_size: int = 500):
        self.redis = conn
        self.consumer = consumer
        self.batch_size = batch_size
        self._reread_pending = True
        self._last_pending_read = 0.0
        # How soon to look again at events whose row was not visible: a worker can
        # start a job a moment before the transaction that wrote its row commits.
        self._waiting_retry = WAITING_RETRY_MIN
        self._last_housekeeping = 0.0
        #: The stream's length as the last read returned (XLEN in its round trip): what came after.
        self.length_at_read: int | None = None

    def ensure_group(self) -> None:
        try:
            self.redis.xgroup_create(events.STREAM, events.GROUP, id="0", mkstream=True)
        except redis_lib.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _read(self, entry_id: str, block_ms: int | None) -> list[Event]:
        with self.redis.pipeline(transaction=False) as pipe:
            stream: dict[Any, Any] = {events.STREAM: entry_id}
            pipe.xreadgroup(events.GROUP, self.consumer, stream, count=self.batch_size, block=block_ms)
            pipe.xlen(events.STREAM)
            response, length = pipe.execute()
        self.length_at_read = int(length)
        found: list[Event] = []
        for _stream, entries in response or []:
            for entry_id_raw, fields in entries:
                if not fields:  # deleted entry still pending: nothing to apply
                    self.redis.xack(events.STREAM, events.GROUP, entry_id_raw)
                    continue
                event = events.decode(entry_id_raw, fields)
                if event is None:
                    log.warning("acknowledging malformed event %s", entry_id_raw)
                    self.redis.xack(events.STREAM, events.GROUP, entry_id_raw)
                    continue
                found.append(event)
        return found

    def drain_once(self, block_ms: int | None = None) -> int:
        """Apply one batch; returns how many events were applied.

        Raises DatabaseError or redis errors: the caller decides how to wait.
        """
        now = time.monotonic()
        rereading = self._reread_pending or now - self._last_pending_read > self._waiting_retry
        batch: list[Event] = []
        if rereading:
            # Our own delivered-but-unacknowledged events first: after a database
            # error, or rows that were not committed yet when we first saw them.
            self._last_pending_read = now
            self._reread_pending = False
            batch = self._read("0", None)
            if not batch:
                self._waiting_retry = WAITING_RETRY_MIN  # nothing is waiting any more
        if not batch:
            rereading = False
            batch = self._read(">", block_ms)
        if not batch:
            return 0
        try:
            result = apply_events(batch)
        except DatabaseError:
            self._reread_pending = True
            raise
        except Exception:
            # A bug must not stall the whole mirror: apply one by one, set the bad ones aside.
            log.exception("mirror: a batch of %s events failed; applying them one by one", len(batch))
            result = self._apply_one_by_one(batch)
        if result.applied:
            self.redis.xack(events.STREAM, events.GROUP, *result.applied)
        if result.waiting and rereading:
            # Still not visible: look again less and less often, not in a tight loop.
            self._waiting_retry = min(self._waiting_retry * 2, WAITING_RETRY_MAX)
        return len(result.applied)

    def claim_from(self, consumers: Iterable[str], limit: int = 10_000) -> int:
        """Take over what `consumers` (known dead) have read but not applied; returns how many events."""
        taken = 0
        for name in consumers:
            while taken < limit:
                entries: Any = self.redis.xpending_range(
                    events.STREAM, events.GROUP, min="-", max="+", count=self.batch_size, consumername=name
                )
                if not entries:
                    break
                ids = [entry["message_id"] for entry in entries]
                self.redis.xclaim(events.STREAM, events.GROUP, self.consumer, 0, ids, justid=True)
                taken += len(ids)
        return taken

    def apply_own_pending(self) -> int:
        """Apply what this consumer has read but not applied (and nothing new); returns how many."""
        applied = 0
        after = "0"
        while True:
            batch = self._read(after, None)
            if not batch:
                return applied
            after = batch[-1].id
            result = apply_events(batch)
            if result.applied:
                self.redis.xack(events.STREAM, events.GROUP, *result.applied)
            applied += len(result.applied)

    def _apply_one_by_one(self, batch: list[Event]) -> ApplyResult:
        result = ApplyResult()
        for event in batch:
            try:
                one = apply_events([event])
            except DatabaseError:
                self._reread_pending = True
                raise
            except Exception:
                extra = logs.job_extra(event.job_id, None)
                log.exception(
                    "mirror: dropping event %s (%s of job %s)", event.id, event.kind, event.job_id, extra=extra
                )
                result.applied.append(event.id)
                continue
            result.applied += one.applied
            result.waiting += one.waiting
        return result

    def housekeeping(self, every: float = 10.0) -> None:
        """Take over events stuck with dead consumers, and trim what was applied."""
        now = time.monotonic()
        if now - self._last_housekeeping < every:
            return
        self._last_housekeeping = now
        claimed: Any = self.redis.xautoclaim(
            events.STREAM, events.GROUP, self.consumer, min_idle_time=CLAIM_IDLE_MS, count=self.batch_size, justid=True
        )
        if claimed:  # with justid, redis-py returns just the claimed ids
            self._reread_pending = True
        # Keep every event not applied yet, and the applied ones for a while (live readers).
        horizon_ms = int((time.time() - RETENTION_SECONDS) * 1000)
        oldest = oldest_unapplied_ms(self.redis)
        if oldest is not None:
            horizon_ms = min(horizon_ms, oldest)
        self.redis.xtrim(events.STREAM, minid=f"{horizon_ms}-0", approximate=True)


class MirrorThread(threading.Thread):
    """Drains the event stream in the background of a long-lived process.

    Also keeps the process's liveness key fresh, which the reconciler reads to
    tell a busy worker from a dead one.
    """

    alive_ttl_default = 15

    def __init__(
        self,
        conn: Redis,
        consumer: str,
        alive_key: str | Iterable[str] | None = None,
        alive_ttl: int | None = None,
        parent_pid: int | None = None,
    ):
        super().__init__(name=f"mirror:{consumer}", daemon=True)
        #: In a worker's mirror process: the worker. When it is gone, so is this.
        self.parent_pid = parent_pid
        self.drainer = Drainer(conn, consumer)
        self.redis = conn
        self.alive_key = alive_key
        self.alive_ttl = alive_ttl or _alive_ttl()
        self._stop_requested = threading.Event()
        self._last_alive = 0.0

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after applying what is already on the stream (bounded by `timeout`)."""
        self._stop_requested.set()
        self.join(timeout)

    def _alive_keys(self) -> list[str]:
        """One key, or several: an iterable is read again at every beat (the threaded worker's
        workers, `jobs.threads`, whose names change when one is replaced)."""
        if self.alive_key is None:
            return []
        return [self.alive_key] if isinstance(self.alive_key, str) else list(self.alive_key)

    def _keep_alive(self) -> None:
        now = time.monotonic()
        if now - self._last_alive >= self.alive_ttl / 3:
            keys = self._alive_keys()
            if len(keys) == 1:
                self.redis.set(keys[0], "1", ex=self.alive_ttl)
            elif keys:
                with self.redis.pipeline(transaction=False) as pipe:
                    for key in keys:
                        pipe.set(key, "1", ex=self.alive_ttl)
                    pipe.execute()
            self._last_alive = now

    def run(self) -> None:
        wait = 0.5
        group_ready = False
        recent: collections.deque[tuple[float, int]] = collections.deque()  # (when, how many) applied
        stop_by: float | None = None  # once stopping: until when errors are tried again
        while True:
            if self.parent_pid is not None and os.getppid() != self.parent_pid:
                # The worker died: stop vouching for it (the reconciler then sees it dead).
                self._stop_requested.set()
            stopping = self._stop_requested.is_set()
            if stopping and stop_by is None:
                stop_by = time.monotonic() + STOP_RETRY_SECONDS
            try:
                self._keep_alive()
                if not group_ready:  # again after a Redis error: a restarted Redis has no group
                    self.drainer.ensure_group()
                    group_ready = True
                applied = self.drainer.drain_once(block_ms=None if stopping else 200)
                self.drainer.housekeeping()
                wait = 0.5
                burst = _burst(recent, applied)
                if stopping and applied == 0:
                    break
                if not stopping and 0 < applied < self.drainer.batch_size:
                    # Caught up: let the next events gather rather than one transaction per event.
                    self._linger(burst)
            except DatabaseError as exc:
                log.warning("mirror: database unavailable (%s); retrying in %.1fs", exc, wait)
                _discard_broken_connection()
                if self._pause_after_error(wait, stop_by):
                    break
                wait = min(wait * 2, 5.0)
            except redis_lib.RedisError as exc:
                log.warning("mirror: Redis unavailable (%s); retrying in %.1fs", exc, wait)
                group_ready = False
                self._last_alive = 0.0  # beat as soon as Redis is back: a restarted Redis has no key
                if self._pause_after_error(wait, stop_by):
                    break
                wait = min(wait * 2, 5.0)
            except Exception:  # never let the thread die: its events would wait for another drainer
                log.exception("mirror: unexpected error")
                if self._pause_after_error(wait, stop_by):
                    break
        keys = self._alive_keys()
        if keys:
            with contextlib.suppress(redis_lib.RedisError):
                self.redis.delete(*keys)
        connection.close()

    def _pause_after_error(self, wait: float, stop_by: float | None) -> bool:
        """Wait before trying again after an error; True when the mirror gives up: it is stopping and
        its time for what is left ran out. A stop asked during the wait ends it (the next round drains)."""
        if stop_by is None:
            self._stop_requested.wait(wait)
            return False
        if time.monotonic() >= stop_by:
            return True
        time.sleep(min(wait, STOP_RETRY_PAUSE, max(0.0, stop_by - time.monotonic())))
        return False

    def _linger(self, burst: int) -> None:
        """Wait up to BATCH_LINGER_SECONDS for the next events, less when enough have come or, once the
        burst (`burst` events applied within the last linger's time, and those come since) is big,
        when the stream went quiet. The stream's length tells (one cheap command per look), counted
        from the last read: events that came while that batch was applied count too; a length that
        went down (a trim) ends the wait."""
        deadline = time.monotonic() + BATCH_LINGER_SECONDS
        at_read = self.drainer.length_at_read
        start = seen = self._stream_length() if at_read is None else at_read
        while not self._stop_requested.wait(max(0.0, min(LINGER_POLL_SECONDS, deadline - time.monotonic()))):
            if time.monotonic() >= deadline:
                return
            length = self._stream_length()
            came = length - start
            if came >= LINGER_ENOUGH or length < seen or (burst + came >= LINGER_BUSY_BATCH and length == seen):
                return
            seen = length

    def _stream_length(self) -> int:
        length: Any = self.redis.xlen(events.STREAM)
        return int(length)


def _burst(recent: collections.deque[tuple[float, int]], applied: int) -> int:
    """How many events were applied within the last BATCH_LINGER_SECONDS, this batch's `applied`
    included: a burst, once LINGER_BUSY_BATCH or more (a rate a linger's gathering no longer helps),
    whether it came in one batch or several; a trickle never adds up to one."""
    moment = time.monotonic()
    if applied:
        recent.append((moment, applied))
    while recent and recent[0][0] < moment - BATCH_LINGER_SECONDS:
        recent.popleft()
    return sum(count for _, count in recent)


class MirrorProcess:
    """A worker's mirror, in a child process of its own.

    In a thread it would share the worker's interpreter lock, and with RQ's
    SimpleWorker the jobs themselves would wait on the mirror's Python work.
    The child is forked before the worker starts any thread or opens the
    database; it drains until the worker stops it (SIGTERM: it applies what is
    on the stream, then exits) or until the worker is gone.
    """

    def __init__(
        self, redis_kwargs: dict[str, Any], consumer: str, alive_key: str | Iterable[str], *, own_group: bool = False
    ):
        self.redis_kwargs = redis_kwargs
        self.consumer = consumer
        self.alive_key = alive_key
        #: In a process group of its own: a signal to its parent's group (a supervisor's SIGTERM) does
        #: not reach it, and it drains until its parent stops it, after the last job's end.
        self.own_group = own_group
        self.pid = 0

    def start(self) -> None:
        parent = os.getpid()
        pid = os.fork()
        if pid:
            self.pid = pid
            return
        status = 0
        try:
            if self.own_group:
                os.setpgid(0, 0)
            from jobs import queues  # the queues' connection settings (password, TLS, Sentinel)

            conn = queues.new_redis(**self.redis_kwargs)
            mirror = MirrorThread(conn, consumer=self.consumer, alive_key=self.alive_key, parent_pid=parent)
            signal.signal(signal.SIGTERM, stop_on_signal(mirror._stop_requested))
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl+C reaches the worker, which stops us
            with contextlib.suppress(ImportError):
                from setproctitle import setproctitle

                setproctitle(f"rq:mirror:{self.consumer}")
            mirror.run()  # in this process's main thread
        except BaseException:
            log.exception("mirror process failed")
            status = 1
        finally:
            os._exit(status)

    def stop(self, timeout: float = 15.0) -> None:
        """Let the mirror apply what is on the stream, then wait for it to exit."""
        if not self.pid:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                done, _ = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if done:
                break
            time.sleep(0.05)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
        self.pid = 0


def _alive_ttl() -> int:
    from django.conf import settings

    return int(getattr(settings, "JOBS_WORKER_DEAD_AFTER", MirrorThread.alive_ttl_default))


def _discard_broken_connection() -> None:
    with contextlib.suppress(DatabaseError):
        connection.close()
    close_old_connections()
