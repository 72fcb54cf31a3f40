"""Fixtures: a clean test Redis, and real worker and scheduler processes on the test database."""

from __future__ import annotations

import functools
import importlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.conf import settings
from django.contrib.auth.models import Group
from django.db import connection
from django.db.migrations.loader import MigrationLoader
from django.test import override_settings

from jobs import queues
from jobs.models import Job
from tests import parallel
from tests.helpers import FORKING, OPERATORS, VIEWERS

BASE_DIR = Path(settings.BASE_DIR)


def pytest_configure(config: pytest.Config) -> None:
    """Under xdist, the settings must have read this worker's own Redis database (tests/parallel.py)."""
    index = parallel.worker_index()
    if index is None:
        return
    if parallel.assigned_url is None or parallel.assigned_url != settings.REDIS_URL:
        raise pytest.UsageError(
            f"xdist worker gw{index} runs on REDIS_URL={settings.REDIS_URL}, not a database of its own: "
            "load tests.parallel with -p (pyproject.toml's addopts) so it runs before the settings are read"
        )


#: The marks of the longest tests, in the order they start (the rest after them, in their own order).
LONGEST_FIRST = ("faults", "browser", "once", "slow")


@pytest.hookimpl(trylast=True)  # after pytest-django's, which puts the tests without a database last
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest tests start first: under xdist a pass ends when its last test does, and a
    two-minute test started last would run alone at the end. Those given a longer timeout (the
    chaos run, the burst) start before the others of their mark."""

    def rank(item: pytest.Item) -> tuple[int, float]:
        mark = next((i for i, mark in enumerate(LONGEST_FIRST) if item.get_closest_marker(mark)), len(LONGEST_FIRST))
        timeout = item.get_closest_marker("timeout")
        return mark, -float(timeout.args[0]) if timeout and timeout.args else 0.0

    items.sort(key=rank)


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup: None, django_db_blocker: Any) -> None:
    """PostgreSQL: the test database commits without waiting for its WAL to reach the disk.

    Every transactional test ends by truncating every table, and most tests are transactional: the
    flushes to disk were a third of the run. Nothing the tests check changes (only what a crash of the
    server itself would keep). Every session takes it, the processes the tests start included.
    """
    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        name = connection.ops.quote_name(connection.settings_dict["NAME"])
        cursor.execute(f"ALTER DATABASE {name} SET synchronous_commit TO off")
        cursor.execute("SET synchronous_commit TO off")


#: Rows the migrations write and no test changes: a transactional test's flush keeps them.
KEPT_TABLES = frozenset({"django_content_type", "auth_permission", "auth_group", "auth_group_permissions"})


def _quick_sql_flush(
    style: Any, connection: Any, reset_sequences: bool = True, allow_cascade: bool = False
) -> list[str]:
    """What a transactional test's flush runs: every table emptied but the migrations' own rows
    (KEPT_TABLES), and on PostgreSQL with DELETE, not TRUNCATE.

    The tables hold a few rows: TRUNCATE gives each table and index a new file, DELETE does not (a
    third of a test's time on a busy machine, and the lock waits on the connections of the worker
    processes a test started). The jobs go first: their delete trigger writes count deltas, which are
    deleted after them. Django's foreign keys are checked at the commit, when every row is gone.
    """
    tables = [
        table
        for table in connection.introspection.django_table_names(only_existing=True, include_views=False)
        if table not in KEPT_TABLES
    ]
    tables.sort(key=lambda table: table != Job._meta.db_table)
    if connection.vendor != "postgresql":  # SQLite: DELETE, in this order
        return connection.ops.sql_flush(style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade)
    return [f"DELETE FROM {connection.ops.quote_name(table)}" for table in tables]


@pytest.fixture(autouse=True, scope="session")
def quick_flush() -> Iterator[None]:
    """A transactional test ends with `_quick_sql_flush`, and without the post_migrate signal: the content
    types and permissions it would make again are kept (a fifth of a test's time)."""
    flush: Any = importlib.import_module("django.core.management.commands.flush")
    saved = flush.sql_flush, flush.emit_post_migrate_signal
    flush.sql_flush = _quick_sql_flush
    flush.emit_post_migrate_signal = lambda *args, **kwargs: None
    yield
    flush.sql_flush, flush.emit_post_migrate_signal = saved


@pytest.fixture(autouse=True, scope="session")
def quick_password_hashing() -> Iterator[None]:
    """Hash the tests' passwords quickly (tests.helpers.QuickPasswordHasher)."""
    with override_settings(PASSWORD_HASHERS=["tests.helpers.QuickPasswordHasher"]):
        yield


@pytest.fixture(autouse=True)
def as_migrated(request: pytest.FixtureRequest) -> None:
    """The database as migrations leave it, in every transactional test.

    A transactional test ends by flushing the database, which keeps the migrations'
    groups (quick_flush); should a test have removed them, run the migrations' own
    code again. (`test_the_viewer_and_operator_groups_exist_out_of_the_box` sees the
    migrated database as it is.)
    """
    marker = request.node.get_closest_marker("django_db")
    if marker is None or not marker.kwargs.get("transaction"):
        return
    request.getfixturevalue("transactional_db")
    if Group.objects.filter(name__in=[VIEWERS, OPERATORS]).count() == 2:
        return
    for name, function in (
        ("0003_counters_search_groups", "create_groups"),
        ("0007_rollups_audit", "grant_audit_view"),
        ("0011_schedules", "grant_schedules"),
    ):
        migration = importlib.import_module(f"jobs.migrations.{name}")
        getattr(migration, function)(_models_after(name), None)


@functools.cache
def _models_after(migration: str) -> Any:
    """The models as the jobs app's `migration` leaves them (built once: the migrations do not change)."""
    return MigrationLoader(connection).project_state(("jobs", migration), at_end=True).apps


@pytest.fixture(autouse=True)
def redis_db() -> Iterator[Any]:
    """Every test starts with an empty test Redis database (never the default one)."""
    conn = queues.redis()
    db = conn.connection_pool.connection_kwargs.get("db")
    # The tests empty their Redis database: never let them touch the default one.
    assert db not in (None, 0), f"tests must run against a Redis database other than 0, not {db}"
    conn.flushdb()
    yield conn
    conn.flushdb()


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.1, message: str = "") -> Any:
    """Poll until `predicate()` is truthy; return its value or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


def _database_url() -> str:
    """The test database as a URL, for processes started by the tests."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    user = quote(db.get("USER") or "")
    password = quote(db.get("PASSWORD") or "")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    return f"postgres://{auth}{db.get('HOST') or 'localhost'}:{db.get('PORT') or 5432}/{db['NAME']}"


