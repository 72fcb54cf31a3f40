"""The pooled worker (`manage.py jobs_pool`, and `manage.py rqworker` by default, jobs/pool.py) on
real processes: jobs of every type run in long-lived children and reach the history; children are
replaced after a crash, a timeout, a stop, their memory limit or `--max-jobs`; stops and shutdowns;
RQ's own view of the workers."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import rq
from rq.registry import FinishedJobRegistry, StartedJobRegistry

from jobs import events, mirror, queues, services
from jobs.mirror import alive_key
from jobs.models import Job
from jobs.statuses import JobStatus
from tests.conftest import Processes, wait_for
from tests.helpers import forget_execution_hashes, liveness, make_user, started_entries

# One test of each module runs on both databases (the pooled worker is the deployment files' and the
# Procfile's); the others are `once`.
pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

MODULES = "tests.pool_job_types"


@pytest.fixture
def pool_types() -> Iterator[Any]:
    """Registers the test-only job types of `tests.pool_job_types` in this process, for this test only."""
    from tests import pool_job_types

    pool_job_types.register()
    yield pool_job_types
    pool_job_types.unregister()


def start_workers(processes: Processes, n: int, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """`manage.py *args` (a pool or a threaded worker of `n` RQ workers), once RQ lists them all."""
    process = processes.start(*args, JOBS_MODULES=MODULES, **env)
    wait_for(lambda: len(live_workers()) == n or process.poll() is not None, 30, message=f"{n} {args[0]} workers")
    assert process.poll() is None, processes.log(process)
    return process


def start_pool(processes: Processes, *args: str, n: int = 2, **env: str) -> subprocess.Popen[bytes]:
    return start_workers(processes, n, "jobs_pool", "-n", str(n), *args, **env)


def live_workers() -> list[Any]:
    """What `rq info` lists: RQ's registered workers."""
    return rq.Worker.all(connection=queues.new_redis())


def worker_names() -> set[str]:
    return {worker.name for worker in live_workers()}


def row(job: Job) -> Job:
    job.refresh_from_db()
    return job


def ended(job: Job, *statuses: str, timeout: float = 30.0) -> Job:
    wanted = statuses or (JobStatus.FINISHED,)
    return wait_for(lambda: row(job).status in wanted and job, timeout, message=f"job {job.pk} {wanted}")


def attempts(job: Job) -> list[tuple[int, str, str]]:
    return [(a.number, a.outcome, a.worker_name) for a in job.attempt_set.order_by("number")]


def running(job: Job) -> bool:
    return row(job).status == JobStatus.STARTED


def children(pid: int) -> set[int]:
    """The process ids of `pid`'s children (Linux)."""
    with open(f"/proc/{pid}/task/{pid}/children") as found:
        return {int(child) for child in found.read().split()}


def descendants(pid: int) -> set[int]:
    below = children(pid)
    for child in list(below):
        below |= descendants(child)
    return below


def test_every_built_in_type_runs_in_the_pool_and_is_mirrored(processes, tmp_path):
    operator = make_user("operator", perms=("view_job", "change_job"))
    pool = start_pool(processes)
    example = services.job_enqueue(type="example", params={"duration": 0.6, "steps": 3, "message": "hi"})
    email = services.job_enqueue(type="email", params={"to": "ada@example.com", "subject": "Hi", "body": "Hello"})
    report = services.job_enqueue(type="report")
    target = services.job_enqueue(type="example", params={"duration": 0}, delay_seconds=600)
    bulk = services.job_enqueue(
        type="bulk_action", params={"action": "cancel", "filters": {"status": ["scheduled"]}}, user=operator
    )
    for job in (example, email, report, bulk):
        ended(job)
        assert job.attempts == 1
        assert job.progress == 100
        assert attempts(job) == [(1, "finished", job.worker_name)]
        assert job.worker_name in worker_names()  # a child of the pool, still serving
    assert example.result["slept"] == 0.6
    assert "file" in report.result
    assert row(target).status == JobStatus.CANCELED
    assert bulk.result["done"] == 1
    assert pool.poll() is None


