"""The fault suite: what a user sees in the job history and the API when things break.

Most tests run real processes (`manage.py rqworker` and `runscheduler`, and
gunicorn serving the ASGI application where the API is the point) and break
something under them: a work horse killed, a worker shut down cold, the
active scheduler killed, Redis restarted empty, refusing connections, hanging
or full, the database stopped. Where a test breaks Redis or PostgreSQL itself,
it breaks its own: a `redis-server` or a PostgreSQL cluster it started in a
temporary directory, on a port of its own. Each test then asserts what a user
of the history and the API sees, and prints what it measured (run pytest with
`-rP` to read the figures); docs/faults.md keeps them.

A promise the product does not keep yet is a test marked `xfail(strict=True)`
whose reason names the defect: it fails as long as the defect is there, and
turns the run red (XPASS) once it is fixed, for the marker to go.

Needs `redis-server` on the PATH and PostgreSQL's server binaries in
FAULTS_POSTGRES_BIN (/usr/lib/postgresql/15/bin by default); a test that lacks
them is skipped. Run alone: `pytest -m slow -k "test_faults or test_fault_suite"`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import suppress
from datetime import datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import redis as redis_lib
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rq.job import Job as RQJob

from jobs import events, queues, rqcompat, services
from jobs.errors import QueueUnavailable
from jobs.mirror import Drainer, apply_events, pending_by_consumer
from jobs.models import Job, JobAttempt, JobAudit
from jobs.reconcile import MIRROR_BEHIND_SECONDS, mirror_backlog_age, reconcile
from jobs.scheduler import LOCK_KEY
from jobs.statuses import TERMINAL, AttemptOutcome, JobStatus
from tests.conftest import wait_for
from tests.fault_servers import (
    POSTGRES_BIN,
    REDIS_SERVER,
    Answer,
    OwnPostgres,
    OwnRedis,
    RunLog,
    Web,
    fault_env,
    jobs_in_redis,
    manage_py,
)
from tests.helpers import FORKING, make_user, redis_at
from tests.test_faults import (
    END_LOST_WORKERS,
    alive,
    database_unavailable_to_other_processes,
    make_older_than_the_reconcilers_grace,
    refreshed,
    rq_status,
    timeline,
    verdict_deadline,
    wait_for_reconciler_rounds,
    wait_for_status,
    work_horses,
)

pytestmark = [pytest.mark.faults, pytest.mark.slow]

ENDED = TERMINAL  # nothing more happens to a job in these statuses unless someone retries it
#: What a user needs to take every action (remove needs the delete permission).
ACTION_PERMS = ("add_job", "view_job", "change_job", "delete_job")


def figure(text: str) -> None:
    """Print a measured figure (shown with pytest -rP; docs/faults.md keeps them)."""
    print(f"\n[figure] {text}")


# --- the job types, and a log of their runs ---------------------------------------------------


@pytest.fixture
def fault_types() -> Iterator[ModuleType]:
    """The test-only job types of `tests.fault_job_types`, registered in this process for this test only."""
    from tests import fault_job_types

    fault_job_types.register()
    yield fault_job_types
    fault_job_types.unregister()


@pytest.fixture
def run_log(tmp_path: Path) -> RunLog:
    return RunLog(tmp_path / "runs.log")


# --- what the API says --------------------------------------------------------------------------


@pytest.fixture
def api_user(transactional_db: None) -> Any:
    return make_user("faults-api", perms=("add_job", "view_job", "change_job"))


@pytest.fixture
def api_token(api_user: Any) -> str:
    return str(Token.objects.create(user=api_user).key)


@pytest.fixture
def api(api_user: Any) -> APIClient:
    """The REST API in this process, on the test database, as an API user."""
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=api_user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def api_job(api: APIClient, job: Job) -> dict[str, Any]:
    response = api.get(f"/api/jobs/{job.id}")
    assert response.status_code == 200, response.content
    data: dict[str, Any] = response.json()
    return data


@pytest.fixture(scope="module")
def own_redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedis]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    server = OwnRedis(tmp_path_factory.mktemp("own-redis"), db=int(settings.RQ_QUEUES["default"]["DB"]))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_redis(own_redis_server: OwnRedis) -> Iterator[OwnRedis]:
    """The test's own redis-server, empty; this process's queues and cache talk to it while the test runs."""
    own_redis_server.reset()
    with redis_at(own_redis_server.port, cache_too=True):
        yield own_redis_server
    own_redis_server.resume()


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[OwnPostgres]:
    if not (POSTGRES_BIN / "initdb").exists():
        pytest.skip(f"no PostgreSQL server binaries in {POSTGRES_BIN} (set FAULTS_POSTGRES_BIN)")
    cluster = OwnPostgres()
    try:
        cluster.prepare()
        yield cluster
    finally:
        cluster.remove()


# --- a job that raises, times out, returns what JSON cannot hold, or returns 10 MB ---------------


def test_a_job_that_raises_times_out_returns_no_json_or_10_mb_ends_with_a_clear_status_and_message(
    processes, fault_types, run_log, api
):
    processes.worker(**fault_env(run_log))
    raised = services.job_enqueue(type=fault_types.RAISES)
    timed_out = services.job_enqueue(type=fault_types.TIMES_OUT)
    not_json = services.job_enqueue(type=fault_types.NOT_JSON)
    big = services.job_enqueue(type=fault_types.BIG_RESULT)
    for job in (raised, timed_out, not_json, big):
        wait_for_status(job, ENDED, 60)

    # Raised: failed, with the exception's own line and its traceback.
    assert raised.status == JobStatus.FAILED
    assert raised.error == "tests.fault_job_types.FaultsJobError: the faults job raised on purpose"
    assert "raise FaultsJobError" in raised.traceback
    # Over its timeout: failed, saying so, and stopped when the timeout said.
    assert timed_out.status == JobStatus.FAILED
    assert timed_out.error == (
        f"rq.timeouts.JobTimeoutException: Task exceeded maximum timeout value ({fault_types.TIMEOUT_SECONDS} seconds)"
    )
    ran_for = (timed_out.ended_at - timed_out.started_at).total_seconds()
    figure(f"a job over its {fault_types.TIMEOUT_SECONDS}s timeout was stopped and failed after {ran_for:.2f}s")
    assert fault_types.TIMEOUT_SECONDS <= ran_for < fault_types.TIMEOUT_SECONDS + 2
    # A result JSON cannot hold: finished, the values it could not hold shown as text.
    assert not_json.status == JobStatus.FINISHED, not_json.error
    assert not_json.result == {"amount": "12.50", "when": "2024-01-02 03:04:05+00:00"}
    # 10 MB: finished, with a bounded preview that says it is one, and how big the whole was.
    assert big.status == JobStatus.FINISHED, big.error
    assert big.result["truncated"] is True
    assert big.result["bytes"] == fault_types.BIG_RESULT_CHARS + 2  # a JSON string: its quotes
    assert big.result["preview"] == '"' + "x" * 999

    for job, outcome in (
        (raised, AttemptOutcome.FAILED),
        (timed_out, AttemptOutcome.FAILED),
        (not_json, AttemptOutcome.FINISHED),
        (big, AttemptOutcome.FINISHED),
    ):
        seen = api_job(api, job)
        assert (seen["status"], seen["error"], seen["result"]) == (job.status, job.error, job.result)
        assert seen["attempts"] == 1
        assert [attempt["outcome"] for attempt in seen["timeline"]] == [outcome]
        assert seen["timeline"][0]["error"] == job.error
        assert seen["ended_at"] is not None


# --- the work horse killed alone (the out-of-memory killer's usual victim) -----------------------


def kill_the_horse_running(job: Job, run_log: RunLog) -> float:
    """SIGKILL the work horse running the job, and only it; returns when (epoch seconds)."""
    wait_for_status(job, {JobStatus.STARTED}, 30)
    horse = run_log.horse_running(job)
    os.kill(horse, signal.SIGKILL)
    return time.time()


def test_a_killed_work_horse_fails_its_attempt_and_the_job_runs_again_where_its_type_allows(
    processes, fault_types, run_log, api
):
    processes.worker(**fault_env(run_log))
    processes.scheduler(**fault_env(run_log))
    job = services.job_enqueue(type=fault_types.RECORD, params={"seconds": 6, "steps": 6})

    killed_at = kill_the_horse_running(job, run_log)
    wait_for(lambda: refreshed(job).status != JobStatus.STARTED, 10, message="the killed attempt to be recorded")
    detected = job.updated_at.timestamp() - killed_at
    figure(f"work horse killed alone: its attempt recorded as ended {detected:.2f}s after the kill")

    wait_for_status(job, ENDED, 30)
    assert job.status == JobStatus.FINISHED, job.error
    first, second = timeline(job)
    assert first.outcome in (AttemptOutcome.FAILED, AttemptOutcome.ABANDONED)
    assert "Work-horse terminated unexpectedly" in first.error or "died" in first.error, first.error
    assert second.outcome == AttemptOutcome.FINISHED
    assert job.attempts == 2
    assert len(run_log.starts(job)) == 2
    assert not run_log.overlaps()
    seen = api_job(api, job)
    assert seen["status"] == JobStatus.FINISHED
    assert [attempt["outcome"] for attempt in seen["timeline"]] == [first.outcome, AttemptOutcome.FINISHED]


def test_a_killed_work_horse_is_not_run_again_by_itself_when_its_type_must_not_run_twice(
    processes, fault_types, run_log, api
):
    """Like `email` (retry_lost=False): its first run may have done its work before the horse died."""
    processes.worker(**fault_env(run_log))
    processes.scheduler(**fault_env(run_log))
    job = services.job_enqueue(type=fault_types.RECORD_ONCE, params={"seconds": 6, "steps": 6})

    kill_the_horse_running(job, run_log)
    wait_for(lambda: refreshed(job).status != JobStatus.STARTED, 10, message="the killed attempt to be recorded")
    wait_for_reconciler_rounds(2)

    job.refresh_from_db()
    assert job.status in (JobStatus.FAILED, JobStatus.ABANDONED), (job.status, job.error, run_log.lines())
    assert job.attempts == 1
    assert len(run_log.starts(job)) == 1, "the job ran again by itself"
    seen = api_job(api, job)
    assert seen["status"] == job.status
    assert len(seen["timeline"]) == 1


# --- a worker shut down cold: SIGTERM, then SIGTERM again while its job runs ----------------------


def test_a_worker_shut_down_cold_leaves_its_job_abandoned_and_it_runs_again_once_where_its_type_allows(
    processes, fault_types, run_log, api
):
    env = fault_env(run_log)
    workers = [processes.worker(**env), processes.worker(**env)]
    processes.scheduler(**env)
    again = services.job_enqueue(type=fault_types.RECORD, params={"seconds": 8, "steps": 8})
    once = services.job_enqueue(type=fault_types.RECORD_ONCE, params={"seconds": 8, "steps": 8})
    horses = [run_log.horse_running(again), run_log.horse_running(once)]  # one job on each worker

    for worker in workers:
        os.kill(worker.pid, signal.SIGTERM)  # warm shut down: the job would finish...
    asked_at = time.monotonic()
    # ...but the second SIGTERM (RQ ignores one within a second of the first) says now.
    wait_for(
        lambda: (
            time.monotonic() - asked_at > 1.2
            and all("warm shut down requested" in processes.log(worker) for worker in workers)
        ),
        10,
        message="both workers to have taken the first SIGTERM, a second ago",
    )
    for worker in workers:
        os.kill(worker.pid, signal.SIGTERM)
    shut_at = time.time()
    for worker in workers:
        worker.wait(15)
    assert not any(alive(horse) for horse in horses), "a work horse outlived its worker"
    processes.worker(**env)  # a healthy worker for what runs again

    judged = judged_abandoned_and_run_again_once_where_allowed(again, once, run_log, api, shut_at)
    figure(f"worker shut down cold: its job judged abandoned {judged:.1f}s after the second SIGTERM")


def judged_abandoned_and_run_again_once_where_allowed(
    again: Job, once: Job, run_log: RunLog, api: APIClient, died_at: float
) -> float:
    """Assert what the history and the API say of two jobs whose workers died under them (`died_at`,
    epoch seconds), a healthy worker and a scheduler running: both abandoned, the one whose type
    retries lost work run again to its end, the other not; returns the seconds to the later verdict."""

    def first_attempts_ended() -> list[datetime] | None:
        # Not the rows' status: a row may still be queued, its start on the stream of the killed
        # worker's mirror until another mirror takes it over.
        firsts = [JobAttempt.objects.filter(job=job, number=1).first() for job in (again, once)]
        ended = [first.ended_at for first in firsts if first is not None and first.ended_at is not None]
        return ended if len(ended) == 2 else None

    verdicts = wait_for(
        first_attempts_ended,
        verdict_deadline() + 5,
        message="both jobs to be judged (promised within JOBS_WORKER_DEAD_AFTER + JOBS_RECONCILE_INTERVAL)",
    )
    judged = max(verdict.timestamp() for verdict in verdicts) - died_at

    wait_for_status(again, set(ENDED), 30)
    assert again.status == JobStatus.FINISHED, again.error
    assert [attempt.outcome for attempt in timeline(again)] == [AttemptOutcome.ABANDONED, AttemptOutcome.FINISHED]
    assert len(run_log.starts(again)) == 2

    wait_for_reconciler_rounds(1)
    once.refresh_from_db()
    assert once.status == JobStatus.ABANDONED
    assert once.attempts == 1
    assert "died while running this job" in once.error
    assert [attempt.outcome for attempt in timeline(once)] == [AttemptOutcome.ABANDONED]
    assert len(run_log.starts(once)) == 1
    assert not run_log.overlaps()
    for job in (again, once):
        seen = api_job(api, job)
        assert seen["status"] == job.status
        assert [attempt["outcome"] for attempt in seen["timeline"]] == [a.outcome for a in timeline(job)]
    return judged


# --- a worker SIGKILLed mid-job (a lost machine), forking or running its jobs in itself ---------------

#: RQ's worker classes, which `manage.py rqworker --worker-class` runs (its default is the pool, whose
#: suites are tests/test_pool*.py): the forking one runs each job in a work horse; SimpleWorker runs
#: the job in the worker process itself.
WORKER_CLASSES = [pytest.param(FORKING, id="forking"), pytest.param("jobs.worker.SimpleWorker", id="simple")]


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_a_killed_worker_leaves_its_job_abandoned_within_the_deadline_and_it_runs_again_once_where_its_type_allows(
    processes, fault_types, run_log, api, worker_class
):
    env = fault_env(run_log)
    workers = [processes.worker(worker_class=worker_class, **env) for _ in range(2)]
    processes.scheduler(**env)
    again = services.job_enqueue(type=fault_types.RECORD, params={"seconds": 5, "steps": 5})
    once = services.job_enqueue(type=fault_types.RECORD_ONCE, params={"seconds": 5, "steps": 5})
    running = {run_log.horse_running(again), run_log.horse_running(once)}  # one job on each worker
    # Where the jobs run: a work horse of each worker, or each worker itself.
    if worker_class == FORKING:
        assert running == {horse for worker in workers for horse in work_horses(worker.pid)}
    else:
        assert running == {worker.pid for worker in workers}

    # SIGKILL, as a lost machine: each worker with its mirror process, then the work horses (a group
    # each). The workers first: a worker that outlived its horse by a moment would record the horse's
    # death as a failed attempt, which is another scenario (tests/test_faults.py).
    worker_pids = [worker.pid for worker in workers]
    for pid in [*worker_pids, *sorted(running - set(worker_pids))]:
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
    killed_at = time.time()
    for worker in workers:
        worker.wait(5)
    # A SIGKILL takes effect when the kernel next runs the process: on a busy machine, a moment later.
    wait_for(lambda: not any(alive(pid) for pid in running), 5, message="the killed processes gone")
    processes.worker(worker_class=worker_class, **env)  # a healthy worker for what runs again

    judged = judged_abandoned_and_run_again_once_where_allowed(again, once, run_log, api, killed_at)
    figure(
        f"worker ({worker_class.rsplit('.', 1)[-1]}) SIGKILLed with its job: judged abandoned "
        f"{judged:.1f}s after the kill (deadline {verdict_deadline():.0f}s)"
    )
    assert judged <= verdict_deadline()


# --- the active scheduler killed: the standby takes over ------------------------------------------


def test_the_standby_scheduler_takes_over_within_30_s_of_the_active_ones_death_and_promotes_a_delayed_job(
    processes, fault_types, run_log, api
):
    env = fault_env(run_log)
    processes.worker(**env)
    schedulers = [processes.scheduler(**env), processes.scheduler(**env)]
    holder = wait_for(lambda: queues.redis().get(LOCK_KEY), 20, message="a scheduler to take the lock").decode()
    active_pid = int(holder.rsplit(":", 2)[1])
    [active] = [scheduler for scheduler in schedulers if scheduler.pid == active_pid]
    [standby] = [scheduler for scheduler in schedulers if scheduler.pid != active_pid]

    job = services.job_enqueue(type=fault_types.RECORD, delay_seconds=3)
    assert job.status == JobStatus.SCHEDULED
    os.killpg(active.pid, signal.SIGKILL)
    active.wait(5)
    killed_at = time.monotonic()

    def new_holder() -> str | None:
        value: Any = queues.redis().get(LOCK_KEY)
        return value.decode() if value and value.decode() != holder else None

    taken_by = wait_for(new_holder, 40, interval=0.1, message="the standby scheduler to take over")
    took = time.monotonic() - killed_at
    assert int(taken_by.rsplit(":", 2)[1]) == standby.pid
    wait_for_status(job, ENDED, 40)
    promoted_after = time.monotonic() - killed_at
    figure(
        f"scheduler failover: the standby took over {took:.1f}s after the active one was killed; "
        f"the delayed job ran {promoted_after:.1f}s after the kill"
    )
    assert took <= 30
    assert promoted_after <= 30
    assert job.status == JobStatus.FINISHED, job.error
    assert job.attempts == 1
    assert len(run_log.starts(job)) == 1
    assert job.started_at >= job.created_at + timedelta(seconds=3)  # not before it was due
    seen = api_job(api, job)
    assert seen["status"] == JobStatus.FINISHED
    assert [attempt["outcome"] for attempt in seen["timeline"]] == [AttemptOutcome.FINISHED]


# --- the reconciler while the mirror is behind: a database outage with the scheduler running ------


#: What the reconciler logs for a round that judges nothing because the history is behind.
BEHIND_LINE = "the mirror is behind; judging no job this round"


def test_the_reconciler_judges_no_job_while_the_mirror_is_behind_after_a_database_outage(
    processes, fault_types, run_log, api
):
    env = fault_env(run_log)
    workers = [processes.worker(**env), processes.worker(**env)]
    scheduler = processes.scheduler(**env)
    forgotten = services.job_enqueue(type=fault_types.RECORD, params={"seconds": 3, "steps": 3})
    kept = services.job_enqueue(type=fault_types.RECORD, params={"seconds": 3, "steps": 3})
    for job in (forgotten, kept):
        wait_for_status(job, {JobStatus.STARTED}, 30)

    with database_unavailable_to_other_processes():
        # Both workers are asked to stop: they finish their jobs, in Redis, and exit. The history
        # cannot follow: the rows go on saying "started", by workers that are gone...
        for worker in workers:
            os.kill(worker.pid, signal.SIGTERM)
        wait_for(lambda: rq_status(forgotten) == rq_status(kept) == "finished", 30, message="RQ to finish both jobs")
        for worker in workers:
            assert worker.wait(30) == 0, processes.log(worker)
        # ...and Redis forgets one of them (its result's time to live ran out).
        queues.redis().delete(RQJob.key_for(forgotten.rq_id))
        # A reconciler judging these rows now would call one lost and the other abandoned, and run
        # both again. The mirror is behind: it must not, however long the outage lasts.
        wait_for(
            lambda: mirror_backlog_age(queues.redis()) > MIRROR_BEHIND_SECONDS + 3,
            MIRROR_BEHIND_SECONDS + 30,
            interval=0.5,
            message="the history to be further behind than the reconciler tolerates",
        )
        # The outage lasts until a round has seen it: on SQLite a round waits out the busy timeout
        # (20 s) on the database, and could miss the three seconds above.
        wait_for(
            lambda: BEHIND_LINE in processes.log(scheduler),
            60,
            interval=0.5,
            message="a reconciler round to see the mirror behind",
        )
        assert refreshed(forgotten).status == refreshed(kept).status == JobStatus.STARTED
        outage_ended = time.monotonic()

    for job in (forgotten, kept):
        wait_for_status(job, ENDED | {JobStatus.QUEUED, JobStatus.SCHEDULED}, 60)
    caught_up = time.monotonic() - outage_ended
    figure(f"database outage of {MIRROR_BEHIND_SECONDS + 3:.0f}s+: the history caught up {caught_up:.1f}s after it")
    wait_for_reconciler_rounds(1)
    for job in (forgotten, kept):
        job.refresh_from_db()
        assert job.status == JobStatus.FINISHED, (job.status, job.error)
        assert job.attempts == 1
        assert [attempt.outcome for attempt in timeline(job)] == [AttemptOutcome.FINISHED]
        assert len(run_log.starts(job)) == 1
        seen = api_job(api, job)
        assert seen["status"] == JobStatus.FINISHED
        assert seen["error"] == ""


@pytest.mark.django_db(transaction=True)
def test_the_reconciler_leaves_alone_a_job_whose_end_is_on_the_stream_but_not_yet_in_the_history(fault_types):
    job = services.job_enqueue(type=fault_types.RECORD)
    conn = queues.redis()
    # A worker took the job, ran it to its end, and was killed before its mirror wrote the end down:
    # the start is in the history; the end is on the stream, delivered to the dead worker's mirror.
    conn.lrem(queues.get_queue(job.queue).key, 0, job.rq_id)
    conn.hset(RQJob.key_for(job.rq_id), "status", "finished")
    started = time.time() - settings.JOBS_WORKER_DEAD_AFTER - 5
    apply_events([events.Event(f"{int(started * 1000)}-0", job.rq_id, events.STARTED, 1, started, {"w": "gone"})])
    Drainer(conn, consumer="gone").ensure_group()
    events.emit(conn, job.rq_id, events.FINISHED, 1, w="gone", s=started, r={"worked": 0.0})
    conn.xreadgroup(events.GROUP, "gone", {events.STREAM: ">"}, count=100)  # read, never acknowledged
    assert mirror_backlog_age(conn) < MIRROR_BEHIND_SECONDS

    report = reconcile()

    job.refresh_from_db()
    assert (report.abandoned, report.lost) == (0, 0), "a finished job was judged dead and queued to run again"
    # The reconciler applied what the dead worker's mirror had read: the job's true end.
    assert job.status == JobStatus.FINISHED
    assert [attempt.outcome for attempt in timeline(job)] == [AttemptOutcome.FINISHED]
    assert pending_by_consumer(conn).get("gone", 0) == 0


# --- Redis restarted without persistence -----------------------------------------------------------


def test_every_job_runs_again_or_is_marked_lost_within_60_s_of_a_redis_restart_without_persistence(
    processes, fault_types, run_log, own_redis, api
):
    env = fault_env(run_log, REDIS_URL=own_redis.url)
    processes.worker(**env)
    processes.worker(**env)
    processes.scheduler(**env)
    again, once = fault_types.RECORD, fault_types.RECORD_ONCE
    # One progress report, at the end: a job reporting progress while Redis is away is another test's.
    work = {"seconds": 10, "steps": 1}
    running = [services.job_enqueue(type=again, params=work), services.job_enqueue(type=once, params=work)]
    for job in running:  # one on each worker, and in the history
        wait_for_status(job, {JobStatus.STARTED}, 30)
    services.queue_pause(name="low")  # nobody takes these before Redis goes
    queued = [services.job_enqueue(type=name, queue="low") for name in (again, once)]
    scheduled = [services.job_enqueue(type=name, delay_seconds=40) for name in (again, once)]

    own_redis.stop()
    with transaction.atomic():  # committed while Redis is away: the rows wait, pending
        pending = [services.job_enqueue(type=name) for name in (again, once)]
    assert {refreshed(job).status for job in pending} == {JobStatus.PENDING}
    own_redis.start()
    restarted_at = time.time()
    everything = [*running, *queued, *scheduled, *pending]

    def settled(job: Job) -> bool:
        """Marked lost (or ended), or run again since the restart."""
        job.refresh_from_db()
        return job.status in ENDED or any(run.at > restarted_at for run in run_log.starts(job))

    wait_for(lambda: all(settled(job) for job in everything), 60, interval=0.5, message="every job to be handled")
    took = time.time() - restarted_at
    figure(f"Redis restarted empty: every job ran again or was marked lost within {took:.1f}s")

    for job in everything:
        wait_for_status(job, ENDED, 30)
    # What may run twice (lost work of a type that allows it) may; what may not, did not.
    assert all(len(run_log.starts(job)) <= 1 for job in everything if job.type == once), run_log.lines()
    # The running jobs went on to their end.
    assert [job.status for job in running] == [JobStatus.FINISHED, JobStatus.FINISHED]
    assert all(run_log.of_kind("end", job) for job in running)
    # The queued and the delayed jobs: lost; run again where the type allows, marked lost where not.
    for job in (*queued, *scheduled):
        if job.type == again:
            assert job.status == JobStatus.FINISHED, (job.status, job.error)
            assert len(run_log.starts(job)) == 1
        else:
            assert job.status == JobStatus.LOST
            assert job.error == "Redis no longer has this job"
            assert not run_log.starts(job)
    # The pending ones were dispatched once Redis was back, and ran once.
    for job in pending:
        assert job.status == JobStatus.FINISHED, (job.status, job.error)
        assert len(run_log.starts(job)) == 1
    lost = [job for job in everything if job.status == JobStatus.LOST]
    for job in everything:
        seen = api_job(api, job)
        assert (seen["status"], seen["error"]) == (job.status, job.error)
    figure(
        f"Redis restarted empty: {len(lost)} of {len(everything)} jobs marked lost (the never-twice type's), "
        f"rows lost: {len(everything) - Job.objects.filter(pk__in=[j.pk for j in everything]).count()}"
    )


def restart_redis_for(own_redis: OwnRedis, seconds: float) -> None:
    """Stop the test's redis-server and start it again `seconds` later: refused meanwhile, then empty."""
    own_redis.stop()
    stopped_at = time.monotonic()
    wait_for(lambda: time.monotonic() - stopped_at >= seconds, seconds + 5, message=f"{seconds}s without Redis")
    own_redis.start()


