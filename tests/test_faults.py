"""Faults: workers killed or stopped, the database or Redis away, transactions rolled back.

Every test runs against the real test Redis and, where a worker or the scheduler
matters, real `manage.py rqworker` / `runscheduler` processes; each asserts what
a user of the job history would notice.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.db.models import F
from django.test import override_settings
from django.utils import timezone
from rq.command import send_command
from rq.exceptions import NoSuchJobError
from rq.job import Job as RQJob
from rq.job import JobStatus as RQStatus
from rq.worker import Worker as RQWorker

from jobs import events, queues, registry, rqcompat, services
from jobs import sql as sql_module
from jobs.errors import ActionNotAllowed, QueueUnavailable
from jobs.mirror import apply_events
from jobs.models import Job, JobAttempt
from jobs.reconcile import GRACE, reconcile
from jobs.rqstore import MirroredJob
from jobs.statuses import AttemptOutcome, JobStatus
from tests.conftest import SilentServer, wait_for
from tests.fault_servers import RunLog, fault_env
from tests.helpers import FORKING

#: The fault suite (this module and tests/test_fault_suite.py) runs alone with
#: `pytest -m slow -k "test_faults or test_fault_suite"`.
pytestmark = [pytest.mark.faults, pytest.mark.slow]

# --- helpers ----------------------------------------------------------------------


def refreshed(job: Job) -> Job:
    job.refresh_from_db()
    return job


def wait_for_status(job: Job, statuses: set[str], timeout: float, message: str = "") -> Job:
    wait_for(
        lambda: refreshed(job).status in statuses,
        timeout,
        interval=0.1,
        message=message or f"job {job.id} to be {' or '.join(sorted(statuses))} (it is {job.status})",
    )
    return job


def timeline(job: Job) -> list[JobAttempt]:
    return list(JobAttempt.objects.filter(job=job).order_by("number"))


def rq_job(job: Job) -> RQJob | None:
    try:
        return MirroredJob.fetch(job.rq_id, connection=queues.redis(), serializer=queues.SERIALIZER)
    except NoSuchJobError:
        return None


def rq_status(job: Job) -> str | None:
    found = rq_job(job)
    return None if found is None else found.get_status(refresh=False)


def make_older_than_the_reconcilers_grace(job: Job) -> None:
    """The reconciler leaves rows younger than GRACE (30 s) alone: age the row instead of waiting."""
    Job.objects.filter(pk=job.pk).update(created_at=F("created_at") - GRACE - timedelta(seconds=1))


def kill_worker_and_its_horse(worker: Any) -> None:
    """SIGKILL a worker the way a lost machine or container would: the worker and its work horse.

    RQ puts each work horse in a process group of its own (`os.setpgrp()`), so killing
    the worker's group alone leaves the horse running the job, orphaned.
    """
    horses = work_horses(worker.pid)
    assert horses, "the worker has no work horse: is the job running?"
    os.killpg(worker.pid, signal.SIGKILL)
    for horse in horses:
        with suppress(ProcessLookupError):
            os.killpg(horse, signal.SIGKILL)
    worker.wait(5)


def work_horses(worker_pid: int) -> list[int]:
    """The pids of a worker's work horses: its children in a process group of their own.

    The worker's mirror process is its child too, but stays in the worker's group;
    RQ moves each work horse to a group of its own (`os.setpgrp()`).
    """
    horses = []
    for pid in child_pids(worker_pid):
        with suppress(ProcessLookupError):
            if os.getpgid(pid) == pid:
                horses.append(pid)
    return horses


def alive(pid: int) -> bool:
    """Whether a process runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_for_reconciler_rounds(rounds: int) -> None:
    """Return once the reconciler of a running scheduler has run `rounds` more whole rounds.

    Each round dispatches the pending rows older than its grace first: a canary row
    left pending is dispatched at the start of the next round, so a canary written
    after the previous one was dispatched proves the round before it has ended.
    """
    for _ in range(rounds + 1):
        canary = Job.objects.create(
            type="example",
            queue="low",
            params=registry.get("example").validate({"duration": 0}),
            status=JobStatus.PENDING,
            timeout=60,
        )
        make_older_than_the_reconcilers_grace(canary)

        def dispatched(canary: Job = canary) -> bool:
            return refreshed(canary).status != JobStatus.PENDING

        wait_for(
            dispatched,
            settings.JOBS_RECONCILE_INTERVAL * 3 + 5,
            interval=0.1,
            message="a reconciler round",
        )
        with suppress(ActionNotAllowed):  # a worker of the test took it meanwhile: it ran, as any job would
            services.job_cancel(job=canary)


