"""The live Jobs page: how soon a worker's progress report shows in the browser, and what 200 open pages cost.

    .venv/bin/python bench/live_latency.py           # about 8 minutes on 2 cores
    .venv/bin/python bench/live_latency.py --quick   # under 2 minutes
    .venv/bin/python bench/live_latency.py --help

What it does, in one run:

1. Creates its own database (Postgres `bench_live_<pid>`, or with `--db sqlite` a file under
   var/), migrates it, collects the static files (as scripts/start.sh and the Dockerfile do:
   with DEBUG off the web serves page.js and htmx from STATIC_ROOT only), creates a superuser
   and its API token, and starts the product as deployed: gunicorn serving
   `queueproject.asgi:application` with `queueproject.web_worker.UvicornWorker` (2 workers, DEBUG off,
   `DB_POOL=true` on Postgres as in the Procfile; `SECURE_COOKIES=false` since it speaks plain
   HTTP to 127.0.0.1) and one real worker (`manage.py rqworker high default low`) on the same
   database and on Redis database 4 (flushed at the start and the end).
2. Report -> DOM latency. Headless Chromium logs in through `/accounts/login/` and opens
   `/jobs/` (push: waits for `#job-live-state` to say "Live"), then `/jobs/?live=poll` (the
   polling fallback, every 2 s). A MutationObserver records `performance.timeOrigin +
   performance.now()` and the new text whenever a row's progress cell (`#job-<id>-progress`,
   its `.job-progress-text`) changes. An `example` job (`steps` 200 over `duration` 20 s, so
   each report's message differs) is created through `POST /api/jobs`; after it ends, its
   reports are read from the Redis stream `jobs:events` (XRANGE: kind `progress`, the
   worker's emit time `t`, `p` and `m`) and each is paired with the DOM change showing its
   text. Both clocks are this machine's (the page's clock is checked against its Date.now()
   and against this process's time.time(), before and after). Polling skips most reports:
   it is timed twice, over the reports a poll happened to show, and over every report until
   the page showed it or a newer one.
3. 200 pages open. A child process holds 200 Server-Sent-Events streams of `/jobs/events/`
   (asyncio, HTTP/1.1, the session cookie of the superuser) while an `example` job reports 10
   times a second, and counts the progress messages each stream receives. Two variants:
   "streams" (the event streams only) and "pages" (each stream also does what page.js does on
   a `cards` event: `GET /jobs/cards/` on a keep-alive connection of its own; one asked for
   while one is in flight is sent when that one is answered, as htmx queues it). Over a fixed
   window it reads the gunicorn workers' CPU time and RSS from /proc and times `GET /api/jobs`
   (token, a new connection each, one every 100 ms), and does the same with no page open.
   Windows of the three kinds are interleaved, in a rotating order, `--reps` times; after
   each, it waits for the web workers to be idle again.

Targets: push p95 < 250 ms with every report in the DOM; API p50 with 200 streams, and with
200 pages, within 1.2 x its p50 with none; every stream received every progress report of its
window. Polling is shown for reference (expected around 1 s: the mirror's lag plus, on
average, half the 2 s period). Results are printed (the table last) and written to
bench/results/live_latency-<time>.json. Exit status 0 when every target is met.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import select
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: `bench` must import
from bench.api_scale import free_port, log, percentile

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
VENV_BIN = Path(sys.executable).parent

REDIS_DB = 4
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"  # the only Redis database this benchmark may touch
PG_URL = "postgresql://postgres@127.0.0.1:5432"
USERNAME = "bench-live"
PASSWORD = "bench-live-password-123"
COOKIE_ENV = "BENCH_LIVE_COOKIE"  # how the child process of SSE clients gets the session cookie

PUSH_P95_TARGET_MS = 250.0
API_RATIO_TARGET = 1.2
POLL_EXPECTED_MS = 1000.0
REPORTS_PER_SECOND = 10  # progress reports per second of the jobs running during the windows
API_INTERVAL_S = 0.1  # one GET /api/jobs this often during a window

STREAM = "jobs:events"  # jobs.events.STREAM
PROGRESS = "progress"  # jobs.events.PROGRESS
ENDED = {"finished", "failed", "stopped"}

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

#: What the page's MutationObserver records: every change of a progress cell's text, with the
#: time (the page's high-resolution clock on the epoch) and the row's status cell at that moment.
OBSERVER_JS = """
() => {
  const last = new Map();
  const log = [];
  function scan() {
    const t = performance.timeOrigin + performance.now();
    document.querySelectorAll('td.col-progress[id^="job-"]').forEach((td) => {
      const el = td.querySelector('.job-progress-text');
      const text = el ? el.textContent.trim() : '';
      if (last.get(td.id) === text) return;
      last.set(td.id, text);
      if (!text) return;
      const row = td.closest('tr');
      const status = row ? row.querySelector('td.col-status') : null;
      log.push({t: t, job: td.id.slice(4, -9), text: text, status: status ? status.textContent.trim() : ''});
    });
  }
  new MutationObserver(scan).observe(document.body, {subtree: true, childList: true, characterData: true});
  scan();
  window.__benchLog = log;
}
"""

#: A progress cell in a `cells` message of the live feed (jobs/_cells.html).
CELL_RE = re.compile(r'id="job-([0-9a-f-]{36})-progress".*?<small class="job-progress-text">([^<]*)</small>', re.DOTALL)


def fmt(value: float | None, spec: str = ".0f") -> str:
    return "-" if value is None else format(value, spec)


def progress_text(percent: Any, message: Any) -> str:
    """What jobs/_cells.html shows for a progress report."""
    return f"{percent} % · {message}" if message else f"{percent} %"


def summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None, "min": None, "mean": None}
    return {
        "n": len(values),
        "p50": statistics.median(values),
        "p95": percentile(values, 95),
        "max": max(values),
        "min": min(values),
        "mean": statistics.fmean(values),
    }


# --- processes ----------------------------------------------------------------------------------


def bench_env(db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DB_POOL", "JOBS_MODULES", "DJANGO_SETTINGS_MODULE"}}
    env.update(
        {
            "DJANGO_SETTINGS_MODULE": "queueproject.settings",
            "DATABASE_URL": db_url,
            "REDIS_URL": REDIS_URL,
            "DEBUG": "0",
            "SECRET_KEY": "bench-live-latency-secret-key",
            "SECURE_COOKIES": "false",  # plain HTTP to 127.0.0.1
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "CSRF_TRUSTED_ORIGINS": "http://127.0.0.1,http://localhost",
            "TLS_TERMINATED_BY_PROXY": "true",  # plain HTTP on loopback: no redirect to HTTPS
            "LOG_LEVEL": "WARNING",
            "ENV_FILE": "/dev/null",  # no .env file may point us at another database or Redis
            "JOBS_API_WRITE_RATE": "1000000/min",
            "PYTHONPATH": str(ROOT),
        }
    )
    return env


def run_manage(db_url: str, script: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=bench_env(db_url),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"failed:\n{result.stdout}\n{result.stderr}")
    return result.stdout


def manage(db_url: str, *command: str) -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", *command],
        cwd=ROOT,
        env=bench_env(db_url),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"manage.py {command[0]} failed:\n{result.stdout}\n{result.stderr}")


SUPERUSER_SCRIPT = f"""
import json
import django
django.setup()
from django.contrib.auth import get_user_model
from rest_framework.authtoken.models import Token
user = get_user_model().objects.create_superuser({USERNAME!r}, "bench-live@example.com", {PASSWORD!r})
print(json.dumps(Token.objects.create(user=user).key))
"""


class Database:
    """The benchmark's own database: Postgres `bench_live_<pid>` or an SQLite file under var/."""

    def __init__(self, kind: str, pg_url: str):
        self.kind = kind
        self.pg_url = pg_url.rstrip("/")
        self.name = f"bench_live_{os.getpid()}"
        if kind == "postgres":
            self.url = f"{self.pg_url}/{self.name}"
            self.path: Path | None = None
        else:
            self.path = ROOT / "var" / f"{self.name}.sqlite3"
            self.url = f"sqlite:///{self.path}"

    def create(self) -> None:
        if self.kind == "postgres":
            import psycopg

            with psycopg.connect(f"{self.pg_url}/postgres", autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{self.name}"')
        else:
            assert self.path is not None
            self.path.parent.mkdir(exist_ok=True)

    def drop(self) -> None:
        if self.kind == "postgres":
            import psycopg

            with psycopg.connect(f"{self.pg_url}/postgres", autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        elif self.path is not None:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{self.path}{suffix}").unlink()


def stop_process(process: subprocess.Popen[bytes] | None, timeout: float = 30) -> None:
    """SIGTERM to a process this benchmark started, then SIGKILL to its own process group if need be."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # its own session (start_new_session): only what it started
        process.wait(timeout=10)


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return sorted(found)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def established_connections(pids: list[int], port: int) -> dict[int, int]:
    """How many established TCP connections to `port` each process holds (from /proc/net/tcp*)."""
    established: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                parts = line.split()
                if len(parts) > 9 and parts[3] == "01" and int(parts[1].rsplit(":", 1)[1], 16) == port:
                    established.add(parts[9])
    counts = {}
    for pid in pids:
        count = 0
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in established:
                        count += 1
        counts[pid] = count
    return counts


class Gunicorn:
    """The web as deployed: gunicorn serving ASGI through the uvicorn worker, on 127.0.0.1."""

    def __init__(self, db: Database, workers: int, log_path: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.log_path = log_path
        self.env = bench_env(db.url)
        if db.kind == "postgres":
            self.env["DB_POOL"] = "true"  # as the Procfile and docker-compose run the web
        self.command = [
            str(VENV_BIN / "gunicorn"),
            "queueproject.asgi:application",
            *("-k", "queueproject.web_worker.UvicornWorker"),
            *("--bind", f"127.0.0.1:{self.port}", "--workers", str(workers)),
            *("--timeout", "120", "--graceful-timeout", "5", "--log-level", "warning"),
        ]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, token: str) -> None:
        import requests

        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                self.command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"gunicorn exited ({self.process.returncode}); see {self.log_path}")
            with contextlib.suppress(requests.RequestException):
                answer = requests.get(
                    f"{self.base}/api/jobs/types", headers={"Authorization": f"Token {token}"}, timeout=5
                )
                if answer.status_code == 200 and len(self.worker_pids()) == self.workers:
                    return
            time.sleep(0.3)
        raise SystemExit(f"gunicorn did not answer within 60 s; see {self.log_path}")

    def worker_pids(self) -> list[int]:
        return children_of(self.process.pid) if self.process is not None else []

    def stop(self) -> None:
        stop_process(self.process, timeout=20)
        self.process = None


class RQWorker:
    """One real worker, as the Procfile runs it (the product's forking Worker and its mirror)."""

    def __init__(self, db: Database, log_path: Path):
        self.env = bench_env(db.url)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, redis: Any) -> None:
        with self.log_path.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "rqworker", "high", "default", "low"],
                cwd=ROOT,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"the worker exited ({self.process.returncode}); see {self.log_path}")
            if redis.scard("rq:workers"):
                return
            time.sleep(0.2)
        raise SystemExit(f"the worker did not register within 60 s; see {self.log_path}")

    def stop(self) -> None:
        stop_process(self.process, timeout=30)
        self.process = None


