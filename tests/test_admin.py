"""The admin as the jobs control room, as an operator uses it: lists, filters, actions, pages, statistics.

Against the real test Redis and the test database; the tests marked slow start real
workers. Rows whose state a worker would have written are set through the ORM, as
the mirror would (the database triggers count and roll them up the same way).
"""

from __future__ import annotations

import re
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient
from rq.worker import Worker as RQWorker

import jobs.admin as jobs_admin
from jobs import queues, services, stats
from jobs.models import Job, JobAudit
from jobs.statuses import JobStatus
from jobs.worker import PAUSE_REFRESH, PRODUCT_WORKERS
from tests.conftest import wait_for
from tests.helpers import OPERATORS, VIEWERS, closed_port, history_row, make_user, put, redis_at

pytestmark = pytest.mark.django_db(transaction=True)

LIST = "/admin/jobs/job/"
ADD = "/admin/jobs/job/add/"
STATISTICS = "/admin/jobs/job/statistics/"
EMAIL = {"to": "ada@example.com", "subject": "Hello", "body": "..."}


def page(job: Job) -> str:
    return f"/admin/jobs/job/{job.pk}/change/"


def act_url(job: Job) -> str:
    return f"/admin/jobs/job/{job.pk}/act/"


def staff(username: str, *, groups: tuple[str, ...] = (), perms: tuple[str, ...] = ()) -> User:
    user = make_user(username, groups=groups, perms=perms)
    user.is_staff = True
    user.save()
    return user


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def operator_user() -> User:
    return staff("otto", groups=(OPERATORS,))


@pytest.fixture
def operator(operator_user: User) -> Client:
    return logged_in(operator_user)


@pytest.fixture
def viewer() -> Client:
    return logged_in(staff("vera", groups=(VIEWERS,)))


def messages_of(response: Any) -> list[str]:
    return [str(message) for message in response.context["messages"]] if response.context else []


def listed_ids(response: Any) -> set[str]:
    assert response.status_code == 200, response.content[:500]
    return {str(job.pk) for job in response.context["cl"].result_list}


def run_action(client: Client, action: str, jobs: list[Job], *, query: str = "", across: bool = False) -> Any:
    data = {"action": action, "_selected_action": [str(job.pk) for job in jobs], "index": "0"}
    if across:
        data["select_across"] = "1"
    return client.post(f"{LIST}{query}", data, follow=True)


# --- the list ---------------------------------------------------------------------------


def test_the_list_shows_status_badges_progress_bars_and_counts_from_the_counters(operator):
    running = history_row(
        JobStatus.STARTED, attempts=1, progress=40, progress_message="halfway", started_at=timezone.now()
    )
    history_row(JobStatus.FAILED, attempts=3, ended_at=timezone.now())
    services.job_enqueue(type="email", params=EMAIL)

    response = operator.get(LIST)
    assert response.status_code == 200
    html = response.content.decode()
    assert '<span class="job-badge tone-running">Started</span>' in html
    assert '<span class="job-badge tone-bad">Failed</span>' in html
    assert '<span class="job-badge tone-waiting">Queued</span>' in html
    assert 'aria-valuenow="40"' in html
    assert 'style="width: 40%"' in html
    assert "40 % · halfway" in html
    assert "3/3" in html
    assert response.context["cl"].count_label == "3"
    assert str(running.pk)[:8] in html
    # Rows are removed through the services only: Django's own bulk delete is not offered.
    actions = [value for value, _ in response.context["action_form"].fields["action"].choices]
    assert "delete_selected" not in actions
    assert {"retry_jobs", "cancel_jobs", "stop_jobs", "promote_jobs", "remove_jobs"} <= set(actions)
    assert "Create job" in html
    assert STATISTICS in html


def test_the_list_runs_the_same_queries_for_five_jobs_and_for_fifty(operator, django_assert_max_num_queries):
    for _ in range(5):
        history_row(JobStatus.FINISHED, ended_at=timezone.now(), started_at=timezone.now())
    operator.get(LIST)  # warm the session and content types
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as five:
        assert operator.get(LIST).status_code == 200
    for _ in range(45):
        history_row(JobStatus.FAILED, error="boom", ended_at=timezone.now())
    with CaptureQueriesContext(connection) as fifty:
        assert len(listed_ids(operator.get(LIST))) == 50
    assert len(fifty) == len(five)
    assert not any(
        "COUNT(*)" in query["sql"].upper() and "jobs_job" in query["sql"] for query in fifty.captured_queries
    )


