"""Workers against their Python peers: jobs/s with the history written, and enqueue-to-start latency.

    .venv/bin/python bench/workers.py            # 3 repetitions, N=2000 (500 for forking workers)
    .venv/bin/python bench/workers.py --quick    # 1 repetition, N=300 (100 forking), a smoke run
    .venv/bin/python bench/workers.py --help

In the same run, on SQLite and on PostgreSQL, for N no-op jobs and N jobs of 5 ms of CPU:

- the product's worker in each of its modes (`PRODUCT_MODES`: two `manage.py rqworker` processes, or
  one pool of two), the history written and counted until the last of the N rows is `finished`;
- bare RQ `Worker` and `SimpleWorker` (two `rq worker` processes, a plain function of the bench;
  RQ writes no history: RQ's finished registry is counted);
- Celery (prefork, concurrency 2, django-celery-results, persistent DB connections) and django-q2
  (2 workers, `CONN_MAX_AGE=None`), each counted in its own result store until N rows are there.

Each system's workers are started, warmed up (4 jobs) and idle before the clock starts; the time runs
from the start of the enqueue (each system's own API) until the N-th row is counted. Ratios are taken
against django-q2 and against bare RQ's SimpleWorker measured in the same repetition, on the same
database and job kind. Then enqueue-to-start latency on the idle workers: one job at a time, from the
enqueue call to the job's first line of code (a time the job pushes to Redis).

The peers run from their own venv (`var/bench-peers-venv`, made from `bench/requirements-peers.txt`
on first use): the product's `.venv` is not touched. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
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
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: `bench` must import
from bench.mirror_throughput import Agent, git_state, log, percentile, versions

BENCH_DIR = Path(__file__).resolve().parent
PROJECT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
PEERS_REQUIREMENTS = BENCH_DIR / "requirements-peers.txt"
QUEUE = "default"
JSON_SERIALIZER = "rq.serializers.JSONSerializer"
KINDS = {"noop": "no-op jobs", "cpu5": "jobs of 5 ms CPU"}
BACKENDS = ("sqlite", "postgres")
WARM_UP_JOBS = 4
DJANGO_Q = "djangoq"
RQ_SIMPLE = "rq-simple"


@dataclass(frozen=True)
class ProductMode:
    label: str
    argv: tuple[str, ...]  # after `manage.py`
    processes: int = 2  # how many of that command run side by side
    forks: bool = False  # a process per job: run with --jobs-fork jobs


#: The product's worker modes: name -> the command line (`manage.py ...`). Another mode is one more line.
PRODUCT_MODES: dict[str, ProductMode] = {
    "product-fork": ProductMode(
        "product Worker (fork), 2 processes", ("rqworker", QUEUE, "--worker-class", "jobs.worker.Worker"), forks=True
    ),
    "product-simple": ProductMode(
        "product SimpleWorker, 2 processes", ("rqworker", QUEUE, "--worker-class", "jobs.worker.SimpleWorker")
    ),
    "product-pool": ProductMode("product pool (jobs_pool -n 2)", ("jobs_pool", "-n", "2", QUEUE), 1),
    "product-threads": ProductMode("product threads (jobs_threads -c 4)", ("jobs_threads", "-c", "4", QUEUE), 1),
}


@dataclass
class Spec:
    """One system under test."""

    name: str
    label: str
    agent: str  # bench/peers/agent.py's system: product, rq, celery, djangoq
    command: list[str]
    processes: int
    forks: bool
    store: str  # what is written and counted
    redis_db: int
    ready_line: str | None = None  # wait for this line in the log before the first job
    left_out: str | None = None  # why it is not measured


@dataclass
class Run:
    jobs: int
    seconds: float
    enqueue_seconds: float
    busy: float  # the machine's CPUs in use during the run (every process on it)

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds


@dataclass
class Results:
    runs: dict[tuple[str, str, str], list[Run | None]] = field(default_factory=dict)  # (backend, kind, system)
    latency: dict[tuple[str, str], list[float]] = field(default_factory=dict)  # (backend, system) -> ms
    enqueue_ms: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [float(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


class SystemAgent(Agent):
    """`python -m bench.peers.agent <system>` (see bench/peers/agent.py): same protocol as bench/agent.py."""

    def __init__(self, python: str, system: str, env: dict[str, str], log_path: Path) -> None:
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [python, "-m", "bench.peers.agent", system],
            cwd=PROJECT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,
        )


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-workers-"))
        self.python = str(PROJECT / ".venv" / "bin" / "python") if (PROJECT / ".venv").exists() else sys.executable
        self.rq_bin = str(Path(self.python).with_name("rq"))
        self.peers_python = str(Path(args.peers_venv) / "bin" / "python")
        self.redis_process: subprocess.Popen[bytes] | None = None
        self.redis: Any = None
        self.agents: dict[tuple[str, str], Agent] = {}
        self.db_urls: dict[tuple[str, str], str] = {}  # (agent, backend) -> URL
        self.pg_created: list[str] = []
        self.started: list[subprocess.Popen[bytes]] = []
        self.results = Results()
        self.specs = self.make_specs()

    # --- what runs ---------------------------------------------------------------------------------------

    def redis_url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.args.redis_port}/{db}"

    def make_specs(self) -> dict[str, Spec]:
        specs: dict[str, Spec] = {}
        for name, mode in PRODUCT_MODES.items():
            specs[name] = Spec(
                name,
                mode.label,
                "product",
                [self.python, "manage.py", *mode.argv],
                mode.processes,
                mode.forks,
                "product history: Job rows finished",
                0,
            )
        for name, (label, worker_class, forks) in {
            "rq-fork": ("bare RQ Worker (fork), 2 processes", "rq.Worker", True),
            RQ_SIMPLE: ("bare RQ SimpleWorker, 2 processes", "rq.SimpleWorker", False),
        }.items():
            command = [self.rq_bin, "worker", "--url", self.redis_url(1), "--worker-class", worker_class]
            command += ["--serializer", JSON_SERIALIZER, "--path", str(PROJECT), QUEUE]
            specs[name] = Spec(name, label, "rq", command, 2, forks, "no history (RQ finished registry)", 1)
        specs["celery"] = Spec(
            "celery",
            "Celery prefork 2 + django-celery-results",
            "celery",
            [
                *(self.peers_python, "-m", "celery", "-A", "bench.peers.celery_app", "worker", "-P", "prefork"),
                *("-c", "2", "-Q", "bench", "--without-gossip", "--without-mingle", "--without-heartbeat"),
                *("-n", "bench@%h"),
            ],
            1,
            False,
            "django-celery-results TaskResult",
            2,
            ready_line="bench: celery worker ready",
        )
        specs[DJANGO_Q] = Spec(
            DJANGO_Q,
            "django-q2, 2 workers, CONN_MAX_AGE=None",
            DJANGO_Q,
            [self.peers_python, "-m", "django", "qcluster"],
            1,
            False,
            "django-q2 Task rows (Success)",
            3,
        )
        return {name: spec for name, spec in specs.items() if name in self.args.only_list}

    def env(self, spec_agent: str, backend: str) -> dict[str, str]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(self.tmp)),
            "LANG": "C.UTF-8",
            # The bench's own PYTHONPATH first: `PYTHONPATH=var/rq3-packages` runs the product and bare RQ on RQ 3.
            "PYTHONPATH": os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH", ""), str(PROJECT)])),
            "PYTHONUNBUFFERED": "1",
            "BENCH_STAMP_REDIS_URL": self.redis_url(4),
        }
        db = self.db_urls.get((spec_agent, backend), "")
        if spec_agent == "product":
            env.update(
                {
                    "ENV_FILE": str(self.tmp / "no.env"),  # never a developer's .env
                    "DEBUG": "false",
                    "SECRET_KEY": "bench-workers-" + "x" * 50,
                    "ALLOWED_HOSTS": "127.0.0.1",
                    "CSRF_TRUSTED_ORIGINS": "https://127.0.0.1",
                    "SECURE_COOKIES": "false",
                    "TLS_TERMINATED_BY_PROXY": "true",
                    "DATABASE_URL": db,
                    "REDIS_URL": self.redis_url(0),
                    "JOBS_MODULES": "bench.peers.product_jobs",
                    "LOG_LEVEL": "WARNING",
                    "MEDIA_ROOT": str(self.tmp / "media"),
                }
            )
        elif spec_agent == "rq":
            env["BENCH_REDIS_URL"] = self.redis_url(1)
        else:
            settings = "bench.peers.celery_settings" if spec_agent == "celery" else "bench.peers.djangoq_settings"
            env.update(
                {
                    "DJANGO_SETTINGS_MODULE": settings,
                    "BENCH_DATABASE_URL": db,
                    "BENCH_REDIS_URL": self.redis_url(2 if spec_agent == "celery" else 3),
                }
            )
        return env

    # --- set-up and tear-down ----------------------------------------------------------------------------

    def setup(self) -> None:
        self.start_redis()
        peers = [spec for spec in self.specs.values() if spec.agent in ("celery", DJANGO_Q)]
        if peers:
            reason = self.ensure_peers_venv()
            for spec in peers:
                spec.left_out = reason
        for backend in self.args.backend_list:
            for agent in ("product", "celery", DJANGO_Q):
                wanted = [s for s in self.specs.values() if s.agent == agent and not s.left_out]
                if wanted:
                    try:
                        self.create_database(agent, backend)
                    except Exception as exc:
                        for spec in wanted:
                            spec.left_out = f"its {backend} database could not be set up: {exc}"
                        log(f"{agent} on {backend}: {exc}")

    def start_redis(self) -> None:
        import redis

        server = shutil.which("redis-server")
        if server is None:
            raise SystemExit("redis-server is not installed")
        port = str(self.args.redis_port)
        log(f"starting redis-server on port {port} (no persistence)")
        self.redis_process = subprocess.Popen(
            [
                *(server, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
                *("--dir", str(self.tmp), "--logfile", str(self.tmp / "redis.log")),
            ],
            start_new_session=True,
        )
        self.redis = redis.Redis.from_url(self.redis_url(0))
        deadline = time.monotonic() + 10
        while True:
            try:
                self.redis.ping()
                break
            except redis.ConnectionError:
                if self.redis_process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"redis-server did not start on port {port} (in use?)") from None
                time.sleep(0.05)
        self.redis.flushall()

    def ensure_peers_venv(self) -> str | None:
        """None when the peers' venv is ready (made from bench/requirements-peers.txt if missing), else why not."""
        venv = Path(self.args.peers_venv)
        if not Path(self.peers_python).exists():
            log(f"creating {venv} from {PEERS_REQUIREMENTS.name} (once)")
            made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True, text=True)
            if made.returncode != 0:
                return f"could not create the venv {venv}: {made.stderr.strip()[-300:]}"
            pip = subprocess.run(
                [self.peers_python, "-m", "pip", "install", "-q", "-r", str(PEERS_REQUIREMENTS)],
                capture_output=True,
                text=True,
            )
            if pip.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                return f"pip could not install {PEERS_REQUIREMENTS.name}: {pip.stderr.strip()[-400:]}"
        check = subprocess.run(
            [self.peers_python, "-c", "import celery, django_celery_results, django_q, kombu.transport.redis"],
            capture_output=True,
            text=True,
        )
        if check.returncode != 0:
            return f"the peers' venv {venv} does not import them: {check.stderr.strip()[-300:]}"
        return None

    def create_database(self, agent: str, backend: str) -> None:
        name = f"bench_w_{agent}"
        if backend == "sqlite":
            url = f"sqlite:///{self.tmp / (name + '.sqlite3')}"
        else:
            import psycopg
            from psycopg import sql

            with psycopg.connect(self.args.pg_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            self.pg_created.append(name)
            url = with_db(self.args.pg_url, name)
        self.db_urls[(agent, backend)] = url
        log(f"migrating {name} ({backend})")
        if agent == "product":
            command = [self.python, "manage.py", "migrate", "--no-input", "-v", "0"]
        else:
            command = [self.peers_python, "-m", "django", "migrate", "--no-input", "-v", "0"]
        done = subprocess.run(command, cwd=PROJECT, env=self.env(agent, backend), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"migrate failed: {done.stderr.strip()[-500:]}")

    def agent(self, spec: Spec, backend: str) -> Agent:
        key = (spec.agent, backend)
        if key not in self.agents:
            python = self.python if spec.agent in ("product", "rq") else self.peers_python
            log_path = self.tmp / f"agent-{spec.agent}-{backend}.log"
            agent = SystemAgent(python, spec.agent, self.env(spec.agent, backend), log_path)
            vendor = agent.call("hello")["vendor"]
            expected = {"sqlite": "sqlite", "postgres": "postgresql"}[backend] if spec.agent != "rq" else "redis"
            if vendor != expected:
                raise RuntimeError(f"the {spec.agent} agent counts in {vendor}, not {expected}")
            self.agents[key] = agent
        return self.agents[key]

    def teardown(self) -> None:
        for process in list(self.started):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        for agent in self.agents.values():
            agent.close()
        if self.redis_process and self.redis_process.poll() is None:
            self.redis_process.terminate()
            self.redis_process.wait(10)
        if not self.args.keep:
            import psycopg
            from psycopg import sql

            for name in self.pg_created:
                with contextlib.suppress(Exception), psycopg.connect(self.args.pg_url, autocommit=True) as conn:
                    conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
            shutil.rmtree(self.tmp, ignore_errors=True)
        else:
            log(f"kept {self.tmp} (logs, SQLite files) and the databases {', '.join(self.pg_created) or '-'}")

    # --- processes ---------------------------------------------------------------------------------------

    def start_workers(self, spec: Spec, backend: str, rep: int) -> list[subprocess.Popen[bytes]]:
        processes = []
        for i in range(spec.processes):
            with (self.tmp / f"{spec.name}-{backend}-{rep}-{i}.log").open("ab") as out:
                process = subprocess.Popen(
                    spec.command,
                    cwd=PROJECT,
                    env=self.env(spec.agent, backend),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            self.started.append(process)
            processes.append(process)
        if spec.ready_line:
            logs = [self.tmp / f"{spec.name}-{backend}-{rep}-{i}.log" for i in range(spec.processes)]
            self.wait_until(
                lambda: all(spec.ready_line in p.read_text(errors="replace") for p in logs),
                90,
                f"{spec.name} to be ready",
                processes,
                spec,
                backend,
                rep,
            )
        return processes

    def stop_workers(self, processes: list[subprocess.Popen[bytes]]) -> None:
        """SIGTERM to each main process (a warm stop, as a deployment does), then whatever is left is killed."""
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        for process in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=30)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=10)
            self.started.remove(process)

    def wait_until(
        self,
        predicate: Any,
        timeout: float,
        what: str,
        processes: list[subprocess.Popen[bytes]],
        spec: Spec,
        backend: str,
        rep: int,
        interval: float = 0.02,
    ) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            for i, process in enumerate(processes):
                if process.poll() is not None:
                    tail = (self.tmp / f"{spec.name}-{backend}-{rep}-{i}.log").read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"a worker exited ({process.returncode}) while waiting for {what}:\n{tail}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what}")
            time.sleep(interval)

    # --- the measurements ----------------------------------------------------------------------------------

    def wait_done(self, agent: Agent, n: int, timeout: float, procs: list[Any], spec: Spec, b: str, rep: int) -> None:
        def done() -> bool:
            state = agent.call("count")
            if state["failed"]:
                raise RuntimeError(f"{state['failed']} jobs failed (see the logs)")
            return bool(state["done"] >= n)

        # Every 50 ms: one query of the store (the agent's CPU, taken from the workers' two cores, stays small).
        self.wait_until(done, timeout, f"{n} jobs done", procs, spec, b, rep, interval=0.05)

    def run_system(self, spec: Spec, backend: str, rep: int) -> None:
        agent = self.agent(spec, backend)
        agent.call("reset")
        processes = self.start_workers(spec, backend, rep)
        try:
            agent.call("enqueue", kind="noop", n=WARM_UP_JOBS)
            self.wait_done(agent, WARM_UP_JOBS, 120, processes, spec, backend, rep)
            for kind in self.args.kind_list:
                agent.call("reset")
                n = self.args.jobs_fork if spec.forks else self.args.jobs
                busy_before, total_before = cpu_times()
                began = time.perf_counter()
                enqueue_seconds = agent.call("enqueue", kind=kind, n=n)["seconds"]
                self.wait_done(agent, n, self.args.run_timeout, processes, spec, backend, rep)
                seconds = time.perf_counter() - began
                busy_after, total_after = cpu_times()
                busy = (busy_after - busy_before) / max(1.0, total_after - total_before)
                run = Run(n, seconds, enqueue_seconds, busy)
                self.results.runs.setdefault((backend, kind, spec.name), [None] * self.args.repeats)[rep] = run
                log(
                    f"rep {rep + 1} {backend:8} {kind:5} {spec.name:15} N={n}: {seconds:6.2f}s "
                    f"{run.jobs_per_s:7.1f} jobs/s (enqueue {enqueue_seconds:.2f}s, CPU {busy:.0%})"
                )
            if self.args.latency:
                agent.call("reset")
                reply = agent.call("latency", m=self.args.latency, gap=0.05)
                self.results.latency.setdefault((backend, spec.name), []).extend(reply["latencies_ms"])
                self.results.enqueue_ms.setdefault((backend, spec.name), []).extend(reply["enqueue_ms"])
                ms = reply["latencies_ms"]
                log(f"rep {rep + 1} {backend:8} latency {spec.name:15} p50 {percentile(ms, 50):.2f} ms")
        finally:
            self.stop_workers(processes)

    def run(self) -> None:
        for rep in range(self.args.repeats):
            for backend in self.args.backend_list:
                order = list(self.specs.values())
                if rep % 2:
                    order.reverse()  # neither end always runs first
                for spec in order:
                    if spec.left_out:
                        continue
                    try:
                        self.run_system(spec, backend, rep)
                    except Exception as exc:
                        message = f"{spec.name} on {backend}, repetition {rep + 1}: {exc}"
                        log(message)
                        self.results.errors.append(message)
                        spec.left_out = f"failed: {str(exc).splitlines()[0][:200]}"


