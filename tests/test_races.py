"""Races between actions, workers, the scheduler and the mirror: each ends in one consistent state.

Each test first builds the interleaving that could go wrong (an event injected on the stream, a
job popped as a worker pops it, two callers at once), then checks Redis and the row agree.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connections, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from jobs import events, mirror, queues, reconcile, rqstore, services, worker
from jobs.errors import ActionNotAllowed, InvalidJobRequest, QueueUnavailable
from jobs.models import Job, JobAttempt
from jobs.statuses import AttemptOutcome, JobStatus
from tests.conftest import wait_for
from tests.helpers import FORKING, VIEWERS, history_row, make_user
from tests.test_metrics import scrape, value

pytestmark = pytest.mark.django_db(transaction=True)


def drain() -> int:
    drainer = mirror.Drainer(queues.redis(), "test")
    drainer.ensure_group()
    total = 0
    while applied := drainer.drain_once():
        total += applied
    return total


def queued_ids(name: str = "default") -> list[str]:
    return queues.get_queue(name).get_job_ids()


def scheduled_ids(name: str = "default") -> list[str]:
    return queues.get_queue(name).scheduled_job_registry.get_job_ids()


def later() -> Any:
    return timezone.now() + timedelta(hours=2)


# --- a cancel is never undone, and a canceled job never runs ---------------------------------------


def test_a_cancel_right_after_a_promotion_is_not_undone_by_the_promotions_event():
    job = services.job_enqueue(type="example", delay_seconds=60)
    assert services.promote_due_jobs(now=later()) == 1  # puts a "queued" event on the stream
    services.job_cancel(job=Job.objects.get(pk=job.pk))
    assert drain() >= 1  # the queued event arrives after the cancel
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELED
    assert queued_ids() == []
    assert scheduled_ids() == []
    # Nothing for the reconciler to bring back: the row is final.
    reconcile.reconcile()
    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELED
    assert queued_ids() == []


def test_a_job_a_worker_has_just_popped_is_not_canceled_behind_its_back():
    job = services.job_enqueue(type="example")
    queues.redis().lrem(queues.get_queue("default").key, 0, str(job.pk))  # what a worker's pop does
    with pytest.raises(ActionNotAllowed, match="already taken by a worker"):
        services.job_cancel(job=job)
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED
    assert rqstore.status(str(job.pk)) == "queued"


def test_a_job_redis_forgot_can_still_be_canceled():
    job = services.job_enqueue(type="example")
    queues.redis().flushdb()
    services.job_cancel(job=job)
    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELED


# --- a promotion happens once ------------------------------------------------------------------------


def test_a_user_and_the_scheduler_promoting_the_same_job_push_it_once():
    job = services.job_enqueue(type="example", delay_seconds=60)
    services.job_promote(job=job)
    assert services.promote_due_jobs(now=later()) == 0
    assert queued_ids() == [str(job.pk)]

    other = services.job_enqueue(type="example", delay_seconds=60)
    assert services.promote_due_jobs(now=later()) == 1
    with pytest.raises(ActionNotAllowed, match="already on its queue"):
        services.job_promote(job=Job.objects.get(pk=other.pk))
    assert queued_ids() == [str(job.pk), str(other.pk)]


def test_a_promoted_job_keeps_the_rest_of_its_retry_round_and_goes_to_the_front():
    waiting = services.job_enqueue(type="example")
    delayed = services.job_enqueue(type="example", delay_seconds=60)
    services.job_promote(job=delayed)
    assert queued_ids() == [str(delayed.pk), str(waiting.pk)]
    rq_job = rqstore.fetch(str(delayed.pk))
    assert rq_job is not None
    assert rq_job.get_status() == "queued"
    assert rq_job.retries_left == 2


# --- progress reports that reach the mirror out of order ------------------------------------------


def test_an_older_progress_report_applied_last_does_not_win():
    job = services.job_enqueue(type="example")
    conn = queues.redis()
    events.emit(conn, str(job.pk), events.STARTED, 1, w="w")
    drain()
    now = time.time()
    # Two drainers: the newer report is applied first, the older one after it.
    newer = events.Event(
        id="2-0", job_id=str(job.pk), kind=events.PROGRESS, attempt=1, at=now, data={"p": 80, "m": "b"}
    )
    older = events.Event(
        id="1-0", job_id=str(job.pk), kind=events.PROGRESS, attempt=1, at=now - 1, data={"p": 20, "m": "a"}
    )
    mirror.apply_events([newer])
    mirror.apply_events([older])
    job.refresh_from_db()
    assert (job.progress, job.progress_message) == (80, "b")
    # A new attempt starts from zero again.
    events.emit(conn, str(job.pk), events.STARTED, 2, w="w")
    drain()
    mirror.apply_events(
        [events.Event(id="3-0", job_id=str(job.pk), kind=events.PROGRESS, attempt=2, at=now - 5, data={"p": 10})]
    )
    job.refresh_from_db()
    assert (job.attempts, job.progress) == (2, 10)


# --- no job without its row -----------------------------------------------------------------------------


@pytest.mark.parametrize("delay", [None, 5.0], ids=["now", "delayed"])
@pytest.mark.parametrize("count", [1, 3], ids=["one job", "a bulk"])
def test_jobs_whose_rows_the_database_refuses_at_commit_are_taken_back_from_redis(count, delay):
    ghost = User(pk=987654, username="ghost")  # deleted meanwhile: the foreign key fails at commit
    requests = [services.JobRequest(type="example", delay_seconds=delay) for _ in range(count)]
    with pytest.raises(InvalidJobRequest, match="the database refused the jobs"):
        services.jobs_enqueue(requests=requests, user=ghost)
    assert not Job.objects.exists()
    assert queued_ids() == []
    assert queues.get_queue("default").scheduled_job_registry.get_job_ids() == []
    assert not queues.redis().keys("rq:job:*")


# --- two callers at once ------------------------------------------------------------------------------


def race(first: Any, second: Any) -> list[Any]:
    """Run both at once (each in its own thread and database connection); their outcomes."""
    barrier = threading.Barrier(2)
    outcomes: list[Any] = [None, None]

    def run(index: int, action: Any) -> None:
        try:
            barrier.wait(5)
            outcomes[index] = action()
        except Exception as exc:
            outcomes[index] = exc
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(i, action)) for i, action in enumerate((first, second))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


#: Rounds of each race: each round is one chance for the two callers to interleave.
ROUNDS = 50


def test_two_callers_retrying_the_same_failed_job_retry_it_once_in_each_of_50_rounds():
    job = history_row(JobStatus.FAILED, attempts=3, ended_at=timezone.now())
    for _ in range(ROUNDS):
        outcomes = race(lambda: services.job_retry(job=job), lambda: services.job_retry(job=job))
        done = [outcome for outcome in outcomes if isinstance(outcome, Job)]
        refused = [outcome for outcome in outcomes if isinstance(outcome, ActionNotAllowed)]
        assert (len(done), len(refused)) == (1, 1), outcomes
        assert queued_ids() == [str(job.pk)]
        Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILED)
        queues.redis().delete(queues.get_queue("default").key)


def test_a_cancel_racing_the_schedulers_promotion_leaves_one_truth_in_50_rounds():
    for _ in range(ROUNDS):
        job = services.job_enqueue(type="example", delay_seconds=60)
        outcomes = race(lambda job=job: services.job_cancel(job=job), lambda: services.promote_due_jobs(now=later()))
        drain()
        row = Job.objects.get(pk=job.pk)
        on_queue = str(job.pk) in queued_ids()
        if isinstance(outcomes[0], Job):
            # Canceled: nowhere in Redis to be run from, and the row stays canceled.
            assert row.status == JobStatus.CANCELED
            assert not on_queue
        else:
            # The promotion won: the job waits on its queue, once, and the row says so.
            assert isinstance(outcomes[0], ActionNotAllowed), outcomes
            assert row.status == JobStatus.QUEUED
            assert queued_ids().count(str(job.pk)) == 1
        assert str(job.pk) not in scheduled_ids()


# --- jobs the product did not create ------------------------------------------------------------------


def plain_enqueue(path: Any) -> str:
    """What a team's old code does: django-rq's own queue, a dotted path."""
    import django_rq

    queue = django_rq.get_queue("high", connection=queues.redis(), serializer=queues.SERIALIZER)
    return str(queue.enqueue("tests.external_callables.touch", str(path)).id)


@contextmanager
def database_slowed_for_other_processes(busy: float = 0.2, free: float = 0.1) -> Iterator[None]:
    """Another writer holds the jobs table `busy` seconds out of every `busy + free` while inside: every
    write of the other processes (the mirrors, the reconciler) waits for it, as on a slow database."""
    stop = threading.Event()
    settings_dict = connections["default"].settings_dict

    def hold() -> None:
        if connections["default"].vendor == "sqlite":
            lock = sqlite3.connect(settings_dict["NAME"], timeout=30, isolation_level=None)
            try:
                while not stop.is_set():
                    lock.execute("BEGIN IMMEDIATE")
                    stop.wait(busy)
                    lock.execute("COMMIT")
                    stop.wait(free)
            finally:
                lock.close()
            return
        try:
            while not stop.is_set():
                with transaction.atomic(), connections["default"].cursor() as cursor:
                    cursor.execute(f"LOCK TABLE {Job._meta.db_table} IN EXCLUSIVE MODE")
                    stop.wait(busy)
                stop.wait(free)
        finally:
            connections.close_all()

    holder = threading.Thread(target=hold, name="slow-database")
    holder.start()
    try:
        yield
    finally:
        stop.set()
        holder.join(10)


@pytest.mark.slow
def test_plain_django_rq_jobs_are_refused_and_recorded_and_block_nothing(processes, tmp_path):
    """Hundreds of them, on a slow database, while a worker is killed: the history keeps up with them,
    and the reconciler, which judges nothing while the history is more than 30 s behind, still judges
    the dead worker's job within its deadline."""
    started = [  # at once: each takes seconds to start
        processes.start("runscheduler", "--tick", "0.2"),
        victim := processes.start("rqworker", "default", "--worker-class", FORKING),
        processes.start("rqworker", "high", "--worker-class", "jobs.worker.SimpleWorker"),
    ]
    processes.wait_until_logged(started[0], " started (tick ", "the scheduler to start")
    for worker_process in started[1:]:
        processes.wait_until_listening(worker_process)
    running = services.job_enqueue(type="example", params={"duration": 60, "steps": 60})
    wait_for(lambda: Job.objects.get(pk=running.pk).status == JobStatus.STARTED, 30, message="the job to start")
    markers = [tmp_path / f"ran-{index}" for index in range(300)]
    conn = queues.redis()
    behind = [0.0]

    def watching(condition: Any) -> Any:
        """The condition, noting how far behind the history is each time it is looked at."""

        def look() -> Any:
            behind[0] = max(behind[0], reconcile.mirror_backlog_age(conn))
            return condition()

        return look

    with database_slowed_for_other_processes():
        job_ids = [plain_enqueue(marker) for marker in markers]
        ours = services.job_enqueue(type="example", params={"duration": 0}, queue="high")
        os.killpg(victim.pid, signal.SIGKILL)  # the worker and its mirror; its horse dies with it
        victim.wait(5)
        killed_at = time.monotonic()
        # Its liveness key expires, the next round judges it; its write waits for the slow database.
        deadline = settings.JOBS_WORKER_DEAD_AFTER + settings.JOBS_RECONCILE_INTERVAL + 3
        wait_for(
            watching(lambda: Job.objects.get(pk=running.pk).status != JobStatus.STARTED),
            deadline + 10,
            interval=0.2,
            message="the killed worker's job to be judged",
        )
        judged_after = time.monotonic() - killed_at
        # The worker refuses them one by one (a busy machine has taken more than 30 s for the 300); the
        # promise is that the history keeps up meanwhile (`behind`, below).
        wait_for(
            watching(lambda: Job.objects.filter(pk__in=job_ids, status=JobStatus.FAILED).count() == len(job_ids)),
            90,
            interval=0.2,
            message="a failed row for each",
        )
    print(
        f"[figure] {len(job_ids)} plain django-rq jobs on a slow database: the killed worker's job judged "
        f"{judged_after:.1f}s after the kill; the history at most {behind[0]:.1f}s behind"
    )
    assert judged_after <= deadline
    assert behind[0] < reconcile.MIRROR_BEHIND_SECONDS
    assert "the mirror is behind" not in processes.log(started[0])  # no round of the reconciler skipped
    assert timeline_outcomes(running) == [AttemptOutcome.ABANDONED]
    row = Job.objects.get(pk=job_ids[0])
    assert row.type == "external"
    assert row.params["callable"] == "tests.external_callables.touch"
    assert str(markers[0]) in row.params["args"]
    assert "refused to run 'tests.external_callables.touch'" in row.error
    assert "JOBS_EXTERNAL_CALLABLES" in row.error
    assert not any(marker.exists() for marker in markers)
    # Our own job on the same queue, behind them, runs; the history keeps up and the reconciler judges.
    wait_for(lambda: Job.objects.get(pk=ours.pk).status == JobStatus.FINISHED, 30, message="our job")
    wait_for(lambda: mirror.oldest_unapplied_ms(conn) is None, 10, message="the history to catch up")
    assert reconcile.reconcile().skipped_mirror_behind is False