def child_pids(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            _state, ppid, *_ = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(ppid) == pid:
            children.append(int(stat.parent.name))
    return children


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@contextmanager
def queues_pointing_at(port: int) -> Iterator[None]:
    """Every queue (and the shared connection) talks to another port: a closed one, say.

    Only the address changes: whatever else the settings say (timeouts in the URL's
    query, say) still applies.
    """
    from django.conf import settings

    def moved(config: dict[str, Any]) -> dict[str, Any]:
        config = {**config}
        if "URL" in config:
            parts = urlsplit(config["URL"])
            config["URL"] = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))
        else:
            config.update(HOST="127.0.0.1", PORT=port)
        return config

    try:
        with override_settings(RQ_QUEUES={name: moved(config) for name, config in settings.RQ_QUEUES.items()}):
            queues.reset()
            yield
    finally:
        queues.reset()


@pytest.fixture
def downstream_job_type() -> Iterator[str]:
    """Registers the test-only job type of `tests.fault_job_types` in this process, for this test only."""
    from tests import fault_job_types

    fault_job_types.register()
    yield fault_job_types.NAME
    fault_job_types.unregister()  # every type the module registered, not only this one


@contextmanager
def database_unavailable_to_other_processes() -> Iterator[None]:
    """Make the test database fail for every other process (the workers' mirrors) while inside.

    SQLite: hold its write lock; a writer elsewhere waits out its busy timeout (20 s,
    not configurable by the environment) and then gets "database is locked". WAL
    mode lets this process (and everyone else) keep reading.

    PostgreSQL: refuse new connections to the database and end every session on it
    but this process's own. `ALLOW_CONNECTIONS false` rather than `CONNECTION LIMIT 0`:
    the connection limit does not apply to superusers, and the tests connect as one.
    """
    settings_dict = connection.settings_dict
    if connection.vendor == "sqlite":
        lock = sqlite3.connect(settings_dict["NAME"], timeout=30, isolation_level=None)
        try:
            lock.execute("BEGIN EXCLUSIVE")
            yield
        finally:
            lock.rollback()
            lock.close()
        return
    if connection.vendor != "postgresql":
        pytest.skip(f"no way to take {connection.vendor} away from other processes")
    import psycopg
    from psycopg import sql

    name = settings_dict["NAME"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (own_pid,) = cursor.fetchone()
    admin = psycopg.connect(
        host=settings_dict.get("HOST") or "localhost",
        port=settings_dict.get("PORT") or 5432,
        user=settings_dict.get("USER") or None,
        password=settings_dict.get("PASSWORD") or None,
        dbname="postgres",
        autocommit=True,
    )
    try:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS false").format(sql.Identifier(name)))
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> %s",
            [name, own_pid],
        )
        yield
    finally:
        admin.execute(sql.SQL("ALTER DATABASE {} WITH ALLOW_CONNECTIONS true").format(sql.Identifier(name)))
        admin.close()


# --- a worker dies, or is asked to stop ------------------------------------------------


def verdict_deadline() -> float:
    """Seconds within which the reconciler judges the job of a dead worker: its liveness key
    expires at most JOBS_WORKER_DEAD_AFTER seconds after its last beat, the reconciler runs
    every JOBS_RECONCILE_INTERVAL seconds; one second more for the round itself."""
    return settings.JOBS_WORKER_DEAD_AFTER + settings.JOBS_RECONCILE_INTERVAL + 1