def test_a_job_reporting_progress_through_a_1_s_redis_restart_finishes_on_its_first_attempt(
    processes, fault_types, run_log, own_redis, api
):
    env = fault_env(run_log, REDIS_URL=own_redis.url)
    processes.worker(**env)
    job = services.job_enqueue(type=fault_types.RECORD, params={"seconds": 5, "steps": 25})
    wait_for_status(job, {JobStatus.STARTED}, 30)

    restart_redis_for(own_redis, 1)

    wait_for(lambda: run_log.of_kind("end", job) or run_log.of_kind("fail", job), 20, message="the run to end")
    assert not run_log.of_kind("fail", job), run_log.of_kind("fail", job)
    wait_for_status(job, ENDED, 20)
    assert job.status == JobStatus.FINISHED, job.error
    assert [attempt.outcome for attempt in timeline(job)] == [AttemptOutcome.FINISHED]


@pytest.mark.parametrize("worker_class", WORKER_CLASSES)
def test_a_worker_whose_job_ends_while_redis_restarts_keeps_working(
    processes, fault_types, run_log, own_redis, api, worker_class
):
    env = fault_env(run_log, REDIS_URL=own_redis.url)
    worker = processes.worker(worker_class=worker_class, **env)
    first = services.job_enqueue(type=fault_types.RECORD, params={"seconds": 4, "steps": 1})
    started = run_log.starts(first) or wait_for(lambda: run_log.starts(first), 30, message="the job to start")
    wait_for(lambda: time.time() - started[0].at >= 2.5, 10, message="the job to be near its end")

    restart_redis_for(own_redis, 3.5)  # it ends meanwhile

    second = services.job_enqueue(type=fault_types.RECORD)
    wait_for(lambda: worker.poll() is not None or run_log.starts(second), 30, message="the next job to run")
    assert worker.poll() is None, [line for line in processes.log(worker).splitlines() if "quitting" in line]