def timeline_outcomes(job: Job) -> list[str]:
    return list(JobAttempt.objects.filter(job=job).order_by("number").values_list("outcome", flat=True))


@pytest.mark.slow
def test_an_allowed_plain_django_rq_job_runs_and_is_recorded(processes, tmp_path):
    marker = tmp_path / "ran"
    job_id = plain_enqueue(marker)
    processes.worker(
        "high", worker_class="jobs.worker.SimpleWorker", JOBS_EXTERNAL_CALLABLES="tests.external_callables.touch"
    )
    row = wait_for(lambda: Job.objects.filter(pk=job_id, status=JobStatus.FINISHED).first(), 20, message="the row")
    assert marker.read_text() == "ran"
    assert row.type == "external"
    assert row.result == str(marker)
    assert [attempt.outcome for attempt in row.attempt_set.all()] == ["finished"]


# --- the event stream stays bounded while the history is behind -------------------------------------------


@pytest.mark.slow
def test_while_the_stream_is_over_its_limit_progress_is_skipped_results_are_previews_and_the_backlog_shows(
    processes, tmp_path
):
    conn = queues.redis()
    # A backlog: transitions the history cannot take yet (their rows are not visible: the mirror keeps
    # them waiting, as it keeps every transition while the database is away).
    for _ in range(30):
        events.emit(conn, str(uuid.uuid4()), events.STARTED, 1, w="elsewhere")
    job = services.job_enqueue(type="example", params={"duration": 0.3, "steps": 6})
    recipients = [f"recipient-{index:02d}@example.com" for index in range(50)]
    email = services.job_enqueue(type="email", params={"to": recipients, "subject": "Backlog", "body": "Hi"})
    processes.worker(
        "high",
        "default",
        worker_class="jobs.worker.SimpleWorker",
        JOBS_STREAM_BACKLOG_LIMIT="10",
        EMAIL_FILE_PATH=str(tmp_path / "mail"),
    )
    wait_for(
        lambda: Job.objects.filter(pk__in=[job.pk, email.pk], status=JobStatus.FINISHED).count() == 2,
        20,
        message="both jobs to finish",
    )
    kinds = [entry[1][b"e"] for entry in conn.xrange(events.STREAM)]
    mine = [events.decode("0-0", {b"e": raw}) for raw in kinds if str(job.pk).encode() in raw]
    assert [event.kind for event in mine if event] == [events.STARTED, events.FINISHED]

    # The e-mail's result (its 50 recipients) is far under the usual bound, over the backlog's: a preview.
    email.refresh_from_db()
    whole = {"sent": 1, "to": recipients}
    assert email.result["truncated"] is True
    assert events.BACKLOG_RESULT_BYTES < email.result["bytes"] < events.MAX_RESULT_BYTES
    assert email.result["bytes"] > len(json.dumps(whole))
    assert email.result["preview"].startswith(json.dumps(whole)[:200])
    assert len(email.result["preview"]) <= events.BACKLOG_RESULT_BYTES

    # Queue health shows the backlog, in the API and in /metrics.
    viewer = APIClient()
    viewer.force_authenticate(make_user("vera", groups=(VIEWERS,)))

    def mirror_health() -> dict[str, Any]:
        response = viewer.get("/api/jobs/stats")
        assert response.status_code == 200, response.content
        found: dict[str, Any] = response.json()["health"]["mirror"]
        return found

    health = wait_for(lambda: (found := mirror_health())["backlog"] == 30 and found, 5, message="the backlog")
    assert health["oldest_age"] is not None
    samples = scrape()
    assert value(samples, "jobs_mirror_backlog") == 30
    assert value(samples, "jobs_mirror_oldest_seconds") >= health["oldest_age"]


