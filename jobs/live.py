"""Live pages: every transition and every progress report pushed to every open page, over Server-Sent Events.

Where the news comes from: the workers append their transitions and progress
reports to `events.STREAM` (the stream the mirror drains into the database),
and the services announce the changes they make themselves (jobs created,
retried, canceled, promoted, removed, given up on) on `events.LIVE_STREAM`.

How it reaches a page: one `Hub` per web process (per event loop) reads both
streams with one blocking XREAD and hands every entry to each open page's
queue, so a thousand open pages cost one Redis connection, not a thousand.
A page's stream (`follow`) first replays what it missed since a position (the
`Last-Event-ID` its browser sends when it reconnects, or the moment the page
was drawn), then follows the hub. Nothing waits on the database: a transition
is drawn from the event itself (the mirror's own rules say what it means for
the row), a service's change from the row it sent. An open page holds no
thread and no database connection while it waits; a comment line every 15 s
keeps proxies from closing the connection.

Every message carries `id: <events id>|<live id>`, the position after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

import redis as redis_lib
import redis.asyncio as aioredis
from django.conf import settings
from django.template.loader import render_to_string

from jobs import events, mirror, queues, redis_config
from jobs.models import Job
from jobs.statuses import JobStatus

log = logging.getLogger(__name__)

#: How long a blocking read waits before looking again (also how soon a closed hub notices).
BLOCK_MS = 5_000
#: A comment line this often keeps proxies from closing an idle stream.
KEEPALIVE_SECONDS = 15.0
#: At most this often a page is told to refresh its statistics cards.
CARDS_EVERY_SECONDS = 2.0
#: After a transition the cards are refreshed this much later (the history takes a moment to
#: record it: the event reaches the page first) and once more a few seconds after that.
CARDS_SETTLE_SECONDS = 0.5
CARDS_FOLLOWUP_SECONDS = 3.0
#: How many jobs' latest cells a page keeps, to send again when their rows arrive after the news.
RECENT_CELLS = 256
#: A page that falls this far behind is told to draw itself again instead.
QUEUE_SIZE = 5_000
#: How far back a page drawn from the database replays events (the mirror's lag is well under it).
REPLAY_MARGIN_MS = 5_000
#: The most events a reconnecting page replays; more and it is told to draw itself again.
REPLAY_LIMIT = 5_000
STREAMS = (events.STREAM, events.LIVE_STREAM)


# --- positions in the two streams ---------------------------------------------------------------


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def position_now(margin_ms: int = REPLAY_MARGIN_MS) -> str:
    """The position a page drawn now replays from: a few seconds back (events are idempotent to draw).

    By Redis's clock, which stamps the entries (this machine's clock if Redis does not answer).
    """
    try:
        answer: Any = queues.redis().time()
        seconds, micros = answer
        now_ms = int(seconds) * 1000 + int(micros) // 1000
    except (redis_lib.RedisError, OSError):
        now_ms = int(time.time() * 1000)
    start = f"{now_ms - margin_ms}-0"
    return f"{start}|{start}"


def parse_position(text: str | None) -> dict[str, str] | None:
    """`<events id>|<live id>` as {stream: id}; None when missing or malformed."""
    if not text:
        return None
    parts = text.strip().split("|")
    if len(parts) != len(STREAMS):
        return None
    try:
        for part in parts:
            _id_key(part)
    except ValueError:
        return None
    return dict(zip(STREAMS, parts, strict=True))


def format_position(position: dict[str, str]) -> str:
    return "|".join(position[stream] for stream in STREAMS)


# --- entries --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    stream: str
    id: str
    data: dict[str, Any]


def _decode(stream: Any, entry_id: Any, fields: dict[bytes, bytes]) -> Entry | None:
    name = stream.decode() if isinstance(stream, bytes) else str(stream)
    ident = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    raw = fields.get(b"e")
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    return Entry(stream=name, id=ident, data=data) if isinstance(data, dict) else None


def async_redis(timeout: float) -> aioredis.Redis:
    """An asyncio client for the product's Redis (connected as the queues are: password, TLS, Sentinel)."""
    client: aioredis.Redis = redis_config.async_client(settings.RQ_QUEUES[queues.DEFAULT], socket_timeout=timeout)
    return client