def test_a_worker_started_while_redis_is_away_waits_for_it_then_runs_jobs(processes, fault_types, run_log, own_redis):
    env = fault_env(run_log, REDIS_URL=own_redis.url)
    own_redis.stop()
    worker = processes.start("rqworker", "--worker-class", FORKING, *queues.QUEUE_NAMES, **env)
    processes.wait_until_logged(worker, "waiting for Redis to start", "the worker to wait for Redis")
    time.sleep(1.5)
    assert worker.poll() is None, processes.log(worker)

    own_redis.start()
    processes.wait_until_listening(worker)
    job = services.job_enqueue(type=fault_types.RECORD)
    wait_for_status(job, ENDED, 30)
    assert job.status == JobStatus.FINISHED


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("step", ["check_for_suspension", "dequeue_job_and_maintain_ttl"])
def test_a_worker_waits_for_redis_where_rqs_loop_would_quit(own_redis, step):
    """Between jobs RQ's loop checks for a suspension and takes the next job: a Redis error there
    ended the worker (found by the chaos run). The product's worker waits for Redis instead."""
    from jobs.worker import Worker

    worker = Worker(queues.all_queues(), connection=queues.redis())
    outcome: dict[str, Any] = {}

    def run_step() -> None:
        try:
            if step == "check_for_suspension":
                worker.check_for_suspension(False)
                outcome["returned"] = None
            else:
                outcome["returned"] = worker.dequeue_job_and_maintain_ttl(5)
        except Exception as exc:  # what RQ's loop would quit on
            outcome["raised"] = exc

    own_redis.stop()
    thread = threading.Thread(target=run_step, daemon=True)
    thread.start()
    thread.join(2.0)
    assert thread.is_alive(), outcome  # waiting, not raising

    own_redis.start()
    job = services.job_enqueue(type="example")
    thread.join(20)
    assert not thread.is_alive()
    assert "raised" not in outcome, outcome
    if step == "dequeue_job_and_maintain_ttl":
        taken, queue = outcome["returned"]
        assert (taken.id, queue.name) == (job.rq_id, job.queue)


