"""The Jobs page's views as a browser (and htmx) calls them: pages, partials, actions, permissions, escaping."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from jobs import queues, services
from jobs.models import Job, JobAudit
from jobs.statuses import JobStatus
from tests.helpers import OPERATORS, VIEWERS, closed_port, history_row, make_user, redis_at

pytestmark = pytest.mark.django_db(transaction=True)

PAGE = "/jobs/"
HX: dict[str, Any] = {"HTTP_HX_REQUEST": "true"}
SCRIPT = "<script>alert(1)</script>"


def logged_in(user: User) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def operator() -> Client:
    return logged_in(make_user("otto", groups=(OPERATORS,)))


@pytest.fixture
def viewer() -> Client:
    return logged_in(make_user("vera", groups=(VIEWERS,)))


def act(client: Client, job: Job, action: str) -> Any:
    return client.post(f"/jobs/{job.pk}/act/", {"action": action}, **HX)


def buttons(html: str, job: Job) -> list[str]:
    cell = re.search(rf'<td id="job-{job.pk}-actions"[^>]*>(.*?)</td>', html, re.S)
    assert cell is not None, f"no actions cell for {job.pk}"
    return re.findall(r">(Retry|Cancel|Stop|Promote|Remove)</button>", cell.group(1))


def test_home_sends_users_to_the_page_and_others_to_log_in(operator):
    anonymous = Client().get("/")
    assert anonymous.status_code == 302
    assert anonymous["Location"] == "/accounts/login/?next=%2Fjobs%2F"
    assert operator.get("/")["Location"] == PAGE
    login = Client().get("/accounts/login/?next=/jobs/")
    assert login.status_code == 200
    assert 'name="username"' in login.content.decode()


def test_a_non_staff_viewer_logs_in_through_the_pages_own_login():
    make_user("vera", groups=(VIEWERS,))
    client = Client()
    response = client.post("/accounts/login/", {"username": "vera", "password": "vera-password", "next": PAGE})
    assert response.status_code == 302
    assert response["Location"] == PAGE
    assert client.get(PAGE).status_code == 200


def test_the_page_lists_jobs_newest_first_with_badges_progress_and_cards(operator):
    old = history_row(JobStatus.FINISHED, ended_at=timezone.now(), started_at=timezone.now())
    running = history_row(JobStatus.STARTED, attempts=1, progress=30, progress_message="step 3 of 10")
    new = services.job_enqueue(type="email", params={"to": "a@b.co", "subject": "s", "body": "b"})
    response = operator.get(PAGE)
    assert response.status_code == 200
    html = response.content.decode()
    order = [match.group(1) for match in re.finditer(r'<tr id="job-([0-9a-f-]{36})"', html)]
    assert order == [str(new.pk), str(running.pk), str(old.pk)]
    assert '<span class="job-badge tone-running">Started</span>' in html
    assert 'aria-valuenow="30"' in html
    assert "30 % · step 3 of 10" in html
    assert 'id="job-cards"' in html
    assert 'id="create-test-job"' in html
    assert 'data-live-url="/jobs/events/?since=' in html
    assert buttons(html, new) == ["Cancel", "Remove"]
    assert buttons(html, running) == ["Stop"]
    assert buttons(html, old) == ["Remove"]


def test_filters_and_search_and_an_empty_state(operator):
    failed = history_row(
        JobStatus.FAILED,
        error="ConnectionRefusedError: smtp down",
        type="email",
        params={"to": "a@b.co", "subject": "s", "body": ""},
        queue="high",
    )
    history_row(JobStatus.FINISHED)
    rows = operator.get(PAGE, {"status": "failed", "part": "rows"}, **HX)
    assert rows.status_code == 200
    body = rows.content.decode()
    assert body.lstrip().startswith('<div id="job-list-body">')
    assert re.findall(r'<tr id="job-([0-9a-f-]{36})"', body) == [str(failed.pk)]
    assert re.findall(r'<tr id="job-([0-9a-f-]{36})"', operator.get(PAGE, {"q": "smtp down"}).content.decode()) == [
        str(failed.pk)
    ]
    assert re.findall(r'<tr id="job-([0-9a-f-]{36})"', operator.get(PAGE, {"queue": "high"}).content.decode()) == [
        str(failed.pk)
    ]
    empty = operator.get(PAGE, {"type": "report"}).content.decode()
    assert "No job matches these filters." in empty


def test_pages_follow_the_cursor_and_a_bad_cursor_is_a_400(operator, monkeypatch):
    import jobs.pages

    monkeypatch.setattr(jobs.pages, "PAGE_SIZE", 2)
    made = [history_row(JobStatus.FINISHED) for _ in range(5)]
    newest_first = [str(job.pk) for job in sorted(made, key=lambda job: (job.created_at, job.pk), reverse=True)]
    seen: list[str] = []
    url = PAGE
    while url:
        html = operator.get(url).content.decode()
        seen += re.findall(r'<tr id="job-([0-9a-f-]{36})"', html)
        found = re.search(r'href="(\?[^"]*cursor=[^"]+)" class="button">Older', html)
        url = PAGE + found.group(1).replace("&amp;", "&") if found else ""
    assert seen == newest_first
    bad = operator.get(PAGE, {"cursor": "garbage"})
    assert bad.status_code == 400
    assert "invalid cursor" in bad.content.decode()


def test_the_cards_partial(operator):
    services.job_enqueue(type="example", queue="low")
    response = operator.get("/jobs/cards/", **HX)
    assert response.status_code == 200
    html = response.content.decode()
    assert html.lstrip().startswith('<section id="job-cards"')
    assert "Queue low has 1 waiting jobs and no worker listening to it." in html
    assert 'id="card-queued">1<' in html


def test_create_a_test_job_in_one_click_and_a_job_of_any_type(operator):
    one_click = operator.post("/jobs/create/", {"type": "example"}, **HX)
    assert one_click.status_code == 201
    job = Job.objects.get()
    assert job.params == {"duration": 5.0, "steps": 10, "fail": False, "message": ""}
    assert queues.get_queue("default").get_job_ids() == [str(job.pk)]
    assert f"/jobs/{job.pk}/" in one_click.content.decode()

    form = operator.get("/jobs/form/", {"type": "email"}, **HX)
    assert 'name="param_subject"' in form.content.decode()
    refused = operator.post("/jobs/create/", {"type": "email", "param_to": "nope", "param_body": "x"}, **HX)
    assert refused.status_code == 400
    html = refused.content.decode()
    assert 'id="id_param_to_errors"' in html
    assert 'id="id_param_subject_errors"' in html
    assert Job.objects.count() == 1

    delayed = operator.post("/jobs/create/", {"type": "report", "delay_seconds": "60", "queue": "low"}, **HX)
    assert delayed.status_code == 201
    report = Job.objects.get(type="report")
    assert report.status == JobStatus.SCHEDULED
    assert report.queue == "low"


def test_create_while_redis_is_down_is_a_503_with_nothing_written(operator):
    with redis_at(closed_port()):
        response = operator.post("/jobs/create/", {"type": "example"}, **HX)
    assert response.status_code == 503
    assert "unavailable" in response.content.decode()
    assert not Job.objects.exists()


def test_actions_answer_with_their_result_and_the_new_cells(operator):
    failed = history_row(JobStatus.FAILED, attempts=3, ended_at=timezone.now())
    retried = act(operator, failed, "retry")
    assert retried.status_code == 200
    html = retried.content.decode()
    assert f"Job {str(failed.pk)[:8]} retried." in html
    assert f'<td id="job-{failed.pk}-status" hx-swap-oob="true"' in html
    assert 'tone-waiting">Queued<' in html
    assert Job.objects.get(pk=failed.pk).status == JobStatus.QUEUED
    assert JobAudit.objects.get(job_id=failed.pk).via == "page"

    again = act(operator, failed, "retry")
    assert again.status_code == 409
    assert "was not changed: cannot retry a job that is queued" in again.content.decode()

    assert act(operator, failed, "cancel").status_code == 200
    removed = act(operator, failed, "remove")
    assert removed.status_code == 200
    assert f'<tr id="job-{failed.pk}" hx-swap-oob="delete">' in removed.content.decode()
    assert not Job.objects.filter(pk=failed.pk).exists()

    assert operator.post(f"/jobs/{uuid.uuid4()}/act/", {"action": "retry"}, **HX).status_code == 404
    assert operator.post(f"/jobs/{uuid.uuid4()}/act/", {"action": "explode"}, **HX).status_code == 400


def test_an_action_while_redis_is_down_is_a_503(operator):
    failed = history_row(JobStatus.FAILED, ended_at=timezone.now())
    with redis_at(closed_port()):
        response = act(operator, failed, "retry")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert Job.objects.get(pk=failed.pk).status == JobStatus.FAILED


def test_a_viewer_sees_no_action_and_is_refused_every_write(viewer):
    failed = history_row(JobStatus.FAILED, ended_at=timezone.now())
    html = viewer.get(PAGE).content.decode()
    assert buttons(html, failed) == []
    assert 'id="create-test-job"' not in html
    refused = act(viewer, failed, "retry")
    assert refused.status_code == 403
    assert "You may not retry jobs." in refused.content.decode()
    assert viewer.post("/jobs/create/", {"type": "example"}, **HX).status_code == 403
    assert Job.objects.get(pk=failed.pk).status == JobStatus.FAILED
    assert not JobAudit.objects.exists()
    detail = viewer.get(f"/jobs/{failed.pk}/").content.decode()
    assert buttons(detail, failed) == []


def test_users_without_the_view_permission_are_refused():
    nobody = logged_in(make_user("sam"))
    assert nobody.get(PAGE).status_code == 403
    assert nobody.get("/jobs/cards/").status_code == 403
    assert nobody.get(f"/jobs/{uuid.uuid4()}/").status_code == 403
    assert Client().get(PAGE)["Location"].startswith("/accounts/login/")


def test_script_in_params_results_and_errors_is_escaped(operator):
    job = history_row(
        JobStatus.FAILED,
        params={"message": SCRIPT},
        error=f"ValueError: {SCRIPT}",
        traceback=f"Traceback ...\nValueError: {SCRIPT}",
        result={"note": SCRIPT},
        ended_at=timezone.now(),
    )
    history_row(JobStatus.STARTED, attempts=1, progress=10, progress_message=SCRIPT)
    for url in (PAGE, f"/jobs/{job.pk}/"):
        html = operator.get(url).content.decode()
        assert "<script>alert" not in html, url
    detail = operator.get(f"/jobs/{job.pk}/").content.decode()
    assert "ValueError: &lt;script&gt;alert(1)&lt;/script&gt;" in detail
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in operator.get(PAGE).content.decode()


def test_a_jobs_own_page_shows_everything_and_is_live(operator):
    job = history_row(
        JobStatus.FINISHED, type="report", result={"rows": 1, "download_url": "/reports/x.csv"}, attempts=1
    )
    job.attempt_set.create(number=1, outcome="finished", worker_name="w1")
    html = operator.get(f"/jobs/{job.pk}/").content.decode()
    assert 'href="/reports/x.csv"' in html
    assert 'id="job-timeline"' in html
    assert "Audit trail" in html
    assert 'data-live-url="/jobs/events/?since=' in html
    assert operator.get(f"/jobs/{uuid.uuid4()}/").status_code == 404


def test_the_live_feed_refuses_anonymous_users_and_users_without_permission():
    assert Client().get("/jobs/events/").status_code == 401
    assert logged_in(make_user("sam")).get("/jobs/events/").status_code == 403


def test_the_browsable_api_names_its_pages_as_a_person_would(operator):
    for url, title in (
        ("/api/jobs/", "Jobs"),
        ("/api/jobs/stats/", "Job statistics"),
        ("/api/jobs/types/", "Job types"),
    ):
        html = operator.get(url, HTTP_ACCEPT="text/html").content.decode()
        assert f"<h1>{title}</h1>" in html, url
    job = services.job_enqueue(type="example")
    assert "<h1>Job</h1>" in operator.get(f"/api/jobs/{job.pk}/", HTTP_ACCEPT="text/html").content.decode()