def test_filters_select_by_status_type_queue_creator_period_and_search(operator, operator_user):
    failed_email = history_row(JobStatus.FAILED, type="email", queue="high", params=EMAIL, error="SMTP refused")
    mine = services.job_enqueue(type="example", params={"message": "initech invoice"}, user=operator_user)
    old = history_row(JobStatus.FINISHED, ended_at=timezone.now())
    Job.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=3))

    assert listed_ids(operator.get(LIST, {"status": "failed"})) == {str(failed_email.pk)}
    assert listed_ids(operator.get(LIST, {"type": "example"})) == {str(mine.pk), str(old.pk)}
    assert listed_ids(operator.get(LIST, {"queue": "high"})) == {str(failed_email.pk)}
    assert listed_ids(operator.get(LIST, {"created_by": str(operator_user.pk)})) == {str(mine.pk)}
    assert listed_ids(operator.get(LIST, {"created": "24h"})) == {str(failed_email.pk), str(mine.pk)}
    assert listed_ids(operator.get(LIST, {"ended": "7d"})) == {str(old.pk)}
    assert listed_ids(operator.get(LIST, {"q": "initech"})) == {str(mine.pk)}
    assert listed_ids(operator.get(LIST, {"q": "smtp refused"})) == {str(failed_email.pk)}
    assert listed_ids(operator.get(LIST, {"q": str(old.pk)})) == {str(old.pk)}
    assert listed_ids(operator.get(LIST, {"status": "nonsense"})) == set()
    # Counted from the counters where they answer, exactly:
    assert operator.get(LIST, {"status": "failed", "queue": "high"}).context["cl"].count_label == "1"


def test_a_count_the_counters_cannot_give_is_capped(operator, monkeypatch):
    monkeypatch.setattr(jobs_admin, "COUNT_CAP", 3)
    for _ in range(5):
        history_row(JobStatus.FAILED, error="database is locked")
    response = operator.get(LIST, {"q": "locked"})
    assert response.context["cl"].count_label == "3+"
    assert "counted up to 3+" in response.content.decode()


# --- actions on selected jobs ----------------------------------------------------------------


def test_retry_the_selected_jobs_says_what_it_did_and_what_it_skipped(operator):
    failed = history_row(JobStatus.FAILED, attempts=3, ended_at=timezone.now())
    finished = history_row(JobStatus.FINISHED, attempts=1, ended_at=timezone.now())

    response = run_action(operator, "retry_jobs", [failed, finished])
    said = messages_of(response)
    assert "1 retried." in said
    assert any(message.startswith("1 skipped (1 finished): only ") and "failed" in message for message in said), said
    assert Job.objects.get(pk=failed.pk).status == JobStatus.QUEUED
    assert Job.objects.get(pk=finished.pk).status == JobStatus.FINISHED
    assert queues.get_queue("default").get_job_ids() == [str(failed.pk)]


def test_cancel_promote_and_stop_the_selected_jobs(operator):
    queued = services.job_enqueue(type="example")
    scheduled = services.job_enqueue(type="example", delay_seconds=600)
    finished = history_row(JobStatus.FINISHED)

    said = messages_of(run_action(operator, "cancel_jobs", [queued, finished]))
    assert "1 canceled." in said
    assert any("1 skipped (1 finished)" in message for message in said)
    assert Job.objects.get(pk=queued.pk).status == JobStatus.CANCELED
    assert str(queued.pk) not in queues.get_queue("default").get_job_ids()

    said = messages_of(run_action(operator, "promote_jobs", [scheduled, finished]))
    assert "1 promoted." in said
    assert Job.objects.get(pk=scheduled.pk).status == JobStatus.QUEUED
    assert str(scheduled.pk) in queues.get_queue("default").get_job_ids()

    # A started job that no worker runs any more (Redis forgot it) cannot be stopped.
    lost = history_row(JobStatus.STARTED, attempts=1)
    said = messages_of(run_action(operator, "stop_jobs", [lost, finished]))
    assert "0 asked to stop." in said
    assert any("2 skipped" in message for message in said), said


