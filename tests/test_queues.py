"""Pausing a queue: workers leave its jobs alone until it is resumed."""

from __future__ import annotations

import time

import pytest

from jobs import queues, services
from jobs.models import Job
from jobs.statuses import JobStatus
from tests.conftest import wait_for

pytestmark = pytest.mark.slow


def test_a_paused_queue_keeps_its_jobs_until_resumed_while_others_run(processes):
    services.queue_pause(name="default")
    assert queues.paused_queues() == {"default"}
    processes.worker()
    waiting = services.job_enqueue(type="example", params={"duration": 0})
    other = services.job_enqueue(type="example", params={"duration": 0}, queue="high")
    wait_for(lambda: Job.objects.get(pk=other.pk).status == JobStatus.FINISHED, 20, message="the high job")
    time.sleep(2)
    assert Job.objects.get(pk=waiting.pk).status == JobStatus.QUEUED
    assert queues.get_queue("default").get_job_ids() == [str(waiting.id)]

    services.queue_resume(name="default")
    wait_for(lambda: Job.objects.get(pk=waiting.pk).status == JobStatus.FINISHED, 20, message="the resumed job")


def test_a_worker_blocked_on_a_queue_paused_meanwhile_puts_the_job_back(processes):
    processes.worker("default")  # one queue: RQ's single-queue path (an intermediate list)
    services.queue_pause(name="default")
    time.sleep(1.5)  # the worker may still be waiting on the queue it read as not paused
    job = services.job_enqueue(type="example", params={"duration": 0})
    time.sleep(2.5)
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED
    assert queues.get_queue("default").get_job_ids() == [str(job.id)]
    intermediate = queues.redis().lrange(f"{queues.get_queue('default').key}:intermediate", 0, -1)
    assert intermediate == []
    services.queue_resume(name="default")
    wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.FINISHED, 20, message="the resumed job")


def test_pausing_an_unknown_queue_is_refused():
    with pytest.raises(ValueError, match="unknown queue"):
        services.queue_pause(name="urgent")
