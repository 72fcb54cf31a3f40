"""One leader among several scheduler processes: rounds slower than the lock, a leader frozen past
it, a leader killed; every due schedule run and every due delayed job is enqueued exactly once."""

from __future__ import annotations

import os
import signal
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from jobs import queues, schedules, services
from jobs.models import Job, Schedule, ScheduleRun
from jobs.scheduler import LOCK_KEY
from tests.conftest import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def every_second(count: int) -> list[Schedule]:
    return [
        schedules.schedule_save(
            schedule=Schedule(name=f"each second {index:02d}", type="example", params={"duration": 0}, every=1)
        )
        for index in range(count)
    ]


def leader_pid() -> int:
    holder: Any = wait_for(lambda: queues.redis().get(LOCK_KEY), 20, message="a scheduler to take the lock")
    return int(holder.decode().rsplit(":", 2)[1])


def queued_ids() -> list[str]:
    return queues.get_queue("default").get_job_ids()


def test_rounds_slower_than_the_lock_and_a_leader_frozen_past_it_enqueue_each_due_run_and_delayed_job_once(
    processes,
):
    env = {"JOBS_SCHEDULER_LOCK_TTL": "2", "JOBS_MODULES": "tests.slow_rounds", "SLOW_ROUND_SECONDS": "3"}
    made = every_second(50)
    now = timezone.now()
    delayed = [  # due over the next 12 s
        services.job_enqueue(type="example", params={"duration": 0}, run_at=now + timedelta(seconds=2 + index * 0.05))
        for index in range(200)
    ]
    first, second = processes.scheduler(**env), processes.scheduler(**env)
    leader = leader_pid()
    runs = ScheduleRun.objects.filter(schedule__in=made)

    def a_round_done_under_one_leader() -> bool:
        assert leader_pid() == leader  # the lock is renewed while the round works
        return runs.exists()

    # A round slower than the lock (its runs are written at its end), the lock held all along.
    wait_for(a_round_done_under_one_leader, 20, interval=0.2, message="a first round")

    os.kill(leader, signal.SIGSTOP)  # frozen past its lock: the standby takes over
    frozen, standby = (first, second.pid) if leader == first.pid else (second, first.pid)
    wait_for(lambda: leader_pid() == standby, 20, message="the standby to take over")
    os.kill(leader, signal.SIGCONT)  # wakes in the middle of its round, and finishes it

    def all_done() -> bool:
        promoted = {str(job.pk) for job in delayed} <= set(queued_ids())
        return promoted and runs.count() >= 200 and "lost the scheduler lock" in processes.log(frozen)

    wait_for(all_done, 40, interval=0.2, message="every delayed job promoted, a few hundred runs, the leader aside")
    processes.stop_all()  # each finishes the round it is in (the woken one's, too), then exits
    assert "lost the scheduler lock" in processes.log(frozen)  # it noticed, and stood by

    per_due = Counter(runs.values_list("schedule_id", "due_at"))
    print(
        f"[figure] two schedulers, rounds slower than the lock, leader frozen past it: {runs.count()} runs, "
        f"at most {max(per_due.values())} per due time; {len(delayed)} delayed jobs promoted"
    )
    assert runs.count() >= 200  # several rounds of the 50 schedules: a few hundred runs
    assert max(per_due.values()) == 1
    assert not runs.filter(job__isnull=True).exists()
    assert Job.objects.exclude(pk__in=[job.pk for job in delayed]).count() == runs.count()  # no job beside its run
    on_queue = queued_ids()
    assert len(on_queue) == len(set(on_queue))  # nothing pushed twice
    promoted = {str(job.pk) for job in delayed} & set(on_queue)
    assert promoted == {str(job.pk) for job in delayed}  # every delayed job, once


def test_a_standby_continues_the_schedules_within_30_s_of_the_leaders_death(processes):
    (schedule,) = every_second(1)
    first, second = processes.scheduler(), processes.scheduler()
    leader = leader_pid()
    wait_for(lambda: schedule.runs.exists(), 20, message="a first run")
    os.killpg(leader, signal.SIGKILL)
    killed = timezone.now()

    run = wait_for(
        lambda: schedule.runs.filter(created_at__gt=killed).order_by("created_at").first(),
        40,
        interval=0.2,
        message="a run after the leader's death",
    )
    took = (run.created_at - killed).total_seconds()
    print(f"[figure] schedules: the standby made the next run {took:.1f}s after the leader was killed")
    assert took <= 30
    assert leader_pid() in (first.pid, second.pid)
    assert leader_pid() != leader
