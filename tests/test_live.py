"""The live feed (jobs.live) against the real Redis: what an open page is sent, live and after a reconnect."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncGenerator, Callable
from typing import Any

import pytest
from django.test import AsyncClient
from django.utils import timezone

from jobs import events, live, permissions, queues, services
from jobs.models import Job
from jobs.statuses import JobStatus
from tests.helpers import OPERATORS, history_row, make_user

pytestmark = pytest.mark.django_db(transaction=True)

ALL = permissions.ACTION_PERMISSIONS.keys()


def actions_for(status: str) -> list[str]:
    return permissions.allowed_actions(status, frozenset(ALL))


def position() -> str:
    """Where both streams are now (what comes after it is news)."""
    conn = queues.redis()
    ids = []
    for stream in live.STREAMS:
        last: Any = conn.xrevrange(stream, count=1)
        ids.append(last[0][0].decode() if last else "0-0")
    return "|".join(ids)


async def frames(stream: AsyncGenerator[str, None], count: int, timeout: float = 5.0) -> list[str]:
    """The next `count` frames that are not comments or the retry line."""
    found: list[str] = []
    deadline = time.monotonic() + timeout
    while len(found) < count:
        chunk = await asyncio.wait_for(anext(stream), timeout=max(0.01, deadline - time.monotonic()))
        if chunk.startswith((":", "retry:")):
            continue
        found.append(chunk)
    return found


def follow(since: str, page: live.PageFilter | None = None, **kwargs: Any) -> AsyncGenerator[str, None]:
    start = live.parse_position(since)
    assert start is not None
    return live.follow(start, page or live.PageFilter(), actions_for, **kwargs)


def field(frame: str, name: str) -> str:
    found = re.search(rf"^{name}: (.*)$", frame, re.M)
    assert found is not None, frame
    return found.group(1)


def data(frame: str) -> str:
    return "\n".join(line[6:] for line in frame.splitlines() if line.startswith("data: "))


def run(coro: Callable[[], Any]) -> Any:
    return asyncio.run(coro())


def test_a_progress_report_reaches_an_open_page_as_its_progress_cell():
    job = services.job_enqueue(type="example")

    async def main() -> list[str]:
        stream = follow(position())
        assert (await anext(stream)).startswith("retry: ")
        await asyncio.sleep(0.2)  # the hub is reading
        sent = time.monotonic()
        await asyncio.to_thread(events.emit, queues.redis(), str(job.pk), events.PROGRESS, 1, p=37, m="step 37 of 100")
        got = await frames(stream, 1)
        assert time.monotonic() - sent < 1.0
        await stream.aclose()
        return got

    (frame,) = run(main)
    assert field(frame, "event") == "cells"
    html = data(frame)
    assert f'<td id="job-{job.pk}-progress"' in html
    assert 'aria-valuenow="37"' in html
    assert "37 % · step 37 of 100" in html
    assert f"job-{job.pk}-status" not in html  # a progress report changes only the bar
    events_id, _ = field(frame, "id").split("|")
    assert events_id == queues.redis().xrevrange(events.STREAM, count=1)[0][0].decode()


def test_a_transition_redraws_status_times_attempts_and_buttons():
    job = services.job_enqueue(type="example")
    since = position()
    conn = queues.redis()
    events.emit(conn, str(job.pk), events.STARTED, 1, w="worker-1", mx=3)
    events.emit(
        conn, str(job.pk), events.FAILED, 1, w="worker-1", s=time.time() - 2, x="ValueError: no", n=time.time() + 4
    )

    async def main() -> list[str]:
        stream = follow(since)
        got = await frames(stream, 2)
        await stream.aclose()
        return got

    started, failed = run(main)
    assert 'tone-running">Started<' in data(started)
    assert f'<td id="job-{job.pk}-attempt" class="col-attempts num">1/3</td>' in data(started)
    assert ">Stop</button>" in data(started)
    # A failure that will be retried leaves the job scheduled: it can be promoted or canceled.
    assert 'tone-waiting">Scheduled<' in data(failed)
    assert re.findall(r">(\w+)</button>", data(failed)) == ["Cancel", "Promote", "Remove"]


def test_jobs_created_elsewhere_appear_on_pages_whose_filters_they_match():
    since = position()
    job = services.job_enqueue(type="email", params={"to": "a@b.co", "subject": "s", "body": "b"})  # queue high

    async def first(page: live.PageFilter) -> list[str]:
        stream = follow(since, page, keepalive=0.3)
        try:
            return [frame for frame in await frames(stream, 1, timeout=1.0) if "event: cards" not in frame]
        except TimeoutError:
            return []
        finally:
            await stream.aclose()

    everything = asyncio.run(first(live.PageFilter()))
    assert field(everything[0], "event") == "new-rows"
    row = data(everything[0])
    assert row.lstrip().startswith(f'<tr id="job-{job.pk}"')
    assert 'tone-waiting">Queued<' in row
    assert asyncio.run(first(live.PageFilter(queue="high", type="email")))
    assert asyncio.run(first(live.PageFilter(statuses=frozenset({"queued"}))))
    assert asyncio.run(first(live.PageFilter(queue="low"))) == []
    assert asyncio.run(first(live.PageFilter(statuses=frozenset({"failed"})))) == []
    assert asyncio.run(first(live.PageFilter(first_page=False))) == []
    assert asyncio.run(first(live.PageFilter(search="anything"))) == []


def test_changes_made_by_the_services_reach_the_page_whole():
    failed = history_row(JobStatus.FAILED, attempts=3, ended_at=timezone.now())
    since = position()
    services.job_retry(job=failed)
    services.job_remove(job=Job.objects.get(pk=failed.pk))

    async def main() -> list[str]:
        stream = follow(since)
        got = await frames(stream, 2)
        await stream.aclose()
        return got

    changed, removed = run(main)
    assert field(changed, "event") == "rows"
    assert f'<tr id="job-{failed.pk}"' in data(changed)
    assert 'tone-waiting">Queued<' in data(changed)
    assert field(removed, "event") == "remove"
    assert data(removed) == f"job-{failed.pk}"


def test_a_page_that_reconnects_gets_what_it_missed_once():
    job = services.job_enqueue(type="example")
    since = position()
    conn = queues.redis()
    for percent in (10, 20, 30):
        events.emit(conn, str(job.pk), events.PROGRESS, 1, p=percent, m=f"at {percent}")

    async def read(start: str, count: int) -> list[str]:
        stream = follow(start)
        got = await frames(stream, count)
        await stream.aclose()
        return got

    first = asyncio.run(read(since, 2))
    assert ['aria-valuenow="10"' in data(first[0]), 'aria-valuenow="20"' in data(first[1])] == [True, True]
    # The browser sends the id of the last event it saw: the feed goes on from there, nothing twice.
    again = asyncio.run(read(field(first[1], "id"), 1))
    assert 'aria-valuenow="30"' in data(again[0])


def test_a_page_whose_missed_events_were_trimmed_away_is_told_to_draw_itself_again():
    job = services.job_enqueue(type="example")
    since = position()
    conn = queues.redis()
    for percent in (10, 20):
        events.emit(conn, str(job.pk), events.PROGRESS, 1, p=percent)
    conn.xtrim(events.STREAM, maxlen=1, approximate=False)

    async def main() -> list[str]:
        stream = follow(since)
        got = await frames(stream, 1)
        await stream.aclose()
        return got

    (frame,) = run(main)
    assert field(frame, "event") == "refresh"


def test_a_bulk_too_big_to_send_row_by_row_asks_the_page_to_draw_itself_again():
    since = position()
    services.jobs_enqueue(requests=[services.JobRequest() for _ in range(events.NOTICE_ROWS + 1)])

    async def main() -> list[str]:
        stream = follow(since)
        got = await frames(stream, 1)
        await stream.aclose()
        return got

    assert field(run(main)[0], "event") == "refresh"


def test_the_statistics_cards_are_refreshed_after_news_at_most_every_two_seconds(monkeypatch):
    monkeypatch.setattr(live, "CARDS_EVERY_SECONDS", 2.0)
    monkeypatch.setattr(live, "CARDS_SETTLE_SECONDS", 0.0)
    monkeypatch.setattr(live, "CARDS_FOLLOWUP_SECONDS", 60.0)
    job = services.job_enqueue(type="example")
    since = position()
    conn = queues.redis()
    for percent in (1, 2, 3, 4):
        events.emit(conn, str(job.pk), events.STARTED, percent, w="w")

    def burst() -> None:
        for percent in (5, 6, 7):
            events.emit(conn, str(job.pk), events.STARTED, percent, w="w")

    async def main() -> list[str]:
        stream = follow(since)
        got = await frames(stream, 5)  # what was missed, then the cards once
        await asyncio.to_thread(burst)
        got += await frames(stream, 4)  # three reports within the two seconds, then the cards once
        await stream.aclose()
        return got

    names = [field(frame, "event") for frame in run(main)]
    assert names == ["cells"] * 4 + ["cards"] + ["cells"] * 3 + ["cards"]


def test_progress_reports_alone_do_not_refresh_the_cards(monkeypatch):
    monkeypatch.setattr(live, "CARDS_EVERY_SECONDS", 0.1)
    job = services.job_enqueue(type="example")
    since = position()
    for percent in (1, 2, 3):
        events.emit(queues.redis(), str(job.pk), events.PROGRESS, 1, p=percent)

    async def main() -> list[str]:
        stream = follow(since, keepalive=0.5)
        got = await frames(stream, 3)
        with contextlib.suppress(TimeoutError):
            got += await frames(stream, 1, timeout=1.0)
        await stream.aclose()
        return got

    assert [field(frame, "event") for frame in run(main)] == ["cells"] * 3


def test_the_feed_is_served_as_server_sent_events_to_a_viewer():
    user = make_user("otto", groups=(OPERATORS,))
    job = services.job_enqueue(type="example")
    since = position()
    events.emit(queues.redis(), str(job.pk), events.PROGRESS, 1, p=55, m="halfway")

    async def main() -> tuple[Any, list[str]]:
        client = AsyncClient()
        await client.aforce_login(user)
        response: Any = await client.get("/jobs/events/", {"since": since})
        chunks = response.streaming_content
        got: list[str] = []
        while len(got) < 2:
            got.append((await asyncio.wait_for(anext(chunks), 5)).decode())
        await chunks.aclose()
        return response, got

    response, chunks = run(main)
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert "no-cache" in response["Cache-Control"]
    assert chunks[0] == "retry: 2000\n\n"
    assert 'aria-valuenow="55"' in chunks[1]
    # The page can tell where the stream was when the job's row was drawn.
    assert field(chunks[1], "event") == "cells"


def test_after_a_transition_the_cards_are_refreshed_once_the_history_has_it_and_once_more(monkeypatch):
    monkeypatch.setattr(live, "CARDS_SETTLE_SECONDS", 0.3)
    monkeypatch.setattr(live, "CARDS_FOLLOWUP_SECONDS", 0.5)
    job = services.job_enqueue(type="example")
    since = position()
    events.emit(queues.redis(), str(job.pk), events.STARTED, 1, w="w")

    async def main() -> tuple[list[str], float]:
        stream = follow(since, keepalive=5)
        started = time.monotonic()
        got = await frames(stream, 3)
        elapsed = time.monotonic() - started
        await stream.aclose()
        return got, elapsed

    got, elapsed = run(main)
    assert [field(frame, "event") for frame in got] == ["cells", "cards", "cards"]
    assert elapsed >= 0.7  # settle, then the follow-up


def test_a_job_a_worker_started_before_its_creation_was_announced_is_drawn_started():
    """The announcement waits for the commit; a fast worker can report the start before it."""
    since = position()
    job = history_row(JobStatus.QUEUED)
    conn = queues.redis()
    events.emit(conn, str(job.pk), events.STARTED, 1, w="worker-1", mx=3)
    events.emit(conn, str(job.pk), events.PROGRESS, 1, p=40, m="working")
    time.sleep(0.01)  # the commit takes a moment: the announcement's stream id is later
    services._announce(events.CREATED, [job])  # as drawn at creation: queued

    async def main() -> list[str]:
        stream = follow(since)
        got = await frames(stream, 5)
        await stream.aclose()
        return got

    started, progress, new_row, *again = run(main)
    assert field(new_row, "event") == "new-rows"
    assert 'tone-waiting">Queued<' in data(new_row)
    # Right after the row, the worker's news of it again: started, then its progress.
    assert [field(frame, "event") for frame in again] == ["cells", "cells"]
    assert data(again[0]) == data(started)
    assert 'tone-running">Started<' in data(again[0])
    assert data(again[1]) == data(progress)
    assert "40" in data(again[1])
