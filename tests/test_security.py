"""Security, as an outsider, a viewer, a forged page, a log reader and a failing server would meet it.

Who may do what (anonymous users, viewers, inactive users, writes without the CSRF
token), what a request can never do (name a Python callable), what is escaped (script
in params, results and errors), what stays secret (secret params; Redis and database
addresses and passwords). Against the real test Redis and the test database.

Tests marked xfail(strict=True) state what the product should do and does not yet:
each names the finding. When it is fixed the test passes, strict xfail fails, and
the marker goes.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import re
import traceback
import uuid
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from django.apps import apps as django_apps
from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.db import OperationalError, connection
from django.test import Client, override_settings
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.utils import timezone
from django.utils.html import escape
from pydantic import BaseModel, SecretStr
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient
from rq.job import Job as RQJob
from rq.registry import ScheduledJobRegistry

from jobs import events, live, permissions, queues, registry, rqstore, runner, selectors, services
from jobs.errors import InvalidParams, JobError, UnknownJobType
from jobs.models import Job, JobAudit
from jobs.registry import SECRET_MASK, secret
from jobs.statuses import JobStatus
from tests.helpers import OPERATORS, VIEWERS, closed_port, history_row, make_user, one_job_in_each_state

pytestmark = pytest.mark.django_db(transaction=True)

SCRIPT = "<script>alert(1)</script>"
ATTRIBUTE = '"><img src=x onerror=alert(1)>'
PAYLOADS = (SCRIPT, ATTRIBUTE)
#: What must never reach a page unescaped: the payloads' opening tags.
RAW_TAGS = ("<script>alert", "<img src=x")

SECRET_TYPE = "security-login"
PASSWORD = "correct-horse-battery-staple-7f3a"
TOKEN_VALUE = "tok-9c1e5d2b-secret"
REDIS_PASSWORD = "redis-pw-4d9b1f-secret"

#: What the secret job received, in this process (the test runs it through jobs.runner.run).
RECEIVED: list[dict[str, Any]] = []


class LoginParams(BaseModel):
    username: str
    password: str = secret(description="The service's password.")
    token: SecretStr | None = None


def log_in_somewhere(params: LoginParams) -> dict[str, Any]:
    """Logs in to a service (a test job type with secret params)."""
    token = params.token.get_secret_value() if params.token else None
    RECEIVED.append({"username": params.username, "password": params.password, "token": token})
    logging.getLogger("jobs.tests.security").info("logged in as %s", params.username)
    return {"logged_in_as": params.username}


# --- users and clients -----------------------------------------------------------------------


@pytest.fixture(autouse=True)
def quick_password_hashing(settings: Any) -> None:
    """Users log in with passwords here: hash them quickly (the strength of the hash is not under test)."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def staff(username: str, *, groups: tuple[str, ...] = ()) -> User:
    user = make_user(username, groups=groups)
    user.is_staff = True
    user.save()
    return user


def token_client(user: User) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def session(user: User, *, csrf: bool = False) -> Client:
    client = Client(enforce_csrf_checks=csrf)
    client.force_login(user)
    return client


def csrf_token(client: Client, url: str) -> str:
    """The CSRF token a page gives its forms (and htmx's X-CSRFToken header)."""
    response = client.get(url)
    assert response.status_code == 200, (url, response.status_code)
    return str(client.cookies["csrftoken"].value)


@pytest.fixture
def viewer_user() -> User:
    return staff("vera", groups=(VIEWERS,))


@pytest.fixture
def operator_user() -> User:
    return staff("otto", groups=(OPERATORS,))


@pytest.fixture
def jobs_in_states(operator_user: User) -> SimpleNamespace:
    return one_job_in_each_state(operator_user)


@pytest.fixture
def secret_type() -> Iterator[registry.JobType]:
    """The test job type with secret params, registered in this process for this test only."""
    registry.job_type(SECRET_TYPE, params=LoginParams, queue="low")(log_in_somewhere)
    RECEIVED.clear()
    yield registry.get(SECRET_TYPE)
    registry._registry.pop(SECRET_TYPE, None)
    RECEIVED.clear()


def snapshot() -> dict[str, Any]:
    """Everything a write could change: rows, audit, the queues, schedule and pauses in Redis."""
    return {
        "rows": {str(pk): (status, params) for pk, status, params in Job.objects.values_list("id", "status", "params")},
        "audit": JobAudit.objects.count(),
        "waiting": {name: queues.get_queue(name).get_job_ids() for name in queues.QUEUE_NAMES},
        "scheduled": {
            name: sorted(ScheduledJobRegistry(queue=queues.get_queue(name)).get_job_ids())
            for name in queues.QUEUE_NAMES
        },
        "paused": queues.paused_queues(),
    }


def queue_lengths() -> dict[str, int]:
    return {name: queues.get_queue(name).count for name in queues.QUEUE_NAMES}


# --- every endpoint and page refuses anonymous users ------------------------------------------

#: Sample values for the URL conf's parameters, by name (a job id is filled in per test).
URL_VALUES = {
    "queue_index": "0",
    "scheduler_index": "0",
    "connection_index": "0",
    "name": "default",
    "change": "pause",
    "app_label": "jobs",
    "url": "anything/",
    "token": "x",
    "uidb64": "MQ",
    "content_type_id": "1",
    "id": "1",
    "key": "x",
    "result_id": "x",
    "scheduler_name": "x",
    "cron_job_name": "x",
}
_REGEX_GROUP = re.compile(r"\(\?P<(\w+)>(?:[^()]|\([^()]*\))*\)\??")
_PATH_PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>")


def _fill(name: str, job_id: str) -> str:
    if name in ("job_id", "object_id"):
        return job_id
    assert name in URL_VALUES, f"no sample value for the URL parameter {name!r}: add one to URL_VALUES"
    return URL_VALUES[name]