@pytest.mark.once
def test_several_jobs_run_at_once_and_rq_sees_each_child(processes, pool_types):
    start_pool(processes, n=2)
    conn = queues.redis()
    first, second = (services.job_enqueue(type=pool_types.SLEEP, params={"seconds": 3, "steps": 6}) for _ in range(2))
    wait_for(lambda: running(first) and running(second), 15, message="both jobs running")
    # What `rq info` and django-rq's dashboard read: two busy workers, two started jobs.
    workers = live_workers()
    assert len(workers) == 2
    assert {worker.get_state() for worker in workers} == {"busy"}
    assert {worker.get_current_job_id() for worker in workers} == {str(first.pk), str(second.pk)}
    assert StartedJobRegistry(queues.DEFAULT, connection=conn, serializer=queues.SERIALIZER).count == 2
    ended(first)
    ended(second)
    assert first.worker_name != second.worker_name
    assert first.result["pid"] != second.result["pid"]
    assert first.started_at < second.ended_at  # at once
    assert second.started_at < first.ended_at
    assert FinishedJobRegistry(queues.DEFAULT, connection=conn).count == 2
    assert StartedJobRegistry(queues.DEFAULT, connection=conn).count == 0
    assert {worker.get_state() for worker in live_workers()} == {"idle"}
    assert sum(worker.successful_job_count for worker in live_workers()) == 2


@pytest.mark.once
def test_a_crashing_child_is_replaced_and_its_job_judged_by_its_type(processes, pool_types):
    start_pool(processes)
    processes.scheduler(JOBS_MODULES=MODULES)
    before = worker_names()
    retried = services.job_enqueue(type=pool_types.CRASH)
    never_twice = services.job_enqueue(type=pool_types.CRASH_ONCE)
    created = time.monotonic()
    # Abandoned by the reconciler once the dead child's liveness is gone (6 s + a 2 s round).
    ended(retried, timeout=30)
    assert [(number, outcome) for number, outcome, _ in attempts(retried)] == [(1, "abandoned"), (2, "finished")]
    ended(never_twice, JobStatus.ABANDONED, timeout=30)
    print(f"crashed job abandoned {time.monotonic() - created:.1f}s after its creation")
    assert [(number, outcome) for number, outcome, _ in attempts(never_twice)] == [(1, "abandoned")]
    # Both crashed children were replaced; the pool goes on.
    wait_for(lambda: len(live_workers()) == 2, 10, message="two workers again")
    assert not {name for _, _, name in attempts(never_twice)} & worker_names()
    assert len(worker_names() - before) >= 2
    after = services.job_enqueue(type=pool_types.SLEEP)
    ended(after)


@pytest.mark.once
def test_a_job_over_its_timeout_fails_and_only_its_child_is_replaced(processes, pool_types):
    start_pool(processes)
    slow = services.job_enqueue(type=pool_types.SLOW)
    wait_for(lambda: running(slow), 15, message="the slow job to start")
    other = services.job_enqueue(type=pool_types.SLEEP, params={"seconds": 4, "steps": 4})
    wait_for(lambda: running(other), 15, message="the other job to start")
    ended(slow, JobStatus.FAILED, timeout=15)
    print(f"timed out after {(slow.ended_at - slow.started_at).total_seconds():.2f}s")
    assert slow.error == "rq.timeouts.JobTimeoutException: Task exceeded maximum timeout value (2 seconds)"
    assert (slow.ended_at - slow.started_at).total_seconds() < 4
    ended(other)  # the other child went on with its job
    assert other.worker_name != slow.worker_name
    wait_for(lambda: len(live_workers()) == 2 and slow.worker_name not in worker_names(), 10, message="a new child")
    assert other.worker_name in worker_names()


