"""The live Jobs page as people use it, in a real browser.

The site runs as deployed (gunicorn with the uvicorn worker, so the page's push connection works:
see `asgi_server`), jobs run on a real worker, and everything is checked as the page shows it: the
rows, the badges, the progress bar, the messages, the live state, the statistics cards.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import APIRequestContext, Dialog, Locator, Page, Playwright, expect

from jobs import services
from jobs.models import Job
from jobs.statuses import JobStatus
from tests.browser.conftest import ADMIN_PASSWORD, ADMIN_USERNAME, PHONE, AsgiServer
from tests.conftest import Processes, wait_for
from tests.helpers import VIEWERS, history_row, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

Shot = Callable[[Page, str], Path]

SIMPLE_WORKER = "jobs.worker.SimpleWorker"
#: Set on `window` once the page is open: a reload would take it away.
MARKER = "__jobsPageNotReloaded"
#: How long an orchestrator waits after SIGTERM before it kills (docker compose's default stop grace period,
#: which the web service keeps).
STOP_GRACE_S = 10
LOGIN_URL = re.compile(r"/accounts/login/\?next=(/|%2F)jobs(/|%2F)$")
JOBS_URL = re.compile(r"/jobs/$")

#: A job's row as the page shows it while its bar moves, read at once: the bar's value, its width and its
#: text, the badge, the attempt and the buttons; when the value is between 1 and 99 and above `above`
#: (null otherwise).
READ_PROGRESS = """
([id, above]) => {
    const cell = document.getElementById(`job-${id}-progress`);
    const bar = cell && cell.querySelector(".job-progress");
    if (!bar) return null;
    const value = Number(bar.getAttribute("aria-valuenow"));
    if (!(value >= 1 && value <= 99 && value > above)) return null;
    const text = (selector) => {
        const found = document.querySelector(selector);
        return found ? found.textContent.trim() : "";
    };
    return {
        value,
        width: bar.querySelector("span").style.width,
        text: text(`#job-${id}-progress .job-progress-text`),
        badge: text(`#job-${id}-status .job-badge`),
        attempt: text(`#job-${id}-attempt`),
        buttons: Array.from(document.querySelectorAll(`#job-${id}-actions button`), (b) => b.textContent.trim()),
    };
}
"""
#: Counts the answers to action buttons htmx has handled. (Listened for on the button itself: once the
#: live feed has redrawn the row, the button is no longer in the document, and neither are its events.)
COUNT_ANSWERS = """
window.__answers = 0;
document.addEventListener("htmx:beforeRequest", (event) => {
    const button = event.detail.elt;
    if (!button.classList.contains("job-act")) return;
    button.addEventListener("htmx:afterOnLoad", () => { window.__answers += 1; }, {once: true});
});
"""


# --- helpers ------------------------------------------------------------------------------------


def log_in(page: Page, username: str = ADMIN_USERNAME, password: str = ADMIN_PASSWORD) -> None:
    """From `/`, through the login form, to the Jobs page."""
    page.goto("/")
    expect(page).to_have_url(LOGIN_URL)
    page.locator("#id_username").fill(username)
    page.locator("#id_password").fill(password)
    page.locator("button[type=submit]").click()
    expect(page).to_have_url(JOBS_URL)
    expect(page.get_by_role("heading", name="Jobs", level=1)).to_be_visible()


def open_live(page: Page, username: str = ADMIN_USERNAME, password: str = ADMIN_PASSWORD) -> None:
    """Log in, wait until the page says "Live", and mark the page so that a reload would show."""
    log_in(page, username, password)
    expect(page.locator("#job-live-state")).to_have_text("Live")
    page.evaluate(f"window.{MARKER} = true")


def assert_not_reloaded(page: Page) -> None:
    assert page.evaluate(f"window.{MARKER} === true"), "the page was loaded again"


def badge(page: Page, job_id: Any) -> Locator:
    return page.locator(f"#job-{job_id}-status .job-badge")


def short(job_id: Any) -> str:
    return str(job_id)[:8]


def stop_worker(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to a worker the test started (its own process group); wait until it is gone."""
    os.killpg(process.pid, signal.SIGTERM)
    process.wait(timeout=20)