class Processes:
    """Starts manage.py commands against the test database and stops them at the end."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"DATABASE_URL": _database_url(), "PYTHONUNBUFFERED": "1", "LOG_LEVEL": "INFO"})
        env.update(extra)
        return env

    def start(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        log_path = self.tmp_path / f"{args[0]}-{len(self.started)}.log"
        log = log_path.open("wb")
        process = subprocess.Popen(
            [sys.executable, "manage.py", *args],
            cwd=BASE_DIR,
            env=self.env(**env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group (RQ gives each work horse a group of its own)
        )
        self.started.append((process, log_path))
        return process

    def worker(self, *queue_names: str, worker_class: str | None = None, **env: str) -> subprocess.Popen[bytes]:
        """`manage.py rqworker` with RQ's forking worker (a work horse per job) unless `worker_class`
        names another: the default is the pool (`jobs.pool.PooledWorker`), which has suites of its own."""
        args = ["rqworker", *(queue_names or queues.QUEUE_NAMES), "--worker-class", worker_class or FORKING]
        process = self.start(*args, **env)
        self.wait_until_listening(process)
        return process

    def scheduler(self, **env: str) -> subprocess.Popen[bytes]:
        """A scheduler, returned once its loop runs: a test's clock starts with a scheduler at work
        (starting one takes seconds while other tests keep the machine busy)."""
        process = self.start("runscheduler", "--tick", "0.2", **env)
        self.wait_until_logged(process, " started (tick ", "the scheduler to start")
        return process

    def log(self, process: subprocess.Popen[bytes]) -> str:
        for candidate, path in self.started:
            if candidate is process:
                return path.read_text(errors="replace")
        return ""

    #: How long a process may take to start: a guard against a hang, not a promise (a Django process
    #: started while the whole test command keeps both cores busy has taken more than 20 s).
    START_TIMEOUT = 60.0

    def wait_until_listening(self, process: subprocess.Popen[bytes], timeout: float = START_TIMEOUT) -> None:
        self.wait_until_logged(process, "Listening on", "the worker to listen", timeout)

    def wait_until_logged(
        self, process: subprocess.Popen[bytes], text: str, message: str, timeout: float = START_TIMEOUT
    ) -> None:
        def logged() -> bool:
            if process.poll() is not None:
                pytest.fail(f"exited early, while waiting for {message}:\n{self.log(process)}")
            return text in self.log(process)

        wait_for(logged, timeout, message=message)

    def stop_all(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                with _suppress_lookup():
                    os.killpg(process.pid, signal.SIGTERM)
        for process, path in self.started:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with _suppress_lookup():
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=5)
            if os.environ.get("SHOW_PROCESS_LOGS"):
                sys.stderr.write(f"--- {path.name}\n{path.read_text(errors='replace')}\n")


class SilentServer:
    """A TCP server that accepts connections and never says a word: a hung Redis or SMTP server."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port: int = self.sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.connections.append(conn)

    def close(self) -> None:
        self._closing.set()
        self._thread.join(5)
        for conn in self.connections:
            conn.close()
        self.sock.close()


class _suppress_lookup:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        return exc_type is ProcessLookupError


@pytest.fixture
def processes(transactional_db: None, tmp_path: Path) -> Iterator[Processes]:
    """Real `manage.py rqworker` / `runscheduler` processes; the test's data is committed for them."""
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()


@pytest.fixture(autouse=True)
def _shared_redis_timeout_kept() -> Iterator[None]:
    """A test leaves the shared Redis client's socket timeout as configured: RQ's Worker objects raise
    their client's to minutes (tests read RQ's workers through `queues.new_redis()`), and a later test
    of a hung or late Redis would then wait minutes instead of seconds."""
    yield
    left = queues.redis().connection_pool.connection_kwargs.get("socket_timeout")
    if left != settings.REDIS_SOCKET_TIMEOUT:
        queues.reset()  # the next test starts right whatever this one did
        pytest.fail(f"the test left the shared Redis client's socket timeout at {left} s")