# --- the hub: one reader per process, many pages ------------------------------------------------


@dataclass(eq=False)
class Subscription:
    #: Entries for the page; None wakes a waiting page to tell it the stream is closing.
    queue: asyncio.Queue[Entry | None] = field(default_factory=lambda: asyncio.Queue(QUEUE_SIZE))
    overflowed: bool = False
    closed: bool = False

    def offer(self, entry: Entry) -> None:
        try:
            self.queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.overflowed = True

    def close(self) -> None:
        self.closed = True
        with contextlib.suppress(asyncio.QueueFull):  # a full queue wakes the page anyway
            self.queue.put_nowait(None)


class Hub:
    """Reads both streams once for the whole process and hands each entry to every subscription."""

    def __init__(self) -> None:
        self.subscriptions: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()

    async def subscribe(self) -> Subscription:
        """A new page's queue. The reader starts (if it is not running) from where the streams end
        now, before the page reads what it missed: an entry may reach the page twice (it skips
        what it saw), never not at all."""
        subscription = Subscription()
        self.subscriptions.add(subscription)
        async with self._starting:
            if self._task is None or self._task.done():
                start = await current_position()
                self._task = asyncio.get_running_loop().create_task(self._run(start))
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self.subscriptions.discard(subscription)

    def close_all(self) -> None:
        for subscription in list(self.subscriptions):
            subscription.close()

    async def _run(self, cursor: dict[str, str]) -> None:
        conn = async_redis(timeout=BLOCK_MS / 1000 + 5)
        try:
            while self.subscriptions:
                try:
                    streams: Any = dict(cursor)
                    response: Any = await conn.xread(streams, block=BLOCK_MS, count=500)
                except (redis_lib.RedisError, OSError) as exc:
                    log.warning("live pages: Redis unavailable (%s)", exc)
                    await asyncio.sleep(1)
                    continue
                for stream, entries in response or []:
                    for entry_id, fields in entries:
                        entry = _decode(stream, entry_id, fields)
                        name = stream.decode() if isinstance(stream, bytes) else str(stream)
                        cursor[name] = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                        if entry is not None:
                            for subscription in list(self.subscriptions):
                                subscription.offer(entry)
        finally:
            await conn.aclose()


_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Hub] = weakref.WeakKeyDictionary()


def close_streams() -> None:
    """End every page's event stream served by this process's event loop (the server is stopping):
    each browser reconnects and catches up, from another server or from this one restarted."""
    found = _hubs.get(asyncio.get_running_loop())
    if found is not None:
        found.close_all()


def hub() -> Hub:
    loop = asyncio.get_running_loop()
    found = _hubs.get(loop)
    if found is None:
        found = _hubs[loop] = Hub()
    return found


async def current_position() -> dict[str, str]:
    """Where both streams end now."""
    conn = async_redis(timeout=10)
    try:
        position = {}
        for stream in STREAMS:
            last: Any = await conn.xrevrange(stream, count=1)
            position[stream] = last[0][0].decode() if last else "0-0"
        return position
    finally:
        await conn.aclose()


async def read_since(position: dict[str, str]) -> list[Entry] | None:
    """What both streams hold after `position`, oldest first; None when some of it was trimmed away
    (or there is too much): the page must then draw itself again."""
    conn = async_redis(timeout=10)
    found: list[Entry] = []
    try:
        for stream in STREAMS:
            start = position[stream]
            try:
                info: Any = await conn.xinfo_stream(stream)
            except redis_lib.ResponseError:  # no such stream yet: nothing happened
                continue
            first = info.get("first-entry")
            first_id = first[0].decode() if first and isinstance(first[0], bytes) else (first[0] if first else None)
            trimmed = int(info.get("entries-added") or 0) > int(info.get("length") or 0)
            if trimmed and first_id and _id_key(first_id) > _id_key(start):
                # Entries older than the first one left were trimmed: some may have come after the position.
                return None
            entries: Any = await conn.xrange(stream, min=f"({start}", max="+", count=REPLAY_LIMIT + 1)
            if len(entries) > REPLAY_LIMIT:
                return None
            for entry_id, fields in entries:
                entry = _decode(stream, entry_id, fields)
                if entry is not None:
                    found.append(entry)
    finally:
        await conn.aclose()
    found.sort(key=lambda entry: _id_key(entry.id))
    return found