def redis_conn() -> Any:
    from redis import Redis

    conn = Redis.from_url(REDIS_URL)
    assert conn.connection_pool.connection_kwargs.get("db") == REDIS_DB
    return conn


# --- the API and the stream ----------------------------------------------------------------------


def create_job(base: str, token: str, duration: float, steps: int) -> str:
    import requests

    answer = requests.post(
        f"{base}/api/jobs",
        json={"type": "example", "params": {"duration": duration, "steps": steps}},
        headers={"Authorization": f"Token {token}"},
        timeout=30,
    )
    if answer.status_code != 201:
        raise SystemExit(f"POST /api/jobs: {answer.status_code} {answer.text[:300]}")
    return str(answer.json()["id"])


def job_events(redis: Any, job_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The job's events on the stream, oldest first (entry id, decoded JSON)."""
    found = []
    for entry_id, fields in redis.xrange(STREAM, "-", "+"):
        raw = fields.get(b"e")
        if raw is None:
            continue
        data = json.loads(raw)
        if data.get("j") == job_id:
            found.append((entry_id.decode(), data))
    return found


def wait_job_end(redis: Any, job_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(data.get("k") in ENDED for _id, data in job_events(redis, job_id)):
            return
        time.sleep(0.5)
    raise SystemExit(f"job {job_id} did not end within {timeout:.0f} s")


def progress_reports(redis: Any, job_id: str) -> list[dict[str, Any]]:
    """The job's progress reports as the worker emitted them: time `t` (epoch s), `p`, `m`, the text."""
    return [
        {
            "t": float(data["t"]),
            "p": data.get("p", 0),
            "m": data.get("m", ""),
            "text": progress_text(data.get("p", 0), data.get("m")),
        }
        for _id, data in job_events(redis, job_id)
        if data.get("k") == PROGRESS
    ]


def position_now() -> str:
    """A position of the live feed (`<events id>|<live id>`): from this moment on."""
    start = f"{int(time.time() * 1000)}-0"
    return f"{start}|{start}"


def session_cookie(base: str) -> str:
    """Log in through /accounts/login/ (its CSRF token) and answer the session cookie."""
    import requests

    with requests.Session() as session:
        url = f"{base}/accounts/login/?next=/jobs/"
        form = session.get(url, timeout=30)
        match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        if form.status_code != 200 or match is None:
            raise SystemExit(f"GET /accounts/login/: {form.status_code}, no CSRF token in the form")
        answer = session.post(
            url,
            data={"csrfmiddlewaretoken": match.group(1), "username": USERNAME, "password": PASSWORD, "next": "/jobs/"},
            headers={"Referer": url},
            allow_redirects=False,
            timeout=30,
        )
        if answer.status_code != 302 or "sessionid" not in session.cookies:
            raise SystemExit(f"login refused: {answer.status_code} {answer.text[:300]}")
        return f"sessionid={session.cookies['sessionid']}"


# --- 1. report -> DOM latency in the browser ----------------------------------------------------


#: The page's high-resolution clock against its wall clock (Date.now(): the system's time), 5 reads.
CLOCK_JS = """
() => {
  const out = [];
  for (let i = 0; i < 5; i++) { out.push(performance.timeOrigin + performance.now() - Date.now()); }
  return out;
}
"""


def clock_check(page: Any) -> dict[str, float]:
    """How far the times the observer records are from the system clock that the worker's `t` reads.

    `hr_minus_wall_ms`: performance.timeOrigin + now() minus Date.now() in the page (Date.now() has
    1 ms steps); `hr_minus_system_ms`: the same clock against this process's time.time(), read
    around one evaluate() call (bounded by half its round trip, `round_trip_ms` / 2).
    """
    before = time.time() * 1000
    browser_ms = float(page.evaluate("performance.timeOrigin + performance.now()"))
    after = time.time() * 1000
    in_page = [float(v) for v in page.evaluate(CLOCK_JS)]
    return {
        "hr_minus_wall_ms": statistics.median(in_page),
        "hr_minus_system_ms": browser_ms - (before + after) / 2,
        "round_trip_ms": after - before,
    }


def pair_reports(reports: list[dict[str, Any]], changes: list[dict[str, Any]]) -> dict[str, Any]:
    """Pair a job's step reports with the DOM changes of its progress cell.

    `exact`: each report against the first change showing its own text (what "seen" counts).
    `shown_or_overtaken`: each report against the first change showing it or a later report of the
    same job: when the page showed the news, even if a newer report had replaced it by then. For
    push, every report is shown and both are the same; polling skips most reports, so only the
    second says how stale the page is. Reports not shown before the job ended count in neither.
    """
    counted = [r for r in reports if r["m"]]  # the step reports (each message differs)
    index = {r["text"]: i for i, r in enumerate(counted)}
    first_seen: dict[str, dict[str, Any]] = {}
    for change in changes:
        first_seen.setdefault(change["text"], change)
    exact: list[float] = []
    statuses: dict[str, int] = {}
    for report in counted:
        shown_as = first_seen.get(report["text"])
        if shown_as is not None:
            exact.append(shown_as["t"] - report["t"] * 1000)
            statuses[shown_as["status"]] = statuses.get(shown_as["status"], 0) + 1
    shown = [(c["t"], index[c["text"]]) for c in changes if c["text"] in index]
    overtaken: list[float] = []
    for i, report in enumerate(counted):
        later = [t for t, j in shown if j >= i]
        if later:
            overtaken.append(min(later) - report["t"] * 1000)
    known = {r["text"] for r in reports}
    return {
        "reports": len(counted),
        "seen": len(exact),
        "shown_or_overtaken": len(overtaken),
        "dom_changes": len(changes),
        "dom_changes_unmatched": [c["text"] for c in changes if c["text"] not in known][:10],
        "status_cell_when_seen": statuses,
        "exact_ms": [round(v, 2) for v in exact],
        "overtaken_ms": [round(v, 2) for v in overtaken],
    }


def measure_page(
    browser: Any, base: str, token: str, redis: Any, *, mode: str, runs: int, duration: float, steps: int
) -> dict[str, Any]:
    """Open the Jobs page (push or polling), run `runs` jobs, pair each progress report with its DOM change."""
    context = browser.new_context(base_url=base, viewport={"width": 1280, "height": 900}, timezone_id="UTC")
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        page.goto("/accounts/login/?next=/jobs/")
        page.fill("#id_username", USERNAME)
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/jobs/")
        page.goto("/jobs/" if mode == "push" else "/jobs/?live=poll")
        state = "live" if mode == "push" else "polling"
        page.wait_for_selector(f'#job-live-state[data-mode="{state}"]')
        state_text = page.inner_text("#job-live-state")
        if mode == "push" and state_text.strip() != "Live":
            raise SystemExit(f"#job-live-state says {state_text!r}, not 'Live'")
        clocks = [clock_check(page)]
        page.evaluate(OBSERVER_JS)
        if mode == "push":  # a short job first: the first render of each template happens outside the measure
            warm = create_job(base, token, 1.0, 10)
            wait_job_end(redis, warm, 60)
            time.sleep(1.0)
        exact: list[float] = []
        overtaken: list[float] = []
        runs_out = []
        for run in range(runs):
            job_id = create_job(base, token, duration, steps)
            wait_job_end(redis, job_id, duration + 60)
            time.sleep(1.0 if mode == "push" else 3.0)  # polling: one more poll after the end
            reports = progress_reports(redis, job_id)
            changes = [c for c in page.evaluate("window.__benchLog") if c["job"] == job_id]
            paired = pair_reports(reports, changes)
            paired["job"] = job_id
            exact += paired["exact_ms"]
            overtaken += paired["overtaken_ms"]
            runs_out.append(paired)
            log(
                f"  {mode} run {run + 1}/{runs}: {paired['seen']}/{paired['reports']} reports seen in the DOM "
                f"(p50 {fmt(summary(paired['exact_ms'])['p50'])} ms); shown or overtaken: "
                f"{paired['shown_or_overtaken']} (p50 {fmt(summary(paired['overtaken_ms'])['p50'])} ms)"
            )
        clocks.append(clock_check(page))
        return {
            "mode": mode,
            "url": "/jobs/" if mode == "push" else "/jobs/?live=poll",
            "state_text": state_text,
            "runs": runs_out,
            "reports": sum(r["reports"] for r in runs_out),
            "seen": sum(r["seen"] for r in runs_out),
            "shown_or_overtaken": sum(r["shown_or_overtaken"] for r in runs_out),
            "summary": summary(exact),
            "summary_overtaken": summary(overtaken),
            "clock_checks": clocks,
        }
    finally:
        context.close()


# --- 2. 200 pages open: the SSE clients (a child process) ---------------------------------------


async def read_head(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    line = await reader.readline()
    if not line:
        raise ConnectionError("connection closed before the answer")
    status = int(line.split()[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            return status, headers
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()


async def read_chunk(reader: asyncio.StreamReader) -> bytes:
    """One chunk of a chunked body; b"" at its end."""
    size_line = await reader.readline()
    if not size_line:
        raise ConnectionError("connection closed mid-body")
    size = int(size_line.split(b";")[0].strip(), 16)
    if size == 0:
        await reader.readline()
        return b""
    data = await reader.readexactly(size)
    await reader.readexactly(2)
    return data


async def read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while chunk := await read_chunk(reader):
            parts.append(chunk)
        return b"".join(parts)
    return await reader.readexactly(int(headers.get("content-length", "0")))


def request_bytes(path: str, cookie: str, extra: dict[str, str]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", f"Cookie: {cookie}", "User-Agent: bench-live-latency"]
    lines += [f"{name}: {value}" for name, value in extra.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass(eq=False)
class SseClient:
    """One open page's event stream, and (for the "pages" variant) its fetches of the cards."""

    index: int
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    progress: set[tuple[str, str]] = field(default_factory=set)
    progress_messages: int = 0
    cells: int = 0
    cards_events: int = 0
    cards_fetched: int = 0
    cards_failed: int = 0
    cards_queued: bool = False
    cards_requeued: int = 0
    cards_reconnects: int = 0
    cards_ms: list[float] = field(default_factory=list)
    cards_errors: list[str] = field(default_factory=list)
    refreshes: int = 0
    received_bytes: int = 0
    error: str = ""
    fetching: bool = False
    task: asyncio.Task[None] | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    cards_conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None


class SseChild:
    """The child's side: holds the clients, answers one JSON line per command."""

    def __init__(self, host: str, port: int, cookie: str):
        self.host, self.port, self.cookie = host, port, cookie
        self.clients: list[SseClient] = []
        self.fetch_cards = False

    async def run_client(self, client: SseClient, path: str) -> None:
        try:
            reader, writer = await asyncio.open_connection(self.host, self.port)
            client.writers.append(writer)
            writer.write(request_bytes(path, self.cookie, {"Accept": "text/event-stream", "Cache-Control": "no-cache"}))
            status, _headers = await read_head(reader)
            if status != 200:
                client.error = f"status {status}"
                return
            buffer = b""
            while chunk := await read_chunk(reader):
                client.received_bytes += len(chunk)
                buffer += chunk
                while b"\n\n" in buffer:
                    raw, buffer = buffer.split(b"\n\n", 1)
                    self.handle(client, raw.decode())
                client.connected.set()  # the first chunk is "retry:": the stream has subscribed
            client.error = client.error or "the server ended the stream"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            client.error = f"{type(exc).__name__}: {exc}"
        finally:
            client.connected.set()

    def handle(self, client: SseClient, raw: str) -> None:
        name, data = "message", []
        for line in raw.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
        if name == "cells":
            client.cells += 1
            for match in CELL_RE.finditer("\n".join(data)):
                client.progress.add((match.group(1), match.group(2).strip()))
                client.progress_messages += 1
        elif name == "cards":
            client.cards_events += 1
            if self.fetch_cards:
                if client.fetching:  # htmx queues the last request while one is in flight
                    client.cards_queued = True
                else:
                    client.fetching = True
                    asyncio.get_running_loop().create_task(self.fetch(client))
        elif name == "refresh":
            client.refreshes += 1

    async def fetch(self, client: SseClient) -> None:
        """What page.js does on `cards`: htmx GET /jobs/cards/ (on the page's keep-alive connection); while
        one is in flight, htmx queues the last one asked for, sent when the first is answered."""
        try:
            while True:
                client.cards_queued = False
                started = time.perf_counter()
                try:
                    extra = {"HX-Request": "true", "HX-Target": "job-cards"}
                    for attempt in range(2):  # a keep-alive connection the server closed: once more on a new one
                        if client.cards_conn is None:
                            client.cards_conn = await asyncio.open_connection(self.host, self.port)
                            client.writers.append(client.cards_conn[1])
                        reader, writer = client.cards_conn
                        writer.write(request_bytes("/jobs/cards/", self.cookie, extra))
                        try:
                            status, headers = await read_head(reader)
                            break
                        except ConnectionError:
                            writer.close()
                            client.cards_conn = None
                            if attempt:
                                raise
                            client.cards_reconnects += 1
                    await read_body(reader, headers)
                    if status == 200:
                        client.cards_fetched += 1
                        client.cards_ms.append((time.perf_counter() - started) * 1000)
                    else:
                        client.cards_failed += 1
                        client.cards_errors.append(f"status {status}")
                    if headers.get("connection", "").lower() == "close":
                        writer.close()
                        client.cards_conn = None
                except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as exc:
                    client.cards_failed += 1
                    client.cards_errors.append(f"{type(exc).__name__}: {exc}")
                    if client.cards_conn is not None:
                        client.cards_conn[1].close()
                    client.cards_conn = None
                if not client.cards_queued:
                    return
                client.cards_requeued += 1
        finally:
            client.fetching = False

    async def open(self, count: int, since: str, fetch_cards: bool) -> dict[str, Any]:
        self.fetch_cards = fetch_cards
        path = f"/jobs/events/?since={quote(since)}&first=1"
        started = time.perf_counter()
        self.clients = [SseClient(index) for index in range(count)]
        for client in self.clients:
            client.task = asyncio.get_running_loop().create_task(self.run_client(client, path))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(c.connected.wait() for c in self.clients)), timeout=60)
        errors = [c.error for c in self.clients if c.error]
        return {
            "opened": sum(1 for c in self.clients if c.connected.is_set() and not c.error),
            "errors": len(errors),
            "first_errors": errors[:3],
            "seconds": time.perf_counter() - started,
        }

    def report(self, expected: list[list[str]]) -> dict[str, Any]:
        want = {(job, text) for job, text in expected}
        got = [len(want & c.progress) for c in self.clients]
        errors = [c.error for c in self.clients if c.error]
        return {
            "clients": len(self.clients),
            "expected_per_client": len(want),
            "clients_with_all": sum(1 for n in got if n == len(want)),
            "min_received": min(got) if got else 0,
            "progress_messages": sum(c.progress_messages for c in self.clients),
            "cells_messages": sum(c.cells for c in self.clients),
            "cards_events": sum(c.cards_events for c in self.clients),
            "cards_fetched": sum(c.cards_fetched for c in self.clients),
            "cards_failed": sum(c.cards_failed for c in self.clients),
            "cards_sent_after_one_in_flight": sum(c.cards_requeued for c in self.clients),
            "cards_reconnects": sum(c.cards_reconnects for c in self.clients),
            "cards_ms": summary([v for c in self.clients for v in c.cards_ms]),
            "cards_first_errors": [e for c in self.clients for e in c.cards_errors][:3],
            "refreshes": sum(c.refreshes for c in self.clients),
            "received_bytes": sum(c.received_bytes for c in self.clients),
            "errors": len(errors),
            "first_errors": errors[:3],
        }

    async def close(self) -> dict[str, Any]:
        for client in self.clients:
            for writer in client.writers:
                writer.close()
            if client.task is not None:
                client.task.cancel()
        await asyncio.gather(*(c.task for c in self.clients if c.task is not None), return_exceptions=True)
        closed = len(self.clients)
        self.clients = []
        await asyncio.sleep(0)
        return {"closed": closed}

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        commands = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(commands), sys.stdin)
        while line := await commands.readline():
            command = json.loads(line)
            kind = command["cmd"]
            if kind == "open":
                answer = await self.open(int(command["n"]), str(command["since"]), bool(command["cards"]))
            elif kind == "report":
                answer = self.report(command["expect"])
            elif kind == "close":
                answer = await self.close()
            else:
                await self.close()
                answer = {"bye": True}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
            if kind == "exit":
                return


def sse_child_main(host: str, port: int) -> int:
    asyncio.run(SseChild(host, port, os.environ[COOKIE_ENV]).serve())
    return 0


class SseClients:
    """The parent's handle on the child process of SSE clients."""

    def __init__(self, server: Gunicorn, cookie: str, log_path: Path):
        env = dict(os.environ)
        env[COOKIE_ENV] = cookie
        self.stderr = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--sse-child", "127.0.0.1", str(server.port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=env,
            start_new_session=True,
        )
        self.buffer = b""

    def call(self, command: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write((json.dumps(command) + "\n").encode())
        self.process.stdin.flush()
        deadline = time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SystemExit(f"the SSE clients did not answer {command['cmd']!r} within {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                data = os.read(fd, 1 << 20)
                if not data:
                    raise SystemExit(f"the SSE clients' process exited ({self.process.poll()})")
                self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.call({"cmd": "exit"}, timeout=20)
        stop_process(self.process, timeout=10)
        self.stderr.close()


# --- 2. the windows -------------------------------------------------------------------------------


def sample_api(base: str, token: str, seconds: float) -> tuple[list[float], dict[str, int]]:
    """GET /api/jobs every API_INTERVAL_S for `seconds` (a new connection each): every answer's time in
    ms (errors included: a 503 is a slow answer too) and the count of each status code."""
    import requests

    headers = {"Authorization": f"Token {token}", "Connection": "close"}
    times: list[float] = []
    codes: dict[str, int] = {}
    start = time.perf_counter()
    k = 0
    while k * API_INTERVAL_S < seconds:
        due = start + k * API_INTERVAL_S
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        t0 = time.perf_counter()
        answer = requests.get(f"{base}/api/jobs", headers=headers, timeout=60)
        times.append((time.perf_counter() - t0) * 1000)
        codes[str(answer.status_code)] = codes.get(str(answer.status_code), 0) + 1
        k += 1
    return times, codes


KINDS = ("none", "streams", "pages")
KIND_LABEL = {"none": "no page open", "streams": "{n} event streams", "pages": "{n} pages (streams + cards)"}


def run_window(
    kind: str, server: Gunicorn, clients: SseClients | None, token: str, redis: Any, args: argparse.Namespace
) -> dict[str, Any]:
    """One window: `kind` pages open, one job reporting 10 times a second, the API timed, /proc read."""
    opened: dict[str, Any] | None = None
    if kind != "none":
        assert clients is not None
        opened = clients.call({"cmd": "open", "n": args.clients, "since": position_now(), "cards": kind == "pages"})
        if opened["opened"] != args.clients:
            raise SystemExit(f"only {opened['opened']} of {args.clients} streams opened: {opened['first_errors']}")
    time.sleep(2.0)  # the connections' own cost stays out of the window
    pids = server.worker_pids()
    cpu_before = {pid: cpu_seconds(pid) for pid in pids}
    client_pid = clients.process.pid if clients is not None else None
    client_before = cpu_seconds(client_pid) if client_pid else 0.0
    t0 = time.perf_counter()
    job_id = create_job(server.base, token, args.window, int(args.window * REPORTS_PER_SECOND))
    create_s = time.perf_counter() - t0
    api_ms, api_codes = sample_api(server.base, token, args.window)
    elapsed = time.perf_counter() - t0
    cpu = {pid: cpu_seconds(pid) - cpu_before[pid] for pid in pids}
    client_cpu = cpu_seconds(client_pid) - client_before if client_pid else 0.0
    rss = {pid: rss_mib(pid) for pid in pids}
    connections = established_connections(pids, server.port)
    wait_job_end(redis, job_id, args.window + 60)
    time.sleep(1.5)  # the last events reach the streams
    reports = progress_reports(redis, job_id)
    received = None
    if kind != "none":
        assert clients is not None
        received = clients.call({"cmd": "report", "expect": [[job_id, r["text"]] for r in reports]})
        clients.call({"cmd": "close"})
    quiet_s = wait_quiet(server)  # what the open pages left queued (cards requests) stays out of the next window
    return {
        "kind": kind,
        "job": job_id,
        "window_s": elapsed,
        "create_job_s": create_s,
        "reports": len(reports),
        "cpu_s": sum(cpu.values()),
        "cpu_s_per_worker": list(cpu.values()),
        "client_cpu_s": client_cpu if kind != "none" else 0.0,
        "rss_mib": sum(rss.values()),
        "rss_mib_per_worker": list(rss.values()),
        "connections_per_worker": list(connections.values()),
        "api_ms": [round(v, 2) for v in api_ms],
        "api": summary(api_ms),
        "api_codes": api_codes,
        "api_errors": sum(n for code, n in api_codes.items() if code != "200"),
        "opened": opened,
        "received": received,
        "quiet_after_s": quiet_s,
    }


def wait_quiet(server: Gunicorn, timeout: float = 60) -> float:
    """Wait until the web workers use under a tenth of a core (over half a second); the seconds waited."""
    started = time.perf_counter()
    pids = server.worker_pids()
    while time.perf_counter() - started < timeout:
        before = sum(cpu_seconds(pid) for pid in pids)
        time.sleep(0.5)
        if sum(cpu_seconds(pid) for pid in pids) - before < 0.05:
            break
    return time.perf_counter() - started


def measure_open_pages(
    server: Gunicorn, clients: SseClients, token: str, redis: Any, args: argparse.Namespace
) -> dict[str, Any]:
    # Warm-up, not counted: API requests in both workers, one round of streams opened and closed.
    sample_api(server.base, token, 2.0)  # warm-up
    clients.call({"cmd": "open", "n": args.clients, "since": position_now(), "cards": True})
    time.sleep(1.0)
    clients.call({"cmd": "close"})
    wait_quiet(server)
    windows: list[dict[str, Any]] = []
    for rep in range(args.reps):
        order = list(KINDS) if rep % 2 == 0 else list(reversed(KINDS))
        for kind in order:
            log(f"  window {len(windows) + 1}/{args.reps * len(KINDS)}: {kind}")
            window = run_window(kind, server, clients, token, redis, args)
            window["rep"] = rep
            windows.append(window)
            received = window["received"]
            got = ""
            if received:
                got = (
                    f"; {received['clients_with_all']}/{received['clients']} streams got all "
                    f"{received['expected_per_client']} (fewest {received['min_received']}, errors {received['errors']}"
                    f" {received['first_errors'][:1]}, refresh {received['refreshes']})"
                )
                if kind == "pages":
                    got += f"; cards answered {received['cards_fetched']} (p50 {fmt(received['cards_ms']['p50'])} ms)"
            log(
                f"    API p50 {window['api']['p50']:.1f} ms ({window['api_codes']}), web CPU {window['cpu_s']:.2f} s, "
                f"RSS {window['rss_mib']:.0f} MiB, connections {window['connections_per_worker']}{got}"
            )
    by_kind: dict[str, Any] = {}
    for kind in KINDS:
        mine = [w for w in windows if w["kind"] == kind]
        api = [v for w in mine for v in w["api_ms"]]
        by_kind[kind] = {
            "windows": len(mine),
            "api": summary(api),
            "api_errors": sum(w["api_errors"] for w in mine),
            "api_requests": len(api),
            "cpu_s_per_window": statistics.median(w["cpu_s"] for w in mine),
            "cpu_share": statistics.median(w["cpu_s"] / w["window_s"] for w in mine),
            "client_cpu_share": statistics.median(w["client_cpu_s"] / w["window_s"] for w in mine),
            "rss_mib": statistics.median(w["rss_mib"] for w in mine),
            "api_p50_per_window": [w["api"]["p50"] for w in mine],
        }
    base_p50 = by_kind["none"]["api"]["p50"]
    for kind in ("streams", "pages"):
        entry = by_kind[kind]
        entry["api_ratio"] = entry["api"]["p50"] / base_p50
        # Per repetition: each window's p50 against the no-page window of the same repetition.
        entry["api_ratio_per_rep"] = [
            next(w for w in windows if w["kind"] == kind and w["rep"] == rep)["api"]["p50"]
            / next(w for w in windows if w["kind"] == "none" and w["rep"] == rep)["api"]["p50"]
            for rep in range(args.reps)
        ]
        received = [w["received"] for w in windows if w["kind"] == kind]
        entry["clients_with_all"] = min(r["clients_with_all"] for r in received)
        entry["expected_per_client"] = [r["expected_per_client"] for r in received]
        entry["min_received"] = min(r["min_received"] for r in received)
        entry["errors"] = sum(r["errors"] for r in received)
        entry["refreshes"] = sum(r["refreshes"] for r in received)
        entry["cards_events"] = sum(r["cards_events"] for r in received)
        entry["cards_fetched"] = sum(r["cards_fetched"] for r in received)
        entry["cards_failed"] = sum(r["cards_failed"] for r in received)
        entry["cards_sent_after_one_in_flight"] = sum(r["cards_sent_after_one_in_flight"] for r in received)
        cards_p50 = [r["cards_ms"]["p50"] for r in received if r["cards_ms"]["n"]]
        entry["cards_p50_ms"] = statistics.median(cards_p50) if cards_p50 else None
        entry["cards_first_errors"] = [e for r in received for e in r["cards_first_errors"]][:3]
        entry["messages_per_window"] = statistics.median(r["cells_messages"] + r["cards_events"] for r in received)
        entry["all_received"] = all(r["clients_with_all"] == r["clients"] == args.clients for r in received)
        entry["cpu_extra_s"] = entry["cpu_s_per_window"] - by_kind["none"]["cpu_s_per_window"]
        entry["rss_extra_kib_per_page"] = (entry["rss_mib"] - by_kind["none"]["rss_mib"]) * 1024 / args.clients
        entry["cpu_extra_ms_per_message"] = 1000 * entry["cpu_extra_s"] / max(1, entry["messages_per_window"])
    return {"windows": windows, "by_kind": by_kind}


LOG_LINE_RE = re.compile(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) (\S+): (.*)$")
EXCEPTION_LINE_RE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Timeout|Exit)\b(: |$)")


def log_summary(path: Path) -> dict[str, int]:
    """The web's warnings and errors, counted by message (the first 110 characters)."""
    counts: dict[str, int] = {}
    with contextlib.suppress(OSError), path.open(errors="replace") as lines:
        for line in lines:
            match = LOG_LINE_RE.match(line.strip())
            if match:
                key = f"{match.group(1)} {match.group(2)}: {match.group(3)[:110]}"
            elif EXCEPTION_LINE_RE.match(line):  # the last line of a logged traceback
                key = "  raised " + line.strip()[:110]
            elif "Warning: " in line:
                key = "Python warning: " + line.split("Warning: ", 1)[1].strip()[:110]
            else:
                continue
            counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda item: -item[1]))


# --- the report -----------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "ok" if ok else "BELOW"


def print_tables(results: dict[str, Any], args: argparse.Namespace) -> bool:
    push, poll = results["push"], results["poll"]
    open_pages = results["open_pages"]["by_kind"]
    checks: list[bool] = []
    print()
    print(
        f"Live Jobs page, {results['started_at'][:19]}Z, {platform.node()}, {os.cpu_count()} CPUs, "
        f"{results['database']}, Redis db {REDIS_DB}, gunicorn {args.workers} UvicornWorker(s), 1 rqworker; "
        f"load average at start {results['machine']['loadavg_at_start'][0]:.1f}"
    )
    checks_read = [c for m in (push, poll) for c in m["clock_checks"]]
    wall = [c["hr_minus_wall_ms"] for c in checks_read]
    system = [c["hr_minus_system_ms"] for c in checks_read]
    round_trip = max(c["round_trip_ms"] for c in checks_read)
    print(
        f"Clocks: the page's performance.timeOrigin + now() minus its Date.now(): {min(wall):+.1f} .. "
        f"{max(wall):+.1f} ms; minus the system's time.time(): {min(system):+.1f} .. {max(system):+.1f} ms "
        f"(read across a round trip of up to {round_trip:.1f} ms)"
    )
    print()
    print(
        f"1. Worker's progress report (its `t`) -> the change of the row's progress cell in the browser's DOM, ms; "
        f"example job, {args.steps} reports over {args.duration:.0f} s"
    )
    header = f"{'page':<44} {'reports':>11} {'p50':>6} {'p95':>6} {'max':>6} {'mean':>6}  {'target':<18} verdict"
    print(header)
    print("-" * len(header))
    p = push["summary"]
    push_ok = p["p95"] is not None and p["p95"] < PUSH_P95_TARGET_MS
    all_seen = push["seen"] == push["reports"] and push["reports"] > 0
    checks += [push_ok, all_seen]

    def row(label: str, n: int, total: int, stats: dict[str, Any], target: str, result: str) -> None:
        print(
            f"{label:<44} {n:>5}/{total:<5} {fmt(stats['p50']):>6} {fmt(stats['p95']):>6} {fmt(stats['max']):>6} "
            f"{fmt(stats['mean']):>6}  {target:<18} {result}"
        )

    row("push (/jobs/, Live)", push["seen"], push["reports"], p, f"p95 < {PUSH_P95_TARGET_MS:.0f}", verdict(push_ok))
    blank = " " * 39
    print(f"{'  every report reached the DOM':<44} {blank}  {'all':<18} {verdict(all_seen)}")
    row(
        "polling (?live=poll): shown or overtaken",
        poll["shown_or_overtaken"],
        poll["reports"],
        poll["summary_overtaken"],
        f"~{POLL_EXPECTED_MS:.0f} (reference)",
        "-",
    )
    row("polling (?live=poll): shown exactly", poll["seen"], poll["reports"], poll["summary"], "(reference)", "-")
    print(
        f"  polling every 2 s shows only the reports a poll catches ({poll['seen']} of {poll['reports']} over "
        f'{len(poll["runs"])} job(s); the others were replaced by newer ones in between): "shown exactly" times those '
        'alone (each was the newest when the poll read the row, so it looks fast); "shown or overtaken" times every '
        "report until the page showed it or a newer one, i.e. how stale the page was"
    )
    print()
    print(
        f"2. {args.clients} pages open on push while a job reports {REPORTS_PER_SECOND}/s: {args.reps} x "
        f"{args.window:.0f} s windows of each kind, interleaved; GET /api/jobs every {API_INTERVAL_S * 1000:.0f} ms "
        "(token, a new connection each)"
    )
    header = (
        f"{'open':<30} {'API p50':>8} {'API p95':>8} {'errors':>7} {'ratio':>6} {'per rep':<15} {'web CPU':>8} "
        f"{'RSS MiB':>8} {'clients':>8} {'got all':>8}  verdict"
    )
    print(header)
    print("-" * len(header))
    for kind in KINDS:
        entry = open_pages[kind]
        label = KIND_LABEL[kind].format(n=args.clients)
        cpu = f"{100 * entry['cpu_share']:.0f} %"
        client_cpu = f"{100 * entry['client_cpu_share']:.0f} %"
        if kind == "none":
            print(
                f"{label:<30} {entry['api']['p50']:>8.1f} {entry['api']['p95']:>8.1f} {entry['api_errors']:>7} "
                f"{'1.00':>6} {'':<15} {cpu:>8} {entry['rss_mib']:>8.0f} {'-':>8} {'-':>8}  "
                f"no API error: {verdict(entry['api_errors'] == 0)}"
            )
            checks.append(entry["api_errors"] == 0)
            continue
        ratio_ok = entry["api_ratio"] <= API_RATIO_TARGET
        got_ok = entry["all_received"]
        errors_ok = entry["api_errors"] == 0
        checks += [ratio_ok, got_ok, errors_ok]
        per_rep = " ".join(f"{v:.2f}" for v in entry["api_ratio_per_rep"])
        got = f"{entry['clients_with_all']}/{args.clients}"
        print(
            f"{label:<30} {entry['api']['p50']:>8.1f} {entry['api']['p95']:>8.1f} {entry['api_errors']:>7} "
            f"{entry['api_ratio']:>6.2f} {per_rep:<15} {cpu:>8} {entry['rss_mib']:>8.0f} {client_cpu:>8} {got:>8}  "
            f"ratio<={API_RATIO_TARGET}: {verdict(ratio_ok)}, events: {verdict(got_ok)}, "
            f"no API error: {verdict(errors_ok)}"
        )
    requests_made = ", ".join(str(open_pages[k]["api_requests"]) for k in KINDS)
    for line in (
        f"API p50/p95: over every request of the kind's windows ({requests_made} requests); errors: answers other",
        "than 200 (their time counts too); ratio: API p50 against no page open; per rep: each repetition's windows",
        "alone; web CPU: the gunicorn workers' CPU time over the window, as a share of one core (median window);",
        "RSS: both workers, summed, at the window's end; clients: the CPU time of the process holding the pages",
        "(on this machine too)",
    ):
        print(f"  {line}")
    for kind in ("streams", "pages"):
        entry = open_pages[kind]
        expected = "/".join(str(n) for n in sorted(set(entry["expected_per_client"])))
        print(
            f"  {KIND_LABEL[kind].format(n=args.clients)}: +{entry['cpu_extra_s']:.2f} CPU s per {args.window:.0f} s "
            f"window ({entry['cpu_extra_ms_per_message']:.2f} ms per message delivered), "
            f"{entry['rss_extra_kib_per_page']:+.0f} KiB RSS per page"
        )
        print(
            f"    progress messages: {expected} expected per stream and window, fewest received "
            f"{entry['min_received']}, streams with all {entry['clients_with_all']}/{args.clients} (worst window); "
            f"refresh {entry['refreshes']}, stream errors {entry['errors']}; cards events {entry['cards_events']:,}"
        )
        if kind == "pages":
            print(
                f"    GET /jobs/cards/ on those events: {entry['cards_fetched']:,} answered "
                f"(p50 {fmt(entry['cards_p50_ms'])} ms, median window), {entry['cards_failed']} failed, "
                f"{entry['cards_sent_after_one_in_flight']:,} sent as soon as the previous one was answered"
                + (f"; first errors {entry['cards_first_errors']}" if entry["cards_first_errors"] else "")
            )
    if results["web_log"]:
        print("  the web's log, warnings and errors over the whole run:")
        for message, count in list(results["web_log"].items())[:8]:
            print(f"    {count:>6} x {message}")
    return all(checks)


def finish(results: dict[str, Any], args: argparse.Namespace, run_started: float) -> int:
    all_ok = print_tables(results, args)
    total_s = time.perf_counter() - run_started
    results["run_seconds"] = total_s
    results["all_targets_met"] = all_ok
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"live_latency-{datetime.now(tz=UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(results, indent=2, default=str))
    print()
    print(
        f"{'ALL TARGETS MET' if all_ok else 'SOME TARGETS MISSED'}; run time {total_s / 60:.1f} min; "
        f"load average now {os.getloadavg()[0]:.1f}"
    )
    print(f"results: {out.relative_to(ROOT)}")
    return 0 if all_ok else 1


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "--sse-child":
        return sse_child_main(sys.argv[2], int(sys.argv[3]))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shorter jobs, one poll job, one 8 s window of each kind")
    parser.add_argument("--steps", type=int, help="progress reports of the measured job (200; --quick 50)")
    parser.add_argument("--duration", type=float, help="seconds the measured job works (20; --quick 5)")
    parser.add_argument("--poll-runs", type=int, help="jobs measured on the polling page (3; --quick 1)")
    parser.add_argument("--clients", type=int, default=200, help="pages open at once (200)")
    parser.add_argument("--window", type=float, help="seconds of each measured window (20; --quick 8)")
    parser.add_argument("--reps", type=int, help="windows of each kind (3; --quick 1)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (2, as the Procfile)")
    parser.add_argument("--db", choices=("postgres", "sqlite"), default="postgres", help="the database (postgres)")
    parser.add_argument("--pg-url", default=PG_URL, help=f"Postgres server, without a database ({PG_URL})")
    parser.add_argument("--keep", action="store_true", help="keep the database and the logs (and print where)")
    args = parser.parse_args()
    defaults = {"steps": (200, 50), "duration": (20.0, 5.0), "poll_runs": (3, 1), "window": (20.0, 8.0), "reps": (3, 1)}
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)

    from playwright.sync_api import sync_playwright

    run_started = time.perf_counter()
    db = Database(args.db, args.pg_url)
    tmp = Path(tempfile.mkdtemp(prefix="live_latency-"))
    redis = redis_conn()
    server: Gunicorn | None = None
    worker: RQWorker | None = None
    clients: SseClients | None = None
    results: dict[str, Any] = {
        "benchmark": "live_latency",
        "started_at": datetime.now(tz=UTC).isoformat(),
        "machine": {
            "node": platform.node(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "loadavg_at_start": os.getloadavg(),
        },
        "config": {k: v for k, v in vars(args).items() if k != "pg_url"},
        "database": "PostgreSQL" if args.db == "postgres" else "SQLite",
    }
    db.create()
    log(f"database {db.name} ({args.db}) created; Redis {REDIS_URL}; logs in {tmp}")
    try:
        redis.flushdb()
        manage(db.url, "migrate", "--noinput", "-v", "0")
        # As every deployment does (scripts/start.sh, the Dockerfile): with DEBUG off the web serves
        # static files (page.js, htmx) from STATIC_ROOT only.
        manage(db.url, "collectstatic", "--no-input", "-v", "0")
        token = json.loads(run_manage(db.url, SUPERUSER_SCRIPT).strip().splitlines()[-1])
        server = Gunicorn(db, args.workers, tmp / "gunicorn.log")
        server.start(token)
        worker = RQWorker(db, tmp / "worker.log")
        worker.start(redis)
        log(f"gunicorn on {server.base} (workers {server.worker_pids()}), worker pid {worker.process.pid}")  # type: ignore[union-attr]

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
            try:
                log(f"1. push: /jobs/, one job of {args.steps} reports over {args.duration:.0f} s")
                results["push"] = measure_page(
                    browser, server.base, token, redis, mode="push", runs=1, duration=args.duration, steps=args.steps
                )
                log(f"1. polling: /jobs/?live=poll, {args.poll_runs} job(s)")
                results["poll"] = measure_page(
                    browser,
                    server.base,
                    token,
                    redis,
                    mode="poll",
                    runs=args.poll_runs,
                    duration=args.duration,
                    steps=args.steps,
                )
            finally:
                browser.close()

        log(f"2. {args.clients} pages open: {args.reps} x {args.window:.0f} s windows of each kind")
        cookie = session_cookie(server.base)
        clients = SseClients(server, cookie, tmp / "sse-clients.log")
        results["open_pages"] = measure_open_pages(server, clients, token, redis, args)
        results["web_log"] = log_summary(server.log_path)
        clients.stop()
        clients = None
        return finish(results, args, run_started)
    finally:
        if clients is not None:
            clients.stop()
        if server is not None:
            server.stop()
        if worker is not None:
            worker.stop()
        with contextlib.suppress(Exception):
            redis.flushdb()
            redis.close()
        if args.keep:
            log(f"kept the database {db.url} and the logs in {tmp}")
        else:
            db.drop()
            for path in tmp.iterdir():
                path.unlink()
            tmp.rmdir()
            log(f"database {db.name} dropped")


if __name__ == "__main__":
    sys.exit(main())