def test_it_marks_the_job_of_a_killed_worker_abandoned_once_it_stops_beating_and_runs_it_again(processes):
    worker = processes.worker()
    processes.scheduler()
    job = services.job_enqueue(type="example", params={"duration": 20, "steps": 20})
    wait_for(
        lambda: refreshed(job).status == JobStatus.STARTED and job.progress > 0, 30, message="the job to be running"
    )
    dead_worker = job.worker_name

    kill_worker_and_its_horse(worker)  # the worker, its mirror process and the work horse: no goodbye
    killed_at = timezone.now()
    processes.worker()  # a healthy worker, ready to take the job again

    def abandoned_attempt() -> JobAttempt | None:
        return JobAttempt.objects.filter(job=job, number=1, outcome=AttemptOutcome.ABANDONED).first()

    deadline = verdict_deadline()
    first = wait_for(abandoned_attempt, deadline + 10, interval=0.2, message="the first attempt to be marked abandoned")
    detected_after = (first.ended_at - killed_at).total_seconds()
    print(f"\nkilled worker's job marked abandoned {detected_after:.1f}s after the kill (at most {deadline:.0f}s)")
    assert detected_after <= deadline
    assert first.worker_name == dead_worker
    assert first.error == f"worker {dead_worker} died while running this job"

    # The example type retries lost work: the job runs again, on the healthy worker, to the end.
    wait_for_status(job, {JobStatus.FINISHED, JobStatus.FAILED}, 60)
    assert job.status == JobStatus.FINISHED, job.error
    assert job.attempts == 2
    assert job.progress == 100
    assert job.result == {"slept": 20.0, "message": ""}
    assert job.error == ""
    assert [attempt.outcome for attempt in timeline(job)] == [AttemptOutcome.ABANDONED, AttemptOutcome.FINISHED]
    assert timeline(job)[1].worker_name == job.worker_name != dead_worker
    assert rq_status(job) == RQStatus.FINISHED


def test_it_never_runs_a_job_twice_at_once_when_its_worker_process_alone_is_killed(processes):
    worker = processes.worker()
    processes.scheduler()
    job = services.job_enqueue(type="example", params={"duration": 10, "steps": 10})
    make_older_than_the_reconcilers_grace(job)
    wait_for(
        lambda: refreshed(job).status == JobStatus.STARTED and job.progress > 0, 30, message="the job to be running"
    )
    [horse] = work_horses(worker.pid)

    # `kill -9 <worker pid>`, or the OOM killer choosing the worker: its process group
    # goes, the work horse (in a group of its own) is not part of it.
    os.killpg(worker.pid, signal.SIGKILL)
    worker.wait(5)
    # The horse goes with its worker rather than run the job on, unwatched, while another worker runs it.
    wait_for(lambda: not alive(horse), 2, interval=0.05, message="the work horse to die with its worker")
    horse_gone_at = timezone.now()
    processes.worker()

    wait_for_status(job, {JobStatus.FINISHED, JobStatus.FAILED}, verdict_deadline() + 30)
    assert job.status == JobStatus.FINISHED, job.error
    attempts = timeline(job)
    # The first attempt died with its worker; another worker ran the job once the first had stopped.
    assert [attempt.outcome for attempt in attempts] == [AttemptOutcome.ABANDONED, AttemptOutcome.FINISHED]
    assert job.attempts == 2
    first, second = attempts
    assert second.started_at > horse_gone_at, (
        f"attempt 2 started at {second.started_at:%H:%M:%S.%f}, before the first attempt's horse was gone "
        f"({horse_gone_at:%H:%M:%S.%f})"
    )
    assert second.started_at >= first.ended_at
    assert second.worker_name != first.worker_name


@pytest.fixture
def fault_types() -> Iterator[Any]:
    """The test-only job types of `tests.fault_job_types`, registered in this process for this test only."""
    from tests import fault_job_types

    fault_job_types.register()
    yield fault_job_types
    fault_job_types.unregister()


