"""The REST API as its users see it: status codes, bodies and headers, and what exists afterwards.

Every test runs against the real test Redis and the test database; the tests marked
slow start real `manage.py rqworker` / `runscheduler` processes. Rows whose state a
worker would have written are set through the ORM, as the mirror would (the database
triggers count those status changes exactly as they count the mirror's).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.contrib.staticfiles import finders
from django.db import connections
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rq.registry import ScheduledJobRegistry

from jobs import queues, registry, services, stats
from jobs.api import serializers as s
from jobs.api.throttling import JobWriteThrottle
from jobs.models import Job, JobCountDelta
from jobs.services import JobRequest
from jobs.statuses import JobStatus
from jobs.worker import PAUSE_REFRESH
from tests.conftest import SilentServer, wait_for
from tests.helpers import (
    OPERATORS,
    VIEWERS,
    closed_port,
    history_row,
    make_user,
    one_job_in_each_state,
    put,
    redis_at,
)

pytestmark = pytest.mark.django_db(transaction=True)

JOBS = "/api/jobs"
STATS = "/api/jobs/stats"
TYPES = "/api/jobs/types"
BULK = "/api/jobs/actions"
QUEUES = "/api/queues"
TOKEN = "/api/auth/token/"
STATUSES = [status.value for status in JobStatus]


# --- helpers ----------------------------------------------------------------------------


def detail(job_id: Any) -> str:
    return f"{JOBS}/{job_id}"


def action(job_id: Any) -> str:
    return f"{JOBS}/{job_id}/action"


def client_for(user: User) -> APIClient:
    """A client that authenticates as an API user would: `Authorization: Token <key>`."""
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def call(client: APIClient, method: str, url: str, data: Any = None) -> Any:
    if method == "get":
        return client.get(url, data)
    return client.post(url, data, format="json")


def error(response: Any, status: int) -> dict[str, Any]:
    """The JSON error body of a response that must have `status`."""
    assert response.status_code == status, (response.status_code, response.content[:500])
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    body = response.json()
    assert isinstance(body.get("detail"), str), body
    assert body["detail"], body
    return body


def field_errors(response: Any) -> dict[str, list[str]]:
    """The field errors of a 400 answer."""
    body = error(response, 400)
    assert isinstance(body.get("errors"), dict), body
    assert body["errors"], body
    return body["errors"]


def ids(response: Any) -> list[str]:
    assert response.status_code == 200, response.content[:500]
    return [job["id"] for job in response.json()["results"]]


def scheduled_ids(queue: str = "default") -> list[str]:
    return ScheduledJobRegistry(queue=queues.get_queue(queue)).get_job_ids()


# --- fixtures ---------------------------------------------------------------------------


@pytest.fixture
def viewer_user() -> User:
    return make_user("vera", groups=(VIEWERS,))


@pytest.fixture
def operator_user() -> User:
    return make_user("otto", groups=(OPERATORS,))


@pytest.fixture
def viewer(viewer_user: User) -> APIClient:
    return client_for(viewer_user)


@pytest.fixture
def operator(operator_user: User) -> APIClient:
    return client_for(operator_user)


@pytest.fixture
def stranger() -> APIClient:
    """Logged in, with no permission on jobs."""
    return client_for(make_user("sam"))


@pytest.fixture
def jobs_in_states(operator_user: User) -> SimpleNamespace:
    return one_job_in_each_state(operator_user)


@pytest.fixture
def silent_redis() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


# --- creating jobs ------------------------------------------------------------------------


def test_it_creates_an_example_job_from_an_empty_body(operator, operator_user):
    response = operator.post(JOBS)
    assert response.status_code == 201, response.content
    job = response.json()
    assert job["type"] == "example"
    assert job["status"] == "queued"
    assert job["queue"] == "default"
    assert job["params"] == {"duration": 5.0, "steps": 10, "fail": False, "message": ""}
    assert job["created_by"] == operator_user.id
    assert job["url"] == detail(job["id"])
    row = Job.objects.get(pk=job["id"])
    assert row.status == JobStatus.QUEUED
    assert row.created_by == operator_user
    assert queues.get_queue("default").get_job_ids() == [job["id"]]


def test_it_creates_a_job_of_the_type_asked_with_its_params_on_its_queue_or_the_one_asked(operator):
    email = operator.post(
        JOBS, {"type": "email", "params": {"to": "ada@example.com", "subject": "Hi", "body": "Hello"}}, format="json"
    )
    assert email.status_code == 201, email.content
    assert email.json()["type"] == "email"
    assert email.json()["queue"] == "high"
    assert email.json()["params"]["to"] == ["ada@example.com"]
    low = operator.post(JOBS, {"type": "example", "params": {"duration": 1}, "queue": "low"}, format="json")
    assert low.status_code == 201, low.content
    assert low.json()["queue"] == "low"
    assert low.json()["params"]["duration"] == 1.0
    assert queues.get_queue("high").get_job_ids() == [email.json()["id"]]
    assert queues.get_queue("low").get_job_ids() == [low.json()["id"]]


def test_a_job_created_with_delay_seconds_or_run_at_waits_in_the_schedule(operator):
    before = timezone.now()
    delayed = operator.post(JOBS, {"delay_seconds": 120}, format="json")
    assert delayed.status_code == 201, delayed.content
    assert delayed.json()["status"] == "scheduled"
    due = datetime.fromisoformat(delayed.json()["scheduled_for"])
    assert before + timedelta(seconds=119) <= due <= timezone.now() + timedelta(seconds=120)

    run_at = (timezone.now() + timedelta(hours=2)).replace(microsecond=0)
    timed = operator.post(JOBS, {"run_at": run_at.isoformat()}, format="json")
    assert timed.status_code == 201, timed.content
    assert timed.json()["status"] == "scheduled"
    assert datetime.fromisoformat(timed.json()["scheduled_for"]) == run_at

    assert queues.get_queue("default").count == 0
    assert set(scheduled_ids()) == {delayed.json()["id"], timed.json()["id"]}


def test_a_json_list_creates_every_job_in_it(operator):
    response = operator.post(
        JOBS,
        [
            {},
            {"type": "example", "queue": "low"},
            {"type": "email", "params": {"to": "a@b.co", "subject": "s", "body": ""}},
        ],
        format="json",
    )
    assert response.status_code == 201, response.content
    created = response.json()
    assert [job["queue"] for job in created] == ["default", "low", "high"]
    assert Job.objects.count() == 3
    assert {str(pk) for pk in Job.objects.values_list("id", flat=True)} == {job["id"] for job in created}
    for job in created:
        assert queues.get_queue(job["queue"]).get_job_ids() == [job["id"]]


def test_a_json_list_answers_each_job_as_its_declared_fields_render_it(operator):
    response = operator.post(JOBS, [{}, {"queue": "low", "delay_seconds": 60}], format="json")
    assert response.status_code == 201, response.content
    answered = response.json()
    jobs = [Job.objects.get(id=job["id"]) for job in answered]
    # DRF's own field-by-field rendering of JobCreatedSerializer, which the view writes out by hand.
    generic = super(s.JobCreatedSerializer, s.JobCreatedSerializer())
    assert answered == [json.loads(json.dumps(generic.to_representation(job))) for job in jobs]
    assert answered[0]["url"].endswith(f"/api/jobs/{answered[0]['id']}")
    assert answered[1]["status"] == "scheduled"
    assert answered[1]["scheduled_for"] is not None


def test_a_json_list_with_one_bad_job_creates_none_of_them(operator):
    response = operator.post(JOBS, [{}, {"params": {"duration": "soon"}}, {}], format="json")
    errors = field_errors(response)
    assert any(key.startswith("1.") and "duration" in key for key in errors), errors
    assert Job.objects.count() == 0
    assert queues.redis().keys("rq:job:*") == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"type": "os.system"}, "type"),
        ({"type": "example", "params": {"duration": -1}}, "params.duration"),
        ({"type": "example", "params": {"duration": "soon"}}, "params.duration"),
        ({"type": "example", "params": [1, 2]}, "params"),
        ({"type": "email", "params": {"to": "not-an-address", "subject": "s", "body": "b"}}, "params.to"),
        ({"type": "email", "params": {"to": "a@example.com", "body": "b"}}, "params.subject"),
        ({"queue": "urgent"}, "queue"),
        ({"delay_seconds": -5}, "delay_seconds"),
        ({"delay_seconds": 5, "run_at": "2030-01-01T00:00:00Z"}, "delay_seconds"),
        ({"run_at": "tomorrow"}, "run_at"),
    ],
)
def test_it_refuses_an_unknown_type_or_bad_params_with_field_errors_and_creates_nothing(operator, body, field):
    errors = field_errors(operator.post(JOBS, body, format="json"))
    assert field in errors, errors
    assert all(isinstance(message, str) for messages in errors.values() for message in messages)
    assert Job.objects.count() == 0
    assert queues.redis().keys("rq:job:*") == []


def test_it_refuses_params_over_64_kib_and_takes_them_just_under(operator):
    assert registry.MAX_PARAMS_BYTES == 64 * 1024
    base = {"to": "ada@example.com", "subject": "Big", "body": ""}
    # The e-mail type takes a body of up to 100,000 characters: only the size limit stands in the way.
    over = {**base, "body": "x" * (registry.MAX_PARAMS_BYTES + 1)}
    under = {**base, "body": "x" * (registry.MAX_PARAMS_BYTES - len(json.dumps(base)) - 16)}

    errors = field_errors(operator.post(JOBS, {"type": "email", "params": over}, format="json"))
    assert "params" in errors, errors
    assert str(registry.MAX_PARAMS_BYTES) in " ".join(errors["params"])
    assert Job.objects.count() == 0
    assert queues.redis().keys("rq:job:*") == []

    response = operator.post(JOBS, {"type": "email", "params": under}, format="json")
    assert response.status_code == 201, response.content[:300]
    assert len(Job.objects.get().params["body"]) == len(under["body"])


def test_it_refuses_more_jobs_in_one_request_than_the_bulk_limit(operator):
    response = operator.post(JOBS, [{}] * (services.MAX_BULK + 1), format="json")
    errors = field_errors(response)
    assert str(services.MAX_BULK) in response.json()["detail"], errors
    assert Job.objects.count() == 0
    assert queues.get_queue("default").count == 0


@pytest.mark.parametrize(
    "raw",
    ["{bad json", "null", "42", '"example"', "[1, 2]", '{"type": 5}', '{"params": "x"}', '{"delay_seconds": "soon"}'],
)
def test_a_malformed_create_body_gets_a_400_with_a_message_and_creates_nothing(operator, raw):
    response = operator.post(JOBS, raw, content_type="application/json")
    error(response, 400)
    assert Job.objects.count() == 0


# --- listing and filtering ------------------------------------------------------------------


def test_it_lists_jobs_newest_first_a_cursor_page_at_a_time(operator):
    created = [operator.post(JOBS).json()["id"] for _ in range(5)]
    newest_first = created[::-1]

    first = operator.get(JOBS, {"page_size": 2})
    assert first.status_code == 200
    assert set(first.json()) >= {"next", "previous", "results"}
    assert first.json()["previous"] is None
    assert ids(first) == newest_first[:2]
    assert first.json()["results"][0]["url"] == detail(newest_first[0])

    second = operator.get(first.json()["next"])
    assert ids(second) == newest_first[2:4]
    third = operator.get(second.json()["next"])
    assert ids(third) == newest_first[4:]
    assert third.json()["next"] is None
    assert ids(operator.get(second.json()["previous"])) == newest_first[:2]
    assert ids(operator.get(JOBS)) == newest_first


def test_a_cursor_neither_repeats_nor_skips_jobs_when_new_ones_arrive(operator):
    created = [operator.post(JOBS).json()["id"] for _ in range(4)]
    first = operator.get(JOBS, {"page_size": 2})
    newcomer = operator.post(JOBS).json()["id"]
    second = operator.get(first.json()["next"])
    assert ids(first) + ids(second) == created[::-1]
    assert newcomer not in ids(second)


def test_a_page_holds_at_most_500_jobs(operator):
    services.jobs_enqueue(requests=[JobRequest() for _ in range(501)])
    full = operator.get(JOBS, {"page_size": 500})
    assert len(ids(full)) == 500
    assert full.json()["next"] is not None
    assert len(ids(operator.get(full.json()["next"]))) == 1

    too_big = operator.get(JOBS, {"page_size": 501})
    if too_big.status_code == 400:
        assert "page_size" in field_errors(too_big)
    else:
        assert len(ids(too_big)) <= 500
    assert len(ids(operator.get(JOBS))) <= 500


def test_an_invalid_cursor_is_a_400(operator):
    assert "cursor" in field_errors(operator.get(JOBS, {"cursor": "not-a-cursor"}))


def test_it_filters_by_one_status_or_several(viewer):
    queued = services.job_enqueue(type="example")
    failed = history_row(JobStatus.FAILED)
    stopped = history_row(JobStatus.STOPPED)
    history_row(JobStatus.FINISHED)

    assert ids(viewer.get(JOBS, {"status": "queued"})) == [str(queued.id)]
    assert ids(viewer.get(f"{JOBS}?status=failed&status=stopped")) == [str(stopped.id), str(failed.id)]
    assert ids(viewer.get(JOBS, {"status": "canceled"})) == []


def test_it_filters_by_type_queue_and_creator(viewer, operator_user):
    other = make_user("olga", perms=("add_job",))
    example = services.job_enqueue(type="example", user=operator_user)
    low = services.job_enqueue(type="example", queue="low", user=other)
    email = services.job_enqueue(type="email", params={"to": "a@b.co", "subject": "s", "body": ""}, user=other)

    assert ids(viewer.get(JOBS, {"type": "email"})) == [str(email.id)]
    assert ids(viewer.get(JOBS, {"queue": "low"})) == [str(low.id)]
    assert ids(viewer.get(JOBS, {"queue": "high"})) == [str(email.id)]
    assert ids(viewer.get(JOBS, {"created_by": operator_user.id})) == [str(example.id)]
    assert ids(viewer.get(JOBS, {"created_by": other.id})) == [str(email.id), str(low.id)]
    assert ids(viewer.get(JOBS, {"created_by": other.id, "type": "example"})) == [str(low.id)]


def test_it_filters_by_creation_and_end_time(viewer):
    now = timezone.now()
    old = history_row(JobStatus.FAILED)
    middle = history_row(JobStatus.FINISHED)
    recent = history_row(JobStatus.FINISHED)
    running = history_row(JobStatus.STARTED)
    Job.objects.filter(pk=old.pk).update(created_at=now - timedelta(days=3), ended_at=now - timedelta(days=3))
    Job.objects.filter(pk=middle.pk).update(created_at=now - timedelta(days=1), ended_at=now - timedelta(hours=20))
    Job.objects.filter(pk=recent.pk).update(created_at=now - timedelta(hours=1), ended_at=now - timedelta(minutes=5))
    two_days_ago = (now - timedelta(days=2)).isoformat()
    six_hours_ago = (now - timedelta(hours=6)).isoformat()

    assert ids(viewer.get(JOBS, {"created_after": two_days_ago})) == [str(running.id), str(recent.id), str(middle.id)]
    assert ids(viewer.get(JOBS, {"created_before": two_days_ago})) == [str(old.id)]
    assert ids(viewer.get(JOBS, {"created_after": two_days_ago, "created_before": six_hours_ago})) == [str(middle.id)]
    assert ids(viewer.get(JOBS, {"ended_after": six_hours_ago})) == [str(recent.id)]
    assert ids(viewer.get(JOBS, {"ended_before": six_hours_ago})) == [str(middle.id), str(old.id)]
    assert ids(viewer.get(JOBS, {"ended_after": two_days_ago, "ended_before": six_hours_ago})) == [str(middle.id)]


def test_search_finds_jobs_by_id_params_and_error_text(viewer):
    by_params = services.job_enqueue(type="example", params={"message": "invoice-4711 for ACME"})
    by_error = history_row(JobStatus.FAILED, error="KeyError: 'customer-4711'")
    unrelated = services.job_enqueue(type="example", params={"message": "nothing to see"})

    assert ids(viewer.get(JOBS, {"search": "invoice-4711"})) == [str(by_params.id)]
    assert ids(viewer.get(JOBS, {"search": "customer-4711"})) == [str(by_error.id)]
    assert ids(viewer.get(JOBS, {"search": "4711"})) == [str(by_error.id), str(by_params.id)]
    assert ids(viewer.get(JOBS, {"search": "acme"})) == [str(by_params.id)]  # whatever the case
    assert ids(viewer.get(JOBS, {"search": str(unrelated.id)})) == [str(unrelated.id)]
    assert ids(viewer.get(JOBS, {"search": str(unrelated.id).upper()})) == [str(unrelated.id)]
    assert ids(viewer.get(JOBS, {"search": "4711", "status": "failed"})) == [str(by_error.id)]
    assert ids(viewer.get(JOBS, {"search": "no such text"})) == []


def test_search_finds_non_ascii_text_in_params_and_error(viewer):
    in_params = services.job_enqueue(type="example", params={"message": "Grüße aus Köln"})
    in_error = history_row(JobStatus.FAILED, error="Zeitüberschreitung: Hauptstraße 5 antwortet nicht")
    assert ids(viewer.get(JOBS, {"search": "Köln"})) == [str(in_params.id)]
    assert ids(viewer.get(JOBS, {"search": "köln"})) == [str(in_params.id)]
    assert ids(viewer.get(JOBS, {"search": "Hauptstraße"})) == [str(in_error.id)]
    assert ids(viewer.get(JOBS, {"search": "hauptstraße 5"})) == [str(in_error.id)]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"status": "exploded"}, "status"),
        ({"queue": "urgent"}, "queue"),
        ({"created_by": "someone"}, "created_by"),
        ({"created_after": "yesterday"}, "created_after"),
        ({"created_before": "2026-13-45T00:00:00Z"}, "created_before"),
        ({"ended_after": "soon"}, "ended_after"),
        ({"ended_before": "later"}, "ended_before"),
        ({"search": "x" * 201}, "search"),
    ],
)
def test_it_refuses_a_bad_filter_value_with_a_field_error(viewer, query, field):
    assert field in field_errors(viewer.get(JOBS, query))


# --- one job -----------------------------------------------------------------------------------


def test_it_shows_one_job_whole_with_its_timeline_and_progress(viewer, operator, operator_user):
    created = operator.post(JOBS, {"params": {"duration": 2, "message": "hi"}, "queue": "low"}, format="json").json()
    response = viewer.get(detail(created["id"]))
    assert response.status_code == 200
    job = response.json()
    assert job["id"] == created["id"]
    assert job["url"] == detail(created["id"])
    assert (job["type"], job["queue"], job["status"]) == ("example", "low", "queued")
    assert job["params"] == {"duration": 2.0, "steps": 10, "fail": False, "message": "hi"}
    assert (job["progress"], job["progress_message"]) == (0, "")
    assert (job["attempts"], job["max_attempts"]) == (0, 3)
    assert job["created_by"] == operator_user.id
    assert job["timeline"] == []
    assert {"result", "error", "traceback", "created_at", "enqueued_at", "started_at", "ended_at", "duration"} <= set(
        job
    )
    assert viewer.get(detail(created["id"]) + "/").json()["id"] == created["id"]  # a trailing slash is fine too


def test_a_malformed_job_id_is_a_400_and_an_unknown_one_a_404(operator):
    assert "id" in field_errors(operator.get(detail("not-a-uuid")))
    assert "id" in field_errors(operator.post(action("not-a-uuid"), {"action": "retry"}, format="json"))
    assert "no job" in error(operator.get(detail(uuid.uuid4())), 404)["detail"]
    error(operator.post(action(uuid.uuid4()), {"action": "cancel"}, format="json"), 404)
    error(operator.post(action(uuid.uuid4()), {"action": "remove"}, format="json"), 404)


@pytest.mark.slow
def test_a_running_job_shows_its_progress_and_stop_ends_it(processes, operator, viewer):
    processes.worker()
    job_id = operator.post(JOBS, {"params": {"duration": 30, "steps": 30}}, format="json").json()["id"]

    def running() -> dict[str, Any] | None:
        job = viewer.get(detail(job_id)).json()
        return job if job["status"] == "started" and job["progress"] > 0 else None

    job = wait_for(running, 45, message="the job to run and report progress")
    assert 0 < job["progress"] < 100
    assert job["progress_message"].startswith("step ")
    assert [(a["number"], a["outcome"]) for a in job["timeline"]] == [(1, "running")]
    stats_now = viewer.get(STATS).json()
    assert stats_now["workers"] == {"alive": 1, "busy": 1}
    assert stats_now["queues"]["default"]["counts"]["started"] == 1
    assert stats_now["queues"]["default"]["running"] == 1

    response = operator.post(action(job_id), {"action": "stop"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["id"] == job_id

    stopped = wait_for(
        lambda: (j := viewer.get(detail(job_id)).json())["status"] == "stopped" and j, 30, message="the job to stop"
    )
    assert stopped["ended_at"] is not None
    assert [(a["number"], a["outcome"]) for a in stopped["timeline"]] == [(1, "stopped")]
    assert stopped["timeline"][0]["ended_at"] is not None
    assert viewer.get(STATS).json()["queues"]["default"]["counts"]["stopped"] == 1
    # A stopped job may run again (on a paused queue here: the test ends before it could finish).
    assert operator.post(f"{QUEUES}/default/pause").status_code == 200
    time.sleep(PAUSE_REFRESH + 0.5)  # workers see a pause within about a second
    retried = operator.post(action(job_id), {"action": "retry"}, format="json")
    assert retried.status_code == 200, retried.content
    assert retried.json()["status"] == "queued"
    # (A worker blocked on the queues may take it a moment before it sees the pause and puts it back.)
    wait_for(lambda: queues.get_queue("default").get_job_ids() == [job_id], 10, message="the job back on its queue")
    assert viewer.get(detail(job_id)).json()["status"] == "queued"


@pytest.mark.slow
def test_a_failing_job_shows_every_attempt_in_its_timeline(processes, operator, viewer):
    processes.worker()
    processes.scheduler()  # moves the retries onto the queue when they are due
    job_id = operator.post(JOBS, {"params": {"duration": 0, "steps": 1, "fail": True}}, format="json").json()["id"]
    job = wait_for(
        lambda: (j := viewer.get(detail(job_id)).json())["status"] == "failed" and j, 60, message="the job to fail"
    )
    assert job["attempts"] == 3
    assert "asked to fail" in job["error"]
    assert "ExampleJobFailed" in job["traceback"]
    timeline = job["timeline"]
    assert [(a["number"], a["outcome"]) for a in timeline] == [(1, "failed"), (2, "failed"), (3, "failed")]
    assert all(a["started_at"] and a["ended_at"] and "asked to fail" in a["error"] for a in timeline)
    assert timeline[0]["retry_at"] is not None
    assert timeline[1]["retry_at"] is not None
    assert timeline[2]["retry_at"] is None
    assert timeline[0]["started_at"] < timeline[1]["started_at"] < timeline[2]["started_at"]
    assert ids(viewer.get(JOBS, {"status": "failed", "ended_after": job["created_at"]})) == [job_id]


# --- actions on one job ------------------------------------------------------------------------------


def test_cancel_takes_a_queued_job_off_its_queue(operator, jobs_in_states):
    job = jobs_in_states.queued
    response = operator.post(action(job.id), {"action": "cancel"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "canceled"
    assert response.json()["ended_at"] is not None
    assert "timeline" in response.json()
    assert Job.objects.get(pk=job.pk).status == JobStatus.CANCELED
    assert queues.get_queue("default").get_job_ids() == []


def test_cancel_takes_a_delayed_job_out_of_the_schedule(operator, jobs_in_states):
    job = jobs_in_states.scheduled
    response = operator.post(action(job.id), {"action": "cancel"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "canceled"
    assert str(job.id) not in scheduled_ids()


def test_retry_puts_a_failed_job_redis_forgot_back_on_its_queue(operator, jobs_in_states):
    job = jobs_in_states.failed
    response = operator.post(action(job.id), {"action": "retry"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "queued"
    assert response.json()["max_attempts"] == 6  # a fresh round of three after the three it had
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED
    assert str(job.id) in queues.get_queue("default").get_job_ids()


def test_promote_runs_a_delayed_job_now(operator, jobs_in_states):
    job = jobs_in_states.scheduled
    response = operator.post(action(job.id), {"action": "promote"}, format="json")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "queued"
    assert response.json()["scheduled_for"] is None
    assert str(job.id) not in scheduled_ids()
    assert str(job.id) in queues.get_queue("default").get_job_ids()


def test_remove_deletes_the_job_everywhere_and_answers_204(operator, jobs_in_states):
    for job in (jobs_in_states.queued, jobs_in_states.finished):
        response = operator.post(action(job.id), {"action": "remove"}, format="json")
        assert response.status_code == 204, response.content
        assert response.content == b""
        assert not Job.objects.filter(pk=job.pk).exists()
        assert queues.redis().exists(f"rq:job:{job.id}") == 0
        error(operator.get(detail(job.id)), 404)
    assert str(jobs_in_states.queued.id) not in queues.get_queue("default").get_job_ids()


@pytest.mark.parametrize(
    ("state", "verb"),
    [
        ("queued", "retry"),
        ("started", "retry"),
        ("finished", "promote"),
        ("queued", "promote"),
        ("finished", "cancel"),
        ("failed", "cancel"),
        ("queued", "stop"),
        ("finished", "stop"),
        ("started", "remove"),
    ],
)
def test_an_action_the_jobs_status_does_not_allow_is_a_409_and_changes_nothing(operator, jobs_in_states, state, verb):
    job = getattr(jobs_in_states, state)
    body = error(operator.post(action(job.id), {"action": verb}, format="json"), 409)
    assert verb in body["detail"]
    assert state in body["detail"]
    assert Job.objects.get(pk=job.pk).status == state


def test_stopping_a_job_that_redis_no_longer_knows_is_a_409_not_a_500(operator, jobs_in_states):
    """The history says started, but Redis lost the job (the reconciler has not noticed yet)."""
    job = jobs_in_states.started
    body = error(operator.post(action(job.id), {"action": "stop"}, format="json"), 409)
    assert "stop" in body["detail"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "action"),
        ({"action": "explode"}, "action"),
        ({"action": ""}, "action"),
        ({"action": None}, "action"),
        ({"action": ["retry"]}, "action"),
        (["retry"], "non_field_errors"),
    ],
)
def test_an_unknown_or_missing_action_is_a_400(operator, jobs_in_states, body, field):
    job = jobs_in_states.queued
    assert field in field_errors(operator.post(action(job.id), body, format="json"))
    assert Job.objects.get(pk=job.pk).status == JobStatus.QUEUED


# --- bulk actions ---------------------------------------------------------------------------


def test_a_bulk_retry_retries_every_failed_job_of_a_type(operator):
    email = {"to": "a@b.co", "subject": "s", "body": ""}
    failed_emails = [history_row(JobStatus.FAILED, type="email", queue="high", params=email) for _ in range(3)]
    failed_example = history_row(JobStatus.FAILED)
    queued_email = services.job_enqueue(type="email", params=email)

    response = operator.post(
        BULK, {"action": "retry", "filters": {"status": ["failed"], "type": "email"}}, format="json"
    )
    assert response.status_code == 200, response.content
    assert response.json() == {"action": "retry", "matched": 3, "done": 3, "skipped": 0, "skipped_by_status": {}}
    assert all(Job.objects.get(pk=job.pk).status == JobStatus.QUEUED for job in failed_emails)
    assert Job.objects.get(pk=failed_example.pk).status == JobStatus.FAILED
    assert set(queues.get_queue("high").get_job_ids()) == {str(queued_email.id)} | {str(j.id) for j in failed_emails}


def test_a_bulk_action_counts_the_jobs_whose_status_does_not_allow_it_as_skipped(operator):
    queued = [services.job_enqueue(type="example") for _ in range(2)]
    finished = history_row(JobStatus.FINISHED)
    services.job_enqueue(type="example", queue="low")

    response = operator.post(BULK, {"action": "cancel", "filters": {"queue": "default"}}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {
        "action": "cancel",
        "matched": 3,
        "done": 2,
        "skipped": 1,
        "skipped_by_status": {"finished": 1},
    }
    assert all(Job.objects.get(pk=job.pk).status == JobStatus.CANCELED for job in queued)
    assert Job.objects.get(pk=finished.pk).status == JobStatus.FINISHED
    assert queues.get_queue("default").count == 0
    assert queues.get_queue("low").count == 1


def test_a_bulk_remove_deletes_what_the_filter_selects(operator):
    old = [history_row(JobStatus.FINISHED) for _ in range(3)]
    kept = history_row(JobStatus.FAILED)
    Job.objects.filter(pk__in=[job.pk for job in old]).update(ended_at=timezone.now() - timedelta(days=10))
    filters = {"status": ["finished"], "ended_before": (timezone.now() - timedelta(days=7)).isoformat()}
    response = operator.post(BULK, {"action": "remove", "filters": filters}, format="json")
    assert response.status_code == 200, response.content
    assert response.json() == {"action": "remove", "matched": 3, "done": 3, "skipped": 0, "skipped_by_status": {}}
    assert list(Job.objects.values_list("id", flat=True)) == [kept.id]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"action": "retry"}, "filters"),
        ({"action": "retry", "filters": {}}, "filters"),
        ({"action": "remove", "filters": {"status": []}}, "status"),
        ({"action": "remove", "filters": {"type": ""}}, "type"),
        ({"action": "retry", "filters": {"status": "failed"}}, "status"),
        ({"action": "retry", "filters": {"status": ["exploded"]}}, "status"),
        ({"action": "retry", "filters": {"queue": "urgent"}}, "queue"),
        ({"action": "retry", "filters": {"created_after": "yesterday"}}, "created_after"),
        ({"action": "explode", "filters": {"status": ["failed"]}}, "action"),
        ({"filters": {"status": ["failed"]}}, "action"),
    ],
)
def test_a_bulk_action_without_a_valid_filter_or_action_is_a_400_and_touches_nothing(operator, body, field):
    failed = history_row(JobStatus.FAILED)
    errors = field_errors(operator.post(BULK, body, format="json"))
    assert any(field in key.split(".") for key in errors), errors
    assert Job.objects.get(pk=failed.pk).status == JobStatus.FAILED


# --- statistics, types, queues ------------------------------------------------------------------------


def test_stats_count_every_status_per_queue_and_in_total(viewer):
    first = services.job_enqueue(type="example")
    services.job_enqueue(type="example")
    services.job_enqueue(type="email", params={"to": "a@b.co", "subject": "s", "body": ""})
    low = services.job_enqueue(type="example", queue="low")
    put(first, JobStatus.FAILED, ended_at=timezone.now())
    put(low, JobStatus.FINISHED, ended_at=timezone.now())

    response = viewer.get(STATS)
    assert response.status_code == 200
    body = response.json()
    for name in queues.QUEUE_NAMES:
        assert set(body["queues"][name]["counts"]) == {*STATUSES, "total"}
    nonzero = {name: {k: v for k, v in q["counts"].items() if v} for name, q in body["queues"].items()}
    assert nonzero == {
        "default": {"queued": 1, "failed": 1, "total": 2},
        "high": {"queued": 1, "total": 1},
        "low": {"finished": 1, "total": 1},
    }
    assert set(body["totals"]) == {*STATUSES, "total"}
    assert {k: v for k, v in body["totals"].items() if v} == {"queued": 2, "failed": 1, "finished": 1, "total": 4}
    assert body["generated_at"]

    # The scheduler folds the pending counts every few seconds: the answer stays the same.
    stats.fold()
    assert viewer.get(STATS).json()["totals"] == body["totals"]


def test_stats_show_paused_queues_workers_and_how_long_the_oldest_job_has_waited(viewer, operator):
    oldest = services.job_enqueue(type="example")
    services.job_enqueue(type="example")
    waited_since = datetime.now(tz=UTC) - timedelta(seconds=90)
    queues.redis().hset(f"rq:job:{oldest.id}", "enqueued_at", waited_since.strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
    assert operator.post(f"{QUEUES}/low/pause").status_code == 200

    body = viewer.get(STATS).json()
    assert body["paused_queues"] == ["low"]
    assert body["queues"]["low"]["paused"] is True
    assert body["queues"]["default"]["paused"] is False
    assert body["queues"]["default"]["waiting"] == 2
    assert 89 <= body["queues"]["default"]["oldest_waiting_age"] < 120
    assert body["queues"]["high"]["oldest_waiting_age"] is None
    assert body["workers"] == {"alive": 0, "busy": 0}


def test_stats_count_jobs_processed_and_failed_in_the_last_hour_and_day(viewer):
    def ended(status: str, ago: timedelta) -> None:
        job = services.job_enqueue(type="example")
        put(job, status, ended_at=timezone.now() - ago)
        # The trigger stamps the change with the database's clock: move it back as if it happened then.
        JobCountDelta.objects.filter(status=status, delta=1, at__gt=timezone.now() - timedelta(minutes=5)).update(
            at=timezone.now() - ago
        )

    ended(JobStatus.FAILED, timedelta(days=2))
    ended(JobStatus.FINISHED, timedelta(hours=5))
    ended(JobStatus.FAILED, timedelta(hours=3))
    ended(JobStatus.FINISHED, timedelta(minutes=10))
    ended(JobStatus.FINISHED, timedelta(minutes=1))
    ended(JobStatus.FAILED, timedelta(0))
    history_row(JobStatus.STOPPED)  # neither processed nor failed

    expected = {"processed": {"last_hour": 3, "last_day": 5}, "failed": {"last_hour": 1, "last_day": 2}}
    body = viewer.get(STATS).json()
    assert {key: body[key] for key in expected} == expected
    assert body["totals"]["failed"] == 3
    assert body["totals"]["finished"] == 3
    stats.fold()
    body = viewer.get(STATS).json()
    assert {key: body[key] for key in expected} == expected


def test_types_list_every_job_type_with_its_params_json_schema(viewer):
    response = viewer.get(TYPES)
    assert response.status_code == 200
    types = {item["name"]: item for item in response.json()}
    assert {"example", "email", "report"} <= set(types)
    example = types["example"]
    assert example["queue"] == "default"
    assert example["description"]
    assert example["retry"]["max_attempts"] == 3
    assert example["params_schema"]["type"] == "object"
    assert {"duration", "steps", "fail", "message"} <= set(example["params_schema"]["properties"])
    assert example["params_schema"]["properties"]["duration"]["maximum"] == 3600
    email = types["email"]
    assert email["queue"] == "high"
    assert {"to", "subject", "body"} <= set(email["params_schema"]["required"])


def test_queues_list_their_waiting_jobs_and_can_be_paused_and_resumed(viewer, operator):
    services.job_enqueue(type="example", queue="low")
    listed = {item["name"]: item for item in viewer.get(QUEUES).json()}
    assert list(listed) == list(queues.QUEUE_NAMES)
    assert listed["low"]["waiting"] == 1
    assert listed["low"]["paused"] is False

    paused = operator.post(f"{QUEUES}/low/pause")
    assert paused.status_code == 200, paused.content
    assert paused.json()["paused"] is True
    assert queues.paused_queues() == {"low"}
    resumed = operator.post(f"{QUEUES}/low/resume")
    assert resumed.status_code == 200
    assert resumed.json()["paused"] is False
    assert queues.paused_queues() == set()
    error(operator.post(f"{QUEUES}/urgent/pause"), 404)


# --- OpenAPI schema and documentation ----------------------------------------------------------


def test_the_openapi_schema_describes_every_endpoint(viewer):
    response = viewer.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    paths = {path.rstrip("/"): operations for path, operations in schema["paths"].items()}
    assert {"get", "post"} <= set(paths["/api/jobs"])
    assert "get" in paths["/api/jobs/{job_id}"]
    assert "post" in paths["/api/jobs/{job_id}/action"]
    assert "post" in paths["/api/jobs/actions"]
    assert "get" in paths["/api/jobs/stats"]
    assert "get" in paths["/api/jobs/types"]
    assert "post" in paths["/api/auth/token"]
    create = paths["/api/jobs"]["post"]["responses"]
    assert {"201", "400", "401", "403", "429", "503"} <= set(create)
    assert {"200", "204", "404", "409"} <= set(paths["/api/jobs/{job_id}/action"]["post"]["responses"])
    listed = {parameter["name"] for parameter in paths["/api/jobs"]["get"]["parameters"]}
    assert {"cursor", "page_size", "status", "type", "queue", "created_by", "search"} <= listed
    assert {"created_after", "created_before", "ended_after", "ended_before"} <= listed


@pytest.mark.parametrize("page", ["/api/docs/", "/api/redoc/"])
def test_the_api_docs_are_served_from_local_static_files_not_a_cdn(viewer, page):
    response = viewer.get(page)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "/api/schema/" in html
    references = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html)
    scripts = re.findall(r"""<script[^>]+src\s*=\s*["']([^"']+)["']""", html)
    assert scripts, html
    external = [ref for ref in references if re.match(r"^(https?:)?//", ref)]
    assert external == [], f"{page} loads from other hosts: {external}"
    for ref in scripts:
        assert ref.startswith(settings.STATIC_URL), ref
        assert finders.find(ref.removeprefix(settings.STATIC_URL)) is not None, f"{ref} is not shipped"


# --- authentication ----------------------------------------------------------------------------


def test_a_username_and_password_get_a_token_that_opens_the_api(viewer_user):
    anonymous = APIClient()
    response = anonymous.post(TOKEN, {"username": "vera", "password": "vera-password"}, format="json")
    assert response.status_code == 200, response.content
    key = response.json()["token"]
    assert key == Token.objects.get(user=viewer_user).key
    again = anonymous.post(TOKEN, {"username": "vera", "password": "vera-password"}, format="json")
    assert again.json()["token"] == key

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get(JOBS).status_code == 200


@pytest.mark.parametrize(
    "body", [{"username": "vera", "password": "wrong"}, {"username": "nobody", "password": "x"}, {"username": "vera"}]
)
def test_wrong_credentials_get_no_token(viewer_user, body):
    error(APIClient().post(TOKEN, body, format="json"), 400)
    assert not Token.objects.exists()


def test_an_unknown_token_is_a_401():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Token " + "0" * 40)
    error(client.get(JOBS), 401)


def test_a_session_works_too_and_its_writes_need_the_csrf_token(viewer_user, operator_user):
    client = APIClient(enforce_csrf_checks=True)
    assert client.login(username="otto", password="otto-password")
    assert client.get(JOBS).status_code == 200
    refused = client.post(JOBS, {}, format="json")
    assert "CSRF" in error(refused, 403)["detail"]
    assert Job.objects.count() == 0
    secret = "a" * 32
    client.cookies["csrftoken"] = secret
    created = client.post(JOBS, {}, format="json", HTTP_X_CSRFTOKEN=secret)
    assert created.status_code == 201, created.content
    assert created.json()["created_by"] == operator_user.id


# --- permissions ---------------------------------------------------------------------------------------

READS: list[tuple[str, Callable[[SimpleNamespace], str]]] = [
    ("list", lambda jobs: JOBS),
    ("detail", lambda jobs: detail(jobs.queued.id)),
    ("stats", lambda jobs: STATS),
    ("types", lambda jobs: TYPES),
    ("queues", lambda jobs: QUEUES),
]

WRITES: list[tuple[str, Callable[[SimpleNamespace], tuple[str, Any]]]] = [
    ("create", lambda jobs: (JOBS, {})),
    ("create many", lambda jobs: (JOBS, [{}, {}])),
    ("retry", lambda jobs: (action(jobs.failed.id), {"action": "retry"})),
    ("cancel", lambda jobs: (action(jobs.queued.id), {"action": "cancel"})),
    ("promote", lambda jobs: (action(jobs.scheduled.id), {"action": "promote"})),
    ("stop", lambda jobs: (action(jobs.started.id), {"action": "stop"})),
    ("remove", lambda jobs: (action(jobs.finished.id), {"action": "remove"})),
    ("bulk retry", lambda jobs: (BULK, {"action": "retry", "filters": {"status": ["failed"]}})),
    ("bulk remove", lambda jobs: (BULK, {"action": "remove", "filters": {"status": ["finished"]}})),
    ("pause", lambda jobs: (f"{QUEUES}/default/pause", None)),
    ("resume", lambda jobs: (f"{QUEUES}/default/resume", None)),
]


def snapshot() -> dict[str, Any]:
    """What a write would change: the rows, their statuses, and the queues in Redis."""
    return {
        "rows": dict(Job.objects.values_list("id", "status")),
        "waiting": {name: queues.get_queue(name).get_job_ids() for name in queues.QUEUE_NAMES},
        "scheduled": scheduled_ids(),
        "paused": queues.paused_queues(),
    }


@pytest.mark.parametrize(("name", "url"), READS, ids=[name for name, _ in READS])
def test_an_unauthenticated_read_is_a_401(jobs_in_states, name, url):
    response = APIClient().get(url(jobs_in_states))
    error(response, 401)
    assert response["WWW-Authenticate"].startswith("Token")


@pytest.mark.parametrize(("name", "request_"), WRITES, ids=[name for name, _ in WRITES])
def test_an_unauthenticated_write_is_a_401_and_changes_nothing(jobs_in_states, name, request_):
    before = snapshot()
    url, data = request_(jobs_in_states)
    error(APIClient().post(url, data, format="json"), 401)
    assert snapshot() == before


@pytest.mark.parametrize(("name", "url"), READS, ids=[name for name, _ in READS])
def test_a_user_without_the_view_permission_may_not_read(stranger, jobs_in_states, name, url):
    error(stranger.get(url(jobs_in_states)), 403)


@pytest.mark.parametrize(("name", "url"), READS, ids=[name for name, _ in READS])
def test_a_viewer_may_read(viewer, jobs_in_states, name, url):
    response = viewer.get(url(jobs_in_states))
    assert response.status_code == 200, response.content


@pytest.mark.parametrize(("name", "request_"), WRITES, ids=[name for name, _ in WRITES])
def test_a_viewer_is_refused_every_write_and_nothing_changes(viewer, jobs_in_states, name, request_):
    before = snapshot()
    url, data = request_(jobs_in_states)
    error(viewer.post(url, data, format="json"), 403)
    assert snapshot() == before


#: What an operator gets for each write (stop: see test_a_running_job_shows_its_progress_and_stop_ends_it).
OPERATOR_ANSWERS = {
    "create": 201,
    "create many": 201,
    "retry": 200,
    "cancel": 200,
    "promote": 200,
    "remove": 204,
    "bulk retry": 200,
    "bulk remove": 200,
    "pause": 200,
    "resume": 200,
}


@pytest.mark.parametrize(
    ("name", "request_", "status"),
    [(name, request_, OPERATOR_ANSWERS[name]) for name, request_ in WRITES if name in OPERATOR_ANSWERS],
    ids=[name for name, _ in WRITES if name in OPERATOR_ANSWERS],
)
def test_an_operator_may_do_every_write(operator, jobs_in_states, name, request_, status):
    if name == "resume":
        services.queue_pause(name="default")
    before = snapshot()
    url, data = request_(jobs_in_states)
    response = operator.post(url, data, format="json")
    assert response.status_code == status, response.content
    assert snapshot() != before


def test_the_change_permission_alone_allows_retry_cancel_and_promote_but_not_create_or_remove(jobs_in_states):
    changer = client_for(make_user("chad", perms=("view_job", "change_job")))
    assert changer.post(action(jobs_in_states.failed.id), {"action": "retry"}, format="json").status_code == 200
    assert changer.post(action(jobs_in_states.queued.id), {"action": "cancel"}, format="json").status_code == 200
    assert changer.post(action(jobs_in_states.scheduled.id), {"action": "promote"}, format="json").status_code == 200
    error(changer.post(action(jobs_in_states.finished.id), {"action": "remove"}, format="json"), 403)
    error(changer.post(JOBS, {}, format="json"), 403)
    assert Job.objects.filter(pk=jobs_in_states.finished.pk).exists()


def test_the_delete_permission_alone_allows_remove_but_not_retry(jobs_in_states):
    remover = client_for(make_user("dora", perms=("view_job", "delete_job")))
    error(remover.post(action(jobs_in_states.failed.id), {"action": "retry"}, format="json"), 403)
    assert Job.objects.get(pk=jobs_in_states.failed.pk).status == JobStatus.FAILED
    response = remover.post(action(jobs_in_states.finished.id), {"action": "remove"}, format="json")
    assert response.status_code == 204, response.content
    assert not Job.objects.filter(pk=jobs_in_states.finished.pk).exists()


def test_the_add_permission_alone_allows_create_but_no_action(jobs_in_states):
    creator = client_for(make_user("cleo", perms=("view_job", "add_job")))
    assert creator.post(JOBS, {}, format="json").status_code == 201
    for verb, job in (("retry", jobs_in_states.failed), ("cancel", jobs_in_states.queued)):
        assert verb in error(creator.post(action(job.id), {"action": verb}, format="json"), 403)["detail"]
    error(creator.post(BULK, {"action": "retry", "filters": {"status": ["failed"]}}, format="json"), 403)
    assert Job.objects.get(pk=jobs_in_states.failed.pk).status == JobStatus.FAILED


@pytest.mark.django_db  # not transactional: runs before any test flushes the database, so it sees it as migrated
def test_the_viewer_and_operator_groups_exist_out_of_the_box():
    def codenames(name: str) -> set[str]:
        return set(Group.objects.get(name=name).permissions.values_list("codename", flat=True))

    assert {"view_job"} <= codenames(VIEWERS)
    assert not {"add_job", "change_job", "delete_job"} & codenames(VIEWERS)
    assert {"view_job", "add_job", "change_job", "delete_job"} <= codenames(OPERATORS)
    viewer = client_for(make_user("gina", groups=(VIEWERS,)))
    assert viewer.get(JOBS).status_code == 200
    error(viewer.post(JOBS, {}, format="json"), 403)
    assert client_for(make_user("gus", groups=(OPERATORS,))).post(JOBS, {}, format="json").status_code == 201


# --- throttling ------------------------------------------------------------------------------------------


@pytest.fixture
def three_writes_a_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    # DRF reads the rates when the throttle class is defined, so override_settings cannot change them.
    monkeypatch.setattr(JobWriteThrottle, "rate", "3/min", raising=False)


@pytest.mark.usefixtures("three_writes_a_minute")
def test_writes_over_the_limit_get_a_429_with_retry_after_and_reads_never_do(operator, jobs_in_states):
    assert operator.post(JOBS, {}, format="json").status_code == 201
    assert operator.post(action(jobs_in_states.queued.id), {"action": "cancel"}, format="json").status_code == 200
    assert operator.post(BULK, {"action": "retry", "filters": {"status": ["failed"]}}, format="json").status_code == 200
    count = Job.objects.count()

    refused = operator.post(JOBS, {}, format="json")
    error(refused, 429)
    assert 1 <= int(refused["Retry-After"]) <= 60
    error(operator.post(action(jobs_in_states.scheduled.id), {"action": "promote"}, format="json"), 429)
    error(operator.post(f"{QUEUES}/low/pause"), 429)
    assert Job.objects.count() == count
    assert Job.objects.get(pk=jobs_in_states.scheduled.pk).status == JobStatus.SCHEDULED
    assert queues.paused_queues() == set()

    for url in (JOBS, detail(jobs_in_states.queued.id), STATS, TYPES, QUEUES) * 4:
        assert operator.get(url).status_code == 200


@pytest.mark.usefixtures("three_writes_a_minute")
def test_the_write_limit_is_per_user_and_counted_in_the_shared_redis(operator, operator_user, redis_db):
    for _ in range(3):
        assert operator.post(JOBS, {}, format="json").status_code == 201
    error(operator.post(JOBS, {}, format="json"), 429)
    # Another web process sees the same count: it lives in Redis, not in this process.
    assert any(f"throttle_job_writes_{operator_user.pk}" in key.decode() for key in redis_db.keys("*throttle*"))
    error(client_for(operator_user).post(JOBS, {}, format="json"), 429)

    colleague = client_for(make_user("olivia", groups=(OPERATORS,)))
    assert colleague.post(JOBS, {}, format="json").status_code == 201


def test_the_write_limit_is_set_by_the_jobs_api_write_rate_variable():
    assert JobWriteThrottle().rate == settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]["job_writes"]
    code = "import django; django.setup(); from jobs.api.throttling import JobWriteThrottle as T; print(T().rate)"
    env = {**os.environ, "JOBS_API_WRITE_RATE": "7/min", "DJANGO_SETTINGS_MODULE": "queueproject.settings"}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "7/min"


# --- Redis unreachable, and other errors ----------------------------------------------------------------

REDIS_CALLS: list[tuple[str, str, Callable[[SimpleNamespace], tuple[str, Any]]]] = [
    ("create", "post", lambda jobs: (JOBS, {})),
    ("create many", "post", lambda jobs: (JOBS, [{}, {"queue": "low"}])),
    ("retry", "post", lambda jobs: (action(jobs.failed.id), {"action": "retry"})),
    ("cancel", "post", lambda jobs: (action(jobs.queued.id), {"action": "cancel"})),
    ("promote", "post", lambda jobs: (action(jobs.scheduled.id), {"action": "promote"})),
    ("stop", "post", lambda jobs: (action(jobs.started.id), {"action": "stop"})),
    ("remove", "post", lambda jobs: (action(jobs.failed.id), {"action": "remove"})),
    ("bulk retry", "post", lambda jobs: (BULK, {"action": "retry", "filters": {"status": ["failed"]}})),
    ("bulk cancel", "post", lambda jobs: (BULK, {"action": "cancel", "filters": {"status": ["queued"]}})),
    ("stats", "get", lambda jobs: (STATS, None)),
    ("queues", "get", lambda jobs: (QUEUES, None)),
    ("pause", "post", lambda jobs: (f"{QUEUES}/default/pause", None)),
]


@pytest.mark.parametrize(("name", "method", "request_"), REDIS_CALLS, ids=[name for name, *_ in REDIS_CALLS])
def test_it_answers_503_with_retry_after_within_seconds_when_redis_is_unreachable(
    operator, jobs_in_states, name, method, request_
):
    url, data = request_(jobs_in_states)
    rows_before = dict(Job.objects.values_list("id", "status"))
    with redis_at(closed_port()):
        started = time.monotonic()
        response = call(operator, method, url, data)
        elapsed = time.monotonic() - started
    body = error(response, 503)
    assert "unavailable" in body["detail"]
    assert int(response["Retry-After"]) > 0
    assert elapsed < 5, f"answered after {elapsed:.1f}s"
    assert dict(Job.objects.values_list("id", "status")) == rows_before


def test_the_history_can_still_be_read_while_redis_is_unreachable(viewer, jobs_in_states):
    with redis_at(closed_port(), cache_too=True):
        assert len(ids(viewer.get(JOBS))) == 5
        assert ids(viewer.get(JOBS, {"status": "failed"})) == [str(jobs_in_states.failed.id)]
        assert viewer.get(detail(jobs_in_states.failed.id)).json()["error"] == "RuntimeError: boom"
        assert viewer.get(TYPES).status_code == 200


def test_when_the_whole_redis_is_gone_writes_get_a_503_not_a_500(operator, jobs_in_states):
    """The throttle's counts live in Redis too: with the cache gone as well, writes still get a clear 503."""
    with redis_at(closed_port(), cache_too=True):
        for url, data in ((JOBS, {}), (action(jobs_in_states.queued.id), {"action": "cancel"})):
            started = time.monotonic()
            response = operator.post(url, data, format="json")
            assert time.monotonic() - started < 5
            error(response, 503)
            assert int(response["Retry-After"]) > 0
    assert Job.objects.count() == 5
    assert Job.objects.get(pk=jobs_in_states.queued.pk).status == JobStatus.QUEUED