def test_remove_asks_first_then_removes_through_the_services(operator):
    finished = history_row(JobStatus.FINISHED)
    queued = services.job_enqueue(type="example")
    running = history_row(JobStatus.STARTED, attempts=1)

    confirm = run_action(operator, "remove_jobs", [finished, queued, running])
    assert confirm.status_code == 200
    assert "Remove 3 jobs?" in confirm.content.decode()
    assert Job.objects.count() == 3  # nothing removed yet

    data = {
        "action": "remove_jobs",
        "_selected_action": [str(finished.pk), str(queued.pk), str(running.pk)],
        "index": "0",
        "confirmed": "yes",
    }
    said = messages_of(operator.post(LIST, data, follow=True))
    assert "2 removed." in said
    assert any("1 skipped (1 started)" in message for message in said), said
    assert list(Job.objects.values_list("pk", flat=True)) == [running.pk]
    assert queues.get_queue("default").get_job_ids() == []
    assert set(JobAudit.objects.filter(action="remove").values_list("job_id", flat=True)) == {finished.pk, queued.pk}


# --- actions on every job the filter matches -------------------------------------------------


def test_a_filter_wide_retry_acts_on_every_matching_job_on_every_page(operator, monkeypatch):
    monkeypatch.setattr(jobs_admin.JobAdmin, "list_per_page", 2)
    failed_emails = [history_row(JobStatus.FAILED, type="email", queue="high", params=EMAIL) for _ in range(5)]
    failed_example = history_row(JobStatus.FAILED)

    shown = operator.get(LIST, {"status": "failed", "type": "email"})
    assert "Select all 5 matching jobs" in shown.content.decode()
    response = run_action(operator, "retry_jobs", failed_emails[:1], query="?status=failed&type=email", across=True)
    assert "5 retried." in messages_of(response)
    assert {job.status for job in Job.objects.filter(type="email")} == {JobStatus.QUEUED}
    assert Job.objects.get(pk=failed_example.pk).status == JobStatus.FAILED
    assert len(queues.get_queue("high").get_job_ids()) == 5


def test_a_large_filter_wide_action_runs_as_a_job_with_progress(operator, operator_user, monkeypatch, processes):
    monkeypatch.setattr(jobs_admin, "INLINE_LIMIT", 2)
    failed = [history_row(JobStatus.FAILED, type="email", queue="high", params=EMAIL) for _ in range(4)]
    finished = history_row(JobStatus.FINISHED, type="email", queue="high", params=EMAIL)

    response = run_action(operator, "retry_jobs", failed[:1], query="?type=email", across=True)
    said = messages_of(response)
    assert any("being retried in the background" in message for message in said), said
    bulk = Job.objects.get(type="bulk_action")
    assert bulk.created_by_id == operator_user.pk
    assert bulk.params["action"] == "retry"
    assert bulk.params["filters"] == {"type": "email"}
    assert {job.status for job in Job.objects.filter(pk__in=[job.pk for job in failed])} == {JobStatus.FAILED}

    processes.worker("high", worker_class="jobs.worker.SimpleWorker")
    wait_for(lambda: Job.objects.get(pk=bulk.pk).status == JobStatus.FINISHED, 30, message="the bulk job to finish")
    bulk.refresh_from_db()
    assert bulk.result == {
        "action": "retry",
        "matched": 5,
        "done": 4,
        "skipped": 1,
        "skipped_by_status": {"finished": 1},
    }
    assert bulk.progress == 100
    assert bulk.progress_message == "4 retried, 1 skipped"
    audit = JobAudit.objects.filter(action="retry")
    assert set(audit.values_list("job_id", flat=True)) == {job.pk for job in failed}
    assert set(audit.values_list("username", "via")) == {("otto", "admin")}
    assert Job.objects.get(pk=finished.pk).status == JobStatus.FINISHED


# --- permissions ------------------------------------------------------------------------------


def test_a_viewer_sees_no_action_and_is_refused_every_write(viewer):
    failed = history_row(JobStatus.FAILED, ended_at=timezone.now())

    listing = viewer.get(LIST)
    assert listing.status_code == 200
    assert listing.context["action_form"] is None or not listing.context["cl"].show_admin_actions
    detail = viewer.get(page(failed))
    assert detail.status_code == 200
    assert 'name="action"' not in detail.content.decode()
    assert "Remove…" not in detail.content.decode()
    assert viewer.post(act_url(failed), {"action": "retry"}).status_code == 403
    assert viewer.get(f"/admin/jobs/job/{failed.pk}/delete/").status_code == 403
    assert viewer.get(ADD).status_code == 403
    assert viewer.post(f"{STATISTICS}queues/default/pause/").status_code == 403
    run_action(viewer, "retry_jobs", [failed])
    assert Job.objects.get(pk=failed.pk).status == JobStatus.FAILED
    assert viewer.get(STATISTICS).status_code == 200