# --- report ---------------------------------------------------------------------------------------------------


def fmt(value: float | None, spec: str = ".2f") -> str:
    return "-" if value is None else format(value, spec)


def ratios(runs: list[Run | None], base: list[Run | None] | None) -> list[float]:
    if not base:
        return []
    return [r.jobs_per_s / b.jobs_per_s for r, b in zip(runs, base, strict=False) if r and b]


def summarize(bench: Bench) -> list[dict[str, Any]]:
    rows = []
    results = bench.results
    for backend in bench.args.backend_list:
        for kind in bench.args.kind_list:
            for spec in bench.specs.values():
                runs = results.runs.get((backend, kind, spec.name), [])
                measured = [r for r in runs if r]
                to_djq = ratios(runs, results.runs.get((backend, kind, DJANGO_Q)))
                to_rq = ratios(runs, results.runs.get((backend, kind, RQ_SIMPLE)))
                rows.append(
                    {
                        "backend": backend,
                        "kind": kind,
                        "system": spec.name,
                        "label": spec.label,
                        "store": spec.store,
                        "left_out": spec.left_out if not measured else None,
                        "jobs": measured[0].jobs if measured else None,
                        "jobs_per_s": [r.jobs_per_s if r else None for r in runs],
                        "jobs_per_s_median": statistics.median(r.jobs_per_s for r in measured) if measured else None,
                        "seconds": [r.seconds if r else None for r in runs],
                        "enqueue_seconds": [r.enqueue_seconds if r else None for r in runs],
                        "busy": [r.busy if r else None for r in runs],
                        "x_djangoq": to_djq,
                        "x_djangoq_median": statistics.median(to_djq) if to_djq else None,
                        "x_rq_simple": to_rq,
                        "x_rq_simple_median": statistics.median(to_rq) if to_rq else None,
                    }
                )
    return rows


