"""The threaded worker (`manage.py jobs_threads`, jobs/threads.py) on real processes: one process
runs N jobs at once in N threads, each thread an RQ worker of its own, with the history right;
stops, timeouts, jobs that do not stop, warm and cold shutdowns, a killed process; RQ's own view."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import pytest
import rq
from rq.registry import FailedJobRegistry, FinishedJobRegistry, StartedJobRegistry

from jobs import queues, services
from jobs.mirror import alive_key
from jobs.models import Job
from jobs.statuses import JobStatus
from jobs.worker import PRODUCT_WORKERS
from tests.conftest import Processes, wait_for
from tests.helpers import forget_execution_hashes, started_entries
from tests.test_pool import (
    MODULES,
    attempts,
    ended,
    live_workers,
    pool_types,
    row,
    running,
    start_workers,
    worker_names,
)

pytestmark = [pytest.mark.slow, pytest.mark.once, pytest.mark.django_db(transaction=True)]

__all__ = ["pool_types"]  # the fixture, used by name


@pytest.fixture
def types(pool_types: Any) -> Any:
    """The pool's test-only job types and the threaded worker's, in this process, for this test only."""
    pool_types.register_thread_types()
    return pool_types


def start_threads(processes: Processes, *args: str, n: int = 4, **env: str) -> subprocess.Popen[bytes]:
    return start_workers(processes, n, "jobs_threads", "--concurrency", str(n), *args, **env)


def outcomes(job: Job) -> list[str]:
    return [outcome for _, outcome, _ in attempts(job)]


def test_four_sleeping_jobs_run_at_once_in_one_process(processes, types):
    start_threads(processes, n=4)
    jobs = services.jobs_enqueue(requests=[services.JobRequest(type=types.SLEEP, params={"seconds": 2})] * 4)
    for job in jobs:
        ended(job)
    span = (max(job.ended_at for job in jobs) - min(job.started_at for job in jobs)).total_seconds()
    print(f"4 jobs of 2 s each: {span:.2f} s from the first start to the last end")
    # At once: the last started before the first ended (one after the other, or two by two, would not).
    assert max(job.started_at for job in jobs) < min(job.ended_at for job in jobs)
    assert len({job.result["pid"] for job in jobs}) == 1  # in one process
    assert len({job.worker_name for job in jobs}) == 4  # each in a worker (a thread) of its own
    assert {job.worker_name for job in jobs} == worker_names()
    for job in jobs:
        assert attempts(job) == [(1, "finished", job.worker_name)]


def test_rq_sees_each_thread_as_a_worker(processes, types):
    process = start_threads(processes, n=3)
    processes.scheduler(JOBS_MODULES=MODULES)  # its reconciler judges a job whose worker stops beating
    conn = queues.redis()
    # Longer than JOBS_WORKER_DEAD_AFTER (6 s) and a reconciler round: the mirror keeps every worker alive.
    first, second = (services.job_enqueue(type=types.SLEEP, params={"seconds": 9, "steps": 9}) for _ in range(2))
    wait_for(lambda: running(first) and running(second), 15, message="both jobs running")
    # What `rq info` and django-rq's dashboard read: three workers of one process, two of them busy.
    workers = live_workers()
    assert len(workers) == 3
    assert {worker.pid for worker in workers} == {process.pid}
    assert len({worker.name.rsplit(".t", 1)[0] for worker in workers}) == 1  # <base>.t0, <base>.t1, <base>.t2
    assert sorted(worker.get_state() for worker in workers) == ["busy", "busy", "idle"]
    assert {worker.get_current_job_id() for worker in workers} - {None} == {str(first.pk), str(second.pk)}
    assert len(rq.Worker.all(queue=rq.Queue(queues.DEFAULT, connection=queues.new_redis()))) == 3
    assert StartedJobRegistry(queues.DEFAULT, connection=conn, serializer=queues.SERIALIZER).count == 2
    ended(first)
    ended(second)
    assert outcomes(first) == outcomes(second) == ["finished"]
    assert first.worker_name != second.worker_name
    assert FinishedJobRegistry(queues.DEFAULT, connection=conn).count == 2
    assert StartedJobRegistry(queues.DEFAULT, connection=conn).count == 0
    wait_for(lambda: {worker.get_state() for worker in live_workers()} == {"idle"}, 5, message="all idle")
    assert sum(worker.successful_job_count for worker in live_workers()) == 2
    # Every worker of the process is a product worker, kept alive by the one mirror.
    assert conn.smembers(PRODUCT_WORKERS) == {name.encode() for name in worker_names()}
    assert all(conn.exists(alive_key(name)) for name in worker_names())


def test_the_history_of_fifty_mixed_jobs(processes, types):
    start_threads(processes, n=4)
    processes.scheduler(JOBS_MODULES=MODULES)  # moves the retries back to their queue when due
    params = {"seconds": 0.05}
    finishing = [services.job_enqueue(type=types.SLEEP, params=params) for _ in range(20)]
    flaky = [services.job_enqueue(type=types.FLAKY, params=params) for _ in range(15)]
    failing = [services.job_enqueue(type=types.FAIL_TWICE, params=params) for _ in range(15)]
    for job in finishing + flaky:
        ended(job, timeout=60)
    for job in failing:
        ended(job, JobStatus.FAILED, timeout=60)
    names = worker_names()
    for job in finishing:
        assert attempts(job) == [(1, "finished", job.worker_name)]
    for job in flaky:
        assert outcomes(job) == ["failed", "finished"]
        assert job.error == ""
        (first,) = job.attempt_set.filter(number=1)
        assert first.error == "RuntimeError: pool-flaky fails its first attempt"
    for job in failing:
        assert outcomes(job) == ["failed", "failed"]
        assert job.error == "RuntimeError: pool-fail-twice always fails"
        assert job.attempts == 2
    everything = finishing + flaky + failing
    assert {name for job in everything for _, _, name in attempts(job)} <= names
    assert len({name for job in everything for _, _, name in attempts(job)}) > 1  # shared among the threads
    conn = queues.redis()
    assert FinishedJobRegistry(queues.DEFAULT, connection=conn).count == 35
    assert FailedJobRegistry(queues.DEFAULT, connection=conn).count == 15
    assert StartedJobRegistry(queues.DEFAULT, connection=conn).count == 0


def test_stop_ends_one_job_among_several(processes, types):
    start_threads(processes, n=3)
    kept = [services.job_enqueue(type=types.SLEEP, params={"seconds": 4, "steps": 8}) for _ in range(2)]
    target = services.job_enqueue(type=types.SLEEP, params={"seconds": 30, "steps": 60})
    wait_for(lambda: all(running(job) for job in (*kept, target)), 15, message="three jobs running")
    asked = time.monotonic()
    services.job_stop(job=target)
    ended(target, JobStatus.STOPPED, timeout=10)
    print(f"stopped {time.monotonic() - asked:.2f}s after the stop")
    assert time.monotonic() - asked < 3
    assert outcomes(target) == ["stopped"]
    assert target.error == "jobs.pool.JobStopped: Job stopped by user"
    assert all(row(job).status == JobStatus.STARTED for job in kept)  # the other jobs run on
    for job in kept:
        ended(job)
        assert outcomes(job) == ["finished"]
    # The stopped job's worker goes on serving: a stop ends a job, not its thread.
    assert target.worker_name in worker_names()
    after = [services.job_enqueue(type=types.SLEEP, params={"seconds": 1}) for _ in range(3)]
    for job in after:
        ended(job)
    assert target.worker_name in {job.worker_name for job in after}


def test_a_job_over_its_timeout_fails_and_the_others_go_on(processes, types):
    start_threads(processes, n=2)
    slow = services.job_enqueue(type=types.SLOW_STEPS)
    wait_for(lambda: running(slow), 15, message="the slow job to start")
    other = services.job_enqueue(type=types.SLEEP, params={"seconds": 4, "steps": 8})  # a timeout of 600 s
    wait_for(lambda: running(other), 15, message="the other job to start")
    ended(slow, JobStatus.FAILED, timeout=15)
    print(f"timed out after {(slow.ended_at - slow.started_at).total_seconds():.2f}s")
    assert slow.error == "rq.timeouts.JobTimeoutException: Task exceeded maximum timeout value (2 seconds)"
    assert (slow.ended_at - slow.started_at).total_seconds() < 4
    assert running(other)
    ended(other)
    assert other.worker_name != slow.worker_name
    assert worker_names() == {slow.worker_name, other.worker_name}  # the slow job's worker serves on
    ended(services.job_enqueue(type=types.SLEEP))


def test_a_job_that_does_not_stop_is_put_down_and_its_thread_left_behind(processes, types):
    from jobs.pool import STOP_GRACE, overrun_margin

    process = start_threads(processes, n=2)
    timed_out = services.job_enqueue(type=types.STUCK)  # blocked in one call (time.sleep) for 300 s
    stopped = services.job_enqueue(type=types.STUCK)
    wait_for(lambda: running(timed_out) and running(stopped), 15, message="both stuck jobs running")
    forget_execution_hashes(timed_out, stopped)  # as for jobs whose timeout is over a minute
    asked = time.monotonic()
    services.job_stop(job=stopped)
    ended(stopped, JobStatus.STOPPED, timeout=STOP_GRACE + 10)
    print(f"stuck job stopped {time.monotonic() - asked:.1f}s after the stop")
    assert time.monotonic() - asked >= STOP_GRACE - 0.5
    assert stopped.error.startswith("jobs.pool.JobStopped: Job stopped by user; it did not stop")
    assert "left behind" in stopped.error
    ended(timed_out, JobStatus.FAILED, timeout=types.TIMEOUT_SECONDS + overrun_margin(2) + 10)
    print(f"stuck job failed {(timed_out.ended_at - timed_out.started_at).total_seconds():.1f}s after its start")
    assert "Task exceeded maximum timeout value (2 seconds)" in timed_out.error
    assert "left behind" in timed_out.error
    assert outcomes(timed_out) == ["failed"]
    assert outcomes(stopped) == ["stopped"]
    assert started_entries(timed_out) == started_entries(stopped) == []  # their runs are over
    # Their workers were recorded dead and replaced by new ones in the same process.
    put_down = {timed_out.worker_name, stopped.worker_name}
    wait_for(lambda: len(live_workers()) == 2 and not put_down & worker_names(), 10, message="two new workers")
    conn = queues.redis()
    assert not any(conn.exists(alive_key(name)) for name in put_down)
    assert not {name.encode() for name in put_down} & conn.smembers(PRODUCT_WORKERS)
    assert {worker.pid for worker in live_workers()} == {process.pid}
    after = [services.job_enqueue(type=types.SLEEP, params={"seconds": 1}) for _ in range(2)]
    for job in after:
        ended(job)
    assert {job.worker_name for job in after} == worker_names()
    # A warm stop waits for the running jobs, and puts down one that does not stop; the threads left
    # behind (asleep for minutes) do not hold the process back.
    last = services.job_enqueue(type=types.STUCK)
    wait_for(lambda: running(last), 15, message="the last stuck job running")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=types.TIMEOUT_SECONDS + overrun_margin(2) + 10) == 0
    assert row(last).status == JobStatus.FAILED
    assert "left behind" in last.error
    assert outcomes(row(timed_out)) == ["failed"]
    assert outcomes(row(stopped)) == ["stopped"]
    assert live_workers() == []


def test_sigterm_lets_the_running_jobs_finish(processes, types):
    process = start_threads(processes, n=3)
    jobs = [services.job_enqueue(type=types.SLEEP, params={"seconds": 3, "steps": 3}) for _ in range(3)]
    wait_for(lambda: all(running(job) for job in jobs), 15, message="three jobs running")
    queued = services.job_enqueue(type=types.SLEEP)
    names = worker_names()
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=20) == 0
    for job in jobs:
        assert row(job).status == JobStatus.FINISHED  # in the history before the process exited
        assert outcomes(job) == ["finished"]
    assert row(queued).status == JobStatus.QUEUED  # not started: left for the next worker
    assert live_workers() == []
    conn = queues.redis()
    assert conn.smembers(PRODUCT_WORKERS) == set()
    assert not any(conn.exists(alive_key(name)) for name in names)


def test_max_jobs_stops_the_process_after_that_many_jobs(processes, types):
    process = start_threads(processes, "--max-jobs", "4", n=2)
    jobs = [services.job_enqueue(type=types.SLEEP, params={"seconds": 0.2}) for _ in range(8)]
    assert process.wait(timeout=30) == 0
    done = [job for job in jobs if row(job).status == JobStatus.FINISHED]
    assert 4 <= len(done) <= 5  # the jobs running when the 4th ended finish too
    assert all(row(job).status == JobStatus.QUEUED for job in jobs if job not in done)
    assert live_workers() == []


def test_a_cold_stop_abandons_the_running_jobs(processes, types):
    process = start_threads(processes, n=2)
    processes.scheduler(JOBS_MODULES=MODULES)
    retried = services.job_enqueue(type=types.SLEEP, params={"seconds": 15, "steps": 15})
    never_twice = services.job_enqueue(type=types.SLEEP_ONCE, params={"seconds": 15, "steps": 15})
    wait_for(lambda: running(retried) and running(never_twice), 15, message="both jobs running")
    names = worker_names()
    process.send_signal(signal.SIGTERM)
    time.sleep(1.5)  # a second signal within a second is the same stop
    process.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert process.wait(timeout=15) == 1
    assert live_workers() == []
    conn = queues.redis()
    assert not any(conn.exists(alive_key(name)) for name in names)  # recorded dead at once
    wait_for(lambda: row(never_twice).status == JobStatus.ABANDONED, 20, message="abandoned")
    print(f"abandoned {time.monotonic() - stopped_at:.1f}s after the cold stop")
    assert time.monotonic() - stopped_at < 15
    assert wait_for(lambda: row(retried).status == JobStatus.QUEUED, 10, message="queued again")
    start_threads(processes, n=2)
    ended(retried, timeout=90)
    assert outcomes(retried) == ["abandoned", "finished"]
    assert outcomes(row(never_twice)) == ["abandoned"]


def test_a_sigkilled_process_leaves_its_jobs_to_the_reconciler(processes, types):
    process = start_threads(processes, n=2)
    processes.scheduler(JOBS_MODULES=MODULES)
    retried = services.job_enqueue(type=types.SLEEP, params={"seconds": 15, "steps": 15})
    never_twice = services.job_enqueue(type=types.SLEEP_ONCE, params={"seconds": 15, "steps": 15})
    wait_for(lambda: running(retried) and running(never_twice), 15, message="both jobs running")
    os.killpg(process.pid, signal.SIGKILL)  # the process, its threads and its mirror
    killed = time.monotonic()
    process.wait(timeout=5)
    wait_for(lambda: row(never_twice).status == JobStatus.ABANDONED, 25, message="abandoned")
    # Within JOBS_WORKER_DEAD_AFTER (6) + a reconciler round (2), with room for a busy machine.
    print(f"abandoned {time.monotonic() - killed:.1f}s after the SIGKILL")
    assert time.monotonic() - killed < 15
    assert wait_for(lambda: row(retried).status == JobStatus.QUEUED, 10, message="queued again")
    start_threads(processes, n=2)
    ended(retried, timeout=90)
    assert outcomes(retried) == ["abandoned", "finished"]
    assert outcomes(row(never_twice)) == ["abandoned"]