def every_url(job_id: str) -> list[str]:
    """One concrete URL per pattern of the URL conf (so new endpoints are checked as they come)."""

    def walk(patterns: list[Any], prefix: str) -> Iterator[str]:
        for pattern in patterns:
            text = prefix + str(pattern.pattern).replace("^", "").replace("$", "").replace("/?", "/")
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, text)
            else:
                assert isinstance(pattern, URLPattern)
                yield text

    urls = []
    for text in walk(get_resolver().url_patterns, ""):
        text = _REGEX_GROUP.sub(lambda match: _fill(match.group(1), job_id), text)
        url = "/" + _PATH_PARAMETER.sub(lambda match: _fill(match.group(1), job_id), text)
        resolve(url)  # a sample URL that does not resolve would test nothing
        urls.append(url)
    return sorted(set(urls))


#: Open to everyone: the probes, and logging in (Django's account pages, which show no job data).
OPEN = {"/healthz/", "/readyz/", "/admin/login/", "/accounts/login/"}
ACCOUNT_PAGES = ("/accounts/",)
#: The API's documentation pages, for people in a browser: one who is not logged in is sent to log in.
API_DOC_PAGES = ("/api/docs/", "/api/redoc/")
#: django-rq's JSON statistics take their own bearer token (RQ_API_TOKEN): 401 without it.
RQ_TOKEN_VIEWS = (
    "/django-rq/stats.json/",
    "/admin/django_rq/dashboard/stats.json/",
    # django-rq's own Prometheus page (with prometheus-client installed): a token or staff, like /metrics.
    "/django-rq/metrics/",
    "/admin/django_rq/dashboard/metrics/",
)


def refusal_problem(url: str, method: str, response: Any) -> str | None:
    """What is wrong with the answer an anonymous `method` on `url` got, or None when it refuses."""
    status, location = response.status_code, response.get("Location", "")
    if url in API_DOC_PAGES:
        return None if status == 302 and location.startswith(f"/accounts/login/?next={url}") else f"{status} {location}"
    if url.startswith("/api/"):
        if url == "/api/auth/token/":
            return None if (method, status) in {("GET", 405), ("POST", 400)} else f"{status}"
        if status not in (401, 403):
            return f"{status} (expected 401 or 403)"
        return None if "detail" in response.json() else "no JSON detail"
    if url == "/jobs/events/":
        return None if status == 401 else f"{status} (expected 401)"
    if url == "/metrics/":  # a bearer token or a staff login; read-only
        return None if status == 401 or (method, status) == ("POST", 405) else f"{status} (expected 401)"
    if url.startswith(RQ_TOKEN_VIEWS):
        return None if status in (401, 405) else f"{status} (expected 401)"
    if url.startswith(("/admin/", "/django-rq/")):
        if url == "/admin/logout/":
            return None if status == 302 and location.startswith("/admin/") else f"{status} {location}"
        if status == 302 and location.startswith("/admin/login/?next="):
            return None
        if method == "POST" and status == 405 and url.startswith(("/django-rq/", "/admin/django_rq/")):
            return None  # django-rq's dashboard is read-only: any change is refused before asking who you are
        return f"{status} {location} (expected a redirect to the admin's login)"
    if url.startswith(ACCOUNT_PAGES):
        return None  # logging in, out, and Django's password pages: checked for job data below
    if status == 302 and location.startswith("/accounts/login/?next="):
        return None
    return f"{status} {location} (expected a redirect to the login page)"


def test_every_endpoint_and_page_refuses_anonymous_users(jobs_in_states):
    job = jobs_in_states.failed
    before = snapshot()
    urls = every_url(str(job.pk))
    assert len(urls) > 100, urls  # the walk found the whole URL conf
    problems = []
    client = Client()
    for url in urls:
        if url in OPEN:
            continue
        for method in ("GET", "POST"):
            response = client.get(url) if method == "GET" else client.post(url)
            problem = refusal_problem(url, method, response)
            if problem:
                problems.append(f"{method} {url}: {problem}")
            body = response.content.decode(errors="replace")
            assert str(job.pk) not in body, f"{method} {url} shows the job"
            assert "RuntimeError: boom" not in body, f"{method} {url} shows the job's error"
    assert problems == []
    assert snapshot() == before


def test_healthz_and_readyz_are_open_and_reveal_nothing(jobs_in_states):
    client = Client()
    for url in ("/healthz", "/readyz"):
        response = client.get(url)
        assert response.status_code == 200, url
        body = response.json()
        assert body["status"] == "ok"
        text = response.content.decode()
        for leak in ("127.0.0.1", "localhost", "redis://", "postgres", str(connection.settings_dict["NAME"])):
            assert leak not in text, (url, leak)
    assert set(client.get("/readyz").json()["checks"]) == {"redis", "database"}


def test_the_login_pages_show_no_job_data(jobs_in_states):
    client = Client()
    for url in ("/accounts/login/", "/admin/login/", "/accounts/password_reset/"):
        body = client.get(url).content.decode()
        assert 'name="username"' in body or 'name="email"' in body, url
        assert str(jobs_in_states.failed.pk) not in body
        assert "RuntimeError" not in body


def test_a_login_page_never_sends_a_user_to_another_site():
    make_user("vera", groups=(VIEWERS,))
    response = Client().post(
        "/accounts/login/", {"username": "vera", "password": "vera-password", "next": "https://evil.example/"}
    )
    assert response.status_code == 302
    assert response["Location"] == "/jobs/"


def test_the_api_schema_and_its_docs_refuse_anonymous_users(viewer_user):
    anonymous = Client()
    for asked in ({}, {"format": "json"}, {"format": "yaml"}):
        refused = anonymous.get("/api/schema/", asked)
        assert refused.status_code == 401, asked
        assert refused.json()["detail"] == "Authentication credentials were not provided.", asked
        assert "paths" not in refused.content.decode()
    for page in API_DOC_PAGES:
        refused = anonymous.get(page)
        assert refused.status_code == 302
        assert refused["Location"] == f"/accounts/login/?next={page}"
    # Logged in, through the session (the documentation pages read the schema so) or a token.
    for client in (session(viewer_user), token_client(viewer_user)):
        assert "/api/jobs" in json.dumps(client.get("/api/schema/", {"format": "json"}).json()["paths"])
        for page in API_DOC_PAGES:
            assert client.get(page).status_code == 200, page