@pytest.mark.parametrize("runs_lost_work_again", [False, True], ids=["never run again", "run again"])
def test_a_horse_that_finishes_after_its_job_was_marked_abandoned_records_its_true_outcome(
    processes, fault_types, tmp_path, runs_lost_work_again
):
    """A worker frozen (SIGSTOP: a paused VM or container, a swap storm) stops beating while its work
    horse, in a process group of its own, runs on: the reconciler judges the job abandoned. The horse
    then finishes: its end, not the verdict, is what the attempt keeps. A type that never runs lost
    work again (like `email`) is finished, once; one that does runs its next attempt, as attempt 2."""
    run_log = RunLog(tmp_path / "runs.log")
    worker = processes.worker(**fault_env(run_log))
    processes.scheduler(**fault_env(run_log))
    seconds = verdict_deadline() + 6  # the horse outlasts the verdict
    kind = fault_types.RECORD if runs_lost_work_again else fault_types.RECORD_ONCE
    job = services.job_enqueue(type=kind, params={"seconds": seconds, "steps": int(seconds)})
    make_older_than_the_reconcilers_grace(job)
    horse = run_log.horse_running(job)
    wait_for(
        lambda: refreshed(job).status == JobStatus.STARTED and job.progress > 0, 30, message="the job to be running"
    )
    assert work_horses(worker.pid) == [horse]

    os.killpg(worker.pid, signal.SIGSTOP)  # the worker and its mirror process; the horse runs on
    try:
        wait_for(
            lambda: refreshed(job).status != JobStatus.STARTED,
            verdict_deadline() + 10,
            message="the reconciler to judge the job",
        )
        [judged] = timeline(job)
        assert judged.outcome == AttemptOutcome.ABANDONED
        assert alive(horse), "the horse ended before the verdict"
        assert not run_log.of_kind("end", job)
        # The horse ends while its worker is still frozen (the scheduler's mirror writes the history).
        wait_for(lambda: run_log.of_kind("end", job), seconds + 10, message="the horse to finish its job")
        [ended] = run_log.of_kind("end", job)

        def attempt_ended() -> JobAttempt | None:
            return JobAttempt.objects.filter(job=job, number=1, outcome=AttemptOutcome.FINISHED).first()

        first = wait_for(attempt_ended, 10, message="the horse's end to reach the history")
        assert first.error == ""
        assert abs(first.ended_at.timestamp() - ended.at) < 1, "the attempt's end is not the horse's"
        assert first.ended_at > judged.ended_at
        job.refresh_from_db()
        if runs_lost_work_again:
            # The job waits for its next attempt, in the row and in Redis: the late end took nothing of it.
            assert (job.status, job.attempts) == (JobStatus.QUEUED, 1)
            assert rq_status(job) == RQStatus.QUEUED
            assert queues.get_queue("default").get_job_ids() == [job.rq_id]
    finally:
        os.killpg(worker.pid, signal.SIGCONT)

    if runs_lost_work_again:
        # The worker wakes and runs the next attempt, recorded as the second.
        wait_for(
            lambda: refreshed(job).status == JobStatus.STARTED and job.attempts == 2,
            30,
            message="the second attempt to start",
        )
        assert [run.attempt for run in run_log.starts(job)] == [1, 2]
        services.job_stop(job=job)  # enough: the test need not wait for it to work to its end
        wait_for_status(job, {JobStatus.STOPPED}, 15)
        assert [attempt.outcome for attempt in timeline(job)] == [AttemptOutcome.FINISHED, AttemptOutcome.STOPPED]
        assert not run_log.overlaps()
        return

    assert job.status == JobStatus.FINISHED
    assert job.attempts == 1
    assert job.result == {"worked": seconds}
    assert job.error == ""
    assert job.ended_at == first.ended_at
    wait_for_reconciler_rounds(2)  # nobody runs it again, or judges it again, in the rounds that follow
    job.refresh_from_db()
    assert (job.status, job.attempts) == (JobStatus.FINISHED, 1)
    assert [attempt.outcome for attempt in timeline(job)] == [AttemptOutcome.FINISHED]
    assert len(run_log.starts(job)) == 1
    assert rq_status(job) == RQStatus.FINISHED
    assert job.rq_id not in queues.get_queue("default").failed_job_registry.get_job_ids()
    assert worker.poll() is None, "the worker died"


#: How each worker runs a job: in a work horse, in the worker itself, in a pool's child (batched).
END_LOST_WORKERS = {
    "forking": ("rqworker", "--worker-class", FORKING, *queues.QUEUE_NAMES),
    "simple": ("rqworker", "--worker-class", "jobs.worker.SimpleWorker", *queues.QUEUE_NAMES),
    "pool": ("jobs_pool", "-n", "1", *queues.QUEUE_NAMES),
}


