"""Liveness of the worker or the scheduler running beside this command: for an orchestrator's probe.

    python manage.py jobs_alive worker       # exit 0: alive, 1: not; one line saying why
    python manage.py jobs_alive scheduler

It judges the process of its own host (the container or the pod: the same host name), found in
Redis without any shared process table:

- **worker**: the newest RQ worker registered from this host (RQ records each worker's host
  name; the names themselves are RQ's random ones, so a worker restarted in the same container
  never takes the name of the one that died, whose running job the reconciler must still judge).
  It is alive while its mirror process keeps its liveness key (`jobs.mirror.alive_key`: the
  mirror stops within a second of the worker's death, and the key lapses after
  `JOBS_WORKER_DEAD_AFTER` seconds when the mirror itself is gone) *and* the worker itself
  beat within `JOBS_ALIVE_THRESHOLD` seconds: RQ's heartbeat (`last_heartbeat` in its worker
  hash). A frozen worker (hung, stopped) keeps a live mirror but stops beating. An idle worker
  beats every time its blocking wait for a job ends, `--worker-ttl` minus 15 seconds (RQ's
  default TTL, 420, makes that 405 s: run workers with `--worker-ttl 60` where this command
  judges them); a busy one every 30 s while its work horse runs (RQ's job monitoring interval).
- **scheduler**: every scheduler names itself `scheduler:<host>:<pid>:<random>` and keeps a
  liveness key from a thread of its own process (its mirror). It is alive while one of this
  host's schedulers has that key: a standby scheduler beats as much as the active one; a frozen
  or dead one lets it lapse within `JOBS_WORKER_DEAD_AFTER` seconds.

When Redis cannot be reached, nothing can be judged: the command says so and exits 0, since
restarting a process does not bring Redis back (workers and schedulers wait for it).
"""

from __future__ import annotations

import socket
import sys
import time
from dataclasses import dataclass
from typing import Any

import redis as redis_lib
from django.conf import settings
from django.core.management.base import BaseCommand, CommandParser
from rq.utils import utcparse
from rq.worker import Worker as RQWorker
from rq.worker_registration import REDIS_WORKER_KEYS

from jobs import mirror, queues
from jobs.scheduler import LOCK_KEY
from jobs.worker import PRODUCT_WORKERS

WORKER = "worker"
SCHEDULER = "scheduler"


@dataclass(frozen=True)
class Verdict:
    alive: bool
    reason: str

    @property
    def line(self) -> str:
        return f"{'alive' if self.alive else 'not alive'}: {self.reason}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass(frozen=True)
class _Registered:
    name: str
    hostname: str
    birth: float
    last_heartbeat: float | None
    dead: bool


def _registered_workers(conn: redis_lib.Redis) -> list[_Registered]:
    """Every RQ worker registered in Redis (RQ's set of workers, and the product's own)."""
    prefix = RQWorker.redis_worker_namespace_prefix
    rq_keys: Any = conn.smembers(REDIS_WORKER_KEYS)
    product: Any = conn.smembers(PRODUCT_WORKERS)
    names = {_text(key)[len(prefix) :] for key in rq_keys} | {_text(name) for name in product}
    ordered = sorted(names)
    with conn.pipeline(transaction=False) as pipe:
        for name in ordered:
            pipe.hmget(prefix + name, ["hostname", "birth", "last_heartbeat", "death"])
        answers: list[Any] = pipe.execute()
    found = []
    for name, (hostname, birth, beat, death) in zip(ordered, answers, strict=True):
        if hostname is None or birth is None:
            continue  # its hash expired (or Redis lost it): nothing says where it runs
        found.append(
            _Registered(
                name=name,
                hostname=_text(hostname),
                birth=utcparse(_text(birth)).timestamp(),
                last_heartbeat=None if beat is None else utcparse(_text(beat)).timestamp(),
                dead=death is not None,
            )
        )
    return found