#: The Redis call of a job's end that meets the outage first: the check whether the job moved on to
#: a later attempt (made after a run as long as half the silence that declares a worker dead), or
#: the end's own transaction (a worker that declares death later makes no check after 8 s).
FIRST_TO_MEET_THE_OUTAGE = {"the check": {}, "the end's transaction": {"JOBS_WORKER_DEAD_AFTER": "60"}}


@pytest.mark.parametrize(
    ("worker", "ends", "first"),
    [
        ("forking", "once Redis is back", "the check"),
        ("forking", "while Redis is down", "the check"),
        ("forking", "while Redis is down", "the end's transaction"),
        ("simple", "while Redis is down", "the end's transaction"),
        ("pool", "while Redis is down", "the end's transaction"),
    ],
)
def test_a_job_running_through_a_redis_restart_is_not_run_a_second_time_meanwhile(
    processes, fault_types, run_log, own_redis, api, worker, ends, first
):
    if rqcompat.RQ3 and first == "the end's transaction":
        pytest.skip("RQ 2's steps: on RQ 3 an end Redis did not take is recorded as one whose outcome is unknown")
    env = fault_env(run_log, REDIS_URL=own_redis.url)
    processes.wait_until_listening(processes.start(*END_LOST_WORKERS[worker], **env, **FIRST_TO_MEET_THE_OUTAGE[first]))
    processes.scheduler(**env)
    # One progress report, at the end: the job itself does not touch Redis while it restarts.
    job = services.job_enqueue(type=fault_types.RECORD, params={"seconds": 8, "steps": 1})
    wait_for_status(job, {JobStatus.STARTED}, 30)
    processes.worker(**env)  # idle, ready for anything Redis hands out

    own_redis.stop()
    if ends == "while Redis is down":
        # Its worker finds Redis empty when it comes back: it records the end it knows.
        wait_for(lambda: run_log.of_kind("end", job), 30, message="the running job to reach its end")
    own_redis.start()

    wait_for(lambda: run_log.of_kind("end", job), 30, message="the running job to reach its end")
    wait_for_status(job, ENDED, 30)
    wait_for_reconciler_rounds(1)
    job.refresh_from_db()
    assert not run_log.overlaps(), run_log.lines()
    assert len(run_log.starts(job)) == 1, run_log.lines()
    assert job.status == JobStatus.FINISHED
    assert [attempt.outcome for attempt in timeline(job)] == [AttemptOutcome.FINISHED]


