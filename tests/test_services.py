"""Services: what a caller can ask for, what it is refused, and what ends up in Redis and the database."""

from __future__ import annotations

import json
import zlib
from datetime import timedelta

import pytest
import redis
import redis.client
from django.conf import settings
from django.utils import timezone
from rq.job import Job as RQJob
from rq.job import Retry
from rq.registry import ScheduledJobRegistry

from jobs import queues, services
from jobs.errors import ActionNotAllowed, InvalidJobRequest, QueueUnavailable
from jobs.models import Job
from jobs.services import JobRequest
from jobs.statuses import JobStatus
from tests.conftest import wait_for

pytestmark = pytest.mark.django_db(transaction=True)


def rq_job(job: Job) -> RQJob:
    return RQJob.fetch(str(job.id), connection=queues.redis(), serializer=queues.SERIALIZER)


def test_it_writes_the_row_and_puts_the_job_on_its_queue():
    job = services.job_enqueue(type="example", params={"duration": 1})
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED
    assert job.queue == "default"
    assert job.params == {"duration": 1.0, "steps": 10, "fail": False, "message": ""}
    assert job.max_attempts == 3
    assert job.enqueued_at is not None
    assert queues.get_queue("default").get_job_ids() == [str(job.id)]
    stored = rq_job(job)
    assert stored.func_name == "jobs.runner.run"
    assert stored.args == ["example", job.params]
    assert stored.retries_left == 2
    assert stored.timeout == job.timeout


def test_it_stores_jobs_as_json_never_pickle():
    job = services.job_enqueue(type="example")
    raw = queues.redis().hget(f"rq:job:{job.id}", "data")
    assert raw is not None
    func, _instance, args, kwargs = json.loads(zlib.decompress(raw))  # JSON text (RQ zips it), not a pickle
    assert (func, args, kwargs) == ("jobs.runner.run", ["example", job.params], {})


def test_the_job_type_picks_its_queue_and_a_caller_may_override_it():
    email = services.job_enqueue(type="email", params={"to": "a@example.com", "subject": "s", "body": "b"})
    assert email.queue == "high"
    low = services.job_enqueue(type="example", queue="low")
    assert low.queue == "low"
    assert queues.get_queue("low").get_job_ids() == [str(low.id)]


def test_it_rejects_unknown_job_type_and_writes_nothing():
    with pytest.raises(InvalidJobRequest) as caught:
        services.job_enqueue(type="os.system", params={})
    assert "type" in caught.value.errors
    assert "unknown job type" in caught.value.errors["type"][0]
    assert Job.objects.count() == 0
    assert queues.redis().keys("rq:job:*") == []