@pytest.mark.skipif(rqcompat.RQ3, reason="RQ 2's steps: on RQ 3 a lost end is recorded as one whose outcome is unknown")
@pytest.mark.parametrize("worker", END_LOST_WORKERS)
def test_an_end_whose_transaction_is_lost_is_recorded_once_as_it_happened(processes, fault_types, tmp_path, worker):
    """The transaction that records a job's end is lost: the connection drops before Redis gets it,
    or after Redis applied it (Redis killed, a network cut). The run knows how its job ended: the
    history says that, once; a failure's retry runs as the second attempt (RQ 2 forgot the refused
    failure: the job stayed started, its retry uncounted, and a finish turned into a failure run
    again), and Redis keeps nothing of the run."""
    run_log = RunLog(tmp_path / "runs.log")
    process = processes.start(*END_LOST_WORKERS[worker], **fault_env(run_log))
    processes.wait_until_listening(process)
    processes.scheduler(**fault_env(run_log))
    cases = {
        (fail, applied): services.job_enqueue(type=fault_types.END_LOST, params={"fail": fail, "applied": applied})
        for fail in (False, True)
        for applied in (False, True)
    }
    for job in cases.values():
        wait_for_status(job, {JobStatus.FINISHED, JobStatus.FAILED}, 30)

    for (fail, applied), job in cases.items():
        case = f"{'a failure' if fail else 'a finish'} whose transaction was {'applied' if applied else 'refused'}"
        attempts = timeline(job)
        if fail:
            assert [attempt.outcome for attempt in attempts] == [AttemptOutcome.FAILED, AttemptOutcome.FINISHED], case
            assert attempts[0].error.endswith("the faults job raised on purpose"), case
        else:
            assert [attempt.outcome for attempt in attempts] == [AttemptOutcome.FINISHED], case
        assert (job.status, job.attempts) == (JobStatus.FINISHED, len(attempts)), case
        assert [run.attempt for run in run_log.starts(job)] == [attempt.number for attempt in attempts], case
        assert rq_status(job) == RQStatus.FINISHED, case
    queue = queues.get_queue("default")
    assert queue.started_job_registry.get_job_ids() == []
    assert queue.get_job_ids() == queue.scheduled_job_registry.get_job_ids() == []
    assert processes.log(process).count("did not reach Redis") == len(cases)


def test_it_does_not_send_an_email_again_by_itself_when_its_worker_died_mid_send(
    processes, silent_server, tmp_path: Path
):
    mail_dir = tmp_path / "mail"
    # The SMTP server accepts the connection and never answers: the worker is stuck sending.
    worker = processes.worker(
        "high",
        EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend",
        EMAIL_HOST="127.0.0.1",
        EMAIL_PORT=str(silent_server.port),
        EMAIL_TIMEOUT="100",
    )
    processes.scheduler()
    job = services.job_enqueue(type="email", params={"to": ["ada@example.com"], "subject": "Invoice", "body": "Hi"})
    make_older_than_the_reconcilers_grace(job)
    wait_for_status(job, {JobStatus.STARTED}, 30)
    wait_for(lambda: silent_server.connections, 10, message="the worker to connect to the SMTP server")

    kill_worker_and_its_horse(worker)
    # A healthy worker with a working mail backend: it would send the e-mail if the job came back.
    processes.worker("high", EMAIL_FILE_PATH=str(mail_dir))

    wait_for(
        lambda: refreshed(job).status != JobStatus.STARTED,
        verdict_deadline() + 10,
        message="the reconciler to judge the job",
    )
    assert job.status == JobStatus.ABANDONED
    wait_for_reconciler_rounds(2)  # nobody brings it back in the rounds that follow

    job.refresh_from_db()
    assert job.status == JobStatus.ABANDONED
    assert job.attempts == 1
    assert "died while running this job" in job.error
    assert [attempt.outcome for attempt in timeline(job)] == [AttemptOutcome.ABANDONED]
    assert not mail_dir.exists() or not list(mail_dir.iterdir()), "the e-mail was sent again"
    assert queues.get_queue("high").count == 0
    assert rq_status(job) == RQStatus.FAILED

    # Whoever knows whether it went out decides: a retry by hand sends it, once.
    services.job_retry(job=job)
    wait_for_status(job, {JobStatus.FINISHED, JobStatus.FAILED}, 30)
    assert job.status == JobStatus.FINISHED, job.error
    assert job.attempts == 2
    assert len(list(mail_dir.iterdir())) == 1


