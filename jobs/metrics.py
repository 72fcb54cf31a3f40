"""Prometheus metrics at `/metrics`: RQ's gauges (django-rq's own collector) and the history's figures.

Who may read them: a scraper sending `Authorization: Bearer <METRICS_TOKEN>` (compared in constant
time; with no token configured, token access is off), or a staff user who is logged in. Anyone else
is refused: 401 with `WWW-Authenticate` without credentials or with a wrong token, 403 for a user
who is not staff.

Every scrape builds a fresh registry with two collectors:

- `RedisCollector`: `jobs_redis_up`, then, when Redis answers, django-rq's `RQCollector` (`rq_workers`,
  `rq_jobs`, ...) and the product's live figures (the queues' backlog and oldest waiting age, workers
  alive, delayed jobs, the mirror's backlog, the scheduler), read as the health view reads them
  (`jobs.selectors`);
- `HistoryCollector`: `jobs_database_up`, jobs by status per queue (the exact counters of
  `jobs.stats`), and per queue and job type the processed and failed counters and the run and wait
  time histograms, from the all-time totals (`stats.type_totals`, folded by the scheduler every
  second; never deleted, so the counters never go down when the history is pruned).

Nothing reads the history itself. With Redis away the endpoint still answers, with the history's
figures and `jobs_redis_up 0`; with the database away, with Redis's and `jobs_database_up 0`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from secrets import compare_digest
from typing import Any

import redis as redis_lib
from django.conf import settings
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.views.decorators.http import require_safe
from django_rq.contrib.prometheus import RQCollector
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.utils import floatToGoString

from jobs import queues, selectors, stats
from jobs.errors import QueueUnavailable
from jobs.statuses import JobStatus

log = logging.getLogger(__name__)

#: The histograms' upper bounds (`le`), in seconds. A stored bucket (`stats.bucket`, a quarter of a
#: doubling wide) is counted under the first bound at or above its upper edge.
BOUNDS_SECONDS: tuple[float, ...] = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
)
REALM = 'Bearer realm="metrics"'
_REDIS_ERRORS = (redis_lib.RedisError, OSError, QueueUnavailable)


def bound_of(bucket: int) -> float:
    """The `le` bound (seconds) under which a stored histogram bucket is counted: the first bound at
    or above the bucket's upper edge (`math.inf` past the last one)."""
    upper_ms = 1.0 if bucket <= 0 else 2 ** (bucket / stats.BUCKETS_PER_DOUBLING)
    for bound in BOUNDS_SECONDS:
        if upper_ms <= bound * 1000 * (1 + 1e-9):
            return bound
    return math.inf


def cumulative_buckets(histogram: stats.Histogram) -> list[tuple[str, float]]:
    """Prometheus buckets (`le`, cumulative count), ending with `+Inf` (every observation)."""
    per_bound: dict[float, int] = {}
    for key, count in histogram.counts.items():
        bound = bound_of(int(key))
        per_bound[bound] = per_bound.get(bound, 0) + count
    buckets = []
    seen = 0
    for bound in (*BOUNDS_SECONDS, math.inf):
        seen += per_bound.get(bound, 0)
        buckets.append((floatToGoString(bound), float(seen)))
    return buckets


class HistoryCollector:
    """The history's figures, from counters and rollups only."""

    def collect(self) -> Iterator[Metric]:
        yield from _answered("database", (DatabaseError,), self._families)

    def _families(self) -> Iterable[Metric]:
        counts = stats.status_counts()
        by_status = GaugeMetricFamily(
            "jobs_by_status",
            "Jobs recorded per queue and status (exact; pruned jobs included).",
            labels=["queue", "status"],
        )
        for queue in sorted(set(queues.QUEUE_NAMES) | set(counts)):
            for status in JobStatus:
                by_status.add_metric([queue, status.value], counts.get(queue, {}).get(status.value, 0))
        yield by_status

        processed = CounterMetricFamily(
            "jobs_processed", "Jobs that ended (finished or failed), per queue and job type.", labels=["queue", "type"]
        )
        failed = CounterMetricFamily(
            "jobs_failed", "Jobs that failed, per queue and job type.", labels=["queue", "type"]
        )
        run = HistogramMetricFamily(
            "jobs_run_seconds", "How long ended jobs ran (their last attempt).", labels=["queue", "type"]
        )
        wait = HistogramMetricFamily(
            "jobs_wait_seconds",
            "How long ended jobs waited on their queue before they started.",
            labels=["queue", "type"],
        )
        merged: dict[tuple[str, str], tuple[int, stats.HourRollup]] = {}
        for total in stats.type_totals():
            key = (total.queue, total.type)
            failures, rollup = merged.get(key, (0, stats.HourRollup()))
            if total.status == JobStatus.FAILED:
                failures += total.rollup.count
            merged[key] = (failures, stats.HourRollup.merged(rollup, total.rollup))
        for (queue, type_), (failures, rollup) in sorted(merged.items()):
            labels = [queue, type_]
            processed.add_metric(labels, rollup.count)
            failed.add_metric(labels, failures)
            run.add_metric(labels, cumulative_buckets(rollup.run), rollup.run_ms_sum / 1000)
            wait.add_metric(labels, cumulative_buckets(rollup.wait), rollup.wait_ms_sum / 1000)
        yield from (processed, failed, run, wait)


