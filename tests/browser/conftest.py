"""Fixtures for tests in a real browser: headless Chromium (Debian's `chromium` package) driven by
Playwright's sync API against pytest-django's `live_server`.

Every test in this folder is marked `browser` (added here, so a test cannot forget it); scripts/test.sh
runs them in its PostgreSQL pass only. Fixtures:

- `browser`: the session's Chromium; `playwright`: the Playwright instance behind it.
- `page` (desktop, 1280x900) and `phone_page` (390x844, mobile, touch): a new browser context per test
  whose `base_url` is the live server, so `page.goto("/admin/")` works.
- `admin_user`: a superuser named `ADMIN_USERNAME` whose password is `ADMIN_PASSWORD`.
- `login(page, username=ADMIN_USERNAME, password=ADMIN_PASSWORD, next_url="/admin/")`: logs in through
  the admin's login form (staff users only, as the admin allows), so the session cookie is a real one.
- `logged_in_page`: `page`, logged in as `admin_user`, on the admin's index.
- `screenshot(page, name)`: a full-page PNG in var/screenshots/<test name>-<name>.png (on RQ 3,
  var/screenshots-rq3/), returns its path.
  When a test fails, each of its pages is saved as <test name>-failure.png (phone-failure for the phone).

A test that uses the browser gets the live server, hence `transactional_db`: its data is committed,
so the server's thread sees it, and the tables are emptied after the test.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any
from urllib.error import URLError
from urllib.parse import urlencode
from urllib.request import urlopen

import pytest
from django.conf import settings
from django.db import connections
from playwright.sync_api import Browser, Error, Page, Playwright, expect, sync_playwright

from jobs import rqcompat
from tests.conftest import BASE_DIR, Processes, wait_for
from tests.helpers import closed_port

CHROMIUM = Path("/usr/bin/chromium")
# --disable-background-networking and its companions keep Chromium from calling home (updates,
# sync, field trials, QUIC probes): without them it keeps trying hosts the test machine cannot reach.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: How long a page load or an expectation may wait: a guard against a hang. The pages answer in well
#: under a second; under the whole test command a load once took more than 10 s.
DEFAULT_TIMEOUT_MS = 30_000
# The browser's clock is in the same zone as the server's (TIME_ZONE, UTC unless the environment
# says otherwise), so times rendered by the page's scripts and by templates agree.
TIMEZONE = settings.TIME_ZONE
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
ADMIN_USERNAME = "admin"
ADMIN_PASSWORD = "browser-test-password"
#: On RQ 3 (the test command's RQ 3 pass) the screenshots go to a folder of their own.
SCREENSHOTS = Path(settings.BASE_DIR) / "var" / ("screenshots-rq3" if rqcompat.RQ3 else "screenshots")

# Playwright's `expect(...)` waits up to the same time as the pages' actions.
expect.set_options(timeout=DEFAULT_TIMEOUT_MS)

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test of this folder `browser` (before `-m` deselects by marks)."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.browser)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep the setup and call reports on the test, for the pages' failure screenshots."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


class _PlaywrightLoop:
    """Where Playwright's asyncio loop is visible.

    Playwright's sync API runs an asyncio event loop in a greenlet of the main thread and, while
    Playwright is alive, leaves it marked as the thread's running loop (it must be marked whenever a
    call switches into that greenlet). Django then takes the test thread for an async context: its
    ORM raises SynchronousOnlyOperation, and `asyncio.run()` refuses to start. So the loop is marked
    running only inside browser tests (and around the session fixtures' own calls), and unmarked
    everywhere else: the session-long browser does not leak into the tests that run after it.
    """

    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None

    @contextmanager
    def running(self) -> Iterator[None]:
        previous = asyncio._get_running_loop()
        if self.loop is not None and not self.loop.is_closed():
            asyncio._set_running_loop(self.loop)
        try:
            yield
        finally:
            asyncio._set_running_loop(previous)


_LOOP = _PlaywrightLoop()


@pytest.fixture(scope="session")
def playwright() -> Iterator[Playwright]:
    if not CHROMIUM.exists():
        reason = f"the browser tests need Chromium at {CHROMIUM} (Debian/Ubuntu: apt-get install chromium)"
        if in_ci():
            pytest.fail(f"{reason}; CI=true, so a missing browser is an error, not a skip")
        pytest.skip(reason)
    with _LOOP.running():
        instance = sync_playwright().start()
        _LOOP.loop = asyncio.get_running_loop()
    yield instance
    with _LOOP.running():
        instance.stop()


@pytest.fixture(scope="session")
def browser(playwright: Playwright) -> Iterator[Browser]:
    with _LOOP.running():
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    yield chromium
    with _LOOP.running():
        chromium.close()


@pytest.fixture(autouse=True)
def _browser_test(playwright: Playwright, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Inside a browser test, Playwright's loop is marked running in this thread (see _PlaywrightLoop).

    Django's ORM refuses to run in a thread with a running loop, because a blocking query would stall
    the loop's other tasks. Here the loop only runs while the test waits inside a Playwright call, and
    nothing on it touches the database, so the check is lifted for browser tests only: they can create
    and read rows with the ORM.

    With a running loop, Django also looks the database connections up in a store of their own (as
    for async code) instead of the thread's: the test would get a second connection that nothing
    closes, and PostgreSQL would refuse to drop the test database at the end. So the thread's
    connections are placed in that store for the test, and taken out after it: the test, its fixtures
    and pytest-django all use the same connection.
    """
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    thread_connections = {alias: connections[alias] for alias in connections}
    with _LOOP.running():
        for alias, wrapper in thread_connections.items():
            connections[alias] = wrapper
        try:
            yield
        finally:
            for alias in thread_connections:
                del connections[alias]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-")


def screenshot_path(item: pytest.Item, name: str) -> Path:
    return SCREENSHOTS / f"{_slug(item.name)}-{_slug(name)}.png"


def _failed(item: pytest.Item) -> bool:
    return any(report.failed for report in item.stash.get(_REPORTS, {}).values())


def _open_page(
    browser: Browser, base_url: str, request: pytest.FixtureRequest, failure_name: str, **options: Any
) -> Iterator[Page]:
    context = browser.new_context(
        base_url=base_url, timezone_id=TIMEZONE, locale="en-US", color_scheme="light", **options
    )
    context.set_default_timeout(DEFAULT_TIMEOUT_MS)
    failure_path = screenshot_path(request.node, failure_name)
    failure_path.unlink(missing_ok=True)  # from an earlier run
    try:
        page = context.new_page()
        yield page
        if _failed(request.node):
            failure_path.parent.mkdir(parents=True, exist_ok=True)
            with suppress(Error):  # the page may be what failed
                page.screenshot(path=failure_path, full_page=True)
    finally:
        context.close()


@pytest.fixture
def page(browser: Browser, live_server: Any, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A desktop page (1280x900) in a context of its own, with the live server as its base URL."""
    yield from _open_page(browser, live_server.url, request, "failure", viewport=DESKTOP)


@pytest.fixture
def phone_page(browser: Browser, live_server: Any, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A phone-sized page (390x844, mobile, touch) in a context of its own."""
    yield from _open_page(
        browser,
        live_server.url,
        request,
        "phone-failure",
        viewport=PHONE,
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )


@pytest.fixture
def admin_user(transactional_db: None, django_user_model: Any) -> Any:
    """A superuser, committed so the live server sees it; log in with ADMIN_USERNAME / ADMIN_PASSWORD."""
    return django_user_model.objects.create_superuser(ADMIN_USERNAME, "admin@example.com", ADMIN_PASSWORD)


@pytest.fixture
def login(live_server: Any) -> Callable[..., Page]:
    """`login(page, username=..., password=..., next_url="/admin/")`: log in through the admin's login form."""

    def log_in(
        page: Page, username: str = ADMIN_USERNAME, password: str = ADMIN_PASSWORD, next_url: str = "/admin/"
    ) -> Page:
        page.goto(f"{live_server.url}/admin/login/?{urlencode({'next': next_url})}")
        page.get_by_label("Username").fill(username)
        page.get_by_label("Password").fill(password)
        with page.expect_response(lambda r: r.request.method == "POST" and "/admin/login/" in r.url) as posted:
            page.get_by_role("button", name="Log in").click()
        response = posted.value
        if not 300 <= response.status < 400:  # the form again, with its errors
            error = re.search(r'class="errornote">\s*(.*?)\s*</p>', response.text(), re.DOTALL)
            pytest.fail(f"logging in as {username!r} failed: {error[1] if error else f'HTTP {response.status}'}")
        page.wait_for_url(lambda url: "/admin/login/" not in url)
        return page

    return log_in


@pytest.fixture
def logged_in_page(page: Page, admin_user: Any, login: Callable[..., Page]) -> Page:
    """`page` logged in as `admin_user` through the login form, on the admin's index."""
    return login(page)


@pytest.fixture
def screenshot(request: pytest.FixtureRequest) -> Callable[[Page, str], Path]:
    """`screenshot(page, name)`: save a full-page PNG as var/screenshots/<test name>-<name>.png."""

    def take(page: Page, name: str) -> Path:
        path = screenshot_path(request.node, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=path, full_page=True)
        return path

    return take


# --- The site as deployed: gunicorn serving ASGI through the uvicorn worker ---------------------------
#
# pytest-django's `live_server` is a WSGI thread server: it cannot hold the Jobs page's push
# connection (Server-Sent Events from an async view). `asgi_server` runs the real thing on a free
# port, against the test database (its data is committed, as for `processes`), and can be stopped
# and started again on the same port. `asgi_page` and `asgi_phone_page` are `page` and `phone_page`
# with that server as their base URL.

GUNICORN = Path(sys.executable).with_name("gunicorn")


class AsgiServer:
    """`.venv/bin/gunicorn queueproject.asgi:application -k queueproject.web_worker.UvicornWorker`, one worker."""

    def __init__(self, processes: Processes, port: int, log_path: Path) -> None:
        self.processes = processes
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = Processes.START_TIMEOUT) -> None:
        """Start gunicorn and return once it answers `/healthz`."""
        assert not self.running, "the server is running already"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(GUNICORN),
                    "queueproject.asgi:application",
                    "-k",
                    "queueproject.web_worker.UvicornWorker",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    "1",
                ],
                cwd=BASE_DIR,
                env=self.processes.env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a group of its own: the master and its worker stop together at the end
            )
        wait_for(self._answers, timeout, interval=0.1, message=f"gunicorn to answer on {self.url}")

    def _answers(self) -> bool:
        if not self.running:
            pytest.fail(f"gunicorn exited early:\n{self.log()}")
        try:
            with urlopen(f"{self.url}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except (URLError, OSError):
            return False

    def stop(self, grace: float = 10.0) -> bool:
        """Stop it as an orchestrator does: SIGTERM to the master, SIGKILL to its group after `grace` seconds.

        True when it exited on SIGTERM alone (and within the grace period).
        """
        process = self.process
        if process is None or process.poll() is not None:
            return True
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.kill()
            return False
        return True

    def kill(self) -> None:
        """SIGKILL to the server's process group, if its master still runs."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        with suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture
def asgi_server(processes: Processes, tmp_path: Path) -> Iterator[AsgiServer]:
    """The site under gunicorn with the uvicorn worker, on a free port, against the test database."""
    server = AsgiServer(processes, closed_port(), tmp_path / "gunicorn.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()  # SIGTERM, then SIGKILL to its group: nothing of it outlives the test
        if os.environ.get("SHOW_PROCESS_LOGS"):
            sys.stderr.write(f"--- gunicorn\n{server.log()}\n")


@pytest.fixture
def asgi_page(browser: Browser, asgi_server: AsgiServer, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A desktop page (1280x900) whose base URL is `asgi_server`."""
    yield from _open_page(browser, asgi_server.url, request, "failure", viewport=DESKTOP)


@pytest.fixture
def asgi_phone_page(browser: Browser, asgi_server: AsgiServer, request: pytest.FixtureRequest) -> Iterator[Page]:
    """A phone-sized page (390x844, mobile, touch) whose base URL is `asgi_server`."""
    yield from _open_page(
        browser,
        asgi_server.url,
        request,
        "phone-failure",
        viewport=PHONE,
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
