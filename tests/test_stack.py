"""The whole product as it is deployed, once, as processes: what a team sees after `docker compose up`.

A `redis-server` that wants a password, gunicorn serving the ASGI application with the uvicorn worker
(two workers, DEBUG off, the production settings), the pooled worker of the deployment files
(`manage.py jobs_pool -n 2 high default low`) and django-rq's command (`manage.py rqworker high default low`,
the same pool with one child by default)
and two schedulers (`manage.py runscheduler`), all on the test database (PostgreSQL in the full suite)
and on that Redis. Every process gets its environment spelled out here, nothing inherited from the test
run (no `.env` file either). Then, over HTTP only, as a user of the API: the probes answer, a job
created with a token finishes with its result, a report job's CSV downloads and lists that job, one
scheduler leads; and every process stops cleanly on SIGTERM (exit status 0, nothing left behind).

Ports: one the system picks for Redis, and the first free one of 8151-8155 for the web.
"""

from __future__ import annotations

import csv
import http.client
import io
import json
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from rest_framework.authtoken.models import Token

from jobs.scheduler import LOCK_KEY
from tests.conftest import BASE_DIR, Processes, _database_url, wait_for
from tests.fault_servers import GUNICORN, REDIS_SERVER, OwnRedis
from tests.helpers import make_user

pytestmark = [pytest.mark.slow, pytest.mark.faults]

WEB_PORTS = range(8151, 8156)
#: The site's name, as a proxy in front of it would send it (a Host the settings allow).
HOST = "jobs.example.test"
ORIGIN = f"https://{HOST}"
#: What each process gets to stop after SIGTERM (the Procfile's gunicorn --graceful-timeout is 30 s;
#: nothing here runs a job when it stops).
GRACE = 20.0
#: A log line of the product, RQ or Django at WARNING or above (the plain format: "time LEVEL logger: message").
COMPLAINTS = re.compile(r"^\S+ \S+ (?:WARNING|ERROR|CRITICAL) (?:jobs|rq|django|queueproject)\b.*$", re.MULTILINE)


def complaints(log: str) -> list[str]:
    """The log's lines at WARNING or above."""
    return list(COMPLAINTS.findall(log))


def free_port(candidates: range) -> int:
    """The first port of `candidates` nothing listens on."""
    import socket

    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail(f"no free port in {candidates.start}-{candidates.stop - 1}")


# --- the processes -----------------------------------------------------------------------------------


class Stack(Processes):
    """The stack's processes, each started with exactly the environment given (not the test run's)."""

    def __init__(self, tmp_path: Path, environment: dict[str, str]) -> None:
        super().__init__(tmp_path)
        self.environment = environment

    def env(self, **extra: str) -> dict[str, str]:
        return {**self.environment, **extra}

    def gunicorn(self, port: int, **env: str) -> subprocess.Popen[bytes]:
        """As the Procfile runs the web: ASGI under the uvicorn worker, a pool of database connections."""
        log_path = self.tmp_path / "web.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    str(GUNICORN),
                    "queueproject.asgi:application",
                    "-k",
                    "uvicorn_worker.UvicornWorker",
                    "--workers",
                    "2",
                    "--bind",
                    f"127.0.0.1:{port}",
                    "--graceful-timeout",
                    "30",
                ],
                cwd=BASE_DIR,
                env=self.env(**env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append((process, log_path))
        return process

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM to the process alone, as `docker stop` and Kubernetes send it."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


# --- HTTP, as a client of the deployed site --------------------------------------------------------------


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    cookies: dict[str, str]
    secure_cookies: set[str]  # those set with Secure and HttpOnly

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Client:
    """HTTP to the web's port, sent as the TLS-terminating proxy in front of it would pass it on."""

    port: int
    token: str | None = None
    cookies: dict[str, str] = field(default_factory=dict)

    def request(
        self, method: str, path: str, body: Any = None, *, form: dict[str, str] | None = None, proxied: bool = True
    ) -> Response:
        headers = {"Host": HOST, "Accept": "application/json"}
        if proxied:
            headers["X-Forwarded-Proto"] = "https"
        if self.token:
            headers["Authorization"] = f"Token {self.token}"
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if form is not None:
            from urllib.parse import urlencode

            payload = urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Origin"] = ORIGIN
            headers["Referer"] = f"{ORIGIN}{path}"
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=payload, headers=headers)
            answer = conn.getresponse()
            raw = answer.read()
            set_cookies = SimpleCookie()
            for value in answer.headers.get_all("Set-Cookie") or []:
                set_cookies.load(value)
            cookies = {name: morsel.value for name, morsel in set_cookies.items()}
            secure = {name for name, morsel in set_cookies.items() if morsel["secure"] and morsel["httponly"]}
            self.cookies.update(cookies)
            return Response(answer.status, {k.lower(): v for k, v in answer.getheaders()}, raw, cookies, secure)
        finally:
            conn.close()

    def get(self, path: str, **kwargs: Any) -> Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Response:
        return self.request("POST", path, body, **kwargs)


