"""The scheduler process: delayed-job promotion, schedules, the reconciler, the daily prune, a mirror drainer.

Several may run (one per machine, say): a Redis lock makes one of them active
and the others stand by, taking over within `JOBS_SCHEDULER_LOCK_TTL` seconds
(15 by default) of its death.
A thread renews the lock while a round works, so a slow round (a slow database)
does not let a standby in. A leader frozen past its lock (SIGSTOP, a paused VM)
may still finish its round after a standby took over: what it does then is
harmless, because each action is claimed where it is done (a promotion by a Lua
script that moves a job only if it is still scheduled; a schedule's run by its
row lock and its unique (schedule, due time) row, in the job's transaction).
Every one of them drains the event stream.

The active one starts a round every tick, or sooner when a schedule or a delayed job is due
before it: it sleeps until the earliest next run time of the enabled schedules or the lowest
score in the queues' scheduled registries, so a due run is made on time whatever the tick (a
burst of due times is made in rounds at least `SOONEST` apart, each taking all that is due).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from datetime import datetime

import redis as redis_lib
from django.conf import settings
from django.db import DatabaseError, close_old_connections
from django.utils import timezone

from jobs import queues, retention, schedules, services, stats
from jobs.errors import InvalidJobRequest
from jobs.mirror import MirrorThread, alive_key
from jobs.reconcile import reconcile

log = logging.getLogger(__name__)

LOCK_KEY = "jobs:scheduler:lock"

# Renew the lock only if we still hold it (compare-and-expire).
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('expire', KEYS[1], ARGV[2])
end
return 0
"""
#: Seconds a round keeps promoting while due delayed jobs remain (then schedules and the rest).
PROMOTE_FOR = 2.0
#: Seconds at least between the starts of two rounds woken by a due time (the tick, if shorter): a
#: burst of due times (thousands of schedules spread over a minute) is made in rounds of many, not
#: in one round each.
SOONEST = 0.25