# --- a transaction Redis runs too late to answer in time is taken back --------------------------


@pytest.fixture
def redis_runs_late(monkeypatch):
    """Redis's clock is far ahead: whatever it runs, it runs after the caller gave up waiting."""
    monkeypatch.setattr(rqstore, "_redis_clock_offset", lambda pool: -60.0)


def jobs_in_redis() -> set[str]:
    prefix = rqstore.RQJob.redis_job_namespace_prefix
    return {key.decode()[len(prefix) :] for key in queues.redis().scan_iter(f"{prefix}*")}


def test_jobs_redis_adds_too_late_for_their_caller_are_taken_back_and_their_rows_roll_back(redis_runs_late):
    conn = queues.redis()
    conn.rpush(queues.get_queue("default").key, "someone-else")  # what was there before stays
    with pytest.raises(QueueUnavailable):
        services.jobs_enqueue(
            requests=[
                services.JobRequest(type="example"),
                services.JobRequest(type="example", queue="high"),
                services.JobRequest(type="example", delay_seconds=600),
            ]
        )
    assert not Job.objects.exists()
    assert queued_ids() == ["someone-else"]
    assert queued_ids("high") == []
    assert scheduled_ids() == []
    assert jobs_in_redis() == set()


def test_a_retry_redis_runs_too_late_leaves_the_job_failed_and_retriable():
    job = services.job_enqueue(type="example")
    conn = queues.redis()
    conn.lrem(queues.get_queue("default").key, 0, job.rq_id)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, attempts=1)
    job.refresh_from_db()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rqstore, "_redis_clock_offset", lambda pool: -60.0)
        with pytest.raises(QueueUnavailable):
            services.job_retry(job=job)
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert queued_ids() == []
    services.job_retry(job=job)  # in time: works from the row
    assert queued_ids() == [job.rq_id]