def finished(api: Client, job_id: str) -> dict[str, Any] | None:
    """The job as the API shows it once it ended; fails at once if it ended any other way."""
    response = api.get(f"/api/jobs/{job_id}")
    assert response.status == 200, response.body
    job: dict[str, Any] = response.json()
    assert job["status"] not in {"failed", "abandoned", "lost", "canceled", "stopped"}, job
    return job if job["status"] == "finished" else None


# --- the test ----------------------------------------------------------------------------------------------


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    if REDIS_SERVER is None:
        pytest.skip("redis-server is not installed")
    directory = tmp_path / "redis"
    directory.mkdir()
    server = OwnRedis(directory, db=0, password=secrets.token_hex(16))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def stack(transactional_db: None, tmp_path: Path, own_redis: OwnRedis) -> Iterator[Stack]:
    """The processes' environment, in full: production settings, the test database, the password Redis."""
    environment = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        # No .env file: only what is listed here.
        "ENV_FILE": str(tmp_path / "no.env"),
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "ALLOWED_HOSTS": HOST,
        "CSRF_TRUSTED_ORIGINS": ORIGIN,
        # A proxy terminates TLS and sends X-Forwarded-Proto; cookies stay secure.
        "TLS_TERMINATED_BY_PROXY": "true",
        "SECURE_COOKIES": "true",
        "DATABASE_URL": _database_url(),
        "REDIS_URL": own_redis.url,
        "MEDIA_ROOT": str(tmp_path / "media"),
        "LOG_LEVEL": "INFO",
        "LOG_FORMAT": "plain",
        # The full suite runs beside this test: give a busy machine's Redis calls time before they
        # count as an outage (and log the warning this test looks for).
        "REDIS_SOCKET_TIMEOUT": "5",
    }
    processes = Stack(tmp_path, environment)
    yield processes
    processes.stop_all()  # whatever the test left running (it stops everything itself)