@pytest.mark.parametrize("first", ["the stop", "the outage"])
@pytest.mark.parametrize("worker", ["forking", "simple", "pool"])
def test_a_worker_asked_to_stop_while_redis_is_down_records_its_jobs_end_before_it_exits(
    processes, fault_types, run_log, own_redis, api, worker, first
):
    """A warm stop (SIGTERM) lets the running job finish and be recorded, also when Redis is away.
    The worker waited for Redis only until it was asked to stop: it then left at once, its work horse
    killed with it, and the job that had run to its end was judged abandoned (the chaos run: SIGTERM,
    then a Redis restart). A stop that came while Redis was away failed in RQ's signal handler, which
    notes the stop in Redis, and the error came out of whatever the worker was doing."""
    if rqcompat.RQ3:
        pytest.skip("RQ 2's steps: on RQ 3 an end Redis did not take is recorded as one whose outcome is unknown")
    env = fault_env(run_log, REDIS_URL=own_redis.url)
    started = processes.start(*END_LOST_WORKERS[worker], **env)
    processes.wait_until_listening(started)
    job = services.job_enqueue(type=fault_types.RECORD, params={"seconds": 4, "steps": 1})
    wait_for_status(job, {JobStatus.STARTED}, 30)
    if first == "the stop":
        started.send_signal(signal.SIGTERM)
        own_redis.stop()
    else:
        own_redis.stop()
        time.sleep(0.5)  # the worker meets the outage (its job's progress, its beats)
        started.send_signal(signal.SIGTERM)
    wait_for(lambda: run_log.of_kind("end", job), 30, message="the running job to reach its end")
    time.sleep(1.0)  # the worker meets the outage, asked to stop
    assert started.poll() is None, f"the worker left before it recorded its job's end:\n{processes.log(started)}"
    own_redis.start()

    assert started.wait(timeout=60) == 0, processes.log(started)
    job.refresh_from_db()  # applied by the worker's own mirror before it exits
    assert job.status in ENDED, processes.log(started)
    assert job.status == JobStatus.FINISHED
    assert [attempt.outcome for attempt in timeline(job)] == [AttemptOutcome.FINISHED]
    assert len(run_log.starts(job)) == 1, run_log.lines()


@pytest.mark.parametrize("worker", ["forking", "simple", "pool"])
def test_a_cold_stop_while_redis_is_down_ends_the_worker(processes, fault_types, run_log, own_redis, api, worker):
    """The warm stop waits for Redis to record the job's end; a second signal (the cold stop) ends that
    wait. In-process, RQ's job runner caught the cold stop's SystemExit and recorded the job's failure,
    which waited for Redis again: the worker stayed."""
    env = fault_env(run_log, REDIS_URL=own_redis.url)
    started = processes.start(*END_LOST_WORKERS[worker], **env)
    processes.wait_until_listening(started)
    job = services.job_enqueue(type=fault_types.RECORD, params={"seconds": 3, "steps": 1})
    wait_for_status(job, {JobStatus.STARTED}, 30)
    own_redis.stop()
    started.send_signal(signal.SIGTERM)
    wait_for(lambda: run_log.of_kind("end", job), 30, message="the running job to reach its end")
    time.sleep(1.5)  # waiting for Redis to record the end; a second signal within 1 s is the same stop
    started.send_signal(signal.SIGTERM)
    try:
        started.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the worker did not leave on a cold stop:\n{processes.log(started)}")
    own_redis.start()


def test_a_delayed_job_redis_lost_does_not_run_before_its_time(processes, fault_types, run_log, own_redis, api):
    env = fault_env(run_log, REDIS_URL=own_redis.url)
    processes.worker(**env)
    job = services.job_enqueue(type=fault_types.RECORD, delay_seconds=600)
    due = job.scheduled_for
    make_older_than_the_reconcilers_grace(job)
    own_redis.stop()
    own_redis.start()
    processes.scheduler(**env)

    wait_for(lambda: Job.objects.get(pk=job.pk).error, 30, message="the reconciler to see that Redis lost it")
    wait_for_reconciler_rounds(1)
    job.refresh_from_db()
    assert not run_log.starts(job), f"ran {due.timestamp() - run_log.starts(job)[0].at:.0f}s before it was due"
    assert job.status in (JobStatus.SCHEDULED, JobStatus.LOST)
    if job.status == JobStatus.SCHEDULED:
        assert job.scheduled_for > timezone.now()


