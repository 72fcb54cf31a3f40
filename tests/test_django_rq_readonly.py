"""django-rq's dashboard shows the queues but changes nothing: jobs are acted on where the history is kept."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.urls import reverse
from django_rq.settings import get_queues_map
from rq.job import Job as RQJob

from jobs import queues, services
from jobs.models import Job

pytestmark = pytest.mark.django_db(transaction=True)

#: The dashboard is served twice: on its own and inside the admin ("Django-RQ" link).
MOUNTS = {"django-rq": "django_rq:", "admin": "admin:django_rq_"}


@pytest.fixture
def staff(client):
    user = User.objects.create_superuser("operator", password="pw")
    client.force_login(user)
    return user


@pytest.fixture
def queued_job():
    """A real job on its RQ queue, with its history row."""
    job = services.job_enqueue(type="example")
    assert job.queue == "default"
    rq_queue = queues.get_queue("default")
    assert str(job.id) in rq_queue.get_job_ids()
    return job


def _url(mount: str, name: str, *args: object) -> str:
    return reverse(MOUNTS[mount] + name, args=args)


def _queue_index(name: str = "default") -> int:
    return get_queues_map()[name]


def _history(job: Job) -> dict[str, Any]:
    return dict(Job.objects.values().get(pk=job.pk))


def _assert_untouched(job: Job, before: dict[str, Any]) -> None:
    conn = queues.redis()
    assert RQJob.exists(str(job.id), connection=conn), "the RQ job was deleted"
    assert queues.get_queue(job.queue).get_job_ids() == [str(job.id)], "the job left its queue"
    assert _history(job) == before, "the job history changed"


def _assert_refused(response) -> None:
    assert response.status_code in (403, 405)
    text = response.content.decode()
    assert "read-only" in text
    assert reverse("admin:jobs_job_changelist") in text
    assert "Jobs" in text


@pytest.mark.parametrize("mount", MOUNTS)
def test_staff_see_the_dashboard_and_a_queues_jobs(client, staff, queued_job, mount):
    index = _queue_index()
    response = client.get(_url(mount, "home"))
    assert response.status_code == 200
    assert b"default" in response.content

    response = client.get(_url(mount, "jobs", index))
    assert response.status_code == 200
    assert str(queued_job.id).encode() in response.content

    response = client.get(_url(mount, "job_detail", index, str(queued_job.id)))
    assert response.status_code == 200
    assert str(queued_job.id).encode() in response.content

    assert client.get(_url(mount, "queue_details", index)).status_code == 200
    assert client.head(_url(mount, "jobs", index)).status_code == 200


@pytest.mark.parametrize("mount", MOUNTS)
@pytest.mark.parametrize(
    ("name", "per_job", "data"),
    [
        ("delete_job", True, {}),
        ("requeue_job", True, {}),
        ("enqueue_job", True, {}),
        ("stop_job", True, {}),
        ("clear", False, {}),
        ("requeue_all", False, {}),
        ("delete_failed_jobs", False, {}),
        ("confirm_action", False, {"action": "delete", "_selected_action": "JOB"}),
        ("actions", False, {"action": "delete", "job_ids": "JOB"}),
        ("actions", False, {"action": "requeue", "job_ids": "JOB"}),
        ("actions", False, {"action": "stop", "job_ids": "JOB"}),
    ],
)
def test_the_dashboards_actions_are_refused_and_change_nothing(client, staff, queued_job, mount, name, per_job, data):
    job_id = str(queued_job.id)
    index = _queue_index(queued_job.queue)
    url = _url(mount, name, index, job_id) if per_job else _url(mount, name, index)
    before = _history(queued_job)

    response = client.post(url, {key: job_id if value == "JOB" else value for key, value in data.items()})

    _assert_refused(response)
    _assert_untouched(queued_job, before)


@pytest.mark.parametrize("mount", MOUNTS)
@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_no_method_but_get_and_head_reaches_a_page(client, staff, queued_job, mount, method):
    before = _history(queued_job)
    response = getattr(client, method)(_url(mount, "job_detail", _queue_index(), str(queued_job.id)))
    assert response.status_code == 405
    assert set(response["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}
    _assert_refused(response)
    _assert_untouched(queued_job, before)


@pytest.mark.parametrize("mount", MOUNTS)
def test_the_action_pages_say_read_only_instead_of_asking_to_confirm(client, staff, queued_job, mount):
    """Their confirmation forms could only be refused: the page says so at once."""
    index = _queue_index()
    before = _history(queued_job)
    for url in (
        _url(mount, "delete_job", index, str(queued_job.id)),
        _url(mount, "requeue_job", index, str(queued_job.id)),
        _url(mount, "clear", index),
    ):
        response = client.get(url)
        assert response.status_code == 403, url
        _assert_refused(response)
    _assert_untouched(queued_job, before)


@pytest.mark.parametrize("mount", MOUNTS)
def test_anonymous_users_are_sent_to_log_in(client, queued_job, mount):
    for url in (_url(mount, "home"), _url(mount, "jobs", _queue_index())):
        response = client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("admin:login"))


def test_users_who_are_not_staff_are_sent_to_log_in(client, queued_job):
    client.force_login(User.objects.create_user("someone", password="pw"))
    response = client.get(_url("django-rq", "home"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))


def test_anonymous_posts_change_nothing_either(client, queued_job):
    before = _history(queued_job)
    response = client.post(_url("django-rq", "delete_job", _queue_index(), str(queued_job.id)))
    assert response.status_code in (302, 403, 405)
    _assert_untouched(queued_job, before)