def test_it_lets_the_running_job_finish_when_its_worker_is_asked_to_stop(processes):
    worker = processes.worker()
    job = services.job_enqueue(type="example", params={"duration": 3, "steps": 6})
    wait_for(
        lambda: refreshed(job).status == JobStatus.STARTED and job.progress > 0, 30, message="the job to be running"
    )

    os.kill(worker.pid, signal.SIGTERM)  # the worker process only: what `docker stop` or systemd sends
    asked_at = timezone.now()
    assert worker.wait(30) == 0, processes.log(worker)

    # The worker wrote the job's end to the history before it exited.
    job.refresh_from_db()
    assert job.status == JobStatus.FINISHED, job.error
    assert job.progress == 100
    assert job.ended_at > asked_at
    assert job.attempts == 1
    assert [attempt.outcome for attempt in timeline(job)] == [AttemptOutcome.FINISHED]
    assert rq_status(job) == RQStatus.FINISHED


def names_the_job(conn: Any, worker_name: str, job_id: str | None) -> None:
    """Make Redis say that the worker runs the job (None: no job), where RQ reads it: the worker
    hash's `current_job` (RQ 2.x), the worker's set of executions and their hashes (RQ 3)."""
    if not rqcompat.RQ3:
        key = RQWorker.redis_worker_namespace_prefix + worker_name
        conn.hset(key, "current_job", job_id) if job_id else conn.hdel(key, "current_job")
        return
    if job_id is None:
        conn.delete(rqcompat.worker_executions_key(worker_name))
        return
    member = f"{job_id}:e1"
    now = time.time()
    fields = {"id": "e1", "job_id": job_id, "created_at": now, "last_heartbeat": now, "worker_name": worker_name}
    conn.hset(rqcompat.execution_key(member), mapping=fields)
    conn.sadd(rqcompat.worker_executions_key(worker_name), member)


def test_a_stop_that_arrives_after_the_jobs_horse_ended_leaves_the_worker_running(processes):
    """The worker's hash can still name a job whose horse has ended (Redis was away when it ended, so
    its end is not recorded yet): a stop of that job then finds no horse to kill. RQ kills the group of
    `os.getpgid(0)`, the worker's own: the worker died with SIGKILL (found by the chaos run)."""
    worker = processes.worker("default")
    conn = queues.redis()
    [name] = [w.name for w in RQWorker.all(connection=queues.new_redis())]  # RQ's Worker changes its client
    job = services.job_enqueue(type="example", params={"duration": 0})
    wait_for(lambda: refreshed(job).status == JobStatus.FINISHED, 30, message="the job to finish")

    names_the_job(conn, name, job.rq_id)
    send_command(conn, name, "stop-job", job_id=job.rq_id)
    time.sleep(2)  # the worker's command thread acts on it within milliseconds
    assert worker.poll() is None, f"the worker exited ({worker.returncode}):\n{processes.log(worker)}"

    # ...and it goes on taking jobs.
    names_the_job(conn, name, None)
    after = services.job_enqueue(type="example", params={"duration": 0})
    wait_for(lambda: refreshed(after).status == JobStatus.FINISHED, 30, message="the next job to finish")


# --- the database or Redis goes away ---------------------------------------------------


def test_it_records_a_job_that_finished_while_the_database_was_away_once_it_is_back(processes):
    worker = processes.worker()
    job = services.job_enqueue(type="example", params={"duration": 3, "steps": 3, "message": "survived"})
    wait_for_status(job, {JobStatus.STARTED}, 30)

    with database_unavailable_to_other_processes():
        # Redis does not need the database: the job runs to its end meanwhile...
        wait_for(lambda: rq_status(job) == RQStatus.FINISHED, 30, message="RQ to finish the job")
        # ...while the worker's mirror cannot write it down, and says so.
        wait_for(
            lambda: "mirror: database unavailable" in processes.log(worker),
            40,
            message="the mirror to report the database unavailable",
        )
        assert refreshed(job).status == JobStatus.STARTED

    wait_for_status(job, {JobStatus.FINISHED, JobStatus.FAILED}, 30)
    assert job.status == JobStatus.FINISHED, job.error
    assert job.progress == 100
    assert job.result == {"slept": 3.0, "message": "survived"}
    assert job.attempts == 1
    assert [attempt.outcome for attempt in timeline(job)] == [AttemptOutcome.FINISHED]
    assert rq_status(job) == RQStatus.FINISHED
    assert job.rq_id not in queues.get_queue("default").failed_job_registry.get_job_ids()
    assert worker.poll() is None, "the worker died with the database"


