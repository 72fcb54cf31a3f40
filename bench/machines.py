"""Workers on one machine: throughput with 1, 2 and 4 worker processes, and the Postgres connections each role holds.

    .venv/bin/python bench/machines.py              # 3 repetitions, about 4 minutes on 2 cores
    .venv/bin/python bench/machines.py --help

On PostgreSQL, with a `redis-server` of its own. For every repetition and every
worker count (1, 2, 4; the order flips every repetition), it starts that many
`manage.py rqworker default --worker-class jobs.worker.Worker` (RQ's fork per job),
waits until all of them listen, creates N no-op jobs through
`jobs.services.jobs_enqueue` and times from the creation until the last of the N
history rows is `finished`. While the workers run, a thread samples
`pg_stat_activity` for the bench database every 50 ms. Then the scheduler
(`manage.py runscheduler`, active, then with a standby beside it) and an idle web
(gunicorn, 2 uvicorn workers, `DB_POOL=true` as in the Procfile) are sampled the
same way. Each connection is traced to the process holding it (its client port,
/proc/net/tcp and /proc/<pid>/fd), so the table says which process of a worker
holds what.

See bench/README.md for the method, the options and how to read the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script: `bench` must import
from bench.mirror_throughput import Agent, git_state, log, versions

BENCH_DIR = Path(__file__).resolve().parent
PROJECT = BENCH_DIR.parent
RESULTS_DIR = BENCH_DIR / "results"
PROBE_APP = "bench-machines"  # the bench's own connections, left out of every count
QUEUE = "default"


def with_db(url: str, name: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{name}", parts.query, parts.fragment))


# --- which process holds a connection --------------------------------------------------------------


def _socket_inodes(ports: set[int]) -> dict[int, int]:
    """inode -> client port, for this machine's TCP sockets whose local port is one of `ports`."""
    found: dict[int, int] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                fields = line.split()
                port = int(fields[1].rsplit(":", 1)[1], 16)
                if port in ports:
                    found[int(fields[9])] = port
    return found


def _processes() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, process group, command line) of every process of this machine."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found[int(entry)] = (int(fields[1]), int(fields[2]), cmdline)
    return found


def _kinds(mains: list[int]) -> dict[int, str]:
    """What each process started from `mains` is: the main process (`rqworker`, `runscheduler`, gunicorn's
    master), a worker's mirror (forked at its start, in the worker's process group), a work horse (forked per
    job, in a process group of its own), a gunicorn worker."""
    table = _processes()
    kinds = {pid: "main" for pid in mains}
    added = True
    while added:
        added = False
        for pid, (parent, group, _) in table.items():
            if pid in kinds or parent not in kinds:
                continue
            if "gunicorn" in table[parent][2]:
                kinds[pid] = "gunicorn worker"
            elif "rqworker" in table[parent][2]:
                kinds[pid] = "work horse" if group == pid else "mirror"
            else:
                kinds[pid] = "child"
            added = True
    return kinds


def connection_owners(client_ports: list[int], mains: list[int]) -> Counter[str]:
    """How many of the connections (by their client ports) each kind of process holds."""
    inodes = _socket_inodes(set(client_ports))
    owners: Counter[str] = Counter()
    seen = set()
    for pid, kind in _kinds(mains).items():
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if target.startswith("socket:["):
                        inode = int(target[8:-1])
                        if inode in inodes and inode not in seen:
                            seen.add(inode)
                            owners[kind] += 1
    missing = len(client_ports) - len(seen)
    if missing > 0:
        owners["unknown"] += missing
    return owners