def test_staff_without_the_view_permission_gets_403_on_the_statistics_and_actions():
    nobody = logged_in(staff("sam"))
    failed = history_row(JobStatus.FAILED)
    assert nobody.get(STATISTICS).status_code == 403
    assert nobody.post(act_url(failed), {"action": "retry"}).status_code == 403
    assert nobody.get(LIST).status_code == 403
    assert Job.objects.get(pk=failed.pk).status == JobStatus.FAILED


def test_anonymous_users_are_sent_to_log_in():
    response = Client().get(STATISTICS)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]


# --- a job's page ------------------------------------------------------------------------------


def test_a_jobs_page_shows_params_result_error_timeline_and_only_the_allowed_buttons(operator):
    now = timezone.now()
    job = history_row(
        JobStatus.FAILED,
        params={"message": "<script>alert(1)</script>"},
        attempts=2,
        error="RuntimeError: <b>boom</b>",
        traceback="Traceback (most recent call last):\n  ...\nRuntimeError: <b>boom</b>",
        started_at=now - timedelta(seconds=3),
        ended_at=now,
    )
    job.attempt_set.create(
        number=1,
        outcome="failed",
        started_at=now - timedelta(seconds=20),
        ended_at=now - timedelta(seconds=18),
        retry_at=now - timedelta(seconds=4),
        error="RuntimeError: first",
        worker_name="w1",
    )
    job.attempt_set.create(
        number=2,
        outcome="failed",
        started_at=now - timedelta(seconds=3),
        ended_at=now,
        error="RuntimeError: <b>boom</b>",
        worker_name="w2",
    )

    response = operator.get(page(job))
    assert response.status_code == 200
    html = response.content.decode()
    assert "&quot;message&quot;: &quot;&lt;script&gt;alert(1)&lt;/script&gt;&quot;" in html
    assert "<script>alert(1)" not in html
    assert "RuntimeError: &lt;b&gt;boom&lt;/b&gt;" in html
    assert "Traceback (most recent call last)" in html
    timeline = re.search(r'<table class="job-table" id="job-timeline">(.*?)</table>', html, re.S)
    assert timeline is not None
    assert timeline.group(1).count("<tr>") == 3  # a header and two attempts
    assert "14.0 s" in timeline.group(1)  # the wait before the retry
    assert "2.0 s" in timeline.group(1)  # the first attempt's run time
    buttons = re.findall(r'name="action" value="(\w+)"', html)
    assert buttons == ["retry"]
    assert f"/admin/jobs/job/{job.pk}/delete/" in html  # "Remove…", which asks first


def test_a_report_jobs_page_links_its_download(operator):
    job = history_row(JobStatus.FINISHED, type="report", result={"rows": 2, "download_url": "/reports/x.csv"})
    assert 'href="/reports/x.csv"' in operator.get(page(job)).content.decode()


def test_a_running_jobs_page_refreshes_its_progress_and_the_partial_has_it(operator):
    job = history_row(JobStatus.STARTED, attempts=1, progress=70, progress_message="step 7 of 10")
    html = operator.get(page(job)).content.decode()
    assert 'hx-trigger="every 2s"' in html
    partial = operator.get(page(job), HTTP_HX_REQUEST="true")
    assert partial.status_code == 200
    body = partial.content.decode()
    assert body.lstrip().startswith('<div id="job-live"')
    assert "70 % · step 7 of 10" in body
    assert re.findall(r'name="action" value="(\w+)"', body) == ["stop"]


def test_acting_from_a_jobs_page_and_its_answers(operator):
    failed = history_row(JobStatus.FAILED, ended_at=timezone.now())
    response = operator.post(act_url(failed), {"action": "retry"}, follow=True)
    assert f"Job {str(failed.pk)[:8]} retried." in messages_of(response)
    assert Job.objects.get(pk=failed.pk).status == JobStatus.QUEUED
    response = operator.post(act_url(failed), {"action": "retry"}, follow=True)
    assert any(message.startswith("Not done: cannot retry a job that is queued") for message in messages_of(response))
    assert operator.post(act_url(failed), {"action": "explode"}).status_code == 400
    assert operator.post(f"/admin/jobs/job/{uuid.uuid4()}/act/", {"action": "retry"}).status_code == 404

    confirm = operator.get(f"/admin/jobs/job/{failed.pk}/delete/")
    assert "Remove job" in confirm.content.decode()
    removed = operator.post(f"/admin/jobs/job/{failed.pk}/delete/", {"action": "remove"})
    assert removed.status_code == 302
    assert not Job.objects.filter(pk=failed.pk).exists()
    assert queues.get_queue("default").get_job_ids() == []