@pytest.mark.once
def test_a_job_that_ignores_its_timeout_or_a_stop_is_put_down_by_the_pool(processes, pool_types):
    from jobs.pool import STOP_GRACE, overrun_margin

    start_pool(processes)
    timed_out = services.job_enqueue(type=pool_types.STUCK)
    stopped = services.job_enqueue(type=pool_types.STUCK)
    wait_for(lambda: running(timed_out) and running(stopped), 15, message="both stuck jobs running")
    forget_execution_hashes(timed_out, stopped)  # as for jobs whose timeout is over a minute
    asked = time.monotonic()
    services.job_stop(job=stopped)
    ended(stopped, JobStatus.STOPPED, timeout=STOP_GRACE + 10)
    print(f"stuck job stopped {time.monotonic() - asked:.1f}s after the stop")
    assert time.monotonic() - asked >= STOP_GRACE - 0.5
    assert "did not stop" in stopped.error
    ended(timed_out, JobStatus.FAILED, timeout=pool_types.TIMEOUT_SECONDS + overrun_margin(2) + 10)
    print(f"stuck job failed {(timed_out.ended_at - timed_out.started_at).total_seconds():.1f}s after its start")
    assert "Task exceeded maximum timeout value (2 seconds)" in timed_out.error
    assert "its process was killed" in timed_out.error
    assert [outcome for _, outcome, _ in attempts(timed_out)] == ["failed"]
    assert started_entries(timed_out) == started_entries(stopped) == []  # their runs are over
    put_down = {timed_out.worker_name, stopped.worker_name}
    wait_for(lambda: len(live_workers()) == 2 and not put_down & worker_names(), 10, message="two new workers")
    ended(services.job_enqueue(type=pool_types.SLEEP))


@pytest.mark.once
def test_stop_ends_one_job_among_several(processes, pool_types):
    start_pool(processes)
    kept = services.job_enqueue(type=pool_types.SLEEP, params={"seconds": 4, "steps": 8})
    target = services.job_enqueue(type=pool_types.SLEEP, params={"seconds": 30, "steps": 60})
    wait_for(lambda: running(kept) and running(target), 15, message="both jobs running")
    asked = time.monotonic()
    services.job_stop(job=target)
    ended(target, JobStatus.STOPPED, timeout=10)
    print(f"stopped {time.monotonic() - asked:.2f}s after the stop")
    assert time.monotonic() - asked < 3
    assert [outcome for _, outcome, _ in attempts(target)] == ["stopped"]
    assert row(kept).status == JobStatus.STARTED  # the other job runs on
    ended(kept)
    assert kept.attempts == 1


@pytest.mark.once
def test_a_child_busy_past_the_liveness_threshold_is_still_alive_to_the_probe(processes, pool_types):
    # `jobs_alive worker` (the orchestrator's probe) judges this host's newest worker by RQ's beat, within
    # JOBS_ALIVE_THRESHOLD (90 s in production, 3 s here). A child beats between jobs only: the pool
    # beats for it while its job runs (every --job-monitoring-interval seconds; 30 by default).
    start_pool(processes, "--worker-ttl", "20", "--job-monitoring-interval", "1", n=1)
    (worker,) = live_workers()
    job = services.job_enqueue(type=pool_types.SLEEP, params={"seconds": 8, "steps": 8})
    wait_for(lambda: running(job), 15, message="the job running")
    began = time.monotonic()
    beats = set()
    while time.monotonic() - began < 6:
        code, line = liveness("worker", threshold="3")
        assert (code, line.startswith(f"alive: worker {worker.name} beat")) == (0, True), line
        beats.add(rq.Worker.find_by_key(worker.key, connection=queues.new_redis()).last_heartbeat)
        time.sleep(0.5)
    assert len(beats) >= 4  # one a second, while the job ran
    assert row(job).status == JobStatus.STARTED
    ended(job)
    assert queues.redis().ttl(worker.key) > 20  # never shortened below the worker's own TTL