def cpu_times() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    fields = [float(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


# --- sampling pg_stat_activity -----------------------------------------------------------------------


@dataclass
class Samples:
    counts: list[int] = field(default_factory=list)
    states: Counter[str] = field(default_factory=Counter)  # over every sample
    owners: Counter[str] = field(default_factory=Counter)  # at the snapshot with the most connections

    @property
    def max(self) -> int:
        return max(self.counts, default=0)

    @property
    def steady(self) -> float:
        """The median sample: what the role holds most of the time."""
        return statistics.median(self.counts) if self.counts else 0.0


class Sampler:
    """Samples the bench database's connections (not the bench's own) every `interval` seconds."""

    def __init__(self, pg_url: str, database: str, interval: float = 0.05) -> None:
        import psycopg

        self.conn = psycopg.connect(pg_url, autocommit=True, application_name=PROBE_APP)
        self.database = database
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.samples = Samples()
        self.mains: list[int] = []

    def snapshot(self) -> list[tuple[int, str]]:
        rows = self.conn.execute(
            "SELECT coalesce(client_port, -1), coalesce(state, '') FROM pg_stat_activity "
            "WHERE datname = %s AND application_name <> %s AND backend_type = 'client backend'",
            (self.database, PROBE_APP),
        ).fetchall()
        return [(int(port), str(state)) for port, state in rows]

    def _run(self) -> None:
        while not self._stop.is_set():
            rows = self.snapshot()
            self.samples.counts.append(len(rows))
            self.samples.states.update(state for _, state in rows)
            if len(rows) >= self.samples.max and self.mains:
                self.samples.owners = connection_owners([port for port, _ in rows if port > 0], self.mains)
            self._stop.wait(self.interval)

    def start(self, mains: list[int]) -> None:
        self.samples = Samples()
        self.mains = mains
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> Samples:
        self._stop.set()
        if self._thread:
            self._thread.join()
        return self.samples

    def sample_for(self, seconds: float, mains: list[int]) -> Samples:
        self.start(mains)
        time.sleep(seconds)
        return self.stop()

    def close(self) -> None:
        self.conn.close()


# --- a run ------------------------------------------------------------------------------------------------


@dataclass
class Run:
    workers: int
    jobs: int
    seconds: float
    connections: Samples
    idle_connections: Samples
    machine_busy: float  # the share of the machine's CPUs in use during the run (every process on it)

    @property
    def jobs_per_s(self) -> float:
        return self.jobs / self.seconds


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.tmp = Path(tempfile.mkdtemp(prefix="bench-machines-"))
        self.db_url = with_db(args.pg_url, args.pg_db)
        self.redis_url = f"redis://127.0.0.1:{args.redis_port}/0"
        self.redis_process: subprocess.Popen[bytes] | None = None
        self.agent: Agent | None = None
        self.sampler: Sampler | None = None
        self.probe: Any = None  # a connection to the bench database (application_name PROBE_APP)
        self.pg_created = False
        self.started: list[subprocess.Popen[bytes]] = []

    def env(self, **extra: str) -> dict[str, str]:
        """Every process's environment, spelled out (as deployed: DEBUG off, production settings)."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", str(self.tmp)),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(PROJECT),
            "PYTHONUNBUFFERED": "1",
            "ENV_FILE": str(self.tmp / "no.env"),  # never a developer's .env
            "DEBUG": "false",
            "SECRET_KEY": "bench-machines-" + "x" * 50,
            "ALLOWED_HOSTS": "127.0.0.1",
            "CSRF_TRUSTED_ORIGINS": "https://127.0.0.1",
            "SECURE_COOKIES": "false",
            "TLS_TERMINATED_BY_PROXY": "true",
            "DATABASE_URL": self.db_url,
            "REDIS_URL": self.redis_url,
            "JOBS_MODULES": "bench.noop_jobs",
            "LOG_LEVEL": "WARNING",
            "MEDIA_ROOT": str(self.tmp / "media"),
            **extra,
        }

    # --- set-up and tear-down --------------------------------------------------------------------------

    def setup(self) -> None:
        import psycopg
        import redis
        from psycopg import sql

        server = shutil.which("redis-server")
        if server is None:
            raise SystemExit("redis-server is not installed")
        log(f"starting redis-server on port {self.args.redis_port}")
        self.redis_process = subprocess.Popen(
            [
                server,
                *("--port", str(self.args.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
                *("--dir", str(self.tmp), "--logfile", str(self.tmp / "redis.log")),
            ],
            start_new_session=True,
        )
        self.redis = redis.Redis.from_url(self.redis_url)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.redis.ping()
                break
            except redis.ConnectionError:
                if self.redis_process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"redis-server did not start on port {self.args.redis_port}") from None
                time.sleep(0.05)

        log(f"creating Postgres database {self.args.pg_db}")
        with psycopg.connect(self.args.pg_url, autocommit=True) as conn:
            name = sql.Identifier(self.args.pg_db)
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
            self.max_connections = int(conn.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]
        self.pg_created = True
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"], cwd=PROJECT, env=self.env(), check=True
        )
        # The agent's connection (it enqueues the jobs) is the bench's, not a worker's: left out of the counts.
        agent_env = self.env(DATABASE_URL=f"{self.db_url}?application_name={PROBE_APP}")
        self.agent = Agent(sys.executable, PROJECT, agent_env, self.tmp / "agent.log")
        if self.agent.call("hello")["vendor"] != "postgresql":
            raise SystemExit("the agent is not connected to PostgreSQL")
        self.sampler = Sampler(self.args.pg_url, self.args.pg_db)
        self.probe = psycopg.connect(self.db_url, autocommit=True, application_name=PROBE_APP)

    def teardown(self) -> None:
        for process in self.started:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
        if self.agent:
            self.agent.close()
        if self.sampler:
            self.sampler.close()
        if self.probe:
            self.probe.close()
        if self.redis_process and self.redis_process.poll() is None:
            self.redis_process.terminate()
            self.redis_process.wait(10)
        if self.pg_created and not self.args.keep:
            import psycopg
            from psycopg import sql

            with contextlib.suppress(Exception), psycopg.connect(self.args.pg_url, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(self.args.pg_db)))
        if self.args.keep:
            log(f"kept {self.tmp} (the processes' logs) and the database {self.args.pg_db}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)

    # --- processes ---------------------------------------------------------------------------------------

    def start(self, command: list[str], name: str, **env: str) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{name}.log").open("ab") as out:
            process = subprocess.Popen(
                command,
                cwd=PROJECT,
                env=self.env(**env),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started.append(process)
        return process

    def manage(self, *args: str, name: str) -> subprocess.Popen[bytes]:
        return self.start([sys.executable, "manage.py", *args], name)

    def stop(self, processes: list[subprocess.Popen[bytes]]) -> None:
        """SIGTERM to each, as a deployment stops it; every one must exit 0."""
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                code = process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                raise RuntimeError(f"pid {process.pid} did not stop within 60 s of SIGTERM") from None
            if code != 0:
                raise RuntimeError(f"pid {process.pid} exited with {code}; see {self.tmp}")
            self.started.remove(process)

    def wait_until(self, predicate: Any, timeout: float, what: str, processes: list[subprocess.Popen[bytes]]) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            for process in processes:
                if process.poll() is not None:
                    raise RuntimeError(f"a process exited while waiting for {what}; see the logs in {self.tmp}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
            time.sleep(0.05)

    def finished_rows(self) -> int:
        return int(self.probe.execute("SELECT count(*) FROM jobs_job WHERE status = 'finished'").fetchone()[0])

    # --- the measurements ----------------------------------------------------------------------------------

    def run_workers(self, count: int, rep: int) -> Run:
        assert self.agent is not None
        assert self.sampler is not None
        self.redis.flushdb()
        self.agent.call("reset")
        forking = ("--worker-class", "jobs.worker.Worker")
        workers = [self.manage("rqworker", QUEUE, *forking, name=f"worker-{count}-{rep}-{i}") for i in range(count)]
        mains = [w.pid for w in workers]
        self.wait_until(lambda: self.redis.scard("rq:workers") == count, 60, f"{count} workers to listen", workers)
        time.sleep(0.5)  # each worker's mirror process connects at start
        idle = self.sampler.sample_for(1.0, mains)
        self.sampler.start(mains)
        cpu_before = cpu_times()
        began = time.perf_counter()
        self.agent.call("enqueue", n=self.args.jobs)
        deadline = time.monotonic() + self.args.run_timeout
        while self.finished_rows() < self.args.jobs:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{count} workers: not all {self.args.jobs} rows finished in {self.args.run_timeout}s"
                )
            time.sleep(0.02)
        seconds = time.perf_counter() - began
        cpu_after = cpu_times()
        busy = self.sampler.stop()
        self.stop(workers)
        machine_busy = (cpu_after[0] - cpu_before[0]) / max(1.0, cpu_after[1] - cpu_before[1])
        run = Run(count, self.args.jobs, seconds, busy, idle, machine_busy)
        log(
            f"rep {rep + 1}: {count} worker(s): {self.args.jobs} jobs in {seconds:.2f}s = {run.jobs_per_s:.1f} jobs/s; "
            f"CPU {machine_busy:.0%}; connections max {busy.max}, steady {busy.steady:g}, idle {idle.steady:g} "
            f"({dict(busy.owners)})"
        )
        return run

    def run_scheduler(self) -> dict[str, Samples]:
        assert self.sampler is not None
        self.redis.flushdb()
        self.agent.call("reset")  # type: ignore[union-attr]
        first = self.manage("runscheduler", name="scheduler-active")
        self.wait_until(lambda: self.redis.exists("jobs:scheduler:lock"), 60, "the scheduler to lead", [first])
        # A reconciler round (every JOBS_RECONCILE_INTERVAL, 10 s by default) is inside the window.
        active = self.sampler.sample_for(self.args.scheduler_seconds, [first.pid])
        log(f"scheduler (active): connections max {active.max}, steady {active.steady:g} ({dict(active.owners)})")
        second = self.manage("runscheduler", name="scheduler-standby")
        time.sleep(3)
        both = self.sampler.sample_for(self.args.scheduler_seconds, [first.pid, second.pid])
        log(f"two schedulers: connections max {both.max}, steady {both.steady:g} ({dict(both.owners)})")
        self.stop([first, second])
        return {"active": active, "active_and_standby": both}

    def run_web(self) -> dict[str, Samples]:
        assert self.sampler is not None
        port = self.args.web_port
        web = self.start(
            [
                str(Path(sys.executable).with_name("gunicorn")),
                "queueproject.asgi:application",
                "-k",
                "uvicorn_worker.UvicornWorker",
                "--workers",
                str(self.args.web_workers),
                "--bind",
                f"127.0.0.1:{port}",
            ],
            "web",
            DB_POOL="true",
        )

        def get(path: str) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                conn.request("GET", path, headers={"Host": "127.0.0.1"})
                return conn.getresponse().status
            except OSError:
                return 0
            finally:
                conn.close()

        self.wait_until(lambda: get("/healthz") == 200, 60, "the web to answer", [web])
        fresh = self.sampler.sample_for(2.0, [web.pid])
        # Requests that touch the database (readyz: SELECT 1), several at once, so that every worker opens its pool.
        threads = [threading.Thread(target=lambda: [get("/readyz") for _ in range(25)]) for _ in range(8)]
        self.sampler.start([web.pid])
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        busy = self.sampler.stop()
        time.sleep(1.0)
        idle = self.sampler.sample_for(3.0, [web.pid])
        log(
            f"web: fresh {fresh.steady:g}, under 8 clients max {busy.max}, idle after {idle.steady:g} "
            f"({dict(idle.owners)})"
        )
        self.stop([web])
        return {"fresh": fresh, "under_load": busy, "idle": idle}


# --- the report ---------------------------------------------------------------------------------------------


def summarize(runs: list[Run], counts: list[int]) -> list[dict[str, Any]]:
    by_count = {count: [run for run in runs if run.workers == count] for count in counts}
    base = by_count[counts[0]]
    rows = []
    for count in counts:
        mine = by_count[count]
        ratios = [run.jobs_per_s / one.jobs_per_s for run, one in zip(mine, base, strict=True)]
        owners: Counter[str] = Counter()
        for run in mine:
            owners |= run.connections.owners
        rows.append(
            {
                "workers": count,
                "jobs": mine[0].jobs,
                "seconds": [run.seconds for run in mine],
                "jobs_per_s": statistics.median(run.jobs_per_s for run in mine),
                "ratios": ratios,
                "ratio_median": statistics.median(ratios),
                "machine_busy": statistics.median(run.machine_busy for run in mine),
                "connections_max": max(run.connections.max for run in mine),
                "connections_steady": statistics.median(run.connections.steady for run in mine),
                "connections_idle": statistics.median(run.idle_connections.steady for run in mine),
                "held_by": dict(owners),
                "states": dict(sum((run.connections.states for run in mine), Counter())),
            }
        )
    return rows


def samples_dict(samples: Samples) -> dict[str, Any]:
    return {
        "max": samples.max,
        "steady": samples.steady,
        "held_by": dict(samples.owners),
        "states": dict(samples.states),
        "samples": len(samples.counts),
    }


def table(rows: list[dict[str, Any]]) -> str:
    header = (
        f"{'workers':>7}  {'jobs':>5}  {'seconds per rep':<22} {'jobs/s':>7}  {'x one':>6}  {'x one per rep':<20} "
        f"{'CPU':>4}  {'pg max':>6}  {'steady':>6}  {'idle':>5}  held by (at the busiest sample)"
    )
    lines = [header, "-" * len(header)]
    for row in rows:
        seconds = " ".join(f"{s:.2f}" for s in row["seconds"])
        per_rep = " ".join(f"{r:.2f}" for r in row["ratios"])
        held = ", ".join(f"{kind} {n}" for kind, n in sorted(row["held_by"].items()))
        lines.append(
            f"{row['workers']:>7}  {row['jobs']:>5}  {seconds:<22} {row['jobs_per_s']:7.1f}  "
            f"{row['ratio_median']:6.2f}  {per_rep:<20} {row['machine_busy']:4.0%}  "
            f"{row['connections_max']:>6}  {row['connections_steady']:>6g}  "
            f"{row['connections_idle']:>5g}  {held}"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of every worker count (3)")
    parser.add_argument("--jobs", type=int, default=600, help="no-op jobs per run (600)")
    parser.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated; the first is the base")
    parser.add_argument(
        "--pg-url", default="postgresql://postgres@127.0.0.1:5432/postgres", help="Postgres server (any database)"
    )
    parser.add_argument("--pg-db", default="bench_machines", help="the database the bench creates and drops")
    parser.add_argument("--redis-port", type=int, default=6392, help="port of the redis-server the bench starts")
    parser.add_argument("--web-port", type=int, default=8152, help="port of the gunicorn the bench starts")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn workers (2)")
    parser.add_argument("--scheduler-seconds", type=float, default=12.0, help="seconds each scheduler phase is sampled")
    parser.add_argument("--run-timeout", type=float, default=300.0, help="seconds one run may take")
    parser.add_argument("--skip-roles", action="store_true", help="only the workers (no scheduler, no web)")
    parser.add_argument("--json", help="where to write the results (default bench/results/machines-<time>.json)")
    parser.add_argument("--keep", action="store_true", help="keep the database and the processes' logs")
    args = parser.parse_args(argv)
    args.counts = [int(c) for c in args.workers.split(",") if c.strip()]
    if not args.counts or min(args.counts) < 1:
        parser.error("--workers needs positive counts")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    bench = Bench(args)
    began = time.time()
    runs: list[Run] = []
    roles: dict[str, dict[str, Samples]] = {}
    try:
        bench.setup()
        for rep in range(args.repeats):
            order = args.counts if rep % 2 == 0 else list(reversed(args.counts))
            for count in order:
                runs.append(bench.run_workers(count, rep))
        if not args.skip_roles:
            roles["scheduler"] = bench.run_scheduler()
            roles["web"] = bench.run_web()
    finally:
        bench.teardown()
    took = time.time() - began
    rows = summarize(runs, args.counts)
    print()
    print(
        f"Workers on one machine ({os.cpu_count()} CPUs): {args.jobs} no-op jobs per run, history written "
        f"(timed until the last row is finished), median of {args.repeats} repetitions"
    )
    print(table(rows))
    print()
    print("x one   = jobs/s / jobs/s of one worker, in the same repetition (median; per rep beside it)")
    print("pg max  = the most connections to the database at one sample (every 50 ms) while the jobs ran")
    print("steady  = the median sample while the jobs ran; idle = the median with the workers listening, no job")
    print("CPU     = the machine's CPUs in use during the run (all its processes; 100 % = every core busy)")
    if roles:
        scheduler, web = roles["scheduler"], roles["web"]
        print()
        print(f"{'role':<44} {'pg max':>6}  {'steady':>6}  held by")
        for label, samples in (
            ("scheduler, active (runscheduler)", scheduler["active"]),
            ("scheduler, active + a standby", scheduler["active_and_standby"]),
            (f"web ({args.web_workers} gunicorn workers, DB_POOL) just started", web["fresh"]),
            ("web, 8 clients calling /readyz", web["under_load"]),
            ("web, idle after them", web["idle"]),
        ):
            held = ", ".join(f"{kind} {n}" for kind, n in sorted(samples.owners.items()))
            print(f"{label:<44} {samples.max:>6}  {samples.steady:>6g}  {held}")
    print(f"\nPostgres max_connections: {getattr(bench, 'max_connections', '?')}; took {took:.0f}s")

    results = {
        "benchmark": "machines",
        "when": datetime.now(tz=UTC).isoformat(timespec="seconds"),
        "repeats": args.repeats,
        "jobs": args.jobs,
        "git": git_state(PROJECT),
        "versions": versions(),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "loadavg_end": os.getloadavg()},
        "seconds": took,
        "workers": rows,
        "roles": {role: {k: samples_dict(v) for k, v in phases.items()} for role, phases in roles.items()},
        "raw": [
            {
                "workers": run.workers,
                "seconds": run.seconds,
                "jobs_per_s": run.jobs_per_s,
                "machine_busy": run.machine_busy,
                "connections": samples_dict(run.connections),
                "idle_connections": samples_dict(run.idle_connections),
            }
            for run in runs
        ],
    }
    path = Path(args.json) if args.json else RESULTS_DIR / f"machines-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