# --- the reconciler: a live worker's job is its own, a dead worker's is judged at once ---------------


def started(job: Job, worker: str, *, ago: float) -> Job:
    """The row and Redis as a worker that started the job `ago` seconds ago leaves them."""
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.STARTED, worker_name=worker, attempts=1, started_at=timezone.now() - timedelta(seconds=ago)
    )
    conn = queues.redis()
    if conn.exists(rqstore.RQJob.key_for(job.rq_id)):
        conn.hset(rqstore.RQJob.key_for(job.rq_id), "status", "started")
    job.refresh_from_db()
    return job


def test_a_running_job_redis_forgot_is_left_to_its_live_worker_until_no_run_could_last_that_long(settings):
    conn = queues.redis()
    job = services.job_enqueue(type="example")
    conn.delete(rqstore.RQJob.key_for(job.rq_id))  # Redis restarted without persistence
    conn.lrem(queues.get_queue("default").key, 0, job.rq_id)
    conn.sadd(worker.PRODUCT_WORKERS, "busy")
    conn.set(mirror.alive_key("busy"), "1", ex=60)
    started(job, "busy", ago=settings.JOBS_WORKER_DEAD_AFTER + 5)

    report = reconcile.reconcile()

    assert (report.lost, report.abandoned) == (0, 0)
    assert Job.objects.get(pk=job.pk).status == JobStatus.STARTED
    assert queued_ids() == []  # not run a second time meanwhile

    started(job, "busy", ago=job.timeout + settings.JOBS_WORKER_DEAD_AFTER + 5)
    report = reconcile.reconcile()
    assert report.lost == 1
    job.refresh_from_db()
    assert job.error == reconcile.LOST_REASON
    assert queued_ids() == [job.rq_id]  # `example` runs lost work again