def test_it_runs_a_failed_job_again_from_its_row_after_redis_forgot_it(processes, downstream_job_type, tmp_path):
    down = tmp_path / "downstream-down"
    down.touch()
    processes.worker(JOBS_MODULES="tests.fault_job_types", FAULTS_DOWNSTREAM_DOWN_FLAG=str(down))
    job = services.job_enqueue(type=downstream_job_type)
    wait_for_status(job, {JobStatus.FAILED, JobStatus.FINISHED}, 30)
    assert job.status == JobStatus.FAILED
    assert job.error == "ConnectionError: the downstream service is down"

    queues.redis().delete(f"rq:job:{job.id}")  # its failure TTL ran out, or Redis was flushed
    assert rq_job(job) is None
    down.unlink()  # and the downstream is back

    services.job_retry(job=job)
    wait_for_status(job, {JobStatus.FINISHED, JobStatus.FAILED}, 30)
    assert job.status == JobStatus.FINISHED, job.error
    assert job.result == {"called": True}
    assert job.attempts == 2
    first, second = timeline(job)
    assert (first.outcome, second.outcome) == (AttemptOutcome.FAILED, AttemptOutcome.FINISHED)
    assert first.error == "ConnectionError: the downstream service is down"
    assert "Traceback" in first.traceback


def test_it_marks_a_queued_job_redis_forgot_lost_and_queues_it_again(processes):
    job = services.job_enqueue(type="example", params={"duration": 0})
    queues.redis().flushdb()  # Redis restarted without persistence, or evicted the job
    make_older_than_the_reconcilers_grace(job)

    report = reconcile()

    assert report.lost == 1
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED
    assert job.error == "Redis no longer has this job"
    assert job.attempts == 0
    assert rq_status(job) == RQStatus.QUEUED
    assert queues.get_queue("default").get_job_ids() == [job.rq_id]

    processes.worker()
    wait_for_status(job, {JobStatus.FINISHED, JobStatus.FAILED}, 30)
    assert job.status == JobStatus.FINISHED, job.error
    assert job.attempts == 1


@pytest.mark.django_db(transaction=True)
def test_it_refuses_to_enqueue_quickly_and_writes_nothing_when_redis_is_unreachable():
    with queues_pointing_at(unused_port()):
        started = time.monotonic()
        with pytest.raises(QueueUnavailable):
            services.job_enqueue(type="example")
        elapsed = time.monotonic() - started

    assert elapsed < 2
    assert not Job.objects.exists()


# --- the mirror ----------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_keeps_a_finished_job_finished_when_two_mirrors_apply_its_last_events_at_once(monkeypatch):
    """Every worker's mirror and the scheduler's drain the one stream: a job's last progress
    report and its end can reach two of them and be applied at the same moment."""
    job = services.job_enqueue(type="example")
    at = time.time()
    ids = iter(range(1, 100))

    def event(kind: str, **data: Any) -> events.Event:
        return events.Event(f"{int(at * 1000)}-{next(ids)}", job.rq_id, kind, 1, at, data)

    apply_events([event(events.STARTED, w="worker-1")])
    assert refreshed(job).status == JobStatus.STARTED

    # One mirror is slow: it has read the row when the other one applies the job's end.
    progress_read, end_applied = threading.Event(), threading.Event()
    update_rows = sql_module.update_rows

    def slow_update_rows(model: Any, objs: Any, fields: Any) -> Any:
        if model is Job and threading.current_thread().name == "slow-mirror":
            progress_read.set()
            end_applied.wait(3)
        return update_rows(model, objs, fields)

    monkeypatch.setattr(sql_module, "update_rows", slow_update_rows)
    errors: list[BaseException] = []

    def mirror(name: str, batch: list[events.Event], done: threading.Event | None = None) -> threading.Thread:
        def run() -> None:
            try:
                apply_events(batch)
                if done is not None:
                    done.set()
            except BaseException as exc:
                errors.append(exc)
            finally:
                connection.close()

        thread = threading.Thread(target=run, name=name)
        thread.start()
        return thread

    slow = mirror("slow-mirror", [event(events.PROGRESS, p=100)])
    assert progress_read.wait(10)
    fast = mirror("fast-mirror", [event(events.FINISHED, w="worker-1", s=at, r={"slept": 0})], done=end_applied)
    slow.join(30)
    fast.join(30)

    assert not errors, errors
    job.refresh_from_db()
    assert job.status == JobStatus.FINISHED
    assert job.progress == 100
    assert job.result == {"slept": 0}
    assert [attempt.outcome for attempt in timeline(job)] == [AttemptOutcome.FINISHED]