# --- Redis refusing connections, then hanging, while jobs are created through the API ---------------


def test_creating_a_job_answers_503_within_3_s_while_redis_refuses_or_hangs_and_works_again_once_it_is_back(
    processes, fault_types, run_log, own_redis, api_token
):
    web = Web(processes, "gunicorn", REDIS_URL=own_redis.url, **fault_env(run_log))
    web.start()

    def create() -> Answer:
        return web.request("POST", "/api/jobs", {"type": fault_types.RECORD}, token=api_token)

    accepted: list[str] = []
    answer = create()
    assert answer.status == 201, answer.data
    accepted.append(answer.data["id"])

    own_redis.stop()  # nothing listens: connections are refused
    refused = create()
    own_redis.start()  # empty: no persistence
    accepted.clear()  # (what was in Redis is gone with it; the reconciler's business, not this test's)
    back = create()

    own_redis.pause()  # `kill -STOP`: connections are accepted, nothing is answered
    hung = create()
    own_redis.resume()
    again = create()

    figure(
        f"Redis refusing: 503 in {refused.seconds:.2f}s; Redis hanging: 503 in {hung.seconds:.2f}s "
        f"(Retry-After {hung.headers.get('retry-after')}s); the same gunicorn created jobs again at once"
    )
    for failed in (refused, hung):
        assert failed.status == 503, failed.data
        assert failed.headers.get("retry-after") == str(QueueUnavailable.retry_after)
        assert "unavailable" in failed.data["detail"]
        assert failed.seconds < 3
    for answer in (back, again):
        assert answer.status == 201, answer.data
        accepted.append(answer.data["id"])
    # No orphan row of the refused requests; every accepted job is in Redis, and nothing else.
    assert Job.objects.count() == 3
    assert jobs_in_redis(own_redis.client()) == set(accepted)
    assert web.process is not None
    assert web.process.poll() is None


@pytest.mark.django_db(transaction=True)
def test_a_job_refused_while_redis_hangs_never_reaches_redis_afterwards(fault_types, own_redis):
    # A process that has created a job before (as any web process soon has): its connection
    # and what RQ reads once of the server are ready, so a new job is one round trip.
    created = services.job_enqueue(type=fault_types.RECORD)
    own_redis.pause()
    started = time.monotonic()
    with pytest.raises(QueueUnavailable):
        services.job_enqueue(type=fault_types.RECORD)
    refused_in = time.monotonic() - started
    own_redis.resume()
    assert refused_in < 3
    assert list(Job.objects.values_list("pk", flat=True)) == [created.pk]
    conn = own_redis.client()
    wait_for(conn.ping, 5, message="Redis to answer again")
    # Redis works through what it was sent before it answers anything sent after it.
    for _ in range(5):
        assert jobs_in_redis(conn) == {str(created.pk)}, "a job without its row reached Redis"
        conn.ping()


# --- Redis refusing connections, then hanging, while users act on jobs through the API ---------------


def redis_state(conn: redis_lib.Redis, job: Job) -> tuple[str | None, bool, bool]:
    """What Redis holds of a job: its RQ status (None: no job), whether it is on its queue, in the schedule."""
    queue = queues.get_queue(job.queue)
    raw: Any = conn.hget(RQJob.key_for(job.rq_id), "status")
    on_queue = conn.lpos(queue.key, job.rq_id) is not None
    scheduled = conn.zscore(queue.scheduled_job_registry.key, job.rq_id) is not None
    return (raw.decode() if raw else None, on_queue, scheduled)


def test_every_action_answers_503_within_3_s_while_redis_refuses_or_hangs_and_works_once_it_is_back(
    processes, fault_types, run_log, own_redis
):
    token = str(Token.objects.create(user=make_user("faults-actions", perms=ACTION_PERMS)).key)
    env = fault_env(run_log, REDIS_URL=own_redis.url)
    web = Web(processes, "gunicorn", **env)
    web.start()
    processes.worker(**env)
    services.queue_pause(name="low")  # what waits there stays there: only the actions move it
    running = services.job_enqueue(type=fault_types.RECORD, params={"seconds": 60, "steps": 60})

    def targets() -> dict[str, Job]:
        """A job for each action (and the bulk cancel), in a status that allows it."""
        retried = services.job_cancel(job=services.job_enqueue(type=fault_types.RECORD, queue="low"))
        return {
            "cancel": services.job_enqueue(type=fault_types.RECORD, queue="low"),
            "bulk cancel": services.job_enqueue(type=fault_types.RECORD, queue="low"),
            "remove": services.job_enqueue(type=fault_types.RECORD, queue="low"),
            "promote": services.job_enqueue(type=fault_types.RECORD, queue="low", delay_seconds=600),
            "retry": retried,
            "stop": running,
        }

    def act(action: str, job: Job) -> Answer:
        if action == "bulk cancel":
            body = {"action": "cancel", "filters": {"search": str(job.pk)}}
            return web.request("POST", "/api/jobs/actions", body, token=token)
        return web.request("POST", f"/api/jobs/{job.pk}/action", {"action": action}, token=token)

    wait_for_status(running, {JobStatus.STARTED}, 30)
    refused_jobs, hung_jobs = targets(), targets()
    jobs = {job.pk: job for job in (*refused_jobs.values(), *hung_jobs.values())}
    rows_before = {pk: refreshed(job).status for pk, job in jobs.items()}
    audits_before = JobAudit.objects.count()
    conn = own_redis.client()
    redis_before = {pk: redis_state(conn, job) for pk, job in jobs.items()}
    web_pid = web.process.pid if web.process else None

    # Refused: nothing listens. Redis keeps its data (it restarts as one with persistence would).
    own_redis.stop_keeping_data()
    refused = {action: act(action, job) for action, job in refused_jobs.items()}
    not_ready = web.request("GET", "/readyz")
    own_redis.start()
    ready = web.request("GET", "/readyz")  # the web process's connection to Redis is open again
    # Hanging: `kill -STOP`; connections are accepted, nothing is answered. (What Redis was sent
    # meanwhile, it runs once it wakes up: the test after this one.)
    own_redis.pause()
    hung = {action: act(action, job) for action, job in hung_jobs.items()}
    own_redis.resume()
    wait_for(conn.ping, 5, message="Redis to answer again")

    figure(
        "an action while Redis refuses: 503 in "
        + ", ".join(f"{action} {answer.seconds:.2f}s" for action, answer in refused.items())
        + "; while it hangs: 503 in "
        + ", ".join(f"{action} {answer.seconds:.2f}s" for action, answer in hung.items())
    )
    for action, answer in (*refused.items(), *hung.items()):
        assert answer.status == 503, (action, answer.status, answer.data)
        assert answer.headers.get("retry-after") == str(QueueUnavailable.retry_after), action
        assert answer.data == {"detail": QueueUnavailable.message}, action
        assert answer.seconds < 3, action
    assert (not_ready.status, ready.status) == (503, 200)
    # Nothing done: every row as it was, no audit of an action, Redis as it was for the refused ones
    # and for the hung retry and stop.
    assert {pk: refreshed(job).status for pk, job in jobs.items()} == rows_before
    assert JobAudit.objects.count() == audits_before
    unchanged = [*refused_jobs.values(), hung_jobs["retry"], running]
    assert {job.pk: redis_state(conn, job) for job in unchanged} == {job.pk: redis_before[job.pk] for job in unchanged}

    # The same gunicorn, never restarted, acts again at once: each action does what it says.
    assert web.process is not None
    assert (web.process.poll(), web.process.pid) == (None, web_pid)
    assert web.request("GET", "/readyz").status == 200
    done = {action: act(action, job) for action, job in refused_jobs.items()}
    assert {action: answer.status for action, answer in done.items()} == {
        "cancel": 200,
        "bulk cancel": 200,
        "remove": 204,
        "promote": 200,
        "retry": 200,
        "stop": 200,
    }, {action: answer.data for action, answer in done.items()}
    assert done["bulk cancel"].data["done"] == 1
    assert act("retry", hung_jobs["retry"]).status == 200
    for action, status in (
        ("cancel", JobStatus.CANCELED),
        ("bulk cancel", JobStatus.CANCELED),
        ("promote", JobStatus.QUEUED),
    ):
        assert refreshed(refused_jobs[action]).status == status, action
    for job in (refused_jobs["retry"], hung_jobs["retry"]):
        assert refreshed(job).status == JobStatus.QUEUED
        assert redis_state(conn, job) == ("queued", True, False)
    assert redis_state(conn, refused_jobs["cancel"]) == ("canceled", False, False)
    assert redis_state(conn, refused_jobs["promote"]) == ("queued", True, False)
    assert not Job.objects.filter(pk=refused_jobs["remove"].pk).exists()
    assert redis_state(conn, refused_jobs["remove"]) == (None, False, False)
    wait_for_status(running, {JobStatus.STOPPED}, 15)
    assert len(run_log.starts(running)) == 1


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("action", ["cancel", "remove", "promote"])
def test_an_action_refused_while_redis_hangs_is_not_done_when_redis_wakes_up(fault_types, own_redis, action):
    # A process whose connection to Redis is open (as any web process soon has): the action's
    # first command is sent at once, and waits in Redis while it is stopped.
    delay = 600 if action == "promote" else None
    job = services.job_enqueue(type=fault_types.RECORD, queue="low", delay_seconds=delay)
    conn = own_redis.client()
    before = redis_state(conn, job)
    own_redis.pause()
    started = time.monotonic()
    with pytest.raises(QueueUnavailable):
        services.job_act(job=job, action=action)
    refused_in = time.monotonic() - started
    own_redis.resume()
    assert refused_in < 3
    assert refreshed(job).status == (JobStatus.SCHEDULED if delay else JobStatus.QUEUED)
    wait_for(conn.ping, 5, message="Redis to answer again")
    # Redis works through what it was sent before it answers anything sent after it.
    assert redis_state(conn, job) == before, f"the refused {action} was done when Redis woke up"
    services.job_act(job=job, action=action)  # and it can be done now


