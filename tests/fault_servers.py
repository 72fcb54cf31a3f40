"""What the fault suite and the chaos run both start and read: servers of their own, gunicorn, the run log.

- `OwnRedis`: a `redis-server` on a free port, in a directory of its own; without
  persistence (a restart empties it) or with an append-only file (a restart keeps
  what it acknowledged);
- `OwnPostgres`: a PostgreSQL cluster in a temporary directory, on a free port;
- `Web`: gunicorn serving the ASGI application, as the Procfile runs it;
- `RunLog`: the file the test job types (`tests.fault_job_types`) append a line to
  when a run starts and when it ends.

Nothing here needs Django at import time (`closed_port` is needed before settings
are read); what waits for a server to answer imports `tests.conftest` when it runs.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis as redis_lib
from rq.job import Job as RQJob

if TYPE_CHECKING:
    from jobs.models import Job
    from tests.conftest import Processes

BASE_DIR = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server")
POSTGRES_BIN = Path(os.environ.get("FAULTS_POSTGRES_BIN", "/usr/lib/postgresql/15/bin"))
GUNICORN = Path(sys.executable).with_name("gunicorn")
#: The file a redis-server started in a directory reads its data from at start (`dbfilename`'s default).
SNAPSHOT = "dump.rdb"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- the log of the runs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    kind: str  # start, end (returned), fail (raised), overlap (another run of the job was under way)
    job_id: str
    attempt: int
    pid: int
    at: float
    extra: str


class RunLog:
    """The file the `faults-record` jobs append a line to when a run starts and when it ends."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[Run]:
        if not self.path.exists():
            return []
        runs = []
        for line in self.path.read_text().splitlines():
            kind, job_id, attempt, pid, at, *extra = line.split()
            runs.append(Run(kind, job_id, int(attempt), int(pid), float(at), " ".join(extra)))
        return runs

    def of_kind(self, kind: str, job: Job | None = None) -> list[Run]:
        return [run for run in self.lines() if run.kind == kind and (job is None or run.job_id == str(job.id))]

    def starts(self, job: Job | None = None) -> list[Run]:
        return self.of_kind("start", job)

    def overlaps(self) -> list[Run]:
        """Runs that started while an earlier run of the same job was still under way elsewhere."""
        return self.of_kind("overlap")

    def runs_by_job(self) -> Counter[str]:
        return Counter(run.job_id for run in self.starts())

    def horse_running(self, job: Job, attempt: int = 1) -> int:
        """The pid of the work horse running the job's attempt (from its start line)."""
        from tests.conftest import wait_for

        starts = wait_for(
            lambda: [run for run in self.starts(job) if run.attempt == attempt], 30, message=f"job {job.id} to start"
        )
        return int(starts[-1].pid)


def fault_env(run_log: RunLog, **extra: str) -> dict[str, str]:
    """The environment of a process that must know the fault job types and log their runs."""
    return {"JOBS_MODULES": "tests.fault_job_types", "FAULTS_RUN_LOG": str(run_log.path), **extra}


# --- a redis-server of our own -------------------------------------------------------------------