def throughput_tables(bench: Bench, rows: list[dict[str, Any]]) -> str:
    out = []
    for backend in bench.args.backend_list:
        for kind in bench.args.kind_list:
            out.append(f"\n{'SQLite' if backend == 'sqlite' else 'PostgreSQL'}, {KINDS[kind]}")
            header = (
                f"{'system':42} {'written and counted':36} {'N':>5} {'jobs/s':>7}  {'per rep':<20} "
                f"{'x djq2':>6} {'x RQ Simple':>11}  {'enqueue s':>9}  {'CPU':>4}"
            )
            out += [header, "-" * len(header)]
            for row in rows:
                if row["backend"] != backend or row["kind"] != kind:
                    continue
                if row["jobs_per_s_median"] is None:
                    out.append(f"{row['label']:42} left out: {row['left_out'] or 'not measured'}")
                    continue
                per_rep = " ".join(fmt(v, ".0f") for v in row["jobs_per_s"])
                enqueue = statistics.median(v for v in row["enqueue_seconds"] if v is not None)
                busy = statistics.median(v for v in row["busy"] if v is not None)
                out.append(
                    f"{row['label']:42} {row['store']:36} {row['jobs']:>5} {row['jobs_per_s_median']:7.1f}  "
                    f"{per_rep:<20} {fmt(row['x_djangoq_median']):>6} {fmt(row['x_rq_simple_median']):>11}  "
                    f"{enqueue:9.2f}  {busy:4.0%}"
                )
    return "\n".join(out)