@pytest.mark.once
def test_a_child_over_its_memory_limit_is_replaced_after_its_job(processes, pool_types):
    start_pool(processes, "--max-memory", "250", n=1)
    (name,) = worker_names()
    big = services.job_enqueue(type=pool_types.MEMORY, params={"mb": 300})
    ended(big)
    assert big.result["kept_mb"] == 300  # its job ended normally first
    wait_for(lambda: worker_names() and name not in worker_names(), 15, message="the child to be replaced")
    small = services.job_enqueue(type=pool_types.MEMORY, params={"mb": 1})
    ended(small)
    assert small.worker_name != name
    assert small.result["pid"] != big.result["pid"]
    assert small.worker_name in worker_names()  # a small job leaves the new child in place


@pytest.mark.once
def test_max_jobs_replaces_a_child_after_that_many_jobs(processes, pool_types):
    start_pool(processes, "--max-jobs", "2", n=1)
    jobs = [services.job_enqueue(type=pool_types.SLEEP) for _ in range(6)]
    for job in jobs:
        ended(job)
    pids = [job.result["pid"] for job in jobs]
    assert pids[0] == pids[1] != pids[2] == pids[3] != pids[4] == pids[5]
    assert len({job.worker_name for job in jobs}) == 3


@pytest.mark.once
def test_sigterm_lets_the_running_jobs_finish(processes, pool_types):
    pool = start_pool(processes)
    first, second = (services.job_enqueue(type=pool_types.SLEEP, params={"seconds": 3, "steps": 3}) for _ in range(2))
    queued = services.job_enqueue(type=pool_types.SLEEP)
    wait_for(lambda: running(first) and running(second), 15, message="both jobs running")
    pool.send_signal(signal.SIGTERM)
    assert pool.wait(timeout=20) == 0
    for job in (first, second):
        assert row(job).status == JobStatus.FINISHED  # in the history before the pool exited
        assert job.attempts == 1
    assert row(queued).status == JobStatus.QUEUED  # not started: left for the next worker
    assert live_workers() == []


@pytest.mark.once
def test_a_warm_stop_still_puts_down_a_job_that_ignores_its_timeout(processes, pool_types):
    from jobs.pool import overrun_margin

    pool = start_pool(processes, n=1)
    stuck = services.job_enqueue(type=pool_types.STUCK)
    wait_for(lambda: running(stuck), 15, message="the stuck job running")
    pool.send_signal(signal.SIGTERM)
    # The pool waits for the job, and puts it down a margin past its timeout, as when not stopping.
    assert pool.wait(timeout=pool_types.TIMEOUT_SECONDS + overrun_margin(2) + 20) == 0
    ended(stuck, JobStatus.FAILED, timeout=10)
    assert "Task exceeded maximum timeout value (2 seconds)" in stuck.error
    assert "its process was killed" in stuck.error
    assert started_entries(stuck) == []
    assert live_workers() == []


@pytest.mark.once
def test_a_cold_stop_abandons_the_running_jobs(processes, pool_types):
    pool = start_pool(processes)
    processes.scheduler(JOBS_MODULES=MODULES)
    retried = services.job_enqueue(type=pool_types.SLEEP, params={"seconds": 15, "steps": 15})
    never_twice = services.job_enqueue(type=pool_types.SLEEP_ONCE, params={"seconds": 15, "steps": 15})
    wait_for(lambda: running(retried) and running(never_twice), 15, message="both jobs running")
    pool.send_signal(signal.SIGTERM)
    time.sleep(1.5)
    pool.send_signal(signal.SIGTERM)
    stopped_at = time.monotonic()
    assert pool.wait(timeout=15) == 1
    assert live_workers() == []
    # Recorded dead at once: judged at the next round once the run is older than JOBS_WORKER_DEAD_AFTER.
    wait_for(lambda: row(never_twice).status == JobStatus.ABANDONED, 20, message="abandoned")
    print(f"abandoned {time.monotonic() - stopped_at:.1f}s after the cold stop")
    assert time.monotonic() - stopped_at < 15
    assert wait_for(lambda: row(retried).status == JobStatus.QUEUED, 10, message="queued again")
    start_pool(processes)
    ended(retried, timeout=90)
    assert [outcome for _, outcome, _ in attempts(retried)] == ["abandoned", "finished"]
    assert row(never_twice).attempts == 1