def test_a_worker_that_registered_its_death_is_dead_at_once_not_60_s_later(settings):
    conn = queues.redis()
    job = services.job_enqueue(type="example")
    conn.lrem(queues.get_queue("default").key, 0, job.rq_id)
    # A cold shutdown: the worker left the product's set and RQ keeps its key 60 s, marked dead.
    conn.hset("rq:worker:gone-cold", mapping={"birth": "x", "death": "y"})
    conn.expire("rq:worker:gone-cold", 60)
    started(job, "gone-cold", ago=settings.JOBS_WORKER_DEAD_AFTER + 1)

    report = reconcile.reconcile()

    assert report.abandoned == 1
    job.refresh_from_db()
    assert "gone-cold died" in job.error
    assert job.status == JobStatus.QUEUED


def test_a_delayed_job_redis_forgot_is_scheduled_again_for_its_time():
    conn = queues.redis()
    job = services.job_enqueue(type="example", delay_seconds=600)
    due = job.scheduled_for
    conn.flushdb()  # Redis restarted without persistence
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - reconcile.GRACE - timedelta(seconds=1))

    report = reconcile.reconcile()

    assert report.lost == 1
    job.refresh_from_db()
    assert (job.status, job.scheduled_for) == (JobStatus.SCHEDULED, due)
    assert scheduled_ids() == [job.rq_id]
    assert queued_ids() == []