def test_pages_forbid_framing_and_content_sniffing(viewer_user):
    client = session(viewer_user)
    for url in ("/jobs/", "/admin/jobs/job/", "/api/jobs/", "/accounts/login/"):
        response = client.get(url)
        assert response["X-Frame-Options"] == "DENY", url
        assert response["X-Content-Type-Options"] == "nosniff", url


# --- a viewer changes nothing ------------------------------------------------------------------


def test_a_viewer_changes_nothing_through_the_api(viewer_user, jobs_in_states):
    api = token_client(viewer_user)
    jobs = jobs_in_states
    writes = [
        ("/api/jobs", {}),
        ("/api/jobs", [{}, {}]),
        (f"/api/jobs/{jobs.failed.pk}/action", {"action": "retry"}),
        (f"/api/jobs/{jobs.queued.pk}/action", {"action": "cancel"}),
        (f"/api/jobs/{jobs.scheduled.pk}/action", {"action": "promote"}),
        (f"/api/jobs/{jobs.started.pk}/action", {"action": "stop"}),
        (f"/api/jobs/{jobs.finished.pk}/action", {"action": "remove"}),
        ("/api/jobs/actions", {"action": "retry", "filters": {"status": ["failed"]}}),
        ("/api/jobs/actions", {"action": "remove", "filters": {"status": ["finished"]}}),
        ("/api/queues/default/pause", None),
        ("/api/queues/default/resume", None),
    ]
    before = snapshot()
    for url, data in writes:
        response = api.post(url, data, format="json")
        assert response.status_code == 403, (url, response.content)
        assert response.json()["detail"]
    for method in (api.put, api.patch, api.delete):
        assert method(f"/api/jobs/{jobs.finished.pk}", {}, format="json").status_code in (403, 405)
    assert snapshot() == before


def test_a_viewer_changes_nothing_through_the_admin(viewer_user, jobs_in_states):
    admin = session(viewer_user)
    jobs = jobs_in_states
    before = snapshot()
    refused = [
        admin.get("/admin/jobs/job/add/"),
        admin.post("/admin/jobs/job/add/", {"type": "example"}),
        admin.get(f"/admin/jobs/job/{jobs.finished.pk}/delete/"),
        admin.post(f"/admin/jobs/job/{jobs.finished.pk}/delete/", {"action": "remove"}),
        admin.post("/admin/jobs/job/statistics/queues/default/pause/"),
        admin.post("/admin/auth/user/add/", {"username": "mallory"}),
        admin.post(f"/admin/auth/user/{viewer_user.pk}/change/", {"is_superuser": "on"}),
        admin.post("/admin/authtoken/tokenproxy/add/", {"user": viewer_user.pk}),
    ]
    for action, job in (
        ("retry", jobs.failed),
        ("cancel", jobs.queued),
        ("promote", jobs.scheduled),
        ("stop", jobs.started),
        ("remove", jobs.finished),
    ):
        refused.append(admin.post(f"/admin/jobs/job/{job.pk}/act/", {"action": action}))
    for response in refused:
        assert response.status_code == 403, (response.request["PATH_INFO"], response.status_code)
    # The list's actions are not offered to a viewer: posting one anyway does nothing.
    for action in ("retry_jobs", "cancel_jobs", "stop_jobs", "promote_jobs", "remove_jobs"):
        selected = [str(job.pk) for job in vars(jobs).values()]
        response = admin.post(
            "/admin/jobs/job/", {"action": action, "_selected_action": selected, "index": "0", "confirmed": "yes"}
        )
        assert response.status_code in (200, 302, 403), (action, response.status_code)
    # Nor does django-rq's dashboard, read-only for everyone.
    rq_job = f"/django-rq/queues/0/{jobs.queued.pk}"
    for url in (f"{rq_job}/delete/", f"{rq_job}/requeue/", "/django-rq/queues/0/empty/"):
        assert admin.post(url).status_code == 405, url
    assert snapshot() == before
    viewer_user.refresh_from_db()
    assert not viewer_user.is_superuser
    assert not User.objects.filter(username="mallory").exists()
    assert not Token.objects.exists()


def test_a_viewer_changes_nothing_through_the_page(viewer_user, jobs_in_states):
    page = session(viewer_user)
    jobs = jobs_in_states
    before = snapshot()
    hx = {"HTTP_HX_REQUEST": "true"}
    assert page.post("/jobs/create/", {"type": "example"}, **hx).status_code == 403
    assert page.get("/jobs/form/", {"type": "email"}).status_code == 403
    for action, job in (
        ("retry", jobs.failed),
        ("cancel", jobs.queued),
        ("promote", jobs.scheduled),
        ("stop", jobs.started),
        ("remove", jobs.finished),
    ):
        response = page.post(f"/jobs/{job.pk}/act/", {"action": action}, **hx)
        assert response.status_code == 403, action
        assert f"You may not {action} jobs." in response.content.decode()
    assert snapshot() == before


# --- writes from a session need the CSRF token ---------------------------------------------------


def test_admin_writes_without_the_csrf_token_are_refused_and_with_it_succeed(
    operator_user: User, jobs_in_states: SimpleNamespace
) -> None:
    admin = session(operator_user, csrf=True)
    failed = jobs_in_states.failed
    token = csrf_token(admin, f"/admin/jobs/job/{failed.pk}/change/")
    writes: list[tuple[str, dict[str, Any]]] = [
        (f"/admin/jobs/job/{failed.pk}/act/", {"action": "retry"}),
        ("/admin/jobs/job/add/", {"type": "example"}),
        ("/admin/jobs/job/statistics/queues/low/pause/", {}),
        ("/admin/jobs/job/", {"action": "cancel_jobs", "_selected_action": [str(jobs_in_states.queued.pk)]}),
    ]
    before = snapshot()
    for url, data in writes:
        refused = admin.post(url, data)
        assert refused.status_code == 403, url
        assert "CSRF" in refused.content.decode(), url
    assert snapshot() == before
    for url, data in writes:
        assert admin.post(url, {**data, "index": "0", "csrfmiddlewaretoken": token}).status_code == 302, url
    assert Job.objects.get(pk=failed.pk).status == JobStatus.QUEUED
    assert Job.objects.get(pk=jobs_in_states.queued.pk).status == JobStatus.CANCELED
    assert Job.objects.count() == 6
    assert queues.paused_queues() == {"low"}


