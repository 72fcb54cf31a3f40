"""The admin in a real browser: log in through the login form, find the Jobs model, on desktop and phone."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

pytestmark = pytest.mark.browser


def assert_admin_index(page: Page) -> None:
    expect(page).to_have_url(re.compile(r"/admin/$"))
    expect(page.get_by_role("heading", name="Site administration", level=1)).to_be_visible()
    jobs = page.locator("#content-main .app-jobs").get_by_role("link", name="Jobs", exact=True)
    expect(jobs.and_(page.locator('[href="/admin/jobs/job/"]'))).to_be_visible()
    # The admin's stylesheet was served (by the live server's static files handler) and applied.
    header_bg = page.evaluate("getComputedStyle(document.documentElement).getPropertyValue('--header-bg')")
    assert header_bg.strip(), "the admin's CSS did not load"


def test_admin_login_lists_jobs(
    logged_in_page: Page,
    admin_user: Any,
    phone_page: Page,
    login: Callable[..., Page],
    screenshot: Callable[[Page, str], Path],
) -> None:
    assert_admin_index(logged_in_page)
    desktop = screenshot(logged_in_page, "desktop")

    login(phone_page)
    assert_admin_index(phone_page)
    phone = screenshot(phone_page, "phone")

    # The session is a real one: the login form went through Django's login().
    admin_user.refresh_from_db()
    assert admin_user.last_login is not None
    assert desktop.stat().st_size > 0
    assert phone.stat().st_size > 0