def press(page: Page, button: Locator) -> str:
    """Press an action button; once htmx has handled the answer, return what `#job-message` says."""
    answered = page.evaluate("window.__answers")
    button.click()
    page.wait_for_function("(before) => window.__answers > before", arg=answered)
    return page.locator("#job-message").inner_text().strip()


#: What the page shows when a worker's first event about a new job reaches it before the job's row.
ROW_BEHIND = (
    "the worker's 'started' event reached the page before the row itself (the announcement of the new job): "
    "the page dropped it and drew the row as queued; progress reports redraw only the bar, and the job's end "
    "does not redraw the attempts"
)


@pytest.fixture
def api(playwright: Playwright, asgi_server: AsgiServer) -> Iterator[APIRequestContext]:
    """A client of the REST API, apart from the browser (it authenticates with a token)."""
    context = playwright.request.new_context(base_url=asgi_server.url)
    yield context
    context.dispose()


def api_token(api: APIRequestContext, username: str, password: str) -> str:
    response = api.post("/api/auth/token/", data={"username": username, "password": password})
    assert response.status == 200, response.text()
    return str(response.json()["token"])


# --- the tests ----------------------------------------------------------------------------------


def test_home_leads_through_the_login_form_to_the_live_jobs_page(
    asgi_page: Page, admin_user: Any, screenshot: Shot
) -> None:
    page = asgi_page
    page.goto("/")
    expect(page).to_have_url(LOGIN_URL)
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    screenshot(page, "login")

    page.locator("#id_username").fill(ADMIN_USERNAME)
    page.locator("#id_password").fill("not the password")
    page.locator("button[type=submit]").click()
    expect(page.locator(".errornote")).to_contain_text("did not match")

    page.locator("#id_username").fill(ADMIN_USERNAME)
    page.locator("#id_password").fill(ADMIN_PASSWORD)
    page.locator("button[type=submit]").click()
    expect(page).to_have_url(JOBS_URL)
    expect(page.get_by_role("heading", name="Jobs", level=1)).to_be_visible()
    expect(page.locator("#job-live-state")).to_have_text("Live")
    expect(page.locator("#job-empty")).to_contain_text("No job yet")
    expect(page.locator("#create-test-job")).to_be_visible()
    # The stylesheets were served (WhiteNoise) and applied.
    assert page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--header-bg')").strip()
    screenshot(page, "live")

    # Logged in, `/` leads straight to the page.
    page.goto("/")
    expect(page).to_have_url(JOBS_URL)
    admin_user.refresh_from_db()
    assert admin_user.last_login is not None