# --- what a page is shown -------------------------------------------------------------------------


@dataclass(frozen=True)
class PageFilter:
    """The filters of the page a stream feeds: new rows are sent only when they match."""

    statuses: frozenset[str] = frozenset()
    type: str = ""
    queue: str = ""
    search: str = ""
    first_page: bool = True

    def admits_new(self, job: Job) -> bool:
        if not self.first_page or self.search:
            return False  # older pages, and searches, gain rows only when they are drawn again
        if self.statuses and job.status not in self.statuses:
            return False
        return (not self.type or job.type == self.type) and (not self.queue or job.queue == self.queue)


def job_from_row(data: dict[str, Any]) -> Job:
    """The unsaved Job a service's announcement describes (never saved: only drawn)."""
    fields: dict[str, Any] = {}
    for name, value in data.items():
        if name == "id":
            continue
        if name.endswith("_at") or name == "scheduled_for":
            fields[name] = datetime.fromisoformat(value) if value else None
        else:
            fields[name] = value
    job = Job(**fields)
    job.pk = data["id"]
    return job


def _state_after(event: events.Event) -> SimpleNamespace:
    """What a worker's event says of its job's row, by the mirror's own rules."""
    state = SimpleNamespace(
        id=event.job_id,
        pk=event.job_id,
        status=JobStatus.STARTED,
        progress=0,
        progress_message="",
        attempts=event.attempt,
        max_attempts=event.data.get("mx"),
        started_at=None,
        ended_at=None,
        enqueued_at=None,
        scheduled_for=None,
        worker_name="",
        result=None,
        error="",
        traceback="",
    )
    if event.kind == events.PROGRESS:
        state.progress = int(event.data.get("p", 0))
        state.progress_message = str(event.data.get("m", ""))[:200]
    else:
        mirror._apply_to_row(state, event)  # type: ignore[arg-type]
    state.duration = (
        (state.ended_at - state.started_at).total_seconds() if state.ended_at and state.started_at else None
    )
    return state


@dataclass
class Message:
    name: str
    html: str = ""

    def frame(self, position: str | None) -> str:
        lines = [f"id: {position}"] if position else []
        lines.append(f"event: {self.name}")
        lines += [f"data: {line}" for line in (self.html.splitlines() or [""])]
        return "\n".join(lines) + "\n\n"


def messages_for(entry: Entry, page: PageFilter, actions_for: Callable[[str], list[str]]) -> list[Message]:
    """What one stream entry changes on a page: cells of a row, whole rows, rows gone, or "draw again"."""
    if entry.stream == events.STREAM:
        event = events.from_dict(entry.id, entry.data)
        if event is None or event.kind not in events.PHASE or event.kind == events.EXTERNAL:
            return []
        state = _state_after(event)
        context = {
            "job": state,
            "actions": actions_for(state.status),
            "progress_only": event.kind == events.PROGRESS,
        }
        return [Message("cells", render_to_string("jobs/_cells.html", context))]
    kind = entry.data.get("k")
    rows = entry.data.get("jobs")
    if rows is None:  # too many rows to send: the page draws itself again
        return [Message("refresh")]
    if kind == events.REMOVED:
        return [Message("remove", "\n".join(f"job-{row['id']}" for row in rows))]
    jobs = [job_from_row(row) for row in rows]
    if kind == events.CREATED:
        jobs = [job for job in jobs if page.admits_new(job)]
    if not jobs:
        return []
    html = "".join(render_to_string("jobs/_row.html", {"job": job, "actions": actions_for(job.status)}) for job in jobs)
    return [Message("rows" if kind == events.CHANGED else "new-rows", html)]