def test_it_answers_503_within_seconds_when_redis_accepts_connections_but_never_answers(operator, silent_redis):
    """REDIS_SOCKET_TIMEOUT (5 s) bounds how long a request waits for a Redis that hangs."""
    limit = 2 * settings.REDIS_SOCKET_TIMEOUT + 1
    result: dict[str, Any] = {}

    def create() -> None:
        try:
            result["response"] = operator.post(JOBS, {}, format="json")
        finally:
            connections.close_all()

    with redis_at(silent_redis.port):
        request = threading.Thread(target=create, daemon=True)
        started = time.monotonic()
        request.start()
        request.join(limit)
        answered = not request.is_alive()
        elapsed = time.monotonic() - started
        silent_redis.close()  # lets a hung request go, so that its transaction ends
        request.join(15)
    assert answered, f"no answer after {elapsed:.0f}s: the Redis socket timeouts do not apply"
    error(result["response"], 503)
    assert Job.objects.count() == 0


def test_wrong_methods_and_media_types_get_json_errors(operator, jobs_in_states):
    error(operator.delete(detail(jobs_in_states.queued.id)), 405)
    error(operator.put(JOBS, {}, format="json"), 405)
    error(operator.get(action(jobs_in_states.queued.id)), 405)
    error(operator.post(JOBS, "type=example", content_type="text/plain"), 415)
    assert Job.objects.count() == 5