def test_dead_mirrors_are_removed_from_the_stream_group_once_they_hold_nothing(monkeypatch):
    conn = queues.redis()
    drainer = mirror.Drainer(conn, "long-gone")
    drainer.ensure_group()
    events.emit(conn, "not-a-job", events.PROGRESS, 1, p=1)
    drain()  # applied by the consumer "test", which beats:
    conn.set(mirror.alive_key("test"), "1", ex=60)
    conn.xreadgroup(events.GROUP, "long-gone", {events.STREAM: ">"}, count=10)  # joins the group, holds nothing
    monkeypatch.setattr(reconcile, "FORGET_CONSUMER_AFTER", timedelta(0))
    time.sleep(0.01)

    reconcile.take_over_from_dead_mirrors(conn)

    names = {consumer.name for consumer in mirror.consumers(conn)}
    assert "long-gone" not in names
    assert "test" in names  # a mirror that beats is kept


# --- a job a worker took off its queue and died with before starting it ------------------------------


def taken_by_a_worker_that_died(job: Job, execution_of: str | None = None) -> None:
    """What a worker leaves when it dies between its pop and the start of the job: the job queued, on no
    queue; with `execution_of`, also the started-registry entry it writes before forking its work horse."""
    conn = queues.redis()
    queue = queues.get_queue(job.queue)
    conn.lrem(queue.key, 0, job.rq_id)
    if execution_of:
        conn.zadd(queue.started_job_registry.key, {f"{job.rq_id}:e1": time.time() + 90})
        conn.hset(f"rq:execution:{job.rq_id}:e1", "worker_name", execution_of)
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - reconcile.GRACE - timedelta(seconds=1))


def seen_adrift_long_ago(job: Job, settings: Any) -> None:
    queues.redis().hset(reconcile.ADRIFT_KEY, job.rq_id, time.time() - settings.JOBS_WORKER_DEAD_AFTER - 1)