class OwnRedis:
    """A redis-server on a free port (or the one given), answering in database `db`.

    Without `appendfsync` it has no persistence: a restart empties it. With it
    (`always` or `everysec`) it keeps an append-only file in `directory`, which a
    restart reads back. With a `password` it answers only those who give it.
    """

    def __init__(
        self,
        directory: Path,
        db: int,
        port: int | None = None,
        appendfsync: str | None = None,
        password: str | None = None,
    ) -> None:
        self.directory = directory
        self.port = port or closed_port()
        self.db = db
        self.appendfsync = appendfsync
        self.password = password
        self.process: subprocess.Popen[bytes] | None = None
        self.paused = False

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{self.db}"

    def client(self, timeout: float = 2.0, password: str | None = None) -> redis_lib.Redis:
        """A client with the password given (none: the server's own, if it has one)."""
        return redis_lib.Redis(
            host="127.0.0.1",
            port=self.port,
            db=self.db,
            password=password if password is not None else self.password,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
        )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis_lib.RedisError:
            return False

    def start(self, timeout: float = 10) -> None:
        from tests.conftest import wait_for

        assert REDIS_SERVER is not None
        assert not self.running
        persistence = ["--appendonly", "no"]
        if self.appendfsync:
            persistence = ["--appendonly", "yes", "--appendfsync", self.appendfsync]
        if self.password:
            persistence += ["--requirepass", self.password]
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                *persistence,
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_for(self.answers, timeout, interval=0.05, message=f"redis-server to answer on port {self.port}")
        # A snapshot `stop_keeping_data` left is read back once: the next start after this is empty again.
        (self.directory / SNAPSHOT).unlink(missing_ok=True)

    def stop_keeping_data(self) -> None:
        """Stopped (connections are refused) with what it holds saved: the next start reads it back,
        as a Redis with persistence restarts."""
        self.client().save()
        self.stop()

    def stop(self) -> None:
        """SIGTERM: it exits, having written its append-only file if it keeps one (nothing else is saved)."""
        if not self.running:
            return
        assert self.process is not None
        self.resume()
        self.process.terminate()
        self.process.wait(10)

    def kill(self) -> None:
        """SIGKILL, as a crash would: only what its append-only file already holds survives."""
        if not self.running:
            return
        assert self.process is not None
        self.resume()
        self.process.kill()
        self.process.wait(10)

    def pause(self) -> None:
        """`kill -STOP`: connections are still accepted (by the kernel), nothing is answered."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.paused and self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)
        self.paused = False

    def reset(self) -> None:
        """Running, answering, empty, without a memory limit."""
        self.resume()
        if not self.running:
            self.start()
        conn = self.client()
        conn.config_set("maxmemory", 0)
        conn.flushall()


def jobs_in_redis(conn: redis_lib.Redis) -> set[str]:
    """The ids of the RQ jobs a Redis holds."""
    prefix = RQJob.redis_job_namespace_prefix
    ids = set()
    for key in conn.scan_iter(match=f"{prefix}*", count=1000):
        name = key.decode()[len(prefix) :]
        if ":" not in name:  # not a job's sub-key (dependents, results)
            ids.add(name)
    return ids


# --- the web server, as deployed ------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    data: Any
    seconds: float


class Web:
    """`gunicorn queueproject.asgi:application -k queueproject.web_worker.UvicornWorker --workers 1` on a free port.

    As the Procfile runs it: with a pool of database connections (DB_POOL, PostgreSQL only).
    """

    def __init__(self, processes: Processes, name: str, **env: str) -> None:
        self.processes = processes
        self.port = closed_port()
        self.env = {"DB_POOL": "true", "JOBS_API_WRITE_RATE": "1000000/min", **env}
        self.log_path = processes.tmp_path / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from tests.conftest import wait_for

        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    str(GUNICORN),
                    "queueproject.asgi:application",
                    "-k",
                    "queueproject.web_worker.UvicornWorker",
                    "--workers",
                    "1",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                ],
                cwd=BASE_DIR,
                env=self.processes.env(**self.env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        # Stopped with the test's other processes (SIGTERM to its group, then SIGKILL).
        self.processes.started.append((self.process, self.log_path))
        wait_for(
            self._answers, self.processes.START_TIMEOUT, interval=0.1, message=f"gunicorn to answer on port {self.port}"
        )

    def _answers(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            pytest.fail(f"gunicorn exited early:\n{self.log_path.read_text(errors='replace')}")
        try:
            return self.request("GET", "/healthz", timeout=2).status == 200
        except OSError:
            return False

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        token: str | None = None,
        timeout: float = 30,
        conn: http.client.HTTPConnection | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One request; `headers` are sent besides (and over) the JSON ones (a session's cookie, say)."""
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        sent = {"Host": "127.0.0.1", "Accept": "application/json"}
        if token:
            sent["Authorization"] = f"Token {token}"
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        started = time.monotonic()
        try:
            conn.request(method, path, body=payload, headers=sent)
            response = conn.getresponse()
            raw = response.read()
        finally:
            if own:
                conn.close()
        seconds = time.monotonic() - started
        data = json.loads(raw) if raw and response.getheader("Content-Type", "").startswith("application/json") else raw
        return Answer(response.status, {k.lower(): v for k, v in response.getheaders()}, data, seconds)


# --- a PostgreSQL cluster of our own ----------------------------------------------------------------


class OwnPostgres:
    """A PostgreSQL cluster in a temporary directory, on a free port (or the one given), with database `name`.

    As root, the server runs as the `postgres` user (PostgreSQL refuses to run as root).
    """

    def __init__(self, name: str = "faults", port: int | None = None) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="faults-postgres-"))
        self.data = self.directory / "data"
        self.port = port or closed_port()
        self.name = name
        self.as_user: str | None = "postgres" if os.geteuid() == 0 else None
        if self.as_user:
            shutil.chown(self.directory, self.as_user, self.as_user)

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{self.name}"

    def _run(self, *args: str) -> None:
        subprocess.run(
            args,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            user=self.as_user,
            group=self.as_user,
            cwd=self.directory,
        )

    def init(self) -> None:
        self._run(
            str(POSTGRES_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            str(POSTGRES_BIN / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.directory / "log"),
            "-w",
            "start",
        )

    def stop_immediately(self) -> None:
        """`pg_ctl stop -m immediate`: every connection is cut, nothing is shut down cleanly."""
        self._run(str(POSTGRES_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def query(self, sql: str, params: Any = None) -> list[Any]:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=self.name, autocommit=True
        ) as conn:
            return list(conn.execute(sql, params).fetchall())

    def create_database(self) -> None:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(f'CREATE DATABASE "{self.name}"')

    def prepare(self) -> None:
        """Initialised, running, its database created and migrated."""
        self.init()
        self.start()
        self.create_database()
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v0"],
            cwd=BASE_DIR,
            env={**os.environ, "DATABASE_URL": self.url},
            check=True,
        )

    def remove(self) -> None:
        if self.running():
            with suppress(subprocess.CalledProcessError):
                self.stop_immediately()
        shutil.rmtree(self.directory, ignore_errors=True)


def manage_py(database_url: str, code: str) -> str:
    """Run Python in `manage.py shell` against a database; returns what it printed."""
    done = subprocess.run(
        [sys.executable, "manage.py", "shell", "--no-imports", "-c", code],
        cwd=BASE_DIR,
        env={**os.environ, "DATABASE_URL": database_url, "LOG_LEVEL": "WARNING"},
        check=True,
        capture_output=True,
        text=True,
    )
    return done.stdout.strip().splitlines()[-1]