def test_a_test_job_runs_live_in_the_open_page(
    asgi_page: Page, asgi_phone_page: Page, admin_user: Any, processes: Processes, screenshot: Shot
) -> None:
    processes.worker(worker_class=SIMPLE_WORKER)
    page = asgi_page
    open_live(page)

    page.locator("#create-test-job").click()
    expect(page.locator("#job-rows tr.job-row")).to_have_count(1)
    job = Job.objects.get()
    assert (job.type, job.created_by) == ("example", admin_user)
    row = page.locator(f"#job-{job.pk}")
    expect(row.locator(".col-type")).to_have_text("example")

    # The bar moves: two different values between 1 and 99, one after the other, each drawn as the
    # bar's width and as its text.
    seen: list[dict[str, Any]] = []
    for _ in range(2):
        above = max((shown["value"] for shown in seen), default=0)
        shown = page.wait_for_function(READ_PROGRESS, arg=[str(job.pk), above]).json_value()
        assert shown["width"] == f"{shown['value']}%", shown
        assert shown["text"].startswith(f"{shown['value']} %"), shown
        seen.append(shown)
        if len(seen) == 1:
            screenshot(page, "running")
    assert 1 <= seen[0]["value"] < seen[1]["value"] <= 99, seen

    expect(badge(page, job.pk)).to_have_text("Finished", timeout=15_000)
    expect(page.locator(f"#job-{job.pk}-progress .job-progress")).to_have_count(0)
    attempt_at_the_end = page.locator(f"#job-{job.pk}-attempt").inner_text().strip()
    expect(page.locator(f"#job-{job.pk}-ended")).to_contain_text(re.compile(r"· \d+\.\d s"))
    expect(page.locator("#card-finished")).to_have_text("1")
    assert_not_reloaded(page)
    screenshot(page, "finished")
    job.refresh_from_db()
    assert job.status == JobStatus.FINISHED

    phone = asgi_phone_page
    log_in(phone)
    expect(phone.locator("#job-live-state")).to_have_text("Live")
    expect(badge(phone, job.pk)).to_have_text("Finished")
    width = phone.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the page is {width}px wide on a {PHONE['width']}px phone"
    screenshot(phone, "phone")

    # While the bar moved, the row said the job was running, on its first attempt, and offered to stop it;
    # at the end it still says it took one attempt.
    running = [(shown["badge"], shown["attempt"], shown["buttons"]) for shown in seen]
    assert running == [("Started", "1/3", ["Stop"])] * 2, (
        f"while its bar moved, the row showed (badge, attempt, buttons) {running}: {ROW_BEHIND}"
    )
    assert attempt_at_the_end == "1/3", f"the row shows attempts {attempt_at_the_end!r} at the end: {ROW_BEHIND}"