def test_a_queued_job_a_dead_worker_took_off_its_queue_goes_back_to_the_front_and_runs_once(settings):
    waiting = services.job_enqueue(type="example")
    job = services.job_enqueue(type="example")
    taken_by_a_worker_that_died(job)

    assert reconcile.reconcile().put_back == 0  # first seen: a live worker may be about to start it
    assert queued_ids() == [waiting.rq_id]
    seen_adrift_long_ago(job, settings)
    assert reconcile.reconcile().put_back == 1

    assert queued_ids() == [job.rq_id, waiting.rq_id]
    assert rqstore.status(job.rq_id) == "queued"
    job.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.QUEUED, 0)  # it never started: no attempt spent
    assert reconcile.reconcile().put_back == 0  # on its queue now: not put back twice
    assert queued_ids() == [job.rq_id, waiting.rq_id]
    assert not queues.redis().hexists(reconcile.ADRIFT_KEY, job.rq_id)


def test_a_job_whose_worker_lives_is_left_to_it_and_put_back_once_that_worker_is_dead(settings):
    conn = queues.redis()
    job = services.job_enqueue(type="example")
    taken_by_a_worker_that_died(job, execution_of="forking")
    conn.sadd(worker.PRODUCT_WORKERS, "forking")
    conn.set(mirror.alive_key("forking"), "1", ex=60)
    reconcile.reconcile()
    seen_adrift_long_ago(job, settings)

    assert reconcile.reconcile().put_back == 0  # its worker beats: it starts the job or records its end
    assert queued_ids() == []

    conn.delete(mirror.alive_key("forking"))
    assert reconcile.reconcile().put_back == 1
    assert queued_ids() == [job.rq_id]
    started_registry = queues.get_queue("default").started_job_registry
    assert conn.zrange(started_registry.key, 0, -1) == []  # RQ will not fail it later as abandoned


def test_a_job_a_worker_popped_and_started_meanwhile_is_not_put_back(settings):
    job = services.job_enqueue(type="example")
    taken_by_a_worker_that_died(job)
    reconcile.reconcile()
    seen_adrift_long_ago(job, settings)
    queues.redis().hset(rqstore.RQJob.key_for(job.rq_id), "status", "started")  # the worker was only slow

    assert reconcile.reconcile().put_back == 0
    assert queued_ids() == []
    assert rqstore.put_back("default", job.rq_id) is False  # the script itself refuses a started job


def test_a_job_a_worker_has_just_popped_is_not_removed_behind_its_back():
    job = services.job_enqueue(type="example")
    queues.redis().lrem(queues.get_queue("default").key, 0, str(job.pk))  # what a worker's pop does
    with pytest.raises(ActionNotAllowed, match="already taken by a worker"):
        services.job_remove(job=job)
    assert Job.objects.filter(pk=job.pk).exists()
    assert rqstore.status(str(job.pk)) == "queued"  # the worker runs it, and the history says so

    waiting = services.job_enqueue(type="example", delay_seconds=60)
    services.job_remove(job=waiting)  # still waiting: taken off and removed
    assert not Job.objects.filter(pk=waiting.pk).exists()
    assert rqstore.status(str(waiting.pk)) is None
    assert scheduled_ids() == []


def test_a_dead_workers_job_whose_end_redis_has_is_left_to_the_mirror_not_judged(settings):
    conn = queues.redis()
    job = services.job_enqueue(type="example")
    conn.lrem(queues.get_queue("default").key, 0, job.rq_id)
    conn.hset("rq:worker:gone", mapping={"birth": "x", "death": "y"})
    started(job, "gone", ago=settings.JOBS_WORKER_DEAD_AFTER + 1)
    # Its work horse finished the job as the worker died: Redis has the end, the row not yet.
    conn.hset(rqstore.RQJob.key_for(job.rq_id), "status", "finished")

    assert reconcile.reconcile().abandoned == 0
    assert Job.objects.get(pk=job.pk).status == JobStatus.STARTED  # the mirror brings the end
    assert queued_ids() == []  # not run again