def test_an_action_while_redis_is_down_does_nothing_and_says_so(operator):
    failed = history_row(JobStatus.FAILED, ended_at=timezone.now())
    with redis_at(closed_port()):
        response = operator.post(act_url(failed), {"action": "retry"}, follow=True)
    assert any("unavailable" in message for message in messages_of(response))
    assert Job.objects.get(pk=failed.pk).status == JobStatus.FAILED
    assert not JobAudit.objects.exists()


def test_the_audit_trail_of_a_job_acted_on_from_the_admin_and_the_api(operator, operator_user):
    job = history_row(JobStatus.FAILED, ended_at=timezone.now())
    operator.post(act_url(job), {"action": "retry"})
    put(job, JobStatus.FAILED, ended_at=timezone.now())
    api_user = make_user("api-ann", groups=(OPERATORS,))
    api = APIClient()
    api.force_authenticate(api_user)
    assert api.post(f"/api/jobs/{job.pk}/action", {"action": "retry"}, format="json").status_code == 200

    entries = list(JobAudit.objects.filter(job_id=job.pk).order_by("at"))
    assert [(e.action, e.username, e.via, e.status_before) for e in entries] == [
        ("retry", "otto", "admin", "failed"),
        ("retry", "api-ann", "api", "failed"),
    ]
    history = operator.get(f"/admin/jobs/job/{job.pk}/history/")
    assert history.status_code == 200
    rows = re.findall(
        r"<tr><td><time[^>]*>[^<]*</time></td><td>(\w+)</td><td>([\w-]+)</td><td>([\w ]+)</td>",
        history.content.decode(),
    )
    assert rows == [("retry", "api-ann", "API"), ("retry", "otto", "Admin")]
    assert "api-ann" in operator.get(page(job)).content.decode()
    # The trail outlives the job.
    put(job, JobStatus.FAILED)
    operator.post(f"/admin/jobs/job/{job.pk}/delete/", {"action": "remove"})
    assert JobAudit.objects.filter(job_id=job.pk).count() == 3
    assert operator.get("/admin/jobs/jobaudit/").status_code == 200


# --- create job ------------------------------------------------------------------------------------


def test_create_job_builds_its_form_from_the_types_schema(operator):
    example = operator.get(ADD)
    assert example.status_code == 200
    html = example.content.decode()
    assert 'name="param_duration"' in html
    assert 'name="param_fail"' in html
    email = operator.get(ADD, {"type": "email"}, HTTP_HX_REQUEST="true")
    assert email.status_code == 200
    body = email.content.decode()
    assert body.lstrip().startswith('<form method="post"')
    for name in ("param_to", "param_subject", "param_body", "param_from_email"):
        assert f'name="{name}"' in body


def test_create_job_shows_field_errors_and_creates_nothing(operator):
    response = operator.post(
        ADD, {"type": "email", "param_to": "not-an-address", "param_subject": "", "param_body": "x"}
    )
    assert response.status_code == 400
    form = response.context["form"]
    assert "param_to" in form.errors
    assert "param_subject" in form.errors
    assert not Job.objects.exists()
    response = operator.post(
        ADD, {"type": "example", "param_duration": "-1", "delay_seconds": "5", "run_at": "2030-01-01T10:00"}
    )
    assert response.status_code == 400
    assert "param_duration" in response.context["form"].errors
    assert not Job.objects.exists()