# --- Redis full: maxmemory reached, with noeviction ----------------------------------------------------


def used_memory(conn: redis_lib.Redis) -> int:
    info: Any = conn.info("memory")
    return int(info["used_memory"])


def fill_up(conn: redis_lib.Redis, limit: int = 2 * 1024 * 1024) -> None:
    """Fill Redis with `limit` bytes of data and make that its maxmemory, with noeviction: full.

    The limit is set a little under what the data takes, so that the memory Redis frees on its
    own (clients' buffers, expiring keys) never makes room for a write: every write is refused.
    """
    chunk = "f" * 64 * 1024
    index = 0
    while used_memory(conn) < limit:
        conn.set(f"filler:{index}", chunk)
        index += 1
    conn.config_set("maxmemory-policy", "noeviction")
    conn.config_set("maxmemory", used_memory(conn) - 128 * 1024)
    with pytest.raises(redis_lib.exceptions.OutOfMemoryError):
        conn.set("one-more", "x")


def test_a_full_redis_refuses_new_jobs_with_503_and_nothing_is_half_written(
    processes, fault_types, run_log, own_redis, api_token
):
    web = Web(processes, "gunicorn", REDIS_URL=own_redis.url, **fault_env(run_log))
    web.start()
    first = web.request("POST", "/api/jobs", {"type": fault_types.RECORD}, token=api_token)
    assert first.status == 201, first.data

    conn = own_redis.client()
    fill_up(conn)

    one = web.request("POST", "/api/jobs", {"type": fault_types.RECORD}, token=api_token)
    many = web.request("POST", "/api/jobs", [{"type": fault_types.RECORD}] * 50, token=api_token)
    with pytest.raises(QueueUnavailable):
        services.job_enqueue(type=fault_types.RECORD)
    with pytest.raises(QueueUnavailable):
        services.jobs_enqueue(requests=[services.JobRequest(type=fault_types.RECORD)] * 50)

    rows = {str(pk) for pk in Job.objects.values_list("pk", flat=True)}
    in_redis = jobs_in_redis(conn)
    figure(
        f"Redis full (2 MB of data over its maxmemory, noeviction): the API answered {one.status} and "
        f"{many.status} (a list of 50), "
        f"the services raised QueueUnavailable; rows without a job: {len(rows - in_redis)}, "
        f"jobs without a row: {len(in_redis - rows)}"
    )
    for answer in (one, many):
        assert answer.status == 503, answer.data
        assert answer.headers.get("retry-after") == str(QueueUnavailable.retry_after)
    # Nothing half written: one row, one job, the same one.
    assert rows == {first.data["id"]}
    assert in_redis == rows

    conn.config_set("maxmemory", 0)  # room again
    after = web.request("POST", "/api/jobs", {"type": fault_types.RECORD}, token=api_token)
    assert after.status == 201, after.data
    assert services.job_enqueue(type=fault_types.RECORD).status == JobStatus.QUEUED
    rows = {str(pk) for pk in Job.objects.values_list("pk", flat=True)}
    assert len(rows) == 3
    assert jobs_in_redis(conn) == rows


# --- the database stopped (pg_ctl stop -m immediate) while workers finish jobs ---------------------


API_USER_CODE = """
from django.contrib.auth.models import User
from rest_framework.authtoken.models import Token
user = User.objects.filter(username="faults").first() or User.objects.create_superuser("faults", password="faults")
print(Token.objects.get_or_create(user=user)[0].key)
"""

SESSION_CODE = """
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client
client = Client()
client.force_login(User.objects.get(username="faults"))
print(client.cookies[settings.SESSION_COOKIE_NAME].value)
"""

#: The web process as deployed: DEBUG off, behind a proxy that terminates TLS.
DEPLOYED = {
    "DEBUG": "false",
    "ALLOWED_HOSTS": "127.0.0.1",
    "CSRF_TRUSTED_ORIGINS": "http://127.0.0.1",
    "TLS_TERMINATED_BY_PROXY": "true",
}