def latency_table(bench: Bench) -> tuple[str, list[dict[str, Any]]]:
    header = (
        f"{'system':42} {'db':8} {'jobs':>5} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7}  {'enqueue call p50':>16}"
        f"  {'after the call p50':>18}"
    )
    lines = [header, "-" * len(header)]
    found = []
    for backend in bench.args.backend_list:
        for spec in bench.specs.values():
            ms = bench.results.latency.get((backend, spec.name), [])
            if not ms:
                lines.append(f"{spec.label:42} {backend:8} left out: {spec.left_out or 'not measured'}")
                continue
            enq = bench.results.enqueue_ms.get((backend, spec.name), [])
            after = [total - call for total, call in zip(ms, enq, strict=False)]
            row = {
                "backend": backend,
                "system": spec.name,
                "jobs": len(ms),
                "p50_ms": percentile(ms, 50),
                "p95_ms": percentile(ms, 95),
                "max_ms": max(ms),
                "enqueue_call_p50_ms": percentile(enq, 50),
                "after_call_p50_ms": percentile(after, 50),
                "latencies_ms": ms,
            }
            found.append(row)
            lines.append(
                f"{spec.label:42} {backend:8} {len(ms):>5} {fmt(row['p50_ms']):>7} {fmt(row['p95_ms']):>7} "
                f"{fmt(row['max_ms']):>7}  {fmt(row['enqueue_call_p50_ms']):>16}  {fmt(row['after_call_p50_ms']):>18}"
            )
    return "\n".join(lines), found


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    systems = [*PRODUCT_MODES, "rq-fork", RQ_SIMPLE, "celery", DJANGO_Q]
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, help="jobs per run (default 2000; --quick 300)")
    parser.add_argument("--jobs-fork", type=int, help="jobs per run of a forking worker (default 500; --quick 100)")
    parser.add_argument("--repeats", type=int, help="repetitions (default 3; --quick 1)")
    parser.add_argument("--latency", type=int, help="latency jobs per system and repetition (default 40; --quick 15)")
    parser.add_argument("--only", default=",".join(systems), help=f"comma-separated subset of: {', '.join(systems)}")
    parser.add_argument("--backends", default="sqlite,postgres", help="comma-separated: sqlite, postgres")
    parser.add_argument("--kinds", default="noop,cpu5", help="comma-separated: noop, cpu5")
    parser.add_argument("--quick", action="store_true", help="a smoke run: the --quick defaults above")
    parser.add_argument("--redis-port", type=int, default=6401, help="port of the bench's own redis-server (6401)")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres", help="Postgres server")
    parser.add_argument("--peers-venv", default=str(PROJECT / "var" / "bench-peers-venv"), help="the peers' venv")
    parser.add_argument("--run-timeout", type=float, default=300.0, help="seconds one run may take")
    parser.add_argument("--keep", action="store_true", help="keep the logs, SQLite files and Postgres databases")
    parser.add_argument("--json", help="where to write the results (default bench/results/workers-<time>.json)")
    args = parser.parse_args(argv)
    defaults = {"repeats": 1, "jobs": 300, "jobs_fork": 100, "latency": 15} if args.quick else {}
    defaults = {"repeats": 3, "jobs": 2000, "jobs_fork": 500, "latency": 40, **defaults}
    for name, value in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, value)  # an explicit option wins over --quick
    args.only_list = [s.strip() for s in args.only.split(",") if s.strip()]
    args.backend_list = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.kind_list = [k.strip() for k in args.kinds.split(",") if k.strip()]
    for name in args.only_list:
        if name not in systems:
            parser.error(f"unknown system {name!r}")
    for backend in args.backend_list:
        if backend not in BACKENDS:
            parser.error(f"unknown backend {backend!r}")
    for kind in args.kind_list:
        if kind not in KINDS:
            parser.error(f"unknown kind {kind!r}")
    if args.repeats < 1 or args.jobs < 1 or args.jobs_fork < 1:
        parser.error("--repeats, --jobs and --jobs-fork must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    began = time.time()
    try:
        bench.setup()
        bench.run()
    finally:
        bench.teardown()
    rows = summarize(bench)
    found = versions()
    print(
        f"\nWorkers, 2 worker processes each (peers: concurrency 2), median of {args.repeats} repetition(s); "
        "time from the enqueue until the N-th job is counted in the store; "
        f"the product and bare RQ on RQ {found.get('rq', '?')}, django-rq {found.get('django-rq', '?')}"
    )
    print(throughput_tables(bench, rows))
    print("\nx djq2      = jobs/s / django-q2's jobs/s, same database, job kind and repetition (median)")
    print("x RQ Simple = jobs/s / bare RQ SimpleWorker's jobs/s, same database, job kind and repetition (median)")
    print("enqueue s   = the enqueue call's seconds (inside the time); CPU = the machine's CPUs in use during the run")
    text, latency = latency_table(bench)
    print("\nEnqueue-to-start latency on idle workers: enqueue call -> the job's first line (one job at a time)")
    print(text)
    print(
        "p50/p95/max = from the enqueue call's start; enqueue call = how long the call took (the product: row, commit,"
    )
    print(
        "Redis); after the call = the job's start minus the call's end, per job (negative: started before the return)"
    )
    left_out = {spec.name: spec.left_out for spec in bench.specs.values() if spec.left_out}
    for name, reason in left_out.items():
        print(f"left out: {name}: {reason}")
    print(f"\ntook {time.time() - began:.0f}s; load average at the end {' '.join(f'{v:.1f}' for v in os.getloadavg())}")

    results = {
        "benchmark": "workers",
        "when": datetime.now(tz=UTC).isoformat(timespec="seconds"),
        "args": {k: v for k, v in vars(args).items() if k not in ("only_list", "backend_list", "kind_list")},
        "git": git_state(PROJECT),
        "versions": versions(),
        "peers_requirements": PEERS_REQUIREMENTS.read_text().splitlines() if PEERS_REQUIREMENTS.exists() else [],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_end": os.getloadavg()},
        "systems": {
            s.name: {"label": s.label, "command": s.command, "processes": s.processes, "store": s.store}
            for s in bench.specs.values()
        },
        "throughput": rows,
        "latency": latency,
        "left_out": left_out,
        "errors": bench.results.errors,
    }
    path = Path(args.json) if args.json else RESULTS_DIR / f"workers-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