def test_page_writes_without_the_csrf_token_are_refused_and_with_it_succeed(operator_user, jobs_in_states):
    page = session(operator_user, csrf=True)
    failed = jobs_in_states.failed
    token = csrf_token(page, "/jobs/")
    hx = {"HTTP_HX_REQUEST": "true"}
    before = snapshot()
    assert page.post("/jobs/create/", {"type": "example"}, **hx).status_code == 403
    assert page.post(f"/jobs/{failed.pk}/act/", {"action": "retry"}, **hx).status_code == 403
    assert page.post("/accounts/logout/").status_code == 403
    assert snapshot() == before
    created = page.post("/jobs/create/", {"type": "example"}, HTTP_X_CSRFTOKEN=token, **hx)
    assert created.status_code == 201
    retried = page.post(f"/jobs/{failed.pk}/act/", {"action": "retry"}, HTTP_X_CSRFTOKEN=token, **hx)
    assert retried.status_code == 200
    assert Job.objects.get(pk=failed.pk).status == JobStatus.QUEUED
    assert Job.objects.count() == 6


def test_api_writes_with_a_session_need_the_csrf_token(operator_user: User, jobs_in_states: SimpleNamespace) -> None:
    api = APIClient(enforce_csrf_checks=True)
    api.force_login(operator_user)
    token = csrf_token(api, "/jobs/")
    queued = jobs_in_states.queued
    writes: list[tuple[str, Any]] = [
        ("/api/jobs", {}),
        (f"/api/jobs/{queued.pk}/action", {"action": "cancel"}),
        ("/api/jobs/actions", {"action": "retry", "filters": {"status": ["failed"]}}),
        ("/api/queues/low/pause", None),
    ]
    before = snapshot()
    for url, data in writes:
        refused = api.post(url, data, format="json")
        assert refused.status_code == 403, url
        assert "CSRF" in refused.json()["detail"], url
    assert snapshot() == before
    answers = [api.post(url, data, format="json", HTTP_X_CSRFTOKEN=token).status_code for url, data in writes]
    assert answers == [201, 200, 200, 200]
    assert Job.objects.get(pk=queued.pk).status == JobStatus.CANCELED
    assert queues.paused_queues() == {"low"}


# --- inactive users -------------------------------------------------------------------------------


def test_an_inactive_users_token_and_session_are_refused(operator_user, jobs_in_states):
    api = token_client(operator_user)
    page = session(operator_user)
    assert api.get("/api/jobs").status_code == 200
    operator_user.is_active = False
    operator_user.save()
    before = snapshot()
    for response in (
        api.get("/api/jobs"),
        api.get(f"/api/jobs/{jobs_in_states.failed.pk}"),
        api.post("/api/jobs", {}, format="json"),
        api.post(f"/api/jobs/{jobs_in_states.failed.pk}/action", {"action": "retry"}, format="json"),
    ):
        assert response.status_code == 401, response.content
    assert snapshot() == before
    refused = APIClient().post("/api/auth/token/", {"username": "otto", "password": "otto-password"}, format="json")
    assert refused.status_code == 400
    assert "token" not in refused.json()
    assert page.get("/jobs/")["Location"].startswith("/accounts/login/")
    assert page.get("/admin/jobs/job/")["Location"].startswith("/admin/login/")


# --- no request names a Python callable --------------------------------------------------------------

CALLABLE_NAMES = [
    "os.system",
    "jobs.runner.run",
    "builtins.eval",
    "subprocess.Popen",
    "__import__",
    "example.__class__",
]


