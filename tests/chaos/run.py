"""The chaos run's driver: its servers and processes, the load, the faults, the settle period, the report.

Imported once Django is set up (`tests/chaos/__main__.py`), in a process whose
settings point at the run's own Redis and PostgreSQL.
"""

from __future__ import annotations

import heapq
import http.client
import itertools
import json
import os
import random
import signal
import subprocess
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis as redis_lib
from django.contrib.auth.models import User
from django.db import DatabaseError, connection, transaction
from django.db.models import Count
from django.utils import timezone
from rest_framework.authtoken.models import Token

from jobs import queues, registry, services, stats
from jobs.errors import ActionNotAllowed, QueueUnavailable
from jobs.mirror import oldest_unapplied_ms
from jobs.models import Job, JobAttempt, JobAudit
from jobs.statuses import ALLOWED_BY_ACTION, TERMINAL, JobStatus
from tests import fault_job_types
from tests.chaos import checks
from tests.conftest import Processes
from tests.fault_servers import OwnPostgres, OwnRedis, RunLog, Web
from tests.test_faults import kill_worker_and_its_horse, work_horses

# --- the plan of faults ------------------------------------------------------------------------

#: Each fault's weight in the draw.
FAULTS = {
    "kill-horse": 5,  # SIGKILL a work horse alone (the out-of-memory killer)
    "kill-worker": 3,  # SIGKILL a worker's process group (worker and mirror); its horse dies with it
    "kill-worker-and-horse": 3,  # SIGKILL the worker's group and its horse's (a lost machine)
    "stop-worker": 1,  # SIGTERM: a warm shutdown, then started again
    "restart-redis": 3,  # SIGKILL or SIGTERM, then started again: its append-only file keeps the data
    "hang-redis": 1,  # SIGSTOP, then SIGCONT
    "restart-postgres": 2,  # pg_ctl stop -m immediate, then started again
    "pause-scheduler": 3,  # SIGSTOP, then SIGCONT
    "kill-scheduler": 1,  # SIGKILL, then started again
}
#: How long (seconds) each fault keeps its target down, paused or hung: drawn from this range.
DOWN_FOR = {
    "kill-horse": (0.0, 0.0),
    "kill-worker": (0.5, 6.0),
    "kill-worker-and-horse": (0.5, 6.0),
    "stop-worker": (0.5, 3.0),
    "restart-redis": (0.2, 5.0),
    "hang-redis": (1.0, 4.0),
    "restart-postgres": (0.5, 8.0),
    "pause-scheduler": (2.0, 25.0),
    "kill-scheduler": (0.5, 10.0),
}
#: Mean seconds between two faults.
MEAN_GAP = 5.0
#: Seconds the settle period lasts at least: a late verdict of the reconciler (6 + 2 + 1 s) has time to show.
MIN_SETTLE = 15.0
#: The settle period ends early once the jobs not ended stay the same this long with nothing on a queue.
STUCK_AFTER = 60.0
#: Jobs waiting on their queues above which the load holds back (the run measures faults, not a backlog).
MAX_BACKLOG = 200
#: Delayed jobs are not created in the chaos's last seconds (they would wait into the settle period).
NO_DELAYS_LAST = 25.0


@dataclass(frozen=True)
class Fault:
    at: float  # seconds after the chaos began
    kind: str
    target: int  # the worker's or the scheduler's index
    seconds: float  # down, paused or hung for
    hard: bool  # restart-redis: SIGKILL (else SIGTERM)

    def __str__(self) -> str:
        target = f" #{self.target}" if "worker" in self.kind or "scheduler" in self.kind else ""
        how = (" SIGKILL" if self.hard else " SIGTERM") if self.kind == "restart-redis" else ""
        down = f" for {self.seconds:.1f}s" if self.seconds else ""
        return f"{self.at:6.1f}s {self.kind}{target}{how}{down}"


def plan(rng: random.Random, seconds: float, workers: int, schedulers: int) -> list[Fault]:
    """The faults of a run: what, when, to which process, for how long. Drawn from the seed only."""
    kinds = list(FAULTS)
    weights = [FAULTS[kind] for kind in kinds]
    faults = []
    at = rng.uniform(4.0, 8.0)
    while at < seconds - 3:
        kind = rng.choices(kinds, weights)[0]
        target = rng.randrange(schedulers if "scheduler" in kind else workers)
        low, high = DOWN_FOR[kind]
        faults.append(Fault(round(at, 1), kind, target, round(rng.uniform(low, high), 1), rng.random() < 0.6))
        at += max(1.0, rng.expovariate(1 / MEAN_GAP))
    return faults


# --- what the load creates -----------------------------------------------------------------------

#: Job types and their weights; every registered type is created (`bulk_action` by the load's bulk step).
TYPES = {
    "example": 26,
    "email": 14,
    "report": 3,
    fault_job_types.RECORD: 20,
    fault_job_types.RECORD_ONCE: 16,
    fault_job_types.RAISES: 3,
    fault_job_types.TIMES_OUT: 1,
    fault_job_types.NOT_JSON: 2,
    fault_job_types.BIG_RESULT: 0.3,
    fault_job_types.NAME: 2,
}
#: At most this many 10 MB results per run.
MAX_BIG_RESULTS = 3
#: Jobs carry a group tag (`grp-007.`) in their params; a bulk action acts on one group.
GROUPS = 50
#: The load's steps and their weights.
STEPS = {"services": 40, "api": 35, "outbox": 8, "rollback": 2, "action": 9, "api-action": 8, "bulk": 1}
ACTION_WEIGHTS = {"retry": 35, "cancel": 20, "stop": 15, "promote": 15, "remove": 15}
#: The statuses a bulk action of the load selects (with a group's tag).
BULK_STATUSES = {
    "retry": ["abandoned", "canceled", "failed", "lost", "stopped"],
    "cancel": ["queued", "scheduled"],
    "promote": ["scheduled"],
    "remove": ["canceled"],
    "stop": ["started"],
}