# Its own PostgreSQL cluster (initdb, then the migrations) is made in its set-up, which the timeout
# counts: about 3 minutes of it were seen on a loaded machine, and the test then ran out in its teardown.
@pytest.mark.timeout(600)
def test_jobs_finish_while_the_database_is_stopped_and_every_end_is_in_the_history_within_10_s_of_its_restart(
    processes, fault_types, run_log, own_postgres
):
    token = manage_py(own_postgres.url, API_USER_CODE)
    cookie = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={manage_py(own_postgres.url, SESSION_CODE)}"}
    env = fault_env(run_log, DATABASE_URL=own_postgres.url)
    workers = [processes.worker(**env), processes.worker(**env)]
    web = Web(processes, "gunicorn", **env, **DEPLOYED)
    web.start()
    web_pid = web.process.pid if web.process else None
    work = {"type": fault_types.RECORD, "params": {"seconds": 3, "steps": 3}}
    created = web.request("POST", "/api/jobs", [work] * 4, token=token)
    assert created.status == 201, created.data
    ids = [job["id"] for job in created.data]
    later = {"type": fault_types.RECORD, "delay_seconds": 600}
    delayed = web.request("POST", "/api/jobs", later, token=token).data["id"]

    def use_it() -> dict[str, Answer]:
        """Create a job, cancel the delayed one, open the Jobs page and the admin's list."""
        return {
            "create": web.request("POST", "/api/jobs", later, token=token),
            "action": web.request("POST", f"/api/jobs/{delayed}/action", {"action": "cancel"}, token=token),
            "jobs page": web.request("GET", "/jobs/", headers=cookie),
            "admin": web.request("GET", "/admin/jobs/job/", headers=cookie),
        }

    def through_api(job_id: str) -> dict[str, Any]:
        answer = web.request("GET", f"/api/jobs/{job_id}", token=token)
        assert answer.status == 200, answer.data
        data: dict[str, Any] = answer.data
        return data

    wait_for(
        lambda: sum(through_api(job_id)["status"] == JobStatus.STARTED for job_id in ids) == 2,
        30,
        message="two jobs to run, one on each worker",
    )
    own_postgres.stop_immediately()

    # Redis does not need the database: every job runs to its end, the second two after the first two.
    wait_for(lambda: all(rq_status_of(job_id) == "finished" for job_id in ids), 30, message="RQ to finish the jobs")
    wait_for(
        lambda: all("mirror: database unavailable" in processes.log(worker) for worker in workers),
        30,
        message="each worker's mirror to find the database gone",
    )
    assert web.request("GET", f"/api/jobs/{ids[0]}", token=token).status == 503
    down = use_it()
    figure(
        "database stopped: "
        + ", ".join(f"{name} {answer.status} in {answer.seconds:.2f}s" for name, answer in down.items())
    )
    for name, answer in down.items():
        assert answer.status == 503, (name, answer.status, answer.data)
        assert answer.headers.get("retry-after") == str(QueueUnavailable.retry_after), name
        assert answer.seconds < 3, name
        assert b"Traceback" not in (answer.data if isinstance(answer.data, bytes) else b""), name

    own_postgres.start()
    restarted = time.monotonic()
    answers: Counter[int] = Counter()

    def every_end_in_the_history() -> bool:
        statuses = []
        for job_id in ids:
            answer = web.request("GET", f"/api/jobs/{job_id}", token=token)
            answers[answer.status] += 1
            if answer.status != 200:
                return False
            statuses.append(answer.data["status"])
        return statuses == [JobStatus.FINISHED] * len(ids)

    wait_for(every_end_in_the_history, 30, interval=0.2, message="every end to reach the history")
    took = time.monotonic() - restarted
    figure(
        f"database stopped (immediate) while 4 jobs finished: every end in the history {took:.1f}s after it "
        f"was back (the API's answers meanwhile: {dict(answers)}); rows lost: 0"
    )
    assert took <= 10
    for job_id in ids:
        seen = through_api(job_id)
        assert seen["attempts"] == 1
        assert seen["progress"] == 100
        assert seen["result"] == {"worked": 3.0}
        assert [attempt["outcome"] for attempt in seen["timeline"]] == [AttemptOutcome.FINISHED]
    assert run_log.runs_by_job() == Counter({job_id: 1 for job_id in ids})
    assert all(worker.poll() is None for worker in workers), "a worker died with the database"
    # The same web process, never restarted, works as before: nothing of what it refused was done.
    assert through_api(delayed)["status"] == JobStatus.SCHEDULED
    back = use_it()
    assert {name: answer.status for name, answer in back.items()} == {
        "create": 201,
        "action": 200,
        "jobs page": 200,
        "admin": 200,
    }
    assert back["action"].data["status"] == JobStatus.CANCELED
    assert len(own_postgres.query("SELECT id FROM jobs_job")) == len(ids) + 2
    assert web.process is not None
    assert (web.process.poll(), web.process.pid) == (None, web_pid)


def rq_status_of(job_id: str) -> str | None:
    raw: Any = queues.redis().hget(RQJob.key_for(job_id), "status")
    return raw.decode() if isinstance(raw, bytes) else raw


# --- a burst of creations through the API, two workers --------------------------------------------

#: Creations in the burst: 1,000 in every run; `FAULTS_BURST=10000` for the full burst (about 4 minutes
#: of POSTs on two cores, docs/faults.md).
BURST = int(os.environ.get("FAULTS_BURST", "1000"))


@pytest.mark.timeout(300 + BURST // 5)
def test_a_burst_of_creations_through_the_api_runs_every_accepted_job_exactly_once(
    processes, fault_types, run_log, api_token
):
    env = fault_env(run_log)
    web = Web(processes, "gunicorn", **env)
    web.start()
    processes.worker(**env)
    processes.worker(**env)
    clients = 10
    per_client = -(-BURST // clients)
    answers: list[list[Answer]] = [[] for _ in range(clients)]
    refused: list[list[Answer]] = [[] for _ in range(clients)]

    def client(index: int) -> None:
        # As an API client should: a 503 (the machine too busy to answer in time) is sent again after
        # its Retry-After; it must have created nothing, so the retry makes no duplicate. A connection
        # for each request: a kept-alive one that the server closed after its keep-alive (2 s) while
        # this thread waited for the CPU was reset under the next POST, whose fate no client can know.
        for _ in range(per_client):
            while True:
                answer = web.request("POST", "/api/jobs", {"type": fault_types.RECORD}, token=api_token, timeout=60)
                if answer.status != 503:
                    break
                refused[index].append(answer)
                time.sleep(min(5.0, float(answer.headers.get("retry-after", "1"))))
            answers[index].append(answer)

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(index,)) for index in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120 + BURST / 10)
    created_in = time.monotonic() - started
    flat = [answer for batch in answers for answer in batch]
    assert len(flat) == clients * per_client
    statuses = Counter(answer.status for answer in flat)
    accepted = [answer.data["id"] for answer in flat if answer.status == 201]

    def ended() -> int:
        return Job.objects.filter(status__in=ENDED).count()

    wait_for(lambda: ended() >= len(accepted), 180 + BURST / 20, interval=0.5, message="every accepted job to end")
    drained_in = time.monotonic() - started
    runs = run_log.runs_by_job()
    retried = [answer for batch in refused for answer in batch]
    figure(
        f"burst: {len(flat)} POSTs from {clients} clients in {created_in:.1f}s ({len(flat) / created_in:.0f}/s), "
        f"answers {dict(statuses)} ({len(retried)} sent again after a 503); "
        f"all ended {drained_in:.1f}s after the first; "
        f"rows {Job.objects.count()}, duplicated ids {len(accepted) - len(set(accepted))}, "
        f"runs duplicated {sum(count - 1 for count in runs.values())}"
    )
    assert statuses == Counter({201: clients * per_client})
    assert all(answer.headers.get("retry-after") for answer in retried)
    assert len(retried) <= len(flat) // 100  # a busy moment, not a web process that cannot keep up
    assert len(set(accepted)) == len(accepted)
    assert Job.objects.count() == len(accepted)
    assert {str(pk) for pk in Job.objects.values_list("pk", flat=True)} == set(accepted)
    assert Job.objects.filter(status=JobStatus.FINISHED).count() == len(accepted)
    assert set(runs) == set(accepted)
    assert set(runs.values()) == {1}
    assert JobAttempt.objects.filter(job_id__in=accepted).count() == len(accepted)