_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class Scheduler:
    def __init__(self, tick: float = 1.0, reconcile_every: float | None = None):
        self.tick = tick
        self.reconcile_every = reconcile_every if reconcile_every is not None else settings.JOBS_RECONCILE_INTERVAL
        self.name = f"scheduler:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.redis = queues.redis()
        self.stop_requested = threading.Event()
        self.active = False
        self._declared_synced = False
        self.lock_ttl = settings.JOBS_SCHEDULER_LOCK_TTL
        self._folded_at = 0.0  # time.monotonic() of the last fold of the counters
        self._round: tuple[float, datetime, float] | None = None  # the last round's start, its now, its promotion

    def _hold_lock(self) -> bool:
        if self.active:
            self.active = bool(self.redis.eval(_RENEW, 1, LOCK_KEY, self.name, self.lock_ttl))
        else:
            self.active = bool(self.redis.set(LOCK_KEY, self.name, nx=True, ex=self.lock_ttl))
            if self.active:
                log.info("%s is now the active scheduler", self.name)
        return self.active

    def _keep_lock(self) -> None:
        """Renew the lock every third of its life while this scheduler is active, rounds or not."""
        while not self.stop_requested.wait(self.lock_ttl / 3):
            if not self.active:
                continue
            try:
                if not self.redis.eval(_RENEW, 1, LOCK_KEY, self.name, self.lock_ttl):
                    self.active = False
                    log.warning("%s lost the scheduler lock (it was frozen past it); standing by", self.name)
            except (redis_lib.RedisError, OSError) as exc:
                log.warning("scheduler: lock not renewed, Redis unavailable (%s)", exc)

    def run_once(self) -> bool:
        """One round, if this scheduler is the active one; True when it left due work for the next
        (a full batch of schedules, or promotion cut short), which then starts at once."""
        self._round = None
        if not self._hold_lock():
            return False
        if not self._declared_synced:
            self._declared_synced = True
            try:
                schedules.sync_declared()
            except InvalidJobRequest as exc:
                log.error("scheduler: JOBS_SCHEDULES: these schedules are not applied (the others are): %s", exc)
        started, promoted_from = time.monotonic(), time.time()
        more = False
        # RQ hands out due delayed jobs a thousand per queue at a time: more, while the round allows.
        while services.promote_due_jobs():
            if time.monotonic() - started >= PROMOTE_FOR:
                more = True
                break
        now = timezone.now()
        more = schedules.run_due(now) >= schedules.BATCH or more
        if time.monotonic() - self._folded_at >= self.tick:  # each tick, however many rounds
            self._folded_at = time.monotonic()
            stats.fold()
        self._round = (started, now, promoted_from)
        return more

    def _wait(self) -> float:
        """Seconds until the next round: the tick, or less when a schedule's next run time or a delayed
        job's due time comes first (those the last round could not take, held by another scheduler,
        wait for the tick)."""
        if self._round is None or not self.active:
            return self.tick
        started, now, promoted_from = self._round
        wake = time.time() + self.tick
        soonest = schedules.next_due(after=now)
        if soonest is not None:
            wake = min(wake, soonest.timestamp())
        delayed = self._next_delayed(after=promoted_from)
        if delayed is not None:
            wake = min(wake, delayed)
        # A millisecond past the due time: a round woken a hair early (clock rounding) would find it not due yet.
        return max(0.0, wake + 0.001 - time.time(), started + min(SOONEST, self.tick) - time.monotonic())

    def _next_delayed(self, after: float) -> float | None:
        """The lowest score (a due time, in whole seconds) of the queues' scheduled registries above
        the second `after` was in (those at or below it were due when the round promoted)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for queue in queues.all_queues():
                pipe.zrangebyscore(queue.scheduled_job_registry.key, f"({int(after)}", "+inf", 0, 1, withscores=True)
            answers = pipe.execute()
        scores = [score for answer in answers for _, score in answer]
        return min(scores) if scores else None

    def _while_active(self, what: str, every: float, work: Callable[[], object]) -> None:
        """Run `work` every `every` seconds while this scheduler is the active one, in a thread of its
        own: a long reconciler round (a large history) or a prune never delays a schedule's run or a
        promotion. Redis or the database away skips a round, said in the log."""
        while not self.stop_requested.wait(every):
            if not self.active:
                continue
            try:
                work()
            except (redis_lib.RedisError, OSError) as exc:
                log.warning("%s: Redis unavailable (%s)", what, exc)
            except DatabaseError as exc:
                log.warning("%s: database unavailable (%s)", what, exc)
                close_old_connections()
            except Exception:
                log.exception("%s: unexpected error", what)

    def _reconcile(self) -> None:
        self._while_active("reconciler", self.reconcile_every, reconcile)

    def _prune(self) -> None:
        """The daily prune of the history (`jobs.retention`); it stops between two batches when this
        scheduler stands down."""
        self._while_active(
            "retention",
            max(1.0, 5 * self.tick),
            lambda: retention.prune_if_due(
                self.redis, should_stop=lambda: self.stop_requested.is_set() or not self.active
            ),
        )

    def run(self) -> None:
        mirror = MirrorThread(
            queues.new_redis(),  # a connection of its own, set up as the queues' (password, TLS, Sentinel)
            consumer=self.name,
            alive_key=alive_key(self.name),  # so that the reconciler never takes over what it reads
        )
        mirror.start()
        threading.Thread(target=self._keep_lock, name="scheduler-lock", daemon=True).start()
        threading.Thread(target=self._reconcile, name="reconciler", daemon=True).start()
        threading.Thread(target=self._prune, name="retention", daemon=True).start()
        log.info("%s started (tick %.1fs, reconcile every %.0fs)", self.name, self.tick, self.reconcile_every)
        try:
            while not self.stop_requested.is_set():
                wait = self.tick
                try:
                    wait = 0.0 if self.run_once() else self._wait()
                except (redis_lib.RedisError, OSError) as exc:
                    log.warning("scheduler: Redis unavailable (%s)", exc)
                    self.active = False
                except DatabaseError as exc:
                    log.warning("scheduler: database unavailable (%s)", exc)
                    close_old_connections()
                except Exception:
                    log.exception("scheduler: unexpected error")
                self.stop_requested.wait(wait)
        finally:
            with contextlib.suppress(redis_lib.RedisError):
                self.redis.eval(_RELEASE, 1, LOCK_KEY, self.name)
            mirror.stop()
            log.info("%s stopped", self.name)