def test_create_job_creates_it_and_opens_its_page(operator, operator_user):
    response = operator.post(
        ADD,
        {
            "type": "email",
            "param_to": "ada@example.com",
            "param_subject": "Hi",
            "param_body": "Hello",
            "queue": "low",
            "delay_seconds": "60",
        },
    )
    job = Job.objects.get()
    assert response.status_code == 302
    assert response["Location"] == page(job)
    assert job.type == "email"
    assert job.params["to"] == ["ada@example.com"]
    assert job.queue == "low"
    assert job.status == JobStatus.SCHEDULED
    assert job.created_by_id == operator_user.pk
    example = operator.post(ADD, {"type": "example", "param_duration": "0.5", "param_fail": "on"})
    assert example.status_code == 302
    created = Job.objects.get(type="example")
    assert created.params == {"duration": 0.5, "steps": 10, "fail": True, "message": ""}
    assert str(created.pk) in queues.get_queue("default").get_job_ids()


def test_create_job_while_redis_is_down_is_a_503_with_nothing_written(operator):
    with redis_at(closed_port()):
        response = operator.post(ADD, {"type": "example"})
    assert response.status_code == 503
    assert "unavailable" in response.content.decode()
    assert not Job.objects.exists()


# --- statistics ---------------------------------------------------------------------------------------


def ended_job(status: str, *, type: str, queue: str, ran: float, waited: float, ago: timedelta = timedelta(0)) -> Job:
    end = timezone.now() - ago
    start = end - timedelta(seconds=ran)
    return history_row(
        status,
        type=type,
        queue=queue,
        params=EMAIL if type == "email" else {},
        attempts=1,
        enqueued_at=start - timedelta(seconds=waited),
        started_at=start,
        ended_at=end,
    )


@pytest.fixture
def known_jobs() -> dict[str, Any]:
    """Every status, two queues, two types, known run and wait times."""
    for _ in range(3):
        ended_job(JobStatus.FINISHED, type="example", queue="default", ran=2.0, waited=0.5)
    ended_job(JobStatus.FAILED, type="example", queue="default", ran=2.0, waited=0.5)
    ended_job(JobStatus.FINISHED, type="email", queue="high", ran=0.2, waited=0.1)
    for _ in range(2):
        ended_job(JobStatus.FAILED, type="email", queue="high", ran=0.2, waited=0.1)
    ended_job(JobStatus.FINISHED, type="example", queue="default", ran=1.0, waited=1.0, ago=timedelta(days=3))
    for status in (
        JobStatus.PENDING,
        JobStatus.DEFERRED,
        JobStatus.STARTED,
        JobStatus.STOPPED,
        JobStatus.CANCELED,
        JobStatus.ABANDONED,
        JobStatus.LOST,
    ):
        history_row(status, queue="high", type="email", params=EMAIL)
    services.job_enqueue(type="example")
    services.job_enqueue(type="example", delay_seconds=600)
    return {}


@pytest.mark.parametrize("folded", [False, True], ids=["before folding", "after folding"])
def test_the_statistics_view_numbers_match_a_known_set_of_jobs(viewer, known_jobs, folded):
    if folded:
        stats.fold()
    response = viewer.get(STATISTICS)
    assert response.status_code == 200
    context = response.context
    rows = {
        row["name"]: dict(zip(context["stats"]["statuses"], [v for v, _ in row["cells"]], strict=True))
        for row in context["count_rows"]
    }
    assert {k: v for k, v in rows["default"].items() if v} == {"finished": 4, "failed": 1, "queued": 1, "scheduled": 1}
    assert {k: v for k, v in rows["high"].items() if v} == {
        "finished": 1,
        "failed": 2,
        "pending": 1,
        "deferred": 1,
        "started": 1,
        "stopped": 1,
        "canceled": 1,
        "abandoned": 1,
        "lost": 1,
    }
    assert context["grand_total"] == 17
    per_type = {entry["type"]: entry for entry in context["per_type"]}
    assert per_type["example"]["runs"] == 4
    assert per_type["example"]["failed"] == 1
    assert per_type["example"]["failure_pct"] == "25.0%"
    assert per_type["example"]["run_ms_p50"] == pytest.approx(2000, rel=0.09)
    assert per_type["example"]["wait_ms_p95"] == pytest.approx(500, rel=0.09)
    assert per_type["email"]["runs"] == 3
    assert per_type["email"]["failure_pct"] == "66.7%"
    assert per_type["email"]["run_ms_p95"] == pytest.approx(200, rel=0.09)
    assert [entry["type"] for entry in context["slowest"]] == ["example", "email"]
    assert [entry["type"] for entry in context["most_failing"]] == ["email", "example"]
    assert context["minute_chart"].total_processed == 7
    assert context["minute_chart"].total_failed == 3
    assert context["hour_chart"].total_processed == 8  # the job of three days ago too
    html = response.content.decode()
    assert '<svg class="job-chart"' in html
    assert "Jobs processed per minute, last hour: 7 processed, 3 failed." in html
    assert f'href="{LIST}?queue=high&amp;status=failed">2</a>' in html