def test_the_whole_stack_runs_as_processes_and_serves_a_user_over_http(stack: Stack, own_redis: OwnRedis) -> None:
    started = time.monotonic()
    user = make_user("stack-user", perms=("add_job", "view_job"))
    token = str(Token.objects.create(user=user).key)

    # The password is in force: without it, Redis answers nothing.
    with pytest.raises(redis_lib.AuthenticationError):
        own_redis.client(password="").ping()

    port = free_port(WEB_PORTS)
    web = stack.gunicorn(port, DB_POOL="true")
    workers = [stack.start(*command, "high", "default", "low") for command in (["jobs_pool", "-n", "2"], ["rqworker"])]
    schedulers = [stack.start("runscheduler") for _ in range(2)]
    for worker in workers:
        stack.wait_until_listening(worker)
    for scheduler in schedulers:
        stack.wait_until_logged(scheduler, " started (tick ", "the scheduler to start")
    probe = Client(port)

    def web_answers() -> bool:
        if web.poll() is not None:
            pytest.fail(f"gunicorn exited early:\n{stack.log(web)}")
        try:
            return probe.get("/healthz", proxied=False).status == 200
        except OSError:
            return False

    wait_for(web_answers, Processes.START_TIMEOUT, message=f"gunicorn to answer on port {port}")

    # The probes, as an orchestrator sends them: plain HTTP, no proxy header.
    assert probe.get("/healthz", proxied=False).json() == {"status": "ok"}
    ready = probe.get("/readyz", proxied=False)
    assert ready.status == 200, ready.body
    assert ready.json()["checks"]["redis"]["ok"] is True
    assert ready.json()["checks"]["database"]["ok"] is True

    # A job created over the API runs on a worker and the API shows its result.
    api = Client(port, token=token)
    created = api.post("/api/jobs/", {"type": "example", "params": {"duration": 0.2, "steps": 2, "message": "hi"}})
    assert created.status == 201, created.body
    example_id = created.json()["id"]
    example = wait_for(lambda: finished(api, example_id), 30, interval=0.2, message="the example job to finish")
    assert example["result"] == {"slept": 0.2, "message": "hi"}
    assert example["progress"] == 100

    # A report job: its CSV is served by the web, written by a worker, and lists the example job.
    created = api.post("/api/jobs/", {"type": "report"})
    assert created.status == 201, created.body
    report = wait_for(lambda: finished(api, created.json()["id"]), 30, interval=0.2, message="the report to finish")
    download_url = report["result"]["download_url"]
    assert download_url

    browser = Client(port)
    anonymous = browser.get(download_url)
    assert anonymous.status == 302, anonymous.status  # to the login page: the file is not public
    login = browser.get("/accounts/login/")
    assert login.status == 200
    csrf_token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', login.body)
    assert csrf_token, login.body[:500]
    logged_in = browser.post(
        "/accounts/login/",
        form={
            "username": "stack-user",
            "password": "stack-user-password",
            "csrfmiddlewaretoken": csrf_token.group(1).decode(),
        },
    )
    assert logged_in.status == 302, logged_in.body[:2000]
    assert "sessionid" in logged_in.secure_cookies  # HTTPS only, out of the page's scripts' reach
    download = browser.get(download_url)
    assert download.status == 200, download.body[:2000]
    assert download.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(download.body.decode())))
    assert {"type": "example", "status": "finished", "jobs": "1"}.items() <= next(
        row for row in rows if row["type"] == "example"
    ).items(), rows

    # One scheduler leads: the lock names one of the two, and only that one ever said it leads.
    lock = own_redis.client().get(LOCK_KEY)
    assert isinstance(lock, bytes), lock
    leader_pid = int(lock.decode().split(":")[2])
    assert leader_pid in {scheduler.pid for scheduler in schedulers}
    leading = [s for s in schedulers if "is now the active scheduler" in stack.log(s)]
    assert [s.pid for s in leading] == [leader_pid]

    # Everything stops on SIGTERM within its grace, with exit status 0, and leaves no child behind.
    stopping = time.monotonic()
    everything = [web, *workers, *schedulers]
    for process in everything:
        stack.stop(process)
    for process in everything:
        try:
            code = process.wait(timeout=max(0.1, GRACE - (time.monotonic() - stopping)))
        except subprocess.TimeoutExpired:
            pytest.fail(f"pid {process.pid} still runs {GRACE}s after SIGTERM:\n{stack.log(process)}")
        assert code == 0, f"exit status {code}:\n{stack.log(process)}"
    wait_for(
        lambda: not any(group_alive(process.pid) for process in everything),
        5,
        message="the processes' children to exit",
    )
    stop_seconds = time.monotonic() - stopping
    own_redis.stop()
    assert own_redis.process is not None
    assert own_redis.process.returncode == 0

    # Nothing complained on the way: no traceback, no warning or error of the product, RQ or Django
    # (gunicorn's own "Worker was sent SIGTERM" on a normal stop is not one).
    for process in everything:
        log = stack.log(process)
        assert "Traceback" not in log, log
        assert not complaints(log), log
    print(f"\n[figure] whole stack: {time.monotonic() - started:.1f}s; stopped in {stop_seconds:.1f}s")
