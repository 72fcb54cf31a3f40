"""Bulk writes outside the ORM (jobs.sql): what lands in the database is what the ORM would write."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.utils import timezone

from jobs import sql
from jobs.models import SEARCH_TEXT, Job, JobAttempt, JobCountDelta
from jobs.statuses import AttemptOutcome, JobStatus

pytestmark = pytest.mark.django_db(transaction=True)


def new_jobs(count: int, **fields) -> list[Job]:
    return [
        Job(
            type="example",
            queue="low" if index % 2 else "default",
            params={"index": index, "message": "hello"},
            timeout=60,
            max_attempts=3,
            status=JobStatus.QUEUED,
            scheduled_for=timezone.now() + timedelta(minutes=index) if index % 3 == 0 else None,
            **fields,
        )
        for index in range(count)
    ]


def test_inserted_jobs_read_back_as_they_were_given(django_user_model):
    user = django_user_model.objects.create_user("ada")
    rows = new_jobs(5, created_by_id=user.pk)
    before = timezone.now()
    sql.insert_rows(Job, rows)
    stored = {job.id: job for job in Job.objects.all()}
    assert set(stored) == {row.id for row in rows}
    for row in rows:
        job = stored[row.id]
        assert (job.queue, job.params, job.scheduled_for, job.created_by_id) == (
            row.queue,
            row.params,
            row.scheduled_for,
            user.pk,
        )
        assert job.status == JobStatus.QUEUED
        assert before <= job.created_at <= timezone.now()  # set on insert, as auto_now_add does
        assert job.created_at == row.created_at
    # What the database derives from the rows: what search reads and the status counts.
    assert Job.objects.alias(search_text=SEARCH_TEXT).filter(search_text__contains="HELLO").count() == 5
    counted = JobCountDelta.objects.filter(status=JobStatus.QUEUED).aggregate(total=Sum("delta"))["total"]
    assert counted == 5


def test_a_model_with_a_database_assigned_key_gets_its_rows_numbered_by_the_database():
    [job] = new_jobs(1)
    sql.insert_rows(Job, [job])
    sql.insert_rows(JobAttempt, [JobAttempt(job=job, number=n, outcome=AttemptOutcome.FAILED) for n in (1, 2)])
    assert list(JobAttempt.objects.filter(job=job).values_list("number", "outcome")) == [
        (1, AttemptOutcome.FAILED),
        (2, AttemptOutcome.FAILED),
    ]


def test_an_inserted_object_saves_as_an_update_afterwards():
    rows = new_jobs(2)
    sql.insert_rows(Job, rows)
    rows[0].status = JobStatus.FINISHED
    rows[0].save()
    assert Job.objects.count() == 2
    assert Job.objects.get(id=rows[0].id).status == JobStatus.FINISHED


def test_an_error_in_the_block_leaves_no_row():
    with pytest.raises(RuntimeError), transaction.atomic(), sql.inserting(Job, new_jobs(3)):
        raise RuntimeError("the queue went away")
    assert Job.objects.count() == 0


def test_a_row_the_database_refuses_leaves_no_row():
    rows = new_jobs(3)
    duplicate = new_jobs(1)[0]
    duplicate.id = rows[1].id
    with pytest.raises(IntegrityError), transaction.atomic(), sql.inserting(Job, [*rows, duplicate]):
        pass
    assert Job.objects.count() == 0


def test_updated_rows_change_only_the_named_fields():
    rows = new_jobs(3)
    sql.insert_rows(Job, rows)
    for row in rows:
        row.progress, row.error = 50, "late"
    sql.update_rows(Job, rows[:2], ["progress"])
    assert sorted(Job.objects.values_list("progress", "error")) == [(0, ""), (50, ""), (50, "")]