def test_the_statistics_partial_refreshes_itself(viewer):
    response = viewer.get(STATISTICS, HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    body = response.content.decode()
    assert body.lstrip().startswith('<div id="job-statistics"')
    assert 'hx-trigger="every 5s"' in body
    assert "<html" not in body


def test_the_admin_index_links_the_statistics(viewer):
    assert STATISTICS in viewer.get("/admin/").content.decode()


# --- queue health ---------------------------------------------------------------------------------------


def register_worker(name: str, queue_names: list[str], *, product: bool) -> None:
    worker = RQWorker([queues.get_queue(q) for q in queue_names], name=name, connection=queues.new_redis())
    worker.register_birth()
    if product:
        queues.redis().sadd(PRODUCT_WORKERS, name)


def warning_codes(client: Client) -> list[str]:
    return [warning["code"] for warning in client.get(STATISTICS).context["warnings"]]


def test_queue_health_warns_of_a_queue_with_work_and_no_worker(viewer):
    services.job_enqueue(type="example", queue="low")
    warnings = viewer.get(STATISTICS).context["warnings"]
    no_worker = [warning for warning in warnings if warning["code"] == "no_worker"]
    assert [warning["queue"] for warning in no_worker] == ["low"]
    assert "Queue low has 1 waiting jobs and no worker listening to it." in viewer.get(STATISTICS).content.decode()
    assert "no_scheduler" in warning_codes(viewer)


def test_queue_health_warns_of_a_stale_worker_and_the_api_says_the_same(viewer):
    register_worker("gone-worker", ["default"], product=True)  # registered, but its liveness key is gone
    services.job_enqueue(type="example")
    context = viewer.get(STATISTICS).context
    assert [w["name"] for w in context["workers"] if w["stale"]] == ["gone-worker"]
    codes = [warning["code"] for warning in context["warnings"]]
    assert "stale_worker" in codes
    assert "no_worker" in codes  # a stale worker does not count as listening
    api = APIClient()
    api.force_authenticate(User.objects.get(username="vera"))
    body = api.get("/api/jobs/stats").json()
    assert {warning["code"] for warning in body["health"]["warnings"]} >= {"stale_worker", "no_worker"}
    assert body["health"]["workers"][0]["stale"] is True


def test_queue_health_warns_of_a_failure_spike(viewer):
    for _ in range(40):
        ended_job(JobStatus.FINISHED, type="example", queue="default", ran=0.1, waited=0.1, ago=timedelta(hours=5))
    assert "failure_spike" not in warning_codes(viewer)
    for _ in range(6):
        ended_job(JobStatus.FAILED, type="example", queue="default", ran=0.1, waited=0.1)
    ended_job(JobStatus.FINISHED, type="example", queue="default", ran=0.1, waited=0.1)
    assert "failure_spike" in warning_codes(viewer)


@pytest.mark.slow
def test_pause_and_resume_a_queue_from_the_statistics_view_with_a_real_worker(operator, processes):
    processes.worker("default", worker_class="jobs.worker.SimpleWorker")
    context = operator.get(STATISTICS).context
    assert {worker["stale"] for worker in context["workers"]} == {False}
    assert "no_worker" not in [warning["code"] for warning in context["warnings"]]

    response = operator.post(f"{STATISTICS}queues/default/pause/", follow=True)
    assert "Queue default paused: workers take no new job from it." in messages_of(response)
    time.sleep(PAUSE_REFRESH + 0.5)  # workers see a pause within about a second
    job = services.job_enqueue(type="example", params={"duration": 0})
    html = operator.get(STATISTICS).content.decode()
    assert "Paused" in html
    assert ">Resume</button>" in html
    with pytest.raises(pytest.fail.Exception):
        wait_for(lambda: Job.objects.get(pk=job.pk).status != JobStatus.QUEUED, 3)

    response = operator.post(f"{STATISTICS}queues/default/resume/", follow=True)
    assert "Queue default resumed." in messages_of(response)
    wait_for(lambda: Job.objects.get(pk=job.pk).status == JobStatus.FINISHED, 20, message="the job to run after resume")