def _answered(
    store: str, errors: tuple[type[BaseException], ...], families: Callable[[], Iterable[Metric]]
) -> Iterator[Metric]:
    """`jobs_<store>_up` (1 when `store` answered this scrape, else 0), then the families read from it:
    all or none, so a scrape never shows half of a store's figures."""
    up = GaugeMetricFamily(f"jobs_{store}_up", f"Whether {STORE_NAMES[store]} answered this scrape (1) or not (0).")
    try:
        read = list(families())
    except errors as exc:
        log.warning("metrics: %s is unavailable (%s: %s)", STORE_NAMES[store], type(exc).__name__, exc)
        up.add_metric([], 0)
        yield up
        return
    up.add_metric([], 1)
    yield up
    yield from read


STORE_NAMES = {"database": "the database", "redis": "Redis"}


class RedisCollector:
    """RQ's gauges (django-rq's collector) and the product's live figures, when Redis answers."""

    def collect(self) -> Iterator[Metric]:
        def families() -> Iterable[Metric]:
            if not queues.redis().ping():
                raise redis_lib.ConnectionError("no PONG")
            return [*RQCollector().collect(), *self._families()]

        yield from _answered("redis", _REDIS_ERRORS, families)

    def _families(self) -> Iterable[Metric]:
        queue_info = selectors.queue_health()
        worker_list = [worker for worker in selectors.workers() if not worker["stale"]]
        mirror = selectors.mirror_state()
        scheduler = selectors.scheduler_state()
        due = delayed_due()

        def per_queue(name: str, documentation: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, documentation, labels=["queue"])

        waiting = per_queue("jobs_queue_waiting", "Jobs waiting on the queue.")
        oldest = per_queue(
            "jobs_queue_oldest_waiting_seconds", "How long the job at the head of the queue has waited (0: none)."
        )
        listening = per_queue("jobs_queue_workers", "Live workers listening to the queue.")
        paused = per_queue("jobs_queue_paused", "Whether the queue is paused (1) or not (0).")
        delayed = per_queue("jobs_delayed", "Delayed jobs and retries waiting for their time.")
        delayed_now = per_queue("jobs_delayed_due", "Delayed jobs and retries whose time has come (the scheduler's).")
        for name, info in queue_info.items():
            waiting.add_metric([name], info["waiting"])
            oldest.add_metric([name], info["oldest_waiting_age"] or 0.0)
            listening.add_metric([name], sum(1 for worker in worker_list if name in worker["queues"]))
            paused.add_metric([name], 1 if info["paused"] else 0)
            delayed.add_metric([name], info["scheduled"])
            delayed_now.add_metric([name], due.get(name, 0))
        yield from (waiting, oldest, listening, paused, delayed, delayed_now)

        yield GaugeMetricFamily("jobs_workers_alive", "Workers that beat (not stale).", value=len(worker_list))
        yield GaugeMetricFamily(
            "jobs_workers_busy", "Live workers running a job.", value=sum(1 for w in worker_list if w["current_job"])
        )
        yield GaugeMetricFamily(
            "jobs_scheduler_active", "Whether a scheduler holds the lock (1) or not (0).", value=int(scheduler["alive"])
        )
        yield GaugeMetricFamily(
            "jobs_mirror_backlog", "Worker transitions not written to the history yet.", value=mirror["backlog"]
        )
        yield GaugeMetricFamily(
            "jobs_mirror_oldest_seconds",
            "Age of the oldest transition not written to the history yet (0: none).",
            value=mirror["oldest_age"] or 0.0,
        )


def delayed_due(now: datetime | None = None) -> dict[str, int]:
    """Delayed jobs whose time has come, per queue (the scheduler moves them onto their queue)."""
    timestamp = int((now or datetime.now(tz=UTC)).timestamp())
    conn = queues.redis()
    with conn.pipeline(transaction=False) as pipe:
        for queue in queues.all_queues():
            pipe.zcount(queue.scheduled_job_registry.key, 0, timestamp)
        answers: Any = pipe.execute()
    return {name: int(count) for name, count in zip(queues.QUEUE_NAMES, answers, strict=True)}


def registry() -> CollectorRegistry:
    """A registry for one scrape (nothing is kept between scrapes)."""
    scrape = CollectorRegistry(auto_describe=False)
    scrape.register(RedisCollector())
    scrape.register(HistoryCollector())
    return scrape


def _unauthorized(error: str | None = None) -> HttpResponse:
    response = HttpResponse(
        "Send Authorization: Bearer <METRICS_TOKEN>, or log in as a staff user.\n",
        status=401,
        content_type="text/plain; charset=utf-8",
    )
    response["WWW-Authenticate"] = f'{REALM}, error="{error}"' if error else REALM
    return response


def _token_matches(given: str) -> bool:
    expected: str = settings.METRICS_TOKEN
    if not expected or not given:
        return False  # no token configured: token access is off
    return compare_digest(given.encode(), expected.encode())


def refusal(request: HttpRequest) -> HttpResponse | None:
    """Why `request` may not read the metrics (a response to send), or None when it may."""
    scheme, _, credentials = request.headers.get("Authorization", "").strip().partition(" ")
    if scheme.lower() == "bearer":
        return None if _token_matches(credentials.strip()) else _unauthorized("invalid_token")
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return _unauthorized()
    if not (user.is_active and user.is_staff):
        return HttpResponse("Only staff may read the metrics.\n", status=403, content_type="text/plain; charset=utf-8")
    return None


@require_safe
def metrics(request: HttpRequest) -> HttpResponse:
    """GET /metrics: the Prometheus exposition (or OpenMetrics, when the scraper asks for it)."""
    refused = refusal(request)
    if refused is not None:
        return refused
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    response = HttpResponse(encoder(registry()), content_type=content_type)
    response["Cache-Control"] = "no-store"
    return response