class RecentCells:
    """The last cells sent of the jobs workers reported on lately (bounded), to send again when
    their rows arrive on the page after the news."""

    def __init__(self, size: int = RECENT_CELLS) -> None:
        self.size = size
        #: job id -> its last transition's cells, and the last progress report's after it
        self.cells: OrderedDict[str, list[Message]] = OrderedDict()

    def after(self, entry: Entry, messages: list[Message]) -> list[Message]:
        if entry.stream == events.STREAM:
            job_id = entry.data.get("j")
            if messages and isinstance(job_id, str):
                kept = self.cells.pop(job_id, [])
                progress = entry.data.get("k") == events.PROGRESS
                self.cells[job_id] = [*kept[:1], messages[-1]] if progress else [messages[-1]]
                while len(self.cells) > self.size:
                    self.cells.popitem(last=False)
            return []
        if entry.data.get("k") != events.CREATED or not any(m.name == "new-rows" for m in messages):
            return []
        rows = entry.data.get("jobs") or []
        return [message for row in rows for message in self.cells.get(row.get("id"), [])]


async def follow(
    since: dict[str, str] | None,
    page: PageFilter,
    actions_for: Callable[[str], list[str]],
    *,
    keepalive: float = KEEPALIVE_SECONDS,
) -> AsyncGenerator[str, None]:
    """A page's event stream: what it missed since `since` (None: from now), then everything as it happens."""
    subscription = await hub().subscribe()
    position = dict(since) if since is not None else await current_position()
    recent = RecentCells()
    cards_at: float | None = None  # when to tell the page to refresh its cards
    followups = 0
    last_cards = float("-inf")
    try:
        yield "retry: 2000\n\n"
        missed = await read_since(position)
        if missed is None:
            yield Message("refresh").frame(None)
            missed = []
        pending: Iterable[Entry] = missed
        while True:
            for entry in pending:
                if _id_key(entry.id) <= _id_key(position[entry.stream]):
                    continue  # seen already (replayed, or handed out twice)
                position[entry.stream] = entry.id
                messages = messages_for(entry, page, actions_for)
                for message in messages:
                    yield message.frame(format_position(position))
                # A worker can start a job before its creation is announced (the announcement
                # waits for the commit): the page then draws the row as it was created, so the
                # worker's latest news of it is sent again right after.
                for message in recent.after(entry, messages):
                    yield message.frame(format_position(position))
                # A progress report changes no count: only transitions and changes refresh the cards.
                if entry.data.get("k") != events.PROGRESS:
                    now = time.monotonic()
                    due = max(now + CARDS_SETTLE_SECONDS, last_cards + CARDS_EVERY_SECONDS)
                    cards_at = due if cards_at is None else min(cards_at, due)
                    followups = 1
            if subscription.closed:
                return  # the server stops: the browser reconnects (after `retry`) and catches up
            if subscription.overflowed:
                subscription.overflowed = False
                yield Message("refresh").frame(None)
            now = time.monotonic()
            if cards_at is not None and now >= cards_at:
                last_cards = now
                cards_at = now + CARDS_FOLLOWUP_SECONDS if followups else None
                followups = max(0, followups - 1)
                yield Message("cards").frame(None)
            wait = keepalive if cards_at is None else max(0.05, min(keepalive, cards_at - now))
            try:
                first = await asyncio.wait_for(subscription.queue.get(), timeout=wait)
            except TimeoutError:
                if cards_at is None:
                    yield ": keepalive\n\n"
                pending = []
                continue
            batch = [first]
            while not subscription.queue.empty() and len(batch) < 500:
                batch.append(subscription.queue.get_nowait())
            pending = [item for item in batch if item is not None]
    finally:
        hub().unsubscribe(subscription)