@pytest.mark.parametrize(
    ("job_type", "params", "field"),
    [
        ("example", {"duration": -1}, "params.duration"),
        ("example", {"duration": "soon"}, "params.duration"),
        ("example", [1, 2], "params"),
        ("email", {"to": "not-an-address", "subject": "s", "body": "b"}, "params.to"),
        ("email", {"to": "a@example.com", "body": "b"}, "params.subject"),
        ("email", {"to": "a@example.com", "subject": "two\nlines", "body": "b"}, "params.subject"),
        ("report", {"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, "params"),
    ],
)
def test_it_rejects_bad_params_with_field_errors_and_writes_nothing(job_type, params, field):
    with pytest.raises(InvalidJobRequest) as caught:
        services.job_enqueue(type=job_type, params=params)
    assert field in caught.value.errors, caught.value.errors
    assert Job.objects.count() == 0
    assert queues.redis().keys("rq:job:*") == []


def test_it_rejects_an_unknown_queue_and_a_bad_delay():
    with pytest.raises(InvalidJobRequest) as caught:
        services.job_enqueue(type="example", queue="urgent")
    assert "queue" in caught.value.errors
    with pytest.raises(InvalidJobRequest) as caught:
        services.job_enqueue(type="example", delay_seconds=-5)
    assert "delay_seconds" in caught.value.errors
    with pytest.raises(InvalidJobRequest) as caught:
        services.job_enqueue(type="example", delay_seconds=5, run_at=timezone.now())
    assert "delay_seconds" in caught.value.errors
    assert Job.objects.count() == 0


def test_a_bulk_request_is_all_or_nothing():
    requests = [JobRequest(type="example"), JobRequest(type="example", params={"duration": "x"})]
    with pytest.raises(InvalidJobRequest) as caught:
        services.jobs_enqueue(requests=requests)
    assert "1.params.duration" in caught.value.errors
    assert Job.objects.count() == 0

    created = services.jobs_enqueue(requests=[JobRequest(type="example") for _ in range(50)])
    assert Job.objects.count() == 50
    assert queues.get_queue("default").count == 50
    assert {str(job.id) for job in created} == set(queues.get_queue("default").get_job_ids())


def test_each_job_of_a_bulk_request_is_stored_in_redis_as_rq_would_store_it_alone():
    email = {"to": "ada@example.com", "subject": "s", "body": "b"}
    created = services.jobs_enqueue(
        requests=[
            JobRequest(type="example", params={"message": "first"}),
            JobRequest(type="example", params={"message": "second"}, queue="low"),
            JobRequest(type="email", params=email),
            JobRequest(type="example", params={"message": "third", "duration": 2}),
            JobRequest(type="example", params={"message": "later"}, delay_seconds=60),
        ]
    )
    first, second, mail, third, later = created
    assert queues.get_queue("default").get_job_ids() == [str(first.id), str(third.id)]
    assert queues.get_queue("low").get_job_ids() == [str(second.id)]
    assert queues.get_queue("high").get_job_ids() == [str(mail.id)]
    assert ScheduledJobRegistry(queue=queues.get_queue("default")).get_job_ids() == [str(later.id)]

    # Every field RQ keeps of a job, against the job RQ's own create_job and enqueue make for
    # the row (but the timestamps, and the retry delays, which are drawn with jitter).
    drawn = {"created_at", "enqueued_at", "retry_intervals"}
    for job in [first, second, mail, third]:
        retries = job.max_attempts - 1
        queue = queues.get_queue(job.queue)
        reference = queue.create_job(
            services.RUN_FUNC,
            args=(job.type, job.params),
            job_id=str(job.id),
            timeout=job.timeout,
            result_ttl=settings.JOBS_RESULT_TTL,
            failure_ttl=settings.JOBS_FAILURE_TTL,
            description=f"{job.type} {job.id}",
            meta={"attempt_base": 0, "retries": retries},
            retry=Retry(max=retries, interval=0) if retries else None,
        )
        queue._prepare_for_queue(reference)
        encode = queues.redis().get_encoder().encode  # as the pipeline sends values
        expected = {key: encode(value) for key, value in reference.to_dict().items() if key not in drawn}
        stored = queues.redis().hgetall(f"rq:job:{job.id}")
        assert {key.decode(): value for key, value in stored.items() if key.decode() not in drawn} == expected
        assert rq_job(job).args == [job.type, job.params]
        assert len(rq_job(job).retry_intervals) == job.max_attempts - 1


def test_a_bulk_request_whose_redis_transaction_fails_leaves_no_row_and_no_job(monkeypatch):
    services.job_enqueue(type="example")  # the queue is known and its Redis version read: only EXEC will fail
    before = set(queues.redis().keys("rq:job:*"))

    def redis_drops(self, *args, **kwargs):
        raise redis.ConnectionError("Connection reset by peer")

    monkeypatch.setattr(redis.client.Pipeline, "execute", redis_drops)
    with pytest.raises(QueueUnavailable):
        services.jobs_enqueue(requests=[JobRequest(type="example") for _ in range(3)])
    monkeypatch.undo()
    assert Job.objects.count() == 1
    assert set(queues.redis().keys("rq:job:*")) == before
    assert queues.get_queue("default").count == 1
    assert len(services.jobs_enqueue(requests=[JobRequest(type="example") for _ in range(2)])) == 2


def test_a_delayed_job_waits_in_the_schedule_with_its_time_visible():
    job = services.job_enqueue(type="example", delay_seconds=120)
    job.refresh_from_db()
    assert job.status == JobStatus.SCHEDULED
    assert job.scheduled_for is not None
    assert timedelta(seconds=110) < job.scheduled_for - timezone.now() <= timedelta(seconds=120)
    assert queues.get_queue("default").count == 0
    assert str(job.id) in ScheduledJobRegistry(queue=queues.get_queue("default")).get_job_ids()


def test_promote_runs_a_delayed_job_now_and_is_refused_for_other_states():
    job = services.job_enqueue(type="example", run_at=timezone.now() + timedelta(hours=1))
    promoted = services.job_promote(job=job)
    assert promoted.status == JobStatus.QUEUED
    assert promoted.scheduled_for is None
    assert queues.get_queue("default").get_job_ids() == [str(job.id)]
    assert str(job.id) not in ScheduledJobRegistry(queue=queues.get_queue("default")).get_job_ids()
    with pytest.raises(ActionNotAllowed, match="cannot promote a job that is queued"):
        services.job_promote(job=promoted)


def test_promote_due_jobs_moves_only_what_is_due_and_records_it():
    due = services.job_enqueue(type="example", delay_seconds=1)
    later = services.job_enqueue(type="example", delay_seconds=600)
    moved = services.promote_due_jobs(now=timezone.now() + timedelta(seconds=5))
    assert moved == 1
    assert queues.get_queue("default").get_job_ids() == [str(due.id)]
    assert str(later.id) in ScheduledJobRegistry(queue=queues.get_queue("default")).get_job_ids()
    # The move is a transition on the event stream, for the mirror.
    entries = queues.redis().xrange("jobs:events")
    assert len(entries) == 1
    assert b'"k":"queued"' in entries[0][1][b"e"]


def test_cancel_takes_a_waiting_job_off_its_queue():
    job = services.job_enqueue(type="example")
    canceled = services.job_cancel(job=job)
    assert canceled.status == JobStatus.CANCELED
    assert canceled.ended_at is not None
    assert queues.get_queue("default").count == 0
    assert rq_job(job).get_status() == "canceled"
    with pytest.raises(ActionNotAllowed, match="cannot cancel a job that is canceled"):
        services.job_cancel(job=canceled)


def test_cancel_a_scheduled_job_removes_it_from_the_schedule():
    job = services.job_enqueue(type="example", delay_seconds=300)
    services.job_cancel(job=job)
    assert ScheduledJobRegistry(queue=queues.get_queue("default")).get_job_ids() == []
    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELED


def test_retry_of_a_waiting_or_running_job_is_refused():
    job = services.job_enqueue(type="example")
    with pytest.raises(ActionNotAllowed, match="cannot retry a job that is queued"):
        services.job_retry(job=job)
    Job.objects.filter(pk=job.pk).update(status=JobStatus.STARTED)
    job.refresh_from_db()
    with pytest.raises(ActionNotAllowed, match="cannot retry a job that is started"):
        services.job_retry(job=job)
    with pytest.raises(ActionNotAllowed, match="cannot remove a job that is started"):
        services.job_remove(job=job)


def test_stop_is_only_for_a_running_job():
    job = services.job_enqueue(type="example")
    with pytest.raises(ActionNotAllowed, match="cannot stop a job that is queued"):
        services.job_stop(job=job)


def test_retry_of_a_canceled_job_puts_it_back_with_a_fresh_round_of_attempts():
    job = services.job_enqueue(type="example")
    services.job_cancel(job=job)
    retried = services.job_retry(job=Job.objects.get(pk=job.pk))
    assert retried.status == JobStatus.QUEUED
    assert retried.max_attempts == 3
    assert queues.get_queue("default").get_job_ids() == [str(job.id)]
    assert rq_job(job).get_status() == "queued"


def test_retry_recreates_the_job_from_its_row_when_redis_forgot_it():
    job = services.job_enqueue(type="example", params={"duration": 2, "message": "again"})
    Job.objects.filter(pk=job.pk).update(
        status=JobStatus.FAILED, attempts=3, max_attempts=3, started_at=timezone.now(), ended_at=timezone.now()
    )
    queues.redis().flushdb()
    retried = services.job_retry(job=Job.objects.get(pk=job.pk))
    assert retried.status == JobStatus.QUEUED
    assert retried.max_attempts == 6  # three more tries, after the three it had
    # Shown as waiting: no start or end of the attempt before it (that one is in the timeline).
    assert Job.objects.filter(pk=job.pk, started_at=None, ended_at=None).exists()
    stored = rq_job(job)
    assert stored.args == ["example", job.params]
    assert stored.meta["attempt_base"] == 3


def test_remove_deletes_the_job_from_redis_and_the_history():
    job = services.job_enqueue(type="example")
    services.job_remove(job=job)
    assert not Job.objects.filter(pk=job.pk).exists()
    assert queues.redis().exists(f"rq:job:{job.id}") == 0
    assert queues.get_queue("default").count == 0


def test_a_job_enqueued_inside_a_transaction_is_pending_until_commit(django_capture_on_commit_callbacks):
    from django.db import transaction

    with transaction.atomic():
        job = services.job_enqueue(type="example")
        assert Job.objects.get(pk=job.pk).status == JobStatus.PENDING
        assert queues.get_queue("default").count == 0
    wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.QUEUED, 5)
    assert queues.get_queue("default").get_job_ids() == [str(job.id)]


def test_a_bulk_action_taken_before_its_row_is_committed_waits_for_the_row():
    """A worker can take a job the moment it reaches Redis, just before the creating transaction
    commits its row: the bulk action waits for its row instead of refusing as if its creator had
    no rights."""
    import threading

    from jobs.tasks import bulk_action
    from tests.helpers import make_user

    operator = make_user("bulk-operator", perms=("view_job", "change_job"))
    job = services.job_enqueue(
        type="bulk_action", params={"action": "cancel", "filters": {"status": ["scheduled"]}}, user=operator
    )
    row = Job.objects.get(pk=job.pk)
    Job.objects.filter(pk=job.pk).delete()  # as if not committed yet

    def commit_later() -> None:
        from django.db import connection

        row.save(force_insert=True)
        connection.close()

    committer = threading.Timer(0.3, commit_later)
    committer.start()
    found = bulk_action._own_row(str(job.pk))
    committer.join()
    assert found is not None
    assert found.created_by == operator