def tag(group: int) -> str:
    return f"grp-{group:03d}."


def work_seconds(rng: random.Random) -> float:
    """Mostly nothing; a fifth short; some long enough to be killed while they run."""
    draw = rng.random()
    if draw < 0.7:
        return 0.0
    if draw < 0.93:
        return round(rng.uniform(0.05, 0.3), 2)
    return round(rng.uniform(1.0, 3.0), 1)


class _RollBack(Exception):
    """Raised inside a transaction to roll it back."""


class Load(threading.Thread):
    """Creates jobs and acts on them until told to stop, at most `rate` jobs a second."""

    def __init__(self, run: ChaosRun, user: User, token: str) -> None:
        super().__init__(name="chaos-load", daemon=True)
        self.run_ = run
        self.rng = random.Random(f"{run.seed}:load")
        self.user = user
        self.token = token
        self.stopping = threading.Event()
        self.accepted: dict[str, checks.Accepted] = {}
        self.rolled_back: set[str] = set()
        self.refused: Counter[str] = Counter()
        self.unanswered: Counter[str] = Counter()
        self.actions: Counter[tuple[str, str]] = Counter()  # (action and how, outcome)
        self.errors: list[str] = []
        self.big_results = 0
        self.requested = 0
        self.started_at = time.monotonic()

    # --- the loop ---

    def run(self) -> None:
        next_look = 0.0
        try:
            while not self.stopping.is_set():
                step = self.rng.choices(list(STEPS), list(STEPS.values()))[0]
                try:
                    getattr(self, "step_" + step.replace("-", "_"))()
                except DatabaseError:  # picking a job to act on, say: the database is away
                    connection.close()
                except Exception:
                    self.errors.append(traceback.format_exc())
                    connection.close()
                elapsed = time.monotonic() - self.started_at
                ahead = self.requested - self.run_.rate * elapsed
                if ahead > 0:
                    self.stopping.wait(ahead / self.run_.rate)
                if time.monotonic() > next_look:
                    next_look = time.monotonic() + 1.0
                    while self.backlog() > MAX_BACKLOG and not self.stopping.wait(0.5):
                        pass
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopping.set()
        self.join(60)

    def backlog(self) -> int:
        try:
            conn = queues.redis()
            lengths: list[Any] = [conn.llen(queue.key) for queue in queues.all_queues()]
            return sum(int(length) for length in lengths)
        except redis_lib.RedisError:
            return 0

    # --- what a job is ---

    def spec(self) -> tuple[dict[str, Any], str | None]:
        """A job request as the API takes it, and the e-mail token it carries (if an e-mail)."""
        rng = self.rng
        kind = rng.choices(list(TYPES), list(TYPES.values()))[0]
        if kind == fault_job_types.BIG_RESULT:
            self.big_results += 1
            if self.big_results > MAX_BIG_RESULTS:
                kind = fault_job_types.NOT_JSON
        group = tag(rng.randrange(GROUPS))
        token = None
        params: dict[str, Any] = {}
        if kind == "example":
            params = {
                "duration": work_seconds(rng),
                "steps": rng.randint(1, 5),
                "fail": rng.random() < 0.1,
                "message": group,
            }
        elif kind == "email":
            token = f"{rng.getrandbits(64):016x}"
            params = {
                "to": [f"chaos{rng.randrange(1000)}@example.com"],
                "subject": f"chaos {token}",
                "body": f"{group} sent by the chaos run",
            }
        elif kind in (fault_job_types.RECORD, fault_job_types.RECORD_ONCE):
            params = {"seconds": work_seconds(rng), "steps": rng.randint(1, 4)}
        spec: dict[str, Any] = {"type": kind, "params": params}
        late = time.monotonic() - self.started_at > self.run_.seconds - NO_DELAYS_LAST
        if not late and rng.random() < 0.08:
            spec["delay_seconds"] = round(rng.uniform(1.0, 20.0), 1)
        if rng.random() < 0.05:
            spec["queue"] = rng.choice(queues.QUEUE_NAMES)
        return spec, token

    def specs(self, most: int) -> list[tuple[dict[str, Any], str | None]]:
        made = [self.spec() for _ in range(self.rng.randint(1, most))]
        self.requested += len(made)
        return made

    def accept(self, ids: list[str], made: list[tuple[dict[str, Any], str | None]], via: str) -> None:
        now = time.time()
        for job_id, (spec, token) in zip(ids, made, strict=True):
            self.accepted[job_id] = checks.Accepted(job_id, spec["type"], via, now, spec.get("delay_seconds"), token)

    @staticmethod
    def request(spec: dict[str, Any]) -> services.JobRequest:
        return services.JobRequest(
            type=spec["type"], params=spec["params"], queue=spec.get("queue"), delay_seconds=spec.get("delay_seconds")
        )

    # --- the steps ---

    def step_services(self) -> None:
        made = self.specs(10)
        try:
            rows = services.jobs_enqueue(requests=[self.request(spec) for spec, _ in made], user=self.user)
        except QueueUnavailable:
            self.refused["queue unavailable"] += len(made)
            return
        except DatabaseError:
            # Refused, as far as the caller knows (the commit may have failed after Redis took the jobs).
            self.unanswered["database error"] += len(made)
            connection.close()
            return
        self.accept([str(row.id) for row in rows], made, "services")

    def step_api(self) -> None:
        made = self.specs(10)
        body: Any = [spec for spec, _ in made] if len(made) > 1 or self.rng.random() < 0.5 else made[0][0]
        answer = self.api("POST", "/api/jobs", body)
        if answer is None:
            self.unanswered["no answer"] += len(made)
        elif answer.status == 201:
            data = answer.data if isinstance(answer.data, list) else [answer.data]
            self.accept([str(item["id"]) for item in data], made, "api")
        elif answer.status == 503:
            self.refused["503"] += len(made)
        elif answer.status >= 500:
            self.unanswered[str(answer.status)] += len(made)
        else:
            self.errors.append(f"POST /api/jobs answered {answer.status}: {answer.data!r:.500}")

    def step_outbox(self, roll_back: bool = False) -> None:
        """Jobs created inside the caller's transaction: pending, dispatched when it commits."""
        made = self.specs(5)
        ids: list[str] = []
        try:
            with transaction.atomic():
                rows = services.jobs_enqueue(requests=[self.request(spec) for spec, _ in made], user=self.user)
                ids = [str(row.id) for row in rows]
                if roll_back:
                    raise _RollBack
        except _RollBack:
            self.rolled_back.update(ids)
            return
        except DatabaseError:
            self.unanswered["database error"] += len(made)
            connection.close()
            return
        self.accept(ids, made, "outbox")

    def step_rollback(self) -> None:
        self.step_outbox(roll_back=True)

    def pick(self, statuses: frozenset[str] | set[str]) -> str | None:
        ids = list(
            Job.objects.filter(status__in=list(statuses)).order_by("-created_at").values_list("id", flat=True)[:100]
        )
        return str(self.rng.choice(ids)) if ids else None

    def step_action(self) -> None:
        action = self.rng.choices(list(ACTION_WEIGHTS), list(ACTION_WEIGHTS.values()))[0]
        job_id = self.pick(ALLOWED_BY_ACTION[action])
        if job_id is None:
            self.actions[(action, "nothing to act on")] += 1
            return
        try:
            services.job_act(job=Job.objects.get(pk=job_id), action=action, user=self.user)
        except ActionNotAllowed:
            outcome = "not allowed"
        except QueueUnavailable:
            outcome = "queue unavailable"
        except Job.DoesNotExist:
            outcome = "gone"
        except DatabaseError:
            outcome = "database error"
            connection.close()
        else:
            outcome = "done"
        self.actions[(action, outcome)] += 1

    def step_api_action(self) -> None:
        action = self.rng.choices(list(ACTION_WEIGHTS), list(ACTION_WEIGHTS.values()))[0]
        job_id = self.pick(ALLOWED_BY_ACTION[action])
        if job_id is None:
            self.actions[(f"{action} (api)", "nothing to act on")] += 1
            return
        answer = self.api("POST", f"/api/jobs/{job_id}/action", {"action": action})
        outcome = "no answer"
        if answer is not None:
            outcome = {200: "done", 204: "done", 409: "not allowed", 503: "unavailable", 404: "gone"}.get(
                answer.status, f"answered {answer.status}"
            )
            if answer.status not in (200, 204, 409, 503, 404):
                self.errors.append(f"POST /api/jobs/{job_id}/action {action}: {answer.status} {answer.data!r:.500}")
        self.actions[(f"{action} (api)", outcome)] += 1

    def step_bulk(self) -> None:
        """A bulk action over one group's jobs: as a `bulk_action` job, or through the API at once."""
        action = self.rng.choice(sorted(BULK_STATUSES))
        filters = {"status": BULK_STATUSES[action], "search": tag(self.rng.randrange(GROUPS))}
        if self.rng.random() < 0.5:
            params: dict[str, Any] = {"action": action, "filters": filters, "via": "code"}
            spec: dict[str, Any] = {"type": "bulk_action", "params": params}
            self.requested += 1
            try:
                row = services.job_enqueue(type="bulk_action", params=params, user=self.user)
            except QueueUnavailable:
                self.refused["queue unavailable"] += 1
            except DatabaseError:
                self.unanswered["database error"] += 1
                connection.close()
            else:
                self.accept([str(row.id)], [(spec, None)], "services")
            return
        answer = self.api("POST", "/api/jobs/actions", {"action": action, "filters": filters})
        outcome = "no answer" if answer is None else ("done" if answer.status == 200 else f"answered {answer.status}")
        self.actions[(f"bulk {action} (api)", outcome)] += 1

    def api(self, method: str, path: str, body: Any) -> Any:
        web = self.run_.web
        assert web is not None
        try:
            return web.request(method, path, body, token=self.token, timeout=20)
        except (OSError, http.client.HTTPException):
            return None