def judge_worker(conn: redis_lib.Redis, hostname: str, threshold: float, name: str | None = None) -> Verdict:
    """Whether this host's worker (or the worker `name`) is alive."""
    workers = [w for w in _registered_workers(conn) if (w.name == name if name else w.hostname == hostname)]
    if not workers:
        whose = f"worker {name}" if name else f"worker of host {hostname}"
        return Verdict(False, f"no {whose} is registered in Redis (not started, exited, or its key expired)")
    worker = max(workers, key=lambda w: w.birth)  # a restart's predecessor may linger a while
    if worker.dead:
        return Verdict(False, f"worker {worker.name} has stopped (RQ recorded its death)")
    if conn.sismember(PRODUCT_WORKERS, worker.name) and not conn.exists(mirror.alive_key(worker.name)):
        return Verdict(
            False, f"worker {worker.name}: its mirror stopped beating (the worker or its mirror process is gone)"
        )
    if worker.last_heartbeat is None:
        return Verdict(False, f"worker {worker.name} never beat")
    age = time.time() - worker.last_heartbeat
    if age > threshold:
        return Verdict(
            False, f"worker {worker.name} last beat {age:.0f} s ago (limit {threshold:g} s): it is frozen or hung"
        )
    return Verdict(True, f"worker {worker.name} beat {age:.0f} s ago (limit {threshold:g} s)")


def judge_scheduler(conn: redis_lib.Redis, hostname: str, name: str | None = None) -> Verdict:
    """Whether this host's scheduler (or the scheduler `name`) is alive."""
    if name:
        candidates = [name]
    else:
        prefix = f"scheduler:{hostname}:"
        candidates = [consumer.name for consumer in mirror.consumers(conn) if consumer.name.startswith(prefix)]
        holder = conn.get(LOCK_KEY)
        if holder is not None and _text(holder).startswith(prefix):
            candidates.append(_text(holder))
    candidates = sorted(set(candidates))
    if not candidates:
        whose = f"scheduler {name}" if name else f"scheduler of host {hostname}"
        return Verdict(False, f"no {whose} has started (none reads the event stream)")
    with conn.pipeline(transaction=False) as pipe:
        for candidate in candidates:
            pipe.pttl(mirror.alive_key(candidate))
        ttls: list[int] = pipe.execute()
    beating = [(candidate, ttl) for candidate, ttl in zip(candidates, ttls, strict=True) if ttl > 0 or ttl == -1]
    if not beating:
        return Verdict(
            False,
            f"{', '.join(candidates)}: no liveness key (it stopped beating over "
            f"{settings.JOBS_WORKER_DEAD_AFTER} s ago: frozen, hung or dead)",
        )
    holder = conn.get(LOCK_KEY)
    described = []
    for candidate, _ in beating:
        role = "active" if holder is not None and _text(holder) == candidate else "standby"
        described.append(f"{candidate} ({role})")
    return Verdict(True, f"{', '.join(described)} beating")


class Command(BaseCommand):
    help = (
        "Liveness probe: exit 0 when the worker or the scheduler of this host (container, pod) beats, "
        "1 when it does not; prints one line saying why."
    )
    requires_system_checks: list[str] = []  # a probe runs every few seconds: only what it needs

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("role", choices=[WORKER, SCHEDULER], help="Which process to judge.")
        parser.add_argument(
            "--name", default=None, help="Judge the worker or scheduler of this name rather than this host's."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        hostname = socket.gethostname()
        conn = queues.redis()
        try:
            if options["role"] == WORKER:
                verdict = judge_worker(conn, hostname, float(settings.JOBS_ALIVE_THRESHOLD), options["name"])
            else:
                verdict = judge_scheduler(conn, hostname, options["name"])
        except (redis_lib.RedisError, OSError) as exc:
            verdict = Verdict(True, f"not judged: Redis unreachable ({type(exc).__name__}); a restart would not help")
        self.stdout.write(verdict.line)
        if not verdict.alive:
            sys.exit(1)
