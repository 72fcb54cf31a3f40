"""The admin as an operator uses it, in a real browser: create a job, retry a failed one, read the statistics."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from jobs import queues
from jobs.models import Job, JobAudit
from jobs.statuses import JobStatus
from tests.helpers import history_row

pytestmark = pytest.mark.browser

Shot = Callable[[Page, str], Path]


def test_create_a_job_from_the_create_job_view(logged_in_page: Page, screenshot: Shot) -> None:
    page = logged_in_page
    page.goto("/admin/jobs/job/")
    page.get_by_role("link", name="Create job").click()
    expect(page.get_by_role("heading", name="Create job")).to_be_visible()
    page.wait_for_load_state()  # htmx binds the form's controls once the page has loaded

    # Choosing a type swaps in the fields of its params schema.
    page.get_by_label("Job type").select_option("email")
    expect(page.get_by_label("To:", exact=True)).to_be_visible()
    page.get_by_label("To:", exact=True).fill("not an address")
    page.get_by_label("Subject:").fill("Quarterly report")
    page.get_by_label("Body:").fill("Attached.")
    page.get_by_role("button", name="Create job").click()
    expect(page.locator(".errornote")).to_be_visible()
    expect(page.locator(".field-param_to .errorlist")).to_contain_text("not an address")
    screenshot(page, "field-errors")
    assert not Job.objects.exists()

    page.get_by_label("To:", exact=True).fill("ada@example.com")
    page.get_by_label("Queue").select_option("low")
    page.get_by_role("button", name="Create job").click()
    expect(page.locator(".messagelist")).to_contain_text("created")
    job = Job.objects.get()
    expect(page).to_have_url(re.compile(rf"/admin/jobs/job/{job.pk}/change/$"))
    expect(page.locator("#job-live")).to_contain_text("Queued")
    expect(page.locator(".job-json").first).to_contain_text("ada@example.com")
    screenshot(page, "created")
    assert job.params["to"] == ["ada@example.com"]
    assert job.queue == "low"
    assert queues.get_queue("low").get_job_ids() == [str(job.pk)]


def test_retry_a_failed_job_from_the_list(logged_in_page: Page, screenshot: Shot) -> None:
    failed = history_row(
        JobStatus.FAILED, attempts=3, error="RuntimeError: the example job was asked to fail", ended_at=timezone.now()
    )
    history_row(JobStatus.FINISHED, attempts=1, ended_at=timezone.now())
    page = logged_in_page
    page.goto("/admin/jobs/job/?status=failed")
    rows = page.locator("#result_list tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first.locator(".job-badge")).to_have_text("Failed")
    screenshot(page, "failed-filter")

    rows.first.locator("input.action-select").check()
    page.locator("select[name=action]").first.select_option("retry_jobs")
    page.get_by_role("button", name="Go").first.click()
    expect(page.locator(".messagelist")).to_contain_text("1 retried.")
    screenshot(page, "retried")
    failed.refresh_from_db()
    assert failed.status == JobStatus.QUEUED
    assert queues.get_queue("default").get_job_ids() == [str(failed.pk)]
    assert JobAudit.objects.get(job_id=failed.pk).username == "admin"


def test_the_statistics_view_shows_its_charts(logged_in_page: Page, phone_page: Page, login, screenshot: Shot) -> None:
    now = timezone.now()
    for minutes, status in (
        (1, JobStatus.FINISHED),
        (2, JobStatus.FINISHED),
        (5, JobStatus.FAILED),
        (90, JobStatus.FINISHED),
    ):
        end = now - timedelta(minutes=minutes)
        history_row(
            status,
            attempts=1,
            enqueued_at=end - timedelta(seconds=3),
            started_at=end - timedelta(seconds=2),
            ended_at=end,
        )
    page = logged_in_page
    page.goto("/admin/")
    page.get_by_role("link", name="Job statistics and queue health").click()
    expect(page.get_by_role("heading", name="Job statistics")).to_be_visible()
    minute_chart = page.locator("svg#chart-minute")
    expect(minute_chart).to_be_visible()
    expect(minute_chart.locator("title").first).to_have_text(
        "Jobs processed per minute, last hour: 3 processed, 1 failed."
    )
    expect(minute_chart.locator("rect.bar")).to_have_count(3)
    expect(minute_chart.locator("rect.bar-failed")).to_have_count(1)
    expect(page.locator("svg#chart-hour rect.bar").first).to_be_visible()
    expect(page.locator("#job-types")).to_contain_text("example")
    # No worker and no scheduler run in this test: queue health says so, in red.
    expect(page.locator("#job-health-warnings")).to_contain_text("No scheduler is running")
    expect(page.locator("#job-workers")).to_contain_text("No worker is running")
    # The counts link to the filtered list.
    page.locator("#job-status-cards").get_by_text("Failed", exact=True).click()
    expect(page).to_have_url(re.compile(r"/admin/jobs/job/\?status=failed$"))
    page.go_back()
    screenshot(page, "desktop")

    login(phone_page, next_url="/admin/jobs/job/statistics/")
    expect(phone_page.locator("svg#chart-minute")).to_be_visible()
    width = phone_page.evaluate("document.documentElement.scrollWidth")
    assert width <= 400, f"the page is {width}px wide on a 390px phone"
    screenshot(phone_page, "phone")


def test_make_a_schedule_see_its_next_run_in_its_zone_and_run_it_now(logged_in_page: Page, screenshot: Shot) -> None:
    page = logged_in_page
    page.goto("/admin/jobs/schedule/add/")
    page.get_by_label("Name:").fill("nightly report")
    page.get_by_label("Job type:").select_option("example")
    page.get_by_label("Params:").fill('{"duration": 0}')
    page.get_by_label("Cron:").fill("30 26 * * *")
    page.get_by_label("Time zone:").fill("Europe/Berlin")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".field-cron .errorlist")).to_contain_text("is not a cron expression")
    screenshot(page, "refused")

    page.get_by_label("Cron:").fill("30 2 * * *")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(page.locator(".messagelist")).to_contain_text("was added successfully")
    row = page.locator("#result_list tbody tr").first
    expect(row).to_contain_text("nightly report")
    expect(row).to_contain_text("30 2 * * *")
    expect(row).to_contain_text(re.compile(r"02:30 CES?T"))
    screenshot(page, "list")

    row.locator("input[type=checkbox]").check()
    page.locator("select[name=action]").select_option("run_now")
    page.get_by_role("button", name="Go").click()
    expect(page.locator(".messagelist")).to_contain_text("1 job(s) created.")
    job = Job.objects.get()
    page.get_by_role("link", name="nightly report").click()
    expect(page.locator(".field-recent_runs")).to_contain_text("run now")
    expect(page.locator(f'.field-recent_runs a[href="/admin/jobs/job/{job.pk}/change/"]')).to_be_visible()
    screenshot(page, "runs")
    audit = JobAudit.objects.get(job_id=job.pk)
    assert audit.note == "schedule 'nightly report', run now"
