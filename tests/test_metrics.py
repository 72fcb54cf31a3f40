"""/metrics: who may read it, and that its numbers are those of a known set of jobs."""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.db import OperationalError, connections
from django.test import Client, override_settings
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from jobs import metrics, services, stats
from jobs.models import Job, JobEndHour, JobRunDelta, JobTypeTotal
from jobs.statuses import JobStatus
from tests.conftest import wait_for
from tests.helpers import closed_port, history_row, redis_at

TOKEN = "metrics-token-for-the-tests-0123456789"
BEARER = {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: Client | None = None, **headers: str) -> Samples:
    """GET /metrics with the token; every sample of the exposition by (name, labels)."""
    extra: dict[str, Any] = dict(headers or BEARER)
    with override_settings(METRICS_TOKEN=TOKEN):
        response = (client or Client()).get("/metrics", **extra)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples: Samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def bucket(samples: Samples, name: str, le: str, **labels: str) -> float:
    return value(samples, f"{name}_bucket", le=le, **labels)


# --- who may read it ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_anonymous_requests_are_refused_with_a_bearer_challenge():
    with override_settings(METRICS_TOKEN=TOKEN):
        response = Client().get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"jobs_" not in response.content


@pytest.mark.django_db
@pytest.mark.parametrize("header", ["Bearer wrong-token", f"Bearer {TOKEN}x", "Bearer ", f"bearer {TOKEN[:-1]}"])
def test_a_wrong_token_is_refused(header):
    with override_settings(METRICS_TOKEN=TOKEN):
        response = Client().get("/metrics", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics", error="invalid_token"'


@pytest.mark.django_db
def test_with_no_token_configured_no_token_is_accepted():
    with override_settings(METRICS_TOKEN=""):
        assert Client().get("/metrics", HTTP_AUTHORIZATION="Bearer ").status_code == 401
        assert Client().get("/metrics", HTTP_AUTHORIZATION=f"Bearer {TOKEN}").status_code == 401


@pytest.mark.django_db
def test_a_logged_in_user_who_is_not_staff_is_forbidden():
    client = Client()
    client.force_login(User.objects.create_user("viewer", password="pw"))
    with override_settings(METRICS_TOKEN=TOKEN):
        response = client.get("/metrics")
    assert response.status_code == 403
    assert b"jobs_" not in response.content


@pytest.mark.django_db
def test_staff_and_the_token_may_read_it_and_nothing_but_get_is_answered():
    staff = Client()
    staff.force_login(User.objects.create_user("operator", password="pw", is_staff=True))
    for samples in (scrape(staff, HTTP_ACCEPT="text/plain"), scrape()):
        assert value(samples, "jobs_redis_up") == 1
        assert value(samples, "jobs_database_up") == 1
    with override_settings(METRICS_TOKEN=TOKEN):
        assert Client().post("/metrics", **BEARER).status_code == 405
        response = Client().get("/metrics/", **BEARER)
        assert response.status_code == 200
        assert response["Cache-Control"] == "no-store"
        openmetrics = Client().get("/metrics", HTTP_ACCEPT="application/openmetrics-text", **BEARER)
        assert openmetrics["Content-Type"].startswith("application/openmetrics-text")
        assert openmetrics.content.rstrip().endswith(b"# EOF")


# --- the numbers -------------------------------------------------------------------------------------


def ended(status: str, *, run_ms: int, wait_ms: int, queue: str = "default", type: str = "example") -> Job:
    """A history row that ended `run_ms` after it started, `wait_ms` after it was queued."""
    ended_at = timezone.now() - timedelta(minutes=5)
    started_at = ended_at - timedelta(milliseconds=run_ms)
    params = {"to": "ada@example.com", "subject": "s", "body": "b"} if type == "email" else {}
    return history_row(
        status,
        queue=queue,
        type=type,
        params=params,
        attempts=1,
        enqueued_at=started_at - timedelta(milliseconds=wait_ms),
        started_at=started_at,
        ended_at=ended_at,
    )


@pytest.mark.django_db
def test_the_history_figures_match_a_known_set_of_jobs_and_the_counters_survive_pruning():
    # Written as rows: the database's triggers record each end as a worker's would, and the
    # scheduler's fold is called by hand. Run and wait times (ms) are chosen away from the bounds.
    for run_ms, wait_ms in ((200, 30), (1500, 2000), (40_000, 300)):
        ended(JobStatus.FINISHED, run_ms=run_ms, wait_ms=wait_ms)
    for _ in range(2):
        ended(JobStatus.FAILED, run_ms=3000, wait_ms=4)
    ended(JobStatus.FINISHED, run_ms=3, wait_ms=700, queue="high", type="email")
    history_row(JobStatus.QUEUED)
    history_row(JobStatus.SCHEDULED, queue="low")
    stats.fold()

    samples = scrape()
    assert value(samples, "jobs_by_status", queue="default", status="finished") == 3
    assert value(samples, "jobs_by_status", queue="default", status="failed") == 2
    assert value(samples, "jobs_by_status", queue="default", status="queued") == 1
    assert value(samples, "jobs_by_status", queue="default", status="started") == 0
    assert value(samples, "jobs_by_status", queue="high", status="finished") == 1
    assert value(samples, "jobs_by_status", queue="low", status="scheduled") == 1
    assert sum(v for (name, _), v in samples.items() if name == "jobs_by_status") == 8

    example = {"queue": "default", "type": "example"}
    email = {"queue": "high", "type": "email"}
    assert value(samples, "jobs_processed_total", **example) == 5
    assert value(samples, "jobs_failed_total", **example) == 2
    assert value(samples, "jobs_processed_total", **email) == 1
    assert value(samples, "jobs_failed_total", **email) == 0
    assert len([name for name, _ in samples if name == "jobs_processed_total"]) == 2

    run = "jobs_run_seconds"
    expected_run = {"0.1": 0, "0.25": 1, "1.0": 1, "2.5": 2, "5.0": 4, "30.0": 4, "60.0": 5, "3600.0": 5, "+Inf": 5}
    assert {le: bucket(samples, run, le, **example) for le in expected_run} == expected_run
    assert value(samples, f"{run}_count", **example) == 5
    assert value(samples, f"{run}_sum", **example) == pytest.approx(47.7, abs=0.01)
    # The 3 ms e-mail is in the first bucket; its 700 ms wait under 1 s and not under 0.5 s.
    assert bucket(samples, run, "0.005", **email) == 1
    assert bucket(samples, "jobs_wait_seconds", "0.5", **email) == 0
    assert bucket(samples, "jobs_wait_seconds", "1.0", **email) == 1
    wait = "jobs_wait_seconds"
    expected_wait = {"0.005": 2, "0.025": 2, "0.05": 3, "0.25": 3, "0.5": 4, "1.0": 4, "2.5": 5, "+Inf": 5}
    assert {le: bucket(samples, wait, le, **example) for le in expected_wait} == expected_wait
    assert value(samples, f"{wait}_sum", **example) == pytest.approx(2.338, abs=0.01)

    # The history is pruned and the hourly rollups pass their 90 days: the counters stay.
    Job.objects.all().delete()
    JobEndHour.objects.all().delete()
    stats.fold()
    after = scrape()
    assert sum(v for (name, _), v in after.items() if name == "jobs_by_status") == 0
    for name in ("jobs_processed_total", "jobs_failed_total"):
        assert value(after, name, **example) == value(samples, name, **example)
        assert value(after, name, **email) == value(samples, name, **email)
    for key, sample in samples.items():
        if key[0].startswith(("jobs_run_seconds", "jobs_wait_seconds")):
            assert after[key] == sample, key

    # A job that ends now adds to them, once it is folded.
    ended(JobStatus.FAILED, run_ms=100, wait_ms=100)
    assert value(scrape(), "jobs_failed_total", **example) == 2  # not folded yet: a counter never goes back
    stats.fold()
    latest = scrape()
    assert value(latest, "jobs_failed_total", **example) == 3
    assert value(latest, "jobs_processed_total", **example) == 6


@pytest.mark.django_db
def test_with_redis_away_it_answers_with_the_history_figures_and_redis_down():
    ended(JobStatus.FINISHED, run_ms=50, wait_ms=10)
    stats.fold()
    with redis_at(closed_port()):
        started = time.monotonic()
        samples = scrape()
        assert time.monotonic() - started < 5
    assert value(samples, "jobs_redis_up") == 0
    assert value(samples, "jobs_database_up") == 1
    assert value(samples, "jobs_by_status", queue="default", status="finished") == 1
    assert value(samples, "jobs_processed_total", queue="default", type="example") == 1
    assert not {"rq_jobs", "rq_workers", "jobs_queue_waiting", "jobs_workers_alive"} & names(samples)


@pytest.mark.django_db(transaction=True)  # the job reaches Redis when its transaction commits
def test_with_the_database_away_it_answers_with_redis_figures_and_the_database_down(monkeypatch):
    services.job_enqueue(type="example", queue="low")

    def broken_cursor(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError("could not connect to server")

    monkeypatch.setattr(type(connections["default"]), "cursor", broken_cursor)
    samples = scrape()
    monkeypatch.undo()
    assert value(samples, "jobs_database_up") == 0
    assert value(samples, "jobs_redis_up") == 1
    assert value(samples, "jobs_queue_waiting", queue="low") == 1
    assert not {"jobs_by_status", "jobs_processed_total", "jobs_run_seconds_count"} & names(samples)


def test_each_stored_bucket_is_counted_under_the_first_bound_that_holds_all_of_it():
    for ms in (0, 0.4, 1, 3, 4.9, 5, 9.99, 49, 51, 999, 1000, 1001, 59_000, 3_500_000):
        bound = metrics.bound_of(stats.bucket(ms))
        assert ms / 1000 <= bound, ms
    # A bucket's upper edge is above the previous bound: no tighter bound would hold it.
    for index in range(0, 60):
        bound = metrics.bound_of(index)
        upper_s = (1.0 if index == 0 else 2 ** (index / stats.BUCKETS_PER_DOUBLING)) / 1000
        tighter = [b for b in metrics.BOUNDS_SECONDS if b < bound]
        assert not tighter or upper_s > tighter[-1]
    assert metrics.bound_of(stats.bucket(4000 * 1000)) == float("inf")


@pytest.mark.django_db
def test_the_migration_fills_the_totals_from_the_rollups_and_the_older_history():
    first_hour = (timezone.now() - timedelta(days=10)).replace(minute=0, second=0, microsecond=0)
    # Ended before the rollups' second hour: only the history knows them fully.
    old = ended(JobStatus.FINISHED, run_ms=1000, wait_ms=10)
    old_end = first_hour + timedelta(minutes=30)
    Job.objects.filter(pk=old.pk).update(
        ended_at=old_end,
        started_at=old_end - timedelta(seconds=1),
        enqueued_at=old_end - timedelta(seconds=1, milliseconds=10),
    )
    ended(JobStatus.FAILED, run_ms=2000, wait_ms=20)  # ended recently: in the rollups below
    JobRunDelta.objects.all().delete()
    JobTypeTotal.objects.all().delete()
    rollup = {"count": 1, "run_ms_sum": 2000, "run_hist": {"45": 1}, "wait_ms_sum": 20, "wait_hist": {"19": 1}}
    JobEndHour.objects.create(hour=first_hour, queue="default", type="example", status="finished", **rollup)
    recent = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    JobEndHour.objects.create(hour=recent, queue="default", type="example", status="failed", **rollup)

    migration: Any = importlib.import_module("jobs.migrations.0012_metrics_totals")
    migration.backfill(apps, None)

    totals = {(t.status, t.rollup.count, t.rollup.run_ms_sum) for t in stats.type_totals()}
    # The first (possibly partial) hour's rollup is left for the history's own row.
    assert totals == {("finished", 1, 1000), ("failed", 1, 2000)}
    finished = next(t for t in stats.type_totals() if t.status == "finished")
    assert dict(finished.rollup.run.counts) == {str(stats.bucket(1000)): 1}


# --- with a real worker -------------------------------------------------------------------------------


@pytest.fixture
def raising_job_type() -> Iterator[str]:
    """`faults-raises` (one attempt, fails), registered here and in the worker (JOBS_MODULES)."""
    from tests import fault_job_types

    fault_job_types.register()
    yield fault_job_types.RAISES
    fault_job_types.unregister()


def run_seconds(job: Job) -> float:
    job.refresh_from_db()
    assert job.started_at
    assert job.ended_at
    return (job.ended_at - job.started_at).total_seconds()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_the_live_figures_match_what_a_real_worker_did(processes, raising_job_type):
    processes.worker("high", "default", JOBS_MODULES="tests.fault_job_types")
    quick = {"duration": 0, "steps": 1}
    done = [services.job_enqueue(type="example", params=quick) for _ in range(3)]
    done.append(services.job_enqueue(type="example", params=quick, queue="high"))
    done.append(services.job_enqueue(type=raising_job_type))
    wait_for(
        lambda: Job.objects.filter(pk__in=[job.pk for job in done], ended_at__isnull=False).count() == 5,
        30,
        message="the five jobs to end",
    )
    stats.fold()
    queued_at = time.time()
    for _ in range(2):
        services.job_enqueue(type="example", params=quick, queue="low")  # no worker listens to it
    first_queued_by = time.time()
    services.job_enqueue(type="example", params=quick, delay_seconds=0.5)  # and no scheduler moves it
    asked_at = 0.0

    def live() -> Samples | None:
        nonlocal asked_at
        asked_at = time.time()
        samples = scrape()
        due = value(samples, "jobs_delayed_due", queue="default") == 1
        return samples if due and value(samples, "jobs_workers_alive") == 1 else None

    samples = wait_for(live, 20, message="the delayed job to be due, with the worker alive")
    scraped_at = time.time()

    assert value(samples, "jobs_by_status", queue="default", status="finished") == 3
    assert value(samples, "jobs_by_status", queue="default", status="failed") == 1
    assert value(samples, "jobs_by_status", queue="default", status="scheduled") == 1
    assert value(samples, "jobs_by_status", queue="high", status="finished") == 1
    assert value(samples, "jobs_by_status", queue="low", status="queued") == 2
    assert sum(v for (name, _), v in samples.items() if name == "jobs_by_status") == 8

    example = {"queue": "default", "type": "example"}
    raising = {"queue": "default", "type": raising_job_type}
    assert value(samples, "jobs_processed_total", **example) == 3
    assert value(samples, "jobs_failed_total", **example) == 0
    assert value(samples, "jobs_processed_total", **raising) == 1
    assert value(samples, "jobs_failed_total", **raising) == 1
    assert value(samples, "jobs_processed_total", queue="high", type="example") == 1
    assert value(samples, "jobs_run_seconds_count", **example) == 3
    assert value(samples, "jobs_wait_seconds_count", **example) == 3
    runs = [run_seconds(job) for job in done[:3]]
    assert value(samples, "jobs_run_seconds_sum", **example) == pytest.approx(sum(runs), abs=0.005)
    # Every run is counted under the first bound 20 % above the longest, none under a bound below the shortest.
    above = next(bound for bound in metrics.BOUNDS_SECONDS if bound >= max(runs) * 1.2)
    assert bucket(samples, "jobs_run_seconds", str(above), **example) == 3
    below = [bound for bound in metrics.BOUNDS_SECONDS if bound < min(runs)]
    if below:
        assert bucket(samples, "jobs_run_seconds", str(below[-1]), **example) == 0

    assert value(samples, "jobs_queue_waiting", queue="low") == 2
    assert value(samples, "jobs_queue_waiting", queue="default") == 0
    # The head of `low` was queued between queued_at and first_queued_by; its age was read during the scrape.
    oldest = value(samples, "jobs_queue_oldest_waiting_seconds", queue="low")
    assert asked_at - first_queued_by - 0.01 <= oldest <= scraped_at - queued_at + 0.01
    assert value(samples, "jobs_queue_oldest_waiting_seconds", queue="default") == 0
    assert value(samples, "jobs_queue_workers", queue="default") == 1
    assert value(samples, "jobs_queue_workers", queue="low") == 0
    assert value(samples, "jobs_delayed", queue="default") == 1
    assert value(samples, "jobs_scheduler_active") == 0
    # django-rq's own collector, reused: RQ's view of the same queues and the one worker.
    assert value(samples, "rq_jobs", queue="low", status="queued") == 2
    assert len([name for name, _ in samples if name == "rq_workers"]) == 1

    # The worker stops; a transition is written that no mirror applies.
    processes.stop_all()
    assert services.promote_due_jobs() == 1

    def no_worker() -> Samples | None:
        samples = scrape()
        return samples if value(samples, "jobs_workers_alive") == 0 else None

    after = wait_for(no_worker, 20, message="the worker to be gone")
    assert value(after, "jobs_mirror_backlog") == 1
    assert 0 <= value(after, "jobs_mirror_oldest_seconds") < 10
    assert value(after, "jobs_delayed_due", queue="default") == 0
    assert value(after, "jobs_queue_waiting", queue="default") == 1