@pytest.mark.once
def test_a_sigkilled_pool_leaves_its_jobs_to_the_reconciler(processes, pool_types):
    pool = start_pool(processes)
    processes.scheduler(JOBS_MODULES=MODULES)
    retried = services.job_enqueue(type=pool_types.SLEEP, params={"seconds": 15, "steps": 15})
    never_twice = services.job_enqueue(type=pool_types.SLEEP_ONCE, params={"seconds": 15, "steps": 15})
    wait_for(lambda: running(retried) and running(never_twice), 15, message="both jobs running")
    time.sleep(2)
    os.killpg(pool.pid, signal.SIGKILL)  # the pool, its children and their mirrors
    killed = time.monotonic()
    pool.wait(timeout=5)
    wait_for(lambda: row(never_twice).status == JobStatus.ABANDONED, 25, message="abandoned")
    # Within JOBS_WORKER_DEAD_AFTER (6) + a reconciler round (2), with room for a busy machine.
    print(f"abandoned {time.monotonic() - killed:.1f}s after the SIGKILL")
    assert time.monotonic() - killed < 15
    assert wait_for(lambda: row(retried).status == JobStatus.QUEUED, 10, message="queued again")
    start_pool(processes)
    ended(retried, timeout=90)
    assert [outcome for _, outcome, _ in attempts(retried)] == ["abandoned", "finished"]
    assert [outcome for _, outcome, _ in attempts(never_twice)] == ["abandoned"]


# --- the pool's mirror ------------------------------------------------------------------------


@pytest.mark.once
def test_one_mirror_serves_the_whole_pool_and_keeps_each_child_alive(processes, pool_types):
    pool = start_pool(processes, n=2)
    first, second = (services.job_enqueue(type=pool_types.SLEEP, params={"seconds": 2, "steps": 4}) for _ in range(2))
    wait_for(lambda: running(first) and running(second), 15, message="both jobs running")
    ended(first)
    ended(second)
    assert first.worker_name != second.worker_name
    conn = queues.redis()
    workers = worker_names()
    assert {first.worker_name, second.worker_name} == workers
    # One reader of the history stream for the pool, which is none of its workers.
    (consumer,) = {found.name for found in mirror.consumers(conn)}
    assert consumer not in workers
    assert all(conn.exists(alive_key(name)) for name in (*workers, consumer))
    # The pool's processes: its two workers and one mirror (not a mirror per worker).
    assert len(descendants(pool.pid)) == 3


@pytest.mark.once
def test_a_dead_child_is_not_kept_alive_by_the_pools_mirror(processes, pool_types):
    pool = start_pool(processes, n=2)
    conn = queues.redis()
    victim, other = live_workers()
    os.kill(victim.pid, signal.SIGKILL)
    wait_for(lambda: victim.name not in worker_names() and len(worker_names()) == 2, 15, message="a new child")
    assert not conn.exists(alive_key(victim.name))  # recorded dead at once
    # The mirror beats for the living (their keys' time to live starts again), not for the dead.
    left = conn.pttl(alive_key(other.name))
    wait_for(lambda: conn.pttl(alive_key(other.name)) > left, 15, message="the mirror's next beat")
    assert not conn.exists(alive_key(victim.name))
    assert all(conn.exists(alive_key(name)) for name in worker_names())
    assert pool.poll() is None