# --- the processes ---------------------------------------------------------------------------------


@dataclass
class Slot:
    """A worker or a scheduler the driver keeps running, and may kill, stop or pause."""

    role: str
    index: int
    process: subprocess.Popen[bytes] | None = None
    #: up; down (killed or exited, to be started again); stopping (SIGTERM sent); paused (SIGSTOP)
    state: str = "down"
    restart_after: float = 1.0

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"


class EventLog:
    """What the driver did and saw, in order, printed as it happens."""

    def __init__(self) -> None:
        self.started = time.time()
        self.events: list[checks.DriverEvent] = []
        self.lock = threading.Lock()

    def add(self, kind: str, text: str) -> None:
        event = checks.DriverEvent(time.time(), kind, text)
        with self.lock:
            self.events.append(event)
        print(f"{self.offset(event):8.1f}s  {kind:<22} {text}", flush=True)

    def offset(self, event: checks.DriverEvent) -> float:
        return event.at - self.started


class ChaosRun:
    def __init__(
        self,
        *,
        seed: int,
        seconds: float,
        workers: int,
        schedulers: int,
        rate: float,
        settle: float,
        out: Path,
        redis_port: int,
        redis_db: int,
        appendfsync: str,
        postgres_port: int,
        database: str,
        keep: bool,
        argv: list[str],
    ) -> None:
        self.seed = seed
        self.seconds = seconds
        self.rate = rate
        self.settle_limit = settle
        self.out = out
        self.keep = keep
        self.argv = argv
        self.rng = random.Random(seed)
        self.log = EventLog()
        for name in ("redis", "logs", "mail", "media"):
            (out / name).mkdir(exist_ok=True)
        self.appendfsync = appendfsync
        self.redis = OwnRedis(out / "redis", db=redis_db, port=redis_port, appendfsync=appendfsync)
        self.postgres = OwnPostgres(name=database, port=postgres_port)
        self.processes = Processes(out / "logs")
        self.run_log = RunLog(out / "runs.log")
        self.workers = [Slot("worker", index) for index in range(workers)]
        self.schedulers = [Slot("scheduler", index) for index in range(schedulers)]
        self.web: Web | None = None
        self.load: Load | None = None
        self.faults: list[Fault] = []
        self.restores: list[tuple[float, int, Callable[[], bool]]] = []
        self.starters: list[threading.Thread] = []
        self._order = itertools.count()
        self.self_exits: list[checks.SelfExit] = []
        self.leftovers: dict[str, list[tuple[str, str | None]]] = {}
        self.unfinished: dict[str, tuple[str | None, str | None]] = {}
        self.killed: dict[int, float] = {}  # pid: when the driver killed it
        self.redis_outages: list[list[float]] = []  # [down, back] (back: infinity until it is)
        self.settled = False
        self.timings: dict[str, float] = {}

    # --- the whole run ---

    def main(self) -> int:
        print(f"chaos run: seed {self.seed}, {self.seconds:.0f}s of chaos; logs in {self.out}", flush=True)
        snapshot = None
        try:
            self.start()
            self.chaos()
            self.settle()
            self.stop_processes()
            snapshot = self.snapshot()
        except BaseException:
            traceback.print_exc()
            print(f"\nchaos run broken (seed {self.seed}); logs in {self.out}")
            return 2
        finally:
            self.teardown()
        violations = checks.check(snapshot)
        self.report(snapshot, violations)
        return 1 if violations else 0

    def start(self) -> None:
        started = time.monotonic()
        self.redis.start()
        self.postgres.prepare()
        user = User.objects.create_superuser("chaos", "chaos@example.com", "chaos-password")
        token = Token.objects.create(user=user).key
        for slot in self.workers:
            if not self.start_worker(slot):
                raise RuntimeError(f"{slot.name} did not start")
        for slot in self.schedulers:
            self.start_scheduler(slot)
        self.web = Web(self.processes, "gunicorn")
        self.web.start()
        self.load = Load(self, user, token)
        self.timings["start"] = time.monotonic() - started
        self.log.add(
            "ready",
            f"redis-server :{self.redis.port} (appendonly, appendfsync {self.appendfsync}), "
            f"postgres :{self.postgres.port}, {len(self.workers)} workers, {len(self.schedulers)} schedulers, "
            f"gunicorn :{self.web.port} ({self.timings['start']:.1f}s)",
        )

    def chaos(self) -> None:
        self.faults = plan(self.rng, self.seconds, len(self.workers), len(self.schedulers))
        print("plan:\n  " + "\n  ".join(str(fault) for fault in self.faults), flush=True)
        assert self.load is not None
        began = time.monotonic()
        self.log.started = time.time()
        self.log.add("chaos", f"{len(self.faults)} faults planned over {self.seconds:.0f}s")
        self.load.started_at = began
        self.load.start()
        pending = list(self.faults)
        last_note = began
        while (now := time.monotonic() - began) < self.seconds:
            self.restore_due()
            if pending and pending[0].at <= now:
                self.inflict(pending.pop(0))
            self.watch()
            if time.monotonic() - last_note >= 15:
                last_note = time.monotonic()
                self.log.add("load", self.load_figures())
            time.sleep(0.05)
        self.load.stop()
        self.log.add("chaos over", self.load_figures())
        self.restore_all()

    def load_figures(self) -> str:
        assert self.load is not None
        return (
            f"{len(self.load.accepted)} accepted, {sum(self.load.refused.values())} refused, "
            f"{sum(self.load.unanswered.values())} unanswered, {sum(self.load.actions.values())} actions"
        )

    # --- starting and stopping processes ---

    def start_worker(self, slot: Slot) -> bool:
        try:
            slot.process = self.processes.worker()
        except pytest.fail.Exception as exc:
            self.log.add("start failed", f"{slot.name}: {str(exc).splitlines()[0][:160]}")
            return False
        slot.state = "up"
        return True

    def start_scheduler(self, slot: Slot) -> bool:
        slot.process = self.processes.scheduler()
        slot.state = "up"
        return True

    def start_again(self, slot: Slot) -> bool:
        """Start a worker or a scheduler again; a worker in the background (it takes seconds to listen)."""
        if slot.role == "scheduler":
            self.start_scheduler(slot)
            assert slot.process is not None
            self.log.add("started again", f"{slot.name} (pid {slot.process.pid})")
            return True
        slot.state = "starting"
        starter = threading.Thread(target=self._start_until_up, args=(slot,), name=f"start {slot.name}", daemon=True)
        self.starters.append(starter)
        starter.start()
        return True

    def _start_until_up(self, slot: Slot) -> None:
        deadline = time.monotonic() + 120
        while not self.start_worker(slot):
            if time.monotonic() > deadline:
                self.log.add("start failed", f"{slot.name}: gave up")
                slot.state = "down"
                return
            time.sleep(1.0)
        assert slot.process is not None
        self.log.add("started again", f"{slot.name} (pid {slot.process.pid})")

    def wait_for_starters(self) -> None:
        for starter in self.starters:
            starter.join(130)

    def starting(self, slot: Slot) -> Callable[[], bool]:
        return lambda: self.start_again(slot)

    def later(self, seconds: float, action: Callable[[], bool]) -> None:
        heapq.heappush(self.restores, (time.monotonic() + seconds, next(self._order), action))

    def restore_due(self, everything: bool = False) -> None:
        while self.restores and (everything or self.restores[0][0] <= time.monotonic()):
            _, _, action = heapq.heappop(self.restores)
            if not action():
                self.later(1.0, action)  # tried again in a second
                if everything:
                    time.sleep(1.0)

    def restore_all(self) -> None:
        """Everything up again, now: what was due to be restored, and anything down or paused."""
        self.restore_due(everything=True)
        if self.redis.paused or not self.redis.running:
            self.redis_back()
        if not self.postgres.running():
            self.postgres_back()
        for slot in (*self.workers, *self.schedulers):
            if slot.state == "stopping":
                assert slot.process is not None
                slot.process.wait(30)
            self.watch()
        self.restore_due(everything=True)
        for slot in (*self.workers, *self.schedulers):
            if slot.state == "paused":
                self.resume(slot)
            if slot.state == "down":
                self.start_again(slot)
        self.wait_for_starters()

    def watch(self) -> None:
        """Notice processes that exited: asked to (a warm stop), or by themselves (a violation)."""
        for slot in (*self.workers, *self.schedulers):
            if slot.process is None or slot.state in ("down", "starting") or slot.process.poll() is None:
                continue
            code = slot.process.poll()
            if slot.state == "stopping":
                self.log.add("stopped", f"{slot.name} exited (code {code}) after SIGTERM")
            else:
                tail = self.tail(slot.process)
                self.self_exits.append(checks.SelfExit(time.time(), slot.name, code, tail))
                self.log.add("exited by itself", f"{slot.name} (code {code}): {checks._last_line(tail)}")
                slot.restart_after = 1.0
            slot.state = "down"
            self.later(slot.restart_after, self.starting(slot))
        if self.web is not None and self.web.process is not None and self.web.process.poll() is not None:
            tail = self.tail(self.web.process)
            self.self_exits.append(checks.SelfExit(time.time(), "gunicorn", self.web.process.poll(), tail))
            self.log.add("exited by itself", f"gunicorn: {checks._last_line(tail)}")
            self.web.start()

    def tail(self, process: subprocess.Popen[bytes], size: int = 12000) -> str:
        for candidate, path in self.processes.started:
            if candidate is process:
                with path.open("rb") as log:
                    log.seek(max(0, path.stat().st_size - size))
                    return log.read().decode(errors="replace")
        return ""

    def stop_processes(self) -> None:
        started = time.monotonic()
        self.processes.stop_all()
        self.timings["stop"] = time.monotonic() - started

    def teardown(self) -> None:
        if self.load is not None and self.load.is_alive():
            self.load.stop()
        self.processes.stop_all()
        connection.close()
        self.redis.stop()
        if self.keep:
            if self.postgres.running():
                self.postgres.stop_immediately()
            print(f"PostgreSQL cluster kept in {self.postgres.directory}")
        else:
            self.postgres.remove()

    # --- the faults ---

    def inflict(self, fault: Fault) -> None:
        getattr(self, "fault_" + fault.kind.replace("-", "_"))(fault)

    def up_workers(self, first: int) -> list[Slot]:
        ordered = self.workers[first:] + self.workers[:first]
        return [slot for slot in ordered if slot.state == "up" and slot.process is not None]

    def job_of(self, horse: int) -> str:
        """The job a work horse runs, from the run log's marks of runs under way."""
        running = Path(f"{self.run_log.path}.running")
        if running.exists():
            for job_dir in running.iterdir():
                if (job_dir / str(horse)).exists():
                    accepted = self.load.accepted.get(job_dir.name) if self.load else None
                    return f"job {job_dir.name}{f' {accepted.type}' if accepted else ''}"
        return "its job not started yet"

    def fault_kill_horse(self, fault: Fault) -> None:
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            for slot in self.up_workers(fault.target):
                assert slot.process is not None
                horses = work_horses(slot.process.pid)
                if horses:
                    job = self.job_of(horses[0])
                    try:
                        os.kill(horses[0], signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    self.killed[horses[0]] = time.time()
                    self.log.add(fault.kind, f"{slot.name}'s work horse {horses[0]}: {job}")
                    return
            time.sleep(0.05)
        self.log.add(fault.kind, "no work horse running: skipped")

    def target(self, slots: list[Slot], fault: Fault, also: tuple[str, ...] = ()) -> Slot | None:
        """The fault's target, when it is up (or in a state of `also`); None, logged as skipped, when not."""
        slot = slots[fault.target]
        if slot.process is None or (slot.state != "up" and slot.state not in also):
            self.log.add(fault.kind, f"{slot.name} is not up: skipped")
            return None
        return slot

    def fault_kill_worker(self, fault: Fault, with_horse: bool = False) -> None:
        slot = self.target(self.workers, fault)
        if slot is None or slot.process is None:
            return
        horses = work_horses(slot.process.pid)
        jobs = ", ".join(self.job_of(horse) for horse in horses) or "idle"
        killed = False
        if with_horse and horses:
            try:
                kill_worker_and_its_horse(slot.process)
                killed = True
            except AssertionError:  # its horse ended meanwhile
                pass
        if not killed:
            os.killpg(slot.process.pid, signal.SIGKILL)
            slot.process.wait(5)
        for pid in (slot.process.pid, *horses):  # a horse dies with its worker (jobs.worker._die_with)
            self.killed[pid] = time.time()
        slot.state = "down"
        what = "worker and its horse" if with_horse and horses else "worker"
        self.log.add(fault.kind, f"{slot.name} ({what}, pid {slot.process.pid}; {jobs}), down {fault.seconds}s")
        self.later(fault.seconds, self.starting(slot))

    def fault_kill_worker_and_horse(self, fault: Fault) -> None:
        self.fault_kill_worker(fault, with_horse=True)

    def fault_stop_worker(self, fault: Fault) -> None:
        slot = self.target(self.workers, fault)
        if slot is None or slot.process is None:
            return
        os.kill(slot.process.pid, signal.SIGTERM)
        slot.state = "stopping"
        slot.restart_after = fault.seconds
        self.log.add(fault.kind, f"{slot.name} sent SIGTERM (warm shutdown), started again {fault.seconds}s after")

    def fault_restart_redis(self, fault: Fault) -> None:
        if not self.redis.running:
            self.log.add(fault.kind, "redis-server is down already: skipped")
            return
        self.redis_outages.append([time.time(), float("inf")])
        if fault.hard:
            self.redis.kill()
        else:
            self.redis.stop()
        self.log.add(fault.kind, f"redis-server {'SIGKILL' if fault.hard else 'SIGTERM'}, down {fault.seconds}s")
        self.later(fault.seconds, self.redis_back)

    def redis_back(self) -> bool:
        if self.redis.paused:
            self.redis.resume()
            self.redis_is_back()
        if self.redis.running:
            return True
        started = time.monotonic()
        try:
            self.redis.start(timeout=30)
        except pytest.fail.Exception:
            if self.redis.process is not None and self.redis.process.poll() is None:
                self.redis.process.kill()
                self.redis.process.wait(5)
            return False
        self.redis_is_back()
        keys = self.redis.client().dbsize()
        took = time.monotonic() - started
        self.log.add("redis back", f"redis-server, {keys} keys read back from its append-only file ({took:.1f}s)")
        return True

    def redis_is_back(self) -> None:
        for outage in self.redis_outages:
            if outage[1] == float("inf"):
                outage[1] = time.time()

    def fault_hang_redis(self, fault: Fault) -> None:
        if not self.redis.running or self.redis.paused:
            self.log.add(fault.kind, "redis-server is down or hung already: skipped")
            return
        self.redis_outages.append([time.time(), float("inf")])
        self.redis.pause()
        self.log.add(fault.kind, f"redis-server SIGSTOP for {fault.seconds}s")

        def resume() -> bool:
            if self.redis.paused:
                self.redis.resume()
                self.redis_is_back()
                self.log.add("redis resumed", "redis-server SIGCONT")
            return True

        self.later(fault.seconds, resume)

    def fault_restart_postgres(self, fault: Fault) -> None:
        if not self.postgres.running():
            self.log.add(fault.kind, "postgres is down already: skipped")
            return
        self.postgres.stop_immediately()
        self.log.add(fault.kind, f"postgres stopped (immediate), down {fault.seconds}s")
        self.later(fault.seconds, self.postgres_back)

    def postgres_back(self) -> bool:
        if self.postgres.running():
            return True
        try:
            self.postgres.start()
        except subprocess.CalledProcessError as exc:
            self.log.add("start failed", f"postgres: {exc.stderr!r:.160}")
            return False
        self.log.add("started again", "postgres")
        return True

    def fault_pause_scheduler(self, fault: Fault) -> None:
        slot = self.target(self.schedulers, fault)
        if slot is None or slot.process is None:
            return
        os.kill(slot.process.pid, signal.SIGSTOP)
        slot.state = "paused"
        self.log.add(fault.kind, f"{slot.name} SIGSTOP for {fault.seconds}s")
        self.later(fault.seconds, lambda: self.resume(slot))

    def resume(self, slot: Slot) -> bool:
        if slot.state == "paused" and slot.process is not None:
            os.kill(slot.process.pid, signal.SIGCONT)
            slot.state = "up"
            self.log.add("resumed", f"{slot.name} SIGCONT")
        return True

    def fault_kill_scheduler(self, fault: Fault) -> None:
        slot = self.target(self.schedulers, fault, also=("paused",))
        if slot is None or slot.process is None:
            return
        os.killpg(slot.process.pid, signal.SIGKILL)
        slot.process.wait(5)
        slot.state = "down"
        self.log.add(fault.kind, f"{slot.name} SIGKILL, down {fault.seconds}s")
        self.later(fault.seconds, self.starting(slot))

    # --- the settle period ---

    def settle(self) -> None:
        """Wait for every job to end, the history to catch up and Redis to hold no more work."""
        began = time.monotonic()
        deadline = began + self.settle_limit
        quiet_rounds = 0
        last_note = began
        open_rows: Counter[str] = Counter()
        seen: Counter[str] = Counter()
        unchanged_since = began
        queued_in_redis = 0
        while True:
            self.restore_due()
            self.watch()
            try:
                open_rows = Counter(
                    dict(
                        Job.objects.exclude(status__in=TERMINAL)
                        .values_list("status")
                        .annotate(n=Count("id"))
                        .values_list("status", "n")
                    )
                )
                self.promote_far_jobs()
                conn = queues.redis()
                unapplied = oldest_unapplied_ms(conn)
                held = self.held_in_redis()
                holding = sum(len(ids) for ids in held.values())
                queued_in_redis = sum(len(ids) for place, ids in held.items() if place.startswith("queue "))
                quiet = not open_rows and unapplied is None and holding == 0
            except (DatabaseError, redis_lib.RedisError) as exc:
                connection.close()
                self.log.add("settle", f"not answering: {str(exc).splitlines()[0]}")
                quiet = False
            if open_rows != seen:
                seen, unchanged_since = open_rows, time.monotonic()
            quiet_rounds = quiet_rounds + 1 if quiet else 0
            if quiet_rounds >= 3 and time.monotonic() - began >= MIN_SETTLE:
                self.settled = True
                break
            if time.monotonic() > deadline:
                self.log.add("settle", f"gave up after {self.settle_limit:.0f}s: {dict(open_rows)} not ended")
                break
            if open_rows and not queued_in_redis and time.monotonic() - unchanged_since > STUCK_AFTER:
                self.log.add("settle", f"stuck: {dict(open_rows)} unchanged for {STUCK_AFTER:.0f}s, nothing queued")
                break
            if time.monotonic() - last_note >= 10:
                last_note = time.monotonic()
                self.log.add("settle", f"not ended yet: {dict(open_rows) or 'none'}")
            time.sleep(1.0)
        self.timings["settle"] = time.monotonic() - began
        self.log.add("settled" if self.settled else "settle", f"in {self.timings['settle']:.1f}s")
        try:
            held = self.held_in_redis()
            statuses = {str(job_id): status for job_id, status in Job.objects.values_list("id", "status")}
            self.leftovers = {place: [(job_id, statuses.get(job_id)) for job_id in ids] for place, ids in held.items()}
            where = {job_id: place for place, ids in held.items() for job_id in ids}
            conn = queues.redis()
            for job_id, status in statuses.items():
                if status not in TERMINAL:
                    rq_status: Any = conn.hget(f"rq:job:{job_id}", "status")
                    self.unfinished[job_id] = (rq_status.decode() if rq_status else None, where.get(job_id))
        except (DatabaseError, redis_lib.RedisError) as exc:
            self.log.add("settle", f"could not read what Redis holds: {exc}")

    def promote_far_jobs(self) -> None:
        """Jobs waiting for a retry (or their time) more than a few seconds away are run now: the run ends sooner."""
        far = Job.objects.filter(status=JobStatus.SCHEDULED, scheduled_for__gt=timezone.now() + timedelta(seconds=3))
        promoted = 0
        for row in far:
            try:
                services.job_promote(job=row)
                promoted += 1
            except ActionNotAllowed:
                pass
        if promoted:
            self.log.add("settle", f"promoted {promoted} jobs waiting for a retry or their time")

    def held_in_redis(self) -> dict[str, list[str]]:
        """Job ids on each queue, and in each started and scheduled registry."""
        conn = queues.redis()
        held: dict[str, list[str]] = {}
        for queue in queues.all_queues():
            raw: Any = conn.lrange(queue.key, 0, -1)
            held[f"queue {queue.name}"] = [item.decode() for item in raw]
            started: Any = conn.zrange(queue.started_job_registry.key, 0, -1)
            held[f"started registry {queue.name}"] = [item.decode().split(":", 1)[0] for item in started]
            scheduled: Any = conn.zrange(queue.scheduled_job_registry.key, 0, -1)
            held[f"scheduled registry {queue.name}"] = [item.decode() for item in scheduled]
        return held

    # --- what happened ---

    def snapshot(self) -> checks.Snapshot:
        assert self.load is not None
        rows = {
            str(row["id"]): {**row, "created_at": row["created_at"].timestamp()}
            for row in Job.objects.values("id", "type", "queue", "status", "attempts", "params", "error", "created_at")
        }
        attempts: dict[str, dict[int, dict[str, Any]]] = {}
        for job_id, number, outcome, error, trace in JobAttempt.objects.values_list(
            "job_id", "number", "outcome", "error", "traceback"
        ):
            attempts.setdefault(str(job_id), {})[number] = {
                "outcome": outcome,
                "error": error,
                "traceback": (trace or "")[-4000:],
            }
        audits: dict[str, list[tuple[str, float]]] = {}
        for job_id, action, at in JobAudit.objects.order_by("at", "id").values_list("job_id", "action", "at"):
            audits.setdefault(str(job_id), []).append((action, at.timestamp()))
        counted: dict[tuple[str, str], int] = {}
        for queue, by_status in stats.status_counts().items():
            for status, count in by_status.items():
                counted[(queue, status)] = count
        recounted = {
            (queue, status): count
            for queue, status, count in Job.objects.values_list("queue", "status")
            .annotate(n=Count("id"))
            .values_list("queue", "status", "n")
        }
        rules = {
            spec.name: checks.TypeRules(spec.retry.retry_lost, spec.retry.max_attempts) for spec in registry.all_types()
        }
        return checks.Snapshot(
            seed=self.seed,
            accepted=dict(self.load.accepted),
            rolled_back=set(self.load.rolled_back),
            unanswered=sum(self.load.unanswered.values()),
            rows=rows,
            attempts=attempts,
            audits=audits,
            rules=rules,
            run_lines=self.run_log.lines(),
            mails=self.mails(),
            events=list(self.log.events),
            self_exits=list(self.self_exits),
            counted=counted,
            recounted=recounted,
            leftovers=self.leftovers,
            unfinished=self.unfinished,
            killed=dict(self.killed),
            redis_outages=[(down, back) for down, back in self.redis_outages],
            settled=self.settled,
        )

    def mails(self) -> Counter[str]:
        """E-mails written by the file backend, by the token in their subject."""
        sent: Counter[str] = Counter()
        for path in (self.out / "mail").iterdir():
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("Subject: chaos "):
                    sent[line.split()[-1]] += 1
        return sent

    # --- the report ---

    def report(self, snap: checks.Snapshot, violations: list[checks.Violation]) -> None:
        assert self.load is not None
        load = self.load
        runs = checks.runs_by_job(snap.run_lines)
        print(f"\n=== chaos run, seed {self.seed} ===")
        print(f"replay: .venv/bin/python -m tests.chaos {' '.join(self.argv) or f'--seed {self.seed}'}")
        if "--seed" not in self.argv:
            print(f"        (this run's seed: --seed {self.seed})")
        print(
            f"chaos {self.seconds:.0f}s, settle {self.timings.get('settle', 0):.1f}s"
            f"{'' if snap.settled else ' (ran out)'}; redis-server appendonly yes, appendfsync {self.appendfsync}"
        )
        print("\n--- event log (seconds after the chaos began)")
        for event in snap.events:
            if event.kind not in ("load",):
                print(f"{self.log.offset(event):8.1f}s  {event.kind:<22} {event.text}")

        print("\n--- jobs")
        via = Counter(accepted.via for accepted in snap.accepted.values())
        print(
            f"accepted {len(snap.accepted)} ({', '.join(f'{name} {count}' for name, count in via.most_common())}); "
            f"refused {sum(load.refused.values())} {dict(load.refused)}; "
            f"unanswered {sum(load.unanswered.values())} {dict(load.unanswered)}; "
            f"rolled back {len(snap.rolled_back)}"
        )
        statuses = ["finished", "failed", "stopped", "canceled", "abandoned", "lost"]
        header = (
            f"{'type':<24}{'jobs':>7}" + "".join(f"{s:>10}" for s in statuses) + f"{'other':>7}{'runs':>7}{'again':>7}"
        )
        print(header)
        totals: Counter[str] = Counter()
        by_type: dict[str, Counter[str]] = {}
        for job_id, row in snap.rows.items():
            counter = by_type.setdefault(row["type"], Counter())
            counter["jobs"] += 1
            counter[row["status"] if row["status"] in statuses else "other"] += 1
            count = len(runs.get(job_id, []))
            counter["runs"] += count
            counter["again"] += max(0, count - 1)
        for name in sorted(by_type):
            counter = by_type[name]
            totals.update(counter)
            print(self._row(name, counter, statuses))
        print(self._row("all", totals, statuses))
        removed = sum(1 for audits in snap.audits.values() if any(action == "remove" for action, _ in audits))
        print(f"removed by actions: {removed} (not in the history any more)")

        print("\n--- faults and actions")
        kinds = Counter(event.kind for event in snap.events if event.kind in FAULTS)
        skipped = Counter(event.kind for event in snap.events if event.kind in FAULTS and "skipped" in event.text)
        print(
            "faults: "
            + ", ".join(
                f"{kind} {count}{f' ({skipped[kind]} skipped)' if skipped[kind] else ''}"
                for kind, count in sorted(kinds.items())
            )
        )
        actions: dict[str, Counter[str]] = {}
        for (action, outcome), count in load.actions.items():
            actions.setdefault(action, Counter())[outcome] += count
        print(
            "actions: "
            + "; ".join(
                f"{action}: " + ", ".join(f"{outcome} {count}" for outcome, count in counter.most_common())
                for action, counter in sorted(actions.items())
            )
        )
        if load.errors:
            print(f"load errors (unexpected, {len(load.errors)}):")
            for error in load.errors[:5]:
                print("  " + error.strip().replace("\n", "\n  "))

        print("\n--- checks")
        by_check = Counter(violation.check for violation in violations)
        for name, promise in checks.CHECKS.items():
            verdict = f"{by_check[name]} violations" if by_check[name] else "ok"
            print(f"{name:<10} {verdict:<14} {promise}")
        if violations:
            print(f"\n--- violations ({len(violations)})")
            for violation in violations:
                defect = f" [back: {checks.DEFECTS[violation.defect]}]" if violation.defect else " [new]"
                job = f" {violation.type} {violation.job}" if violation.job else ""
                print(f"{violation.check}:{job}: {violation.what}{defect}")
        known = Counter(violation.defect for violation in violations if violation.defect)
        print(
            f"\nseed {self.seed}: {len(violations)} violations"
            + (
                f" ({', '.join(f'{key} {count}' for key, count in known.items())}; "
                f"{sum(1 for v in violations if not v.defect)} new)"
                if violations
                else ""
            )
        )
        report = {
            "seed": self.seed,
            "argv": self.argv,
            "seconds": self.seconds,
            "appendfsync": self.appendfsync,
            "timings": self.timings,
            "settled": snap.settled,
            "plan": [asdict(fault) for fault in self.faults],
            "events": [
                {"at": round(self.log.offset(event), 2), "kind": event.kind, "text": event.text}
                for event in snap.events
            ],
            "accepted": len(snap.accepted),
            "accepted_by": dict(via),
            "refused": dict(load.refused),
            "unanswered": dict(load.unanswered),
            "rolled_back": len(snap.rolled_back),
            "by_type": {name: dict(counter) for name, counter in by_type.items()},
            "actions": {f"{action}: {outcome}": count for (action, outcome), count in load.actions.items()},
            "load_errors": load.errors,
            "violations": [violation.as_dict() for violation in violations],
        }
        (self.out / "report.json").write_text(json.dumps(report, indent=2, default=str))
        print(f"report: {self.out / 'report.json'}")

    @staticmethod
    def _row(name: str, counter: Counter[str], statuses: list[str]) -> str:
        cells = "".join(f"{counter[s]:>10}" for s in statuses)
        return f"{name:<24}{counter['jobs']:>7}{cells}{counter['other']:>7}{counter['runs']:>7}{counter['again']:>7}"