# --- the caller's transaction ----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_it_writes_a_job_pending_in_the_callers_transaction_and_dispatches_it_on_commit():
    with transaction.atomic():
        job = services.job_enqueue(type="example")
        assert Job.objects.get(pk=job.pk).status == JobStatus.PENDING
        assert rq_job(job) is None, "the job reached Redis before the caller committed"

    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED
    assert job.enqueued_at is not None
    assert queues.get_queue("default").get_job_ids() == [job.rq_id]


@pytest.mark.django_db(transaction=True)
def test_it_leaves_no_row_and_no_rq_job_when_the_callers_transaction_rolls_back():
    class CallerChangedItsMind(Exception):
        pass

    created: list[Job] = []

    def enqueue_then_change_mind() -> None:
        with transaction.atomic():
            created.append(services.job_enqueue(type="example"))
            raise CallerChangedItsMind

    with pytest.raises(CallerChangedItsMind):
        enqueue_then_change_mind()
    [job] = created

    assert not Job.objects.filter(pk=job.pk).exists()
    assert rq_job(job) is None
    assert queues.get_queue("default").count == 0
    assert reconcile().dispatched == 0


@pytest.mark.django_db(transaction=True)
def test_it_keeps_a_job_committed_while_redis_is_down_pending_until_the_reconciler_dispatches_it():
    with queues_pointing_at(unused_port()), transaction.atomic():
        job = services.job_enqueue(type="example")
    # The commit happened with Redis away: the caller got no error, and the row waits.
    job.refresh_from_db()
    assert job.status == JobStatus.PENDING
    assert rq_job(job) is None

    make_older_than_the_reconcilers_grace(job)
    report = reconcile()

    assert report.dispatched == 1
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED
    assert queues.get_queue("default").get_job_ids() == [job.rq_id]


# --- retries -------------------------------------------------------------------------


def test_it_retries_a_failing_job_with_growing_delays_then_fails_it_with_its_traceback(processes):
    processes.worker()
    processes.scheduler()
    job = services.job_enqueue(type="example", params={"duration": 0, "steps": 1, "fail": True})

    first_seen_waiting: dict[datetime, datetime] = {}  # each retry's due time -> when the row first showed it

    def ended() -> bool:
        job.refresh_from_db()
        if job.status == JobStatus.SCHEDULED and job.scheduled_for is not None:
            first_seen_waiting.setdefault(job.scheduled_for, timezone.now())
        return job.status in {JobStatus.FAILED, JobStatus.FINISHED}

    wait_for(ended, 40, interval=0.05, message="the job to use up its attempts")

    assert job.status == JobStatus.FAILED
    assert job.attempts == 3
    assert job.error == "jobs.tasks.example.ExampleJobFailed: the example job was asked to fail"
    assert job.traceback.startswith("Traceback")
    assert "raise ExampleJobFailed" in job.traceback
    assert job.ended_at is not None

    attempts = timeline(job)
    assert [attempt.outcome for attempt in attempts] == [AttemptOutcome.FAILED] * 3
    assert all("ExampleJobFailed" in attempt.traceback for attempt in attempts)
    assert attempts[0].retry_at is not None
    assert attempts[1].retry_at is not None
    assert attempts[2].retry_at is None
    # While it waited, the row said so, with the time of the next attempt ahead.
    assert set(first_seen_waiting) == {attempts[0].retry_at, attempts[1].retry_at}
    assert all(due > seen for due, seen in first_seen_waiting.items())
    # The policy (base 2 s, factor 2, jitter 20 %, whole seconds) promised 2 s, then 3 to 5 s...
    planned = [(attempt.retry_at - attempt.ended_at).total_seconds() for attempt in attempts[:2]]
    assert 1.5 <= planned[0] <= 2.5
    assert 2.5 <= planned[1] <= 5.5
    assert planned[1] > planned[0]
    # ...and the attempts really came that much later (RQ's schedule has whole seconds).
    gaps = [(later.started_at - earlier.ended_at).total_seconds() for earlier, later in pairwise(attempts)]
    print(f"\nplanned waits {planned}, actual gaps {gaps}")
    assert gaps[1] > gaps[0]
    for gap, plan in zip(gaps, planned, strict=True):
        assert plan - 1.1 <= gap <= plan + 2