@pytest.mark.once
def test_a_killed_mirror_is_replaced_and_the_history_goes_on(processes, pool_types):
    pool = start_pool(processes, n=1)
    (worker,) = live_workers()
    (mirror_pid,) = children(pool.pid) - {worker.pid}
    os.kill(mirror_pid, signal.SIGKILL)
    job = services.job_enqueue(type=pool_types.SLEEP, params={"seconds": 0.5, "steps": 2})
    ended(job)  # written by the mirror the pool started in its place
    assert [outcome for _, outcome, _ in attempts(job)] == ["finished"]
    (replacement,) = children(pool.pid) - {worker.pid}
    assert replacement != mirror_pid
    assert queues.redis().exists(alive_key(worker.name))


# --- `manage.py rqworker`: the pool, by django-rq's settings --------------------------------------


@pytest.mark.once
def test_manage_py_rqworker_runs_its_jobs_one_at_a_time_in_a_long_lived_child(processes, pool_types):
    """django-rq's command with the product's settings: no fork per job, one job at a time as RQ's
    worker, `--max-jobs` a new child after that many jobs, SIGTERM a clean exit."""
    worker = start_workers(processes, 1, "rqworker", "--max-jobs", "2", *queues.QUEUE_NAMES)
    first = children(worker.pid)  # the child, and the pool's mirror
    jobs = [services.job_enqueue(type=pool_types.SLEEP, params={"seconds": 0.3}) for _ in range(4)]
    for job in jobs:
        ended(job)
    pids = [job.result["pid"] for job in jobs]
    assert pids[0] == pids[1] != pids[2] == pids[3] != worker.pid
    assert pids[0] in first
    runs = sorted((job.started_at, job.ended_at) for job in jobs)
    assert all(ended_at <= next_start for (_, ended_at), (next_start, _) in itertools.pairwise(runs))
    assert [len(attempts(job)) for job in jobs] == [1, 1, 1, 1]

    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    assert live_workers() == []


#: A pool whose stop is asked while it replaces a child: the signal reaches it between the fork of the
#: replacement and its entry among the pool's children (`WorkerPool.start_worker`).
STOPPED_WHILE_REPLACING = """
import os, signal
from jobs import pool, queues

class Racing(pool.Pool):
    made = 0

    def get_worker_process(self, *args, **kwargs):
        process = super().get_worker_process(*args, **kwargs)
        Racing.made += 1
        if Racing.made == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return process

raise SystemExit(Racing(list(queues.QUEUE_NAMES), num_workers=1, max_jobs=1).start())
"""


@pytest.mark.once
def test_a_stop_asked_while_a_child_is_replaced_reaches_the_new_child_too(processes, pool_types):
    """A SIGTERM that came as the pool forked a replacement (after `--max-jobs`) stopped the children
    it knew of, not the new one, and the pool waited for that one for ever (seen: `rqworker` did not
    exit)."""
    pool = processes.start("shell", "-c", STOPPED_WHILE_REPLACING, JOBS_MODULES=MODULES)
    job = ended(services.job_enqueue(type=pool_types.SLEEP))  # its child then leaves, and is replaced
    try:
        assert pool.wait(timeout=30) == 0, processes.log(pool)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the pool did not exit:\n{processes.log(pool)}")
    assert live_workers() == []
    assert attempts(job) == [(1, "finished", job.worker_name)]


@pytest.mark.once
@pytest.mark.parametrize("command", [("rqworker",), ("jobs_pool", "-n", "2")], ids=["rqworker", "jobs_pool"])
def test_burst_runs_what_is_queued_then_exits(processes, pool_types, command):
    jobs = [services.job_enqueue(type=pool_types.SLEEP) for _ in range(3)]
    worker = processes.start(*command, "--burst", *queues.QUEUE_NAMES, JOBS_MODULES=MODULES)
    assert worker.wait(timeout=60) == 0, processes.log(worker)
    for job in jobs:
        assert ended(job).attempts == 1