def test_a_failing_job_is_retried_then_removed_from_its_row(
    asgi_page: Page, api: APIRequestContext, admin_user: Any, processes: Processes, screenshot: Shot
) -> None:
    worker = processes.worker(worker_class=SIMPLE_WORKER)
    processes.scheduler()  # puts the retries back on the queue when they are due
    page = asgi_page
    open_live(page)
    page.evaluate(COUNT_ANSWERS)

    token = api_token(api, ADMIN_USERNAME, ADMIN_PASSWORD)
    response = api.post(
        "/api/jobs",
        data={"type": "example", "params": {"duration": 0.2, "steps": 2, "fail": True}},
        headers={"Authorization": f"Token {token}"},
    )
    assert response.status == 201, response.text()
    job_id = response.json()["id"]
    row = page.locator(f"#job-{job_id}")
    expect(row).to_be_visible()

    # Attempts 1 and 2 fail and wait for the next one (about 2 s, then 4 s); the third fails for good.
    expect(badge(page, job_id)).to_have_text("Scheduled")
    expect(badge(page, job_id)).to_have_text("Failed", timeout=20_000)
    expect(page.locator(f"#job-{job_id}-attempt")).to_have_text("3/3")
    actions = page.locator(f"#job-{job_id}-actions")
    expect(actions.get_by_role("button")).to_have_text(["Retry", "Remove"])
    screenshot(page, "failed")

    # With no worker left to take it, the retried job stays queued (and can be removed).
    stop_worker(worker)
    said: dict[str, str] = {}
    said["retry"] = press(page, actions.get_by_role("button", name="Retry"))
    expect(badge(page, job_id)).to_have_text("Queued")
    expect(actions.get_by_role("button")).to_have_text(["Cancel", "Remove"])
    screenshot(page, "retried")

    dialogs: list[str] = []

    def accept(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    said["remove"] = press(page, actions.get_by_role("button", name="Remove"))
    expect(row).to_have_count(0)
    assert dialogs == [f"Remove job {short(job_id)}? It is deleted from Redis and from the history."]
    assert not Job.objects.filter(pk=job_id).exists()
    # The statistics follow: nothing waits any more.
    expect(page.locator("#card-queued")).to_have_text("0")
    expect(page.locator("#job-warnings")).to_have_count(0)
    assert_not_reloaded(page)
    screenshot(page, "removed")

    expected = {"retry": f"Job {short(job_id)} retried.", "remove": f"Job {short(job_id)} removed."}
    assert said == expected, (
        f"the page said {said}, not {expected}: the live feed redrew the row before the action's answer "
        "arrived, and the answer's out-of-band #job-message was lost with the detached button's old row"
    )


def test_the_page_catches_up_after_the_server_restarts(
    asgi_page: Page, asgi_server: AsgiServer, admin_user: Any, processes: Processes, screenshot: Shot
) -> None:
    processes.worker(worker_class=SIMPLE_WORKER)
    page = asgi_page
    open_live(page)
    state = page.locator("#job-live-state")

    # Stopped as an orchestrator stops it: SIGTERM, and SIGKILL if it is still there after the grace period.
    stopped_on_sigterm = asgi_server.stop(grace=STOP_GRACE_S)
    expect(state).to_have_text("Reconnecting…")
    screenshot(page, "reconnecting")

    job = services.job_enqueue(type="example", params={"duration": 0.4, "steps": 2})
    wait_for(
        lambda: Job.objects.filter(pk=job.pk, status=JobStatus.FINISHED).exists(),
        message="the job to finish while the server is down",
    )
    expect(page.locator(f"#job-{job.pk}")).to_have_count(0)

    asgi_server.start()
    # The browser reconnects by itself (every 2 s; after repeated failures the page backs off): allow for that.
    expect(badge(page, job.pk)).to_have_text("Finished", timeout=30_000)
    expect(state).to_have_text("Live", timeout=30_000)
    attempt = page.locator(f"#job-{job.pk}-attempt").inner_text().strip()
    expect(page.locator("#card-finished")).to_have_text("1")
    assert_not_reloaded(page)
    screenshot(page, "caught-up")

    # The server ended the page's event stream when it was asked to stop, rather than wait for it
    # until gunicorn's graceful timeout (30 s) and be killed (queueproject/web_worker.py).
    assert stopped_on_sigterm, f"gunicorn did not exit within {STOP_GRACE_S} s of SIGTERM with a live page open"
    assert attempt == "1/3", f"the caught-up row shows attempts {attempt!r}, not '1/3': {ROW_BEHIND}"


def test_a_viewer_sees_the_jobs_and_no_button(asgi_page: Page, screenshot: Shot) -> None:
    viewer = make_user("viewer", groups=(VIEWERS,))
    assert not viewer.is_staff
    now = timezone.now()
    finished = history_row(
        JobStatus.FINISHED, attempts=1, started_at=now - timedelta(seconds=4), ended_at=now - timedelta(seconds=2)
    )
    failed = history_row(
        JobStatus.FAILED,
        attempts=3,
        error="RuntimeError: the example job was asked to fail",
        started_at=now - timedelta(seconds=3),
        ended_at=now - timedelta(seconds=1),
    )
    Job.objects.filter(pk__in=[finished.pk, failed.pk]).update(created_at=now - timedelta(seconds=5))
    page = asgi_page
    open_live(page, "viewer", "viewer-password")

    expect(page.locator("#job-rows tr.job-row")).to_have_count(2)
    expect(badge(page, finished.pk)).to_have_text("Finished")
    expect(badge(page, failed.pk)).to_have_text("Failed")
    expect(page.locator("#create-test-job")).to_have_count(0)
    expect(page.locator("#job-rows button")).to_have_count(0)

    # A job created elsewhere comes in live, without buttons either (an operator would see Cancel, Remove).
    queued = services.job_enqueue(type="example")
    expect(badge(page, queued.pk)).to_have_text("Queued")
    expect(page.locator("#job-rows tr.job-row")).to_have_count(3)
    expect(page.locator("#job-rows button")).to_have_count(0)
    assert_not_reloaded(page)
    screenshot(page, "viewer")