def deeply_nested(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


def test_the_api_refuses_callables_oversized_and_deeply_nested_params_with_field_errors(operator_user: User) -> None:
    api = token_client(operator_user)
    lengths = queue_lengths()
    bodies: list[tuple[Any, str]] = [
        *(({"type": name}, "type") for name in CALLABLE_NAMES),
        ({"type": ["example"]}, "type"),
        ({"type": {"callable": "os.system"}}, "type"),
        ({"type": "example", "queue": "os.system"}, "queue"),
        ({"type": "example", "params": "os.system"}, "params"),
        ({"type": "example", "params": {"message": "x" * (65 * 1024)}}, "params"),
        ({"type": "example", "params": {"message": deeply_nested(200)}}, "params"),
        ({"type": "bulk_action", "params": {"action": "retry", "filters": {"q": deeply_nested(200)}}}, "params"),
        ([{"type": "example"}, {"type": "os.system"}], "1.type"),
    ]
    for body, field in bodies:
        response = api.post("/api/jobs", body, format="json")
        assert response.status_code == 400, (body if len(str(body)) < 200 else field, response.content[:300])
        errors = response.json()["errors"]
        assert field in errors, (field, errors)
    assert Job.objects.count() == 0
    assert queue_lengths() == lengths


def test_the_api_refuses_json_nested_too_deep_to_parse_with_a_400(operator_user):
    api = token_client(operator_user)
    lengths = queue_lengths()
    body = '{"type": "example", "params": {"message": ' + "[" * 5000 + "]" * 5000 + "}}"
    response = api.post("/api/jobs", body, content_type="application/json")
    assert response.status_code == 400
    assert "nested too deeply" in response.json()["detail"]
    # Around the depth Python gives up at (it depends on how deep the stack already is): the params'
    # own rule answers, on the field, or the body is too deep to read; never a server error.
    for levels in (200, 900, 950, 990, 1000):
        body = '{"type": "example", "params": {"message": ' + "[" * levels + "]" * levels + "}}"
        response = api.post("/api/jobs", body, content_type="application/json")
        assert response.status_code == 400, (levels, response.content[:300])
        answer = response.json()
        assert "params" in answer.get("errors", {}) or "nested too deeply" in answer["detail"], (levels, answer)
    assert Job.objects.count() == 0
    assert queue_lengths() == lengths


def test_the_create_forms_refuse_json_nested_too_deep_to_parse_with_a_400(operator_user):
    client = session(operator_user)
    client.raise_request_exception = False
    params = {"type": "email", "param_to": "[" * 5000 + "]" * 5000, "param_subject": "s", "param_body": "b"}
    for answer in (
        client.post("/jobs/create/", params, HTTP_HX_REQUEST="true"),
        client.post("/admin/jobs/job/add/", params),
    ):
        assert answer.status_code == 400
        assert "levels deep" in answer.content.decode()  # on the form, by the field
    assert Job.objects.count() == 0


def test_params_can_never_carry_a_callable_to_the_worker(operator_user):
    api = token_client(operator_user)
    response = api.post(
        "/api/jobs",
        {"type": "example", "params": {"duration": 1, "func": "os.system", "args": ["rm -rf /"]}, "func": "os.system"},
        format="json",
    )
    assert response.status_code == 201, response.content
    job_id = response.json()["id"]
    stored = Job.objects.get(pk=job_id).params
    assert "func" not in stored
    assert "args" not in stored
    rq_job = RQJob.fetch(job_id, connection=queues.redis(), serializer=queues.SERIALIZER)
    assert rq_job.func_name == rqstore.RUN_FUNC
    assert list(rq_job.args) == ["example", stored]
    assert rq_job.kwargs == {}


def test_the_admin_and_the_page_refuse_callables_as_job_types(operator_user):
    lengths = queue_lengths()
    admin, page = session(operator_user), session(operator_user)
    for name in CALLABLE_NAMES:
        refused = admin.post("/admin/jobs/job/add/", {"type": name})
        assert refused.status_code == 400, name
        assert "Select a valid choice" in refused.content.decode()
        answer = page.post("/jobs/create/", {"type": name}, HTTP_HX_REQUEST="true")
        assert answer.status_code == 400, name
    deep = json.dumps({"status": deeply_nested(100)})
    answer = page.post(
        "/jobs/create/", {"type": "bulk_action", "param_action": "retry", "param_filters": deep}, HTTP_HX_REQUEST="true"
    )
    assert answer.status_code == 400
    assert "levels deep" in answer.content.decode()
    assert Job.objects.count() == 0
    assert queue_lengths() == lengths


def test_a_job_whose_type_is_not_registered_never_runs_anything_else():
    with pytest.raises(UnknownJobType):
        runner.run("os.system", {"command": "true"})


# --- script is escaped wherever it is shown ----------------------------------------------------------


def assert_escaped(html: str, where: str, *, shown: bool = True) -> None:
    for tag in RAW_TAGS:
        assert tag not in html, f"{where}: {tag!r} unescaped"
    if shown:
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, f"{where}: the script payload is not shown escaped"
        assert "&lt;img src=x onerror=alert(1)&gt;" in html, f"{where}: the attribute payload is not shown escaped"


@pytest.fixture
def hostile_jobs() -> SimpleNamespace:
    now = timezone.now()
    failed = history_row(
        JobStatus.FAILED,
        params={"message": f"{SCRIPT} {ATTRIBUTE}"},
        error=f"ValueError: {SCRIPT} {ATTRIBUTE}",
        traceback=f"Traceback (most recent call last):\nValueError: {SCRIPT} {ATTRIBUTE}",
        result={"note": f"{SCRIPT} {ATTRIBUTE}"},
        worker_name=f"w {ATTRIBUTE}",
        attempts=1,
        ended_at=now,
    )
    failed.attempt_set.create(number=1, outcome="failed", worker_name=ATTRIBUTE, error=f"{SCRIPT} {ATTRIBUTE}")
    running = history_row(
        JobStatus.STARTED, attempts=1, progress=40, progress_message=f"{SCRIPT} {ATTRIBUTE}", started_at=now
    )
    return SimpleNamespace(failed=failed, running=running)


def test_script_in_params_results_and_errors_is_escaped_in_the_admin(operator_user, hostile_jobs):
    admin = session(operator_user)
    assert_escaped(admin.get("/admin/jobs/job/").content.decode(), "admin list")
    for job in (hostile_jobs.failed, hostile_jobs.running):
        page = admin.get(f"/admin/jobs/job/{job.pk}/change/")
        assert page.status_code == 200
        assert_escaped(page.content.decode(), f"admin page of {job.status}")
    partial = admin.get(f"/admin/jobs/job/{hostile_jobs.running.pk}/change/", HTTP_HX_REQUEST="true")
    assert_escaped(partial.content.decode(), "admin live partial")
    for payload in PAYLOADS:
        searched = admin.get("/admin/jobs/job/", {"q": payload}).content.decode()
        assert_escaped(searched, "admin search", shown=False)
        assert f'value="{escape(payload)}"' in searched  # the search box shows what was searched, escaped


def test_script_in_params_results_and_errors_is_escaped_on_the_jobs_page(operator_user, hostile_jobs):
    page = session(operator_user)
    assert_escaped(page.get("/jobs/").content.decode(), "jobs page")
    assert_escaped(page.get("/jobs/", {"part": "rows"}, HTTP_HX_REQUEST="true").content.decode(), "rows partial")
    for job in (hostile_jobs.failed, hostile_jobs.running):
        assert_escaped(page.get(f"/jobs/{job.pk}/").content.decode(), f"job page of {job.status}")
    for payload in PAYLOADS:
        for params in ({"q": payload}, {"type": payload}, {"status": payload}, {"cursor": payload}):
            response = page.get("/jobs/", params)
            assert_escaped(response.content.decode(), f"jobs page with {params}", shown=False)
        assert f'value="{escape(payload)}"' in page.get("/jobs/", {"q": payload}).content.decode()
        answer = page.post(f"/jobs/{hostile_jobs.failed.pk}/act/", {"action": payload}, HTTP_HX_REQUEST="true")
        assert answer.status_code == 400
        assert_escaped(answer.content.decode(), "unknown action", shown=False)


def test_script_in_progress_and_rows_is_escaped_in_the_live_feed(hostile_jobs):
    conn = queues.redis()
    running = hostile_jobs.running
    events.emit(conn, str(running.pk), events.PROGRESS, 1, p=50, m=f"{SCRIPT} {ATTRIBUTE}")
    events.emit(conn, str(running.pk), events.FAILED, 1, w=ATTRIBUTE, x=f"ValueError: {SCRIPT}", tb=SCRIPT)
    services.job_retry(job=hostile_jobs.failed)  # announced to live pages as a changed row
    entries = asyncio.run(live.read_since({stream: "0-0" for stream in live.STREAMS}))
    assert entries is not None
    all_actions = frozenset(permissions.ACTION_PERMISSIONS)
    frames = [
        message.frame("0-0|0-0")
        for entry in entries
        for message in live.messages_for(
            entry, live.PageFilter(), lambda s: permissions.allowed_actions(s, all_actions)
        )
    ]
    assert {frame.split("\n")[1] for frame in frames} >= {"event: cells", "event: rows"}
    html = "".join(frames)
    for tag in RAW_TAGS:
        assert tag not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in html


# --- secret params -------------------------------------------------------------------------------


def create_secret_job(operator_user: User) -> tuple[APIClient, dict[str, Any]]:
    api = token_client(operator_user)
    response = api.post(
        "/api/jobs",
        {"type": SECRET_TYPE, "params": {"username": "ada", "password": PASSWORD, "token": TOKEN_VALUE}},
        format="json",
    )
    assert response.status_code == 201, response.content
    return api, response.json()


def assert_no_secret(text: str, where: str) -> None:
    assert PASSWORD not in text, f"{where} shows the password"
    assert TOKEN_VALUE not in text, f"{where} shows the token"


def test_the_types_schema_marks_secret_params_write_only_passwords(viewer_user, secret_type):
    types = {item["name"]: item for item in token_client(viewer_user).get("/api/jobs/types").json()}
    properties = types[SECRET_TYPE]["params_schema"]["properties"]
    for name in ("password", "token"):
        assert properties[name]["writeOnly"] is True, name
        assert properties[name]["format"] == "password", name
    assert "writeOnly" not in properties["username"]
    assert "secret" not in properties["password"]
    assert "writeOnly" not in json.dumps(types["example"]["params_schema"])


def test_secret_params_are_masked_in_the_api_and_the_job_gets_the_real_value(operator_user, viewer_user, secret_type):
    api, created = create_secret_job(operator_user)
    assert created["params"] == {"username": "ada", "password": SECRET_MASK, "token": SECRET_MASK}
    viewer = token_client(viewer_user)
    listed = viewer.get("/api/jobs")
    assert listed.json()["results"][0]["params"]["password"] == SECRET_MASK
    detail = viewer.get(f"/api/jobs/{created['id']}")
    assert detail.json()["params"] == created["params"]
    browsable = session(viewer_user).get(f"/api/jobs/{created['id']}/", HTTP_ACCEPT="text/html")
    assert browsable.status_code == 200
    bulk = api.post(
        "/api/jobs", [{"type": SECRET_TYPE, "params": {"username": "bo", "password": PASSWORD}}] * 2, format="json"
    )
    assert bulk.status_code == 201, bulk.content

    # Stored as given, in the history and in Redis: the job needs it, and so does a retry.
    row = Job.objects.get(pk=created["id"])
    assert row.params == {"username": "ada", "password": PASSWORD, "token": TOKEN_VALUE}
    rq_job = RQJob.fetch(str(row.pk), connection=queues.redis(), serializer=queues.SERIALIZER)
    assert rq_job.args[1]["password"] == PASSWORD
    assert_no_secret(rq_job.description or "", "the RQ job's description (what workers log)")
    assert runner.run(SECRET_TYPE, rq_job.args[1]) == {"logged_in_as": "ada"}
    assert RECEIVED == [{"username": "ada", "password": PASSWORD, "token": TOKEN_VALUE}]

    canceled = api.post(f"/api/jobs/{created['id']}/action", {"action": "cancel"}, format="json")
    assert canceled.json()["params"]["password"] == SECRET_MASK
    for response, where in (
        (listed, "the list"),
        (detail, "the detail"),
        (browsable, "the browsable API"),
        (bulk, "the bulk answer"),
        (canceled, "an action's answer"),
    ):
        assert_no_secret(response.content.decode(), where)


def test_secret_params_are_masked_in_the_admin_and_its_form_asks_for_a_password(operator_user, secret_type):
    _, created = create_secret_job(operator_user)
    admin = session(operator_user)
    page = admin.get(f"/admin/jobs/job/{created['id']}/change/").content.decode()
    assert "&quot;username&quot;: &quot;ada&quot;" in page
    assert f"&quot;password&quot;: &quot;{SECRET_MASK}&quot;" in page
    assert_no_secret(page, "the admin's job page")
    assert_no_secret(admin.get("/admin/jobs/job/").content.decode(), "the admin list")
    form = admin.get("/admin/jobs/job/add/", {"type": SECRET_TYPE}).content.decode()
    assert re.search(r'<input type="password" name="param_password"[^>]*autocomplete="new-password"', form)
    assert re.search(r'<input type="password" name="param_token"', form)
    assert not re.search(r'type="password" name="param_username"', form)
    # A refused form is drawn again without the secret typed into it.
    refused = admin.post("/admin/jobs/job/add/", {"type": SECRET_TYPE, "param_password": PASSWORD})
    assert refused.status_code == 400
    assert "param_username" in refused.content.decode()
    assert_no_secret(refused.content.decode(), "the admin's refused form")
    made = admin.post("/admin/jobs/job/add/", {"type": SECRET_TYPE, "param_username": "cy", "param_password": PASSWORD})
    assert made.status_code == 302
    assert Job.objects.get(params__username="cy").params["password"] == PASSWORD


def test_secret_params_are_masked_on_the_jobs_page_and_its_form_asks_for_a_password(operator_user, secret_type):
    _, created = create_secret_job(operator_user)
    page = session(operator_user)
    detail = page.get(f"/jobs/{created['id']}/").content.decode()
    assert f"&quot;password&quot;: &quot;{SECRET_MASK}&quot;" in detail
    assert_no_secret(detail, "the job's page")
    assert_no_secret(page.get("/jobs/").content.decode(), "the jobs page")
    form = page.get("/jobs/form/", {"type": SECRET_TYPE}).content.decode()
    assert re.search(r'<input type="password" name="param_password"', form)
    refused = page.post("/jobs/create/", {"type": SECRET_TYPE, "param_password": PASSWORD}, HTTP_HX_REQUEST="true")
    assert refused.status_code == 400
    assert_no_secret(refused.content.decode(), "the page's refused form")


def test_the_live_feed_carries_no_params(operator_user, secret_type):
    _, created = create_secret_job(operator_user)
    services.job_cancel(job=Job.objects.get(pk=created["id"]))
    conn = queues.redis()
    raw = [fields for stream in live.STREAMS for _, fields in conn.xrange(stream)]
    assert raw, "the services announced nothing"
    assert_no_secret(repr(raw), "the live stream in Redis")
    assert "params" not in repr(raw)
    entries = asyncio.run(live.read_since({stream: "0-0" for stream in live.STREAMS}))
    assert entries
    html = "".join(
        message.frame(None)
        for entry in entries
        for message in live.messages_for(entry, live.PageFilter(), lambda status: [])
    )
    assert f"job-{created['id']}" in html
    assert_no_secret(html, "the live feed")


def test_no_log_line_shows_a_secret(operator_user, viewer_user, secret_type, caplog):
    caplog.set_level(logging.DEBUG)
    api, created = create_secret_job(operator_user)
    token_client(viewer_user).get("/api/jobs")
    session(operator_user).get(f"/jobs/{created['id']}/")
    session(operator_user).get(f"/admin/jobs/job/{created['id']}/change/")
    api.post("/api/jobs", {"type": SECRET_TYPE, "params": {"password": PASSWORD}}, format="json")  # refused: 400
    runner.run(SECRET_TYPE, Job.objects.get(pk=created["id"]).params)
    with pytest.raises(InvalidParams) as refused:
        secret_type.validate({"password": PASSWORD, "token": 42})
    assert_no_secret(str(refused.value), "a validation error")
    assert caplog.records, "nothing was logged: the capture is not working"
    assert any("logged in as ada" in record.getMessage() for record in caplog.records)
    for record in caplog.records:
        assert_no_secret(record.getMessage(), f"the log line {record.name}")


def test_a_job_whose_stored_params_no_longer_validate_fails_without_showing_its_secrets(secret_type):
    with pytest.raises((ValueError, JobError)) as failed:
        runner.run(SECRET_TYPE, {"password": PASSWORD, "token": TOKEN_VALUE})  # username is missing
    recorded = "".join(traceback.format_exception(failed.value))
    assert_no_secret(recorded, "the error a worker records")
    assert "params.username: Field required" in recorded  # what is wrong, for whoever reads the job's error
    assert RECEIVED == []  # the job's function never ran


def test_a_secret_cannot_be_found_by_searching_for_it(operator_user, viewer_user, secret_type):
    _, created = create_secret_job(operator_user)
    viewer = token_client(viewer_user)

    def found(term: str) -> dict[str, list[str]]:
        """What each search box finds: the API's, the admin's and the Jobs page's."""
        api = [job["id"] for job in viewer.get("/api/jobs", {"search": term}).json()["results"]]
        admin = session(operator_user).get("/admin/jobs/job/", {"q": term}).content.decode()
        page = session(operator_user).get("/jobs/", {"q": term}).content.decode()
        return {
            "api": api,
            "admin": [created["id"]] if f"/admin/jobs/job/{created['id']}/change/" in admin else [],
            "page": [created["id"]] if f'id="job-{created["id"]}"' in page else [],
        }

    nothing: dict[str, list[str]] = {"api": [], "admin": [], "page": []}
    the_job = {"api": [created["id"]], "admin": [created["id"]], "page": [created["id"]]}
    assert found(PASSWORD) == nothing
    assert found(TOKEN_VALUE) == nothing
    assert found(f'"password": "{PASSWORD[:3]}') == nothing
    # The rest of the params, and the job's id, are still found.
    assert found('"username": "ada"') == the_job
    assert found(created["id"]) == the_job
    assert found(SECRET_MASK) == the_job  # what everyone sees in its params

    # A row written before secrets were kept out of search has its secrets masked by the migration.
    Job.objects.filter(pk=created["id"]).update(search_params=None)
    assert found(PASSWORD)["api"] == [created["id"]]
    importlib.import_module("jobs.migrations.0009_search_params").mask_secrets_for_search(django_apps, None)
    assert found(PASSWORD) == nothing
    assert Job.objects.get(pk=created["id"]).params["password"] == PASSWORD  # the job still gets it


def test_django_rqs_dashboard_shows_no_secret(operator_user, secret_type):
    _, created = create_secret_job(operator_user)
    index = list(settings.RQ_QUEUES).index("low")
    client = session(operator_user)
    for url in (
        f"/django-rq/queues/{index}/{created['id']}/",
        f"/admin/django_rq/dashboard/queues/{index}/{created['id']}/",
    ):
        page = client.get(url)
        assert page.status_code == 200, url
        html = page.content.decode()
        assert_no_secret(html, f"django-rq's job page {url}")
        # The arguments are shown, with the secrets masked as everywhere else.
        assert f"{SECRET_TYPE}</li>" in html, url
        assert escape(str({"username": "ada", "password": SECRET_MASK, "token": SECRET_MASK})) in html, url
    # What the worker gets is untouched.
    rq_job = RQJob.fetch(created["id"], connection=queues.redis(), serializer=queues.SERIALIZER)
    assert rq_job.args[1]["password"] == PASSWORD


# --- nothing reveals where Redis and the database are, or their passwords --------------------------------


@pytest.fixture
def redis_with_password() -> Iterator[int]:
    """The queues and the cache at a Redis that does not answer, reached with a password."""
    port = closed_port()
    rq_queues = {
        name: {**config, "HOST": "127.0.0.1", "PORT": port, "PASSWORD": REDIS_PASSWORD}
        for name, config in settings.RQ_QUEUES.items()
    }
    caches = {"default": {**settings.CACHES["default"], "LOCATION": f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"}}
    with override_settings(RQ_QUEUES=rq_queues, CACHES=caches, DEBUG=True):
        queues.reset()
        cache.close()
        try:
            yield port
        finally:
            queues.reset()
            cache.close()
    queues.reset()


def leaks(text: str, port: int) -> list[str]:
    """What `text` reveals of Redis, the database, or a server error page."""
    database = connection.settings_dict
    secrets = [
        REDIS_PASSWORD,
        f":{port}",
        "127.0.0.1",
        "redis://",
        str(database["NAME"]),
        "Traceback",
        "Error 111",
        "Connection refused",
        # Django's DEBUG pages.
        "Request Method:",
        "DEBUG = True",
        "Django Version",
    ]
    if database.get("PASSWORD"):
        secrets.append(str(database["PASSWORD"]))
    return [leak for leak in secrets if leak in text]


def assert_reveals_nothing(answers: dict[str, Any], port: int, unavailable: set[str]) -> None:
    for name, response in answers.items():
        expected = 503 if name in unavailable else 200
        assert response.status_code == expected, (name, response.status_code)
        assert leaks(response.content.decode(errors="replace"), port) == [], name


def test_the_admin_the_pages_and_readyz_reveal_no_address_or_password_when_redis_is_down(
    operator_user, jobs_in_states, redis_with_password
):
    port = redis_with_password
    admin, page = session(operator_user), session(operator_user)
    admin.raise_request_exception = page.raise_request_exception = False
    hx = {"HTTP_HX_REQUEST": "true"}
    failed = jobs_in_states.failed
    answers = {
        "admin create": admin.post("/admin/jobs/job/add/", {"type": "example"}),
        "admin action": admin.post(f"/admin/jobs/job/{failed.pk}/act/", {"action": "retry"}, follow=True),
        "admin list": admin.get("/admin/jobs/job/"),
        "admin job page": admin.get(f"/admin/jobs/job/{failed.pk}/change/"),
        "page create": page.post("/jobs/create/", {"type": "example"}, **hx),
        "page action": page.post(f"/jobs/{failed.pk}/act/", {"action": "retry"}, **hx),
        "job page": page.get(f"/jobs/{failed.pk}/"),
        "readyz": Client().get("/readyz"),
    }
    assert_reveals_nothing(answers, port, unavailable={"admin create", "page create", "page action", "readyz"})
    assert "unavailable" in answers["admin create"].content.decode()
    assert "unavailable" in answers["page create"].content.decode()
    assert "The queue (Redis) is unavailable" in answers["admin action"].content.decode()
    assert Job.objects.count() == 5


def test_the_statistics_and_the_jobs_page_say_redis_is_unavailable_and_reveal_nothing(
    operator_user, jobs_in_states, redis_with_password
):
    port = redis_with_password
    client = session(operator_user)
    client.raise_request_exception = False
    answers = {
        "admin statistics": client.get("/admin/jobs/job/statistics/"),
        "jobs page": client.get("/jobs/"),
        "cards": client.get("/jobs/cards/"),
        "cards (htmx)": client.get("/jobs/cards/", HTTP_HX_REQUEST="true"),
    }
    assert_reveals_nothing(answers, port, unavailable={"admin statistics", "cards", "cards (htmx)"})
    said = "The queue (Redis) is unavailable: statistics will be back when it answers."
    for name, response in answers.items():
        assert said in response.content.decode(), name
    # The page still lists the history, which lives in the database.
    assert f'id="job-{jobs_in_states.failed.pk}' in answers["jobs page"].content.decode()


def test_the_api_reveals_no_address_or_password_when_redis_is_down(
    operator_user, jobs_in_states, redis_with_password, caplog
):
    caplog.set_level(logging.WARNING)
    port = redis_with_password
    api = token_client(operator_user)
    answers = {
        "create": api.post("/api/jobs", {}, format="json"),
        "action": api.post(f"/api/jobs/{jobs_in_states.queued.pk}/action", {"action": "cancel"}, format="json"),
        "stats": api.get("/api/jobs/stats"),
        "queues": api.get("/api/queues"),
        "pause": api.post("/api/queues/low/pause"),
    }
    for name, response in answers.items():
        assert response.status_code == 503, (name, response.status_code)
        assert response.json() == {"detail": "The job queue is unavailable; try again shortly."}, name
        assert int(response["Retry-After"]) > 0, name
        assert leaks(response.content.decode(), port) == [], name
    # The cause is for the server's log, which an operator reads.
    assert any(f":{port}" in record.getMessage() for record in caplog.records), "the Redis error was not logged"


def test_the_api_reveals_nothing_of_the_database_when_it_fails(operator_user, monkeypatch):
    url = "postgres://app:db-secret-pw@db.internal:5432/jobs_production"

    def broken(**kwargs: Any) -> Any:
        raise OperationalError(f'connection to server at "db.internal" failed for {url}')

    monkeypatch.setattr(selectors, "job_list", broken)
    monkeypatch.setattr(selectors, "job_get", broken)
    api = token_client(operator_user)
    for response in (api.get("/api/jobs"), api.get(f"/api/jobs/{uuid.uuid4()}")):
        assert response.status_code == 503
        assert response.json() == {"detail": "the database is unavailable"}
        assert int(response["Retry-After"]) > 0
        for leak in ("db.internal", "db-secret-pw", "jobs_production", "postgres://"):
            assert leak not in response.content.decode()