@pytest.mark.once
@pytest.mark.parametrize(
    ("option", "said"),
    [
        (("--max-idle-time", "5"), "--max-idle-time is RQ's forking worker's: add --worker-class jobs.worker.Worker"),
        (("--max-jobs", "0"), "--max-jobs must be at least 1"),
    ],
    ids=["max-idle-time", "max-jobs 0"],
)
def test_manage_py_rqworker_refuses_what_the_pool_cannot_do_and_says_why(processes, option, said):
    worker = processes.start("rqworker", *option, *queues.QUEUE_NAMES)
    assert worker.wait(timeout=60) == 1
    assert said in processes.log(worker)
    assert live_workers() == []


@pytest.mark.once
def test_django_rqs_own_pool_makes_forking_workers_of_the_same_setting_not_pools(processes, pool_types):
    pool = start_workers(processes, 2, "rqworker-pool", "--num-workers", "2", *queues.QUEUE_NAMES)
    job = ended(services.job_enqueue(type=pool_types.SLEEP))
    workers = {worker.pid for worker in live_workers()}
    assert workers == children(pool.pid)  # RQ's workers are the pool's own children, no pools between
    assert job.result["pid"] not in workers  # it ran in a work horse, forked for it


def test_the_end_of_a_burst_reaches_the_history_without_waiting_out_the_linger(redis_db, monkeypatch):
    """The pool's one mirror lets events gather between its batches (`BATCH_LINGER_SECONDS`); once a
    burst is over, what came last is applied at once rather than at the end of that wait, also when
    the burst reached the mirror in batches each too small to count as busy (seen under load: 30 events
    read as 12 and 18 left the next event waiting out the linger)."""
    monkeypatch.setattr(mirror, "BATCH_LINGER_SECONDS", 5.0)
    jobs = services.jobs_enqueue(requests=[services.JobRequest(type="example") for _ in range(30)])
    assert mirror.LINGER_BUSY_BATCH > 18

    def started(some: list[Job]) -> None:
        with redis_db.pipeline() as pipe:  # one read of the mirror takes them all
            for job in some:
                events.emit(pipe, str(job.pk), events.STARTED, 1, w="w")
            pipe.execute()

    def applied() -> int:
        return Job.objects.filter(status=JobStatus.STARTED).count()

    drainer = mirror.MirrorThread(redis_db, consumer="test")
    drainer.start()
    try:
        started(jobs[:12])
        wait_for(lambda: applied() == 12, 10, message="the first batch applied")
        started(jobs[12:])
        emitted = time.monotonic()
        wait_for(lambda: applied() == 30, 10, message="the second batch applied")
        assert time.monotonic() - emitted < 2.5, "the burst's second part waited out the linger"
        events.emit(redis_db, str(jobs[0].pk), events.FINISHED, 1, w="w", r=1)
        emitted = time.monotonic()
        ended(jobs[0], timeout=10)
        print(f"the last event reached the history {time.monotonic() - emitted:.2f}s after it was written")
        assert time.monotonic() - emitted < 2.5
    finally:
        drainer.stop()


def test_events_that_came_while_a_batch_was_applied_count_toward_the_burst(redis_db, monkeypatch):
    """The moment the linger of the test above can miss: the burst's second part is written after the
    mirror read the first part and before it begins to wait. It counts from the read, not from the
    wait: the second part is applied at once, not after the whole linger."""
    monkeypatch.setattr(mirror, "BATCH_LINGER_SECONDS", 5.0)
    jobs = services.jobs_enqueue(requests=[services.JobRequest(type="example") for _ in range(30)])
    drainer = mirror.MirrorThread(redis_db, consumer="test")  # driven step by step here, not started
    drainer.drainer.ensure_group()
    for job in jobs[:12]:
        events.emit(redis_db, str(job.pk), events.STARTED, 1, w="w")
    assert drainer.drainer.drain_once() == 12
    for job in jobs[12:]:  # as the first part's transaction commits
        events.emit(redis_db, str(job.pk), events.STARTED, 1, w="w")
    began = time.monotonic()
    drainer._linger(burst=12)
    assert time.monotonic() - began < 2.5
    assert drainer.drainer.drain_once() == 18
