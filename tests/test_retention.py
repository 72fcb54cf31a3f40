"""History retention as an operator meets it: what a prune removes and keeps, in batches, with the
statistics unchanged, from the command, from the scheduler, and what the API and the admin say of it."""

from __future__ import annotations

import io
import re
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.core.management import call_command
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from jobs import retention, services, stats
from jobs.models import Job, JobAttempt, JobAudit, JobCountDelta, Schedule, ScheduleRun
from jobs.statuses import ACTIVE, TERMINAL, JobStatus
from tests.conftest import wait_for
from tests.helpers import VIEWERS, history_row, make_user

pytestmark = pytest.mark.django_db(transaction=True)

STATS = "/api/jobs/stats"
STATISTICS = "/admin/jobs/job/statistics/"
CHANGELIST = "/admin/jobs/job/"
NOW = datetime(2026, 12, 10, 12, 0, tzinfo=ZoneInfo("UTC"))
DAY = timedelta(days=1)
MINUTE = timedelta(minutes=1)
#: The default ages: finished 30 days, failed (abandoned, lost) 90, canceled (stopped) 30.
DEFAULT_AGE = {
    JobStatus.FINISHED: 30,
    JobStatus.FAILED: 90,
    JobStatus.ABANDONED: 90,
    JobStatus.LOST: 90,
    JobStatus.CANCELED: 30,
    JobStatus.STOPPED: 30,
}


def old_job(status: str, *, ended: datetime | None, created: datetime | None = None, **fields: Any) -> Job:
    """A history row that ended at `ended` (None: no end time), created a minute before unless told."""
    job = history_row(status, ended_at=ended, **fields)
    created = created or (ended - MINUTE if ended else NOW - 365 * DAY)
    Job.objects.filter(pk=job.pk).update(created_at=created)
    job.refresh_from_db()
    return job


def remaining() -> set[Any]:
    return set(Job.objects.values_list("pk", flat=True))


def policy(keep_last: int = 0, **days: int) -> retention.Policy:
    return retention.Policy.from_settings(keep_last=keep_last, **days)


def viewer_user() -> User:
    user = make_user("vera", groups=(VIEWERS,))
    user.is_staff = True
    user.save(update_fields=["is_staff"])
    return user


# --- what goes and what stays ---------------------------------------------------------------------


def test_prune_removes_exactly_the_jobs_past_the_age_of_their_status():
    kept, gone = set(), set()
    for status, days in DEFAULT_AGE.items():
        cutoff = NOW - days * DAY
        gone.add(old_job(status, ended=cutoff - MINUTE).pk)  # a minute past its age
        kept.add(old_job(status, ended=cutoff + MINUTE, created=cutoff - 400 * DAY).pk)  # created long ago, ended since
        kept.add(old_job(status, ended=cutoff).pk)  # exactly at the age: kept
    # Final rows without an end time are judged by their creation.
    gone.add(old_job(JobStatus.FINISHED, ended=None, created=NOW - 31 * DAY).pk)
    kept.add(old_job(JobStatus.FINISHED, ended=None, created=NOW - 29 * DAY).pk)
    # Failures are kept longer than successes: 60 days old, a failure stays, a success goes.
    kept.add(old_job(JobStatus.FAILED, ended=NOW - 60 * DAY).pk)
    gone.add(old_job(JobStatus.FINISHED, ended=NOW - 60 * DAY).pk)

    result = retention.prune(policy=policy(), now=NOW)

    assert remaining() == kept
    assert result.deleted == len(gone)
    assert result.by_status == {
        "finished": 3,
        "failed": 1,
        "abandoned": 1,
        "lost": 1,
        "canceled": 1,
        "stopped": 1,
    }


def test_an_active_job_is_never_pruned_however_old():
    ancient = NOW - 1000 * DAY
    active = {old_job(status, ended=ancient, created=ancient).pk for status in ACTIVE}
    assert len(active) == 5
    old_job(JobStatus.FINISHED, ended=ancient)

    result = retention.prune(policy=policy(), now=NOW)

    assert remaining() == active
    assert result.deleted == 1


def test_an_age_of_zero_keeps_that_status_for_good():
    ancient = NOW - 1000 * DAY
    failures = {old_job(s, ended=ancient).pk for s in (JobStatus.FAILED, JobStatus.ABANDONED, JobStatus.LOST)}
    old_job(JobStatus.FINISHED, ended=ancient)

    retention.prune(policy=policy(failed_days=0), now=NOW)

    assert remaining() == failures
    assert not retention.Policy.from_settings(finished_days=0, failed_days=0, canceled_days=0).cutoffs(NOW)


def test_a_job_retried_while_the_prune_runs_is_kept(monkeypatch):
    doomed = old_job(JobStatus.FINISHED, ended=NOW - 40 * DAY)
    retried = old_job(JobStatus.FAILED, ended=NOW - 100 * DAY)
    split = retention._Keeper.split

    def retry_meanwhile(self: Any, rows: Any) -> Any:
        services.job_retry(job=Job.objects.get(pk=retried.pk))  # after the candidates were read
        return split(self, rows)

    monkeypatch.setattr(retention._Keeper, "split", retry_meanwhile)
    result = retention.prune(policy=policy(), now=NOW)

    assert remaining() == {retried.pk}
    assert Job.objects.get(pk=retried.pk).status == JobStatus.QUEUED
    assert result.deleted == 1
    assert result.skipped_locked == 1
    assert not Job.objects.filter(pk=doomed.pk).exists()


def test_the_newest_jobs_of_each_type_and_each_schedule_are_kept_whatever_their_age():
    # A per-minute schedule and a weekly one, both of type example, and a rare type.
    minutely = Schedule.objects.create(name="every minute", type="example", every=60, timezone="UTC")
    weekly = Schedule.objects.create(name="weekly", type="example", cron="0 3 * * 1", timezone="UTC")
    start = NOW - 200 * DAY
    weekly_jobs = []
    for week in range(3):  # the weekly runs are the oldest of their type
        job = old_job(JobStatus.FINISHED, ended=start + week * 7 * DAY)
        ScheduleRun.objects.create(schedule=weekly, due_at=job.created_at, job=job)
        weekly_jobs.append(job.pk)
    minutely_jobs = []
    for minute in range(20):
        job = old_job(JobStatus.FINISHED, ended=start + 30 * DAY + minute * MINUTE)
        ScheduleRun.objects.create(schedule=minutely, due_at=job.created_at, job=job)
        minutely_jobs.append(job.pk)
    rare = [old_job(JobStatus.FAILED, ended=start + i * DAY, type="email", params=EMAIL).pk for i in range(3)]

    result = retention.prune(policy=policy(keep_last=5), now=NOW)

    # example: the 5 newest of the type (minutely ones); the weekly schedule's 3 runs as its newest;
    # email: only 3 jobs, all kept.
    assert remaining() == set(weekly_jobs) | set(minutely_jobs[-5:]) | set(rare)
    assert result.deleted == 15
    assert result.kept_by_type == 5 + 3
    assert result.kept_by_schedule == 3
    # The pruned jobs' schedule runs went with them; the kept ones stay.
    assert ScheduleRun.objects.filter(schedule=minutely).count() == 5
    assert ScheduleRun.objects.filter(schedule=weekly).count() == 3
    assert not ScheduleRun.objects.filter(job__isnull=True).exists()


EMAIL = {"to": "ada@example.com", "subject": "Hi", "body": "Hello"}


def test_attempts_audit_entries_schedule_runs_and_files_go_with_their_job(tmp_path):
    with override_settings(MEDIA_ROOT=str(tmp_path)):
        schedule = Schedule.objects.create(name="nightly report", type="report", every=86400, timezone="UTC")
        jobs = []
        for ended in (NOW - 40 * DAY, NOW - DAY):
            job = old_job(JobStatus.FINISHED, ended=ended, type="report")
            name = default_storage.save(f"reports/{job.pk}.csv", ContentFile(b"type,status,jobs\n"))
            Job.objects.filter(pk=job.pk).update(result={"file": name, "jobs": 0})
            JobAttempt.objects.create(job=job, number=1, outcome="finished", started_at=ended, ended_at=ended)
            services.audit_created([job], None, JobAudit.Via.SCHEDULE, ["schedule 'nightly report', due"])
            ScheduleRun.objects.create(schedule=schedule, due_at=ended, job=job)
            jobs.append((job, name))
        (_, old_file), (new, new_file) = jobs

        result = retention.prune(policy=policy(), now=NOW)

        assert remaining() == {new.pk}
        assert not default_storage.exists(old_file)
        assert default_storage.exists(new_file)
        assert list(JobAttempt.objects.values_list("job_id", flat=True)) == [new.pk]
        assert list(JobAudit.objects.values_list("job_id", flat=True)) == [new.pk]
        assert list(ScheduleRun.objects.values_list("job_id", flat=True)) == [new.pk]
        assert (result.attempts, result.audits, result.schedule_runs, result.files) == (1, 1, 1, 1)
        assert str(tmp_path) in default_storage.path(new_file)


def test_every_table_that_points_at_a_job_is_pruned_with_it():
    """A new table with a foreign key to jobs must be handled by the prune (it deletes rows itself)."""
    pointing = {
        rel.related_model for rel in Job._meta.get_fields(include_hidden=True) if rel.auto_created and not rel.concrete
    }
    assert pointing == {JobAttempt, ScheduleRun}


# --- batches ----------------------------------------------------------------------------------------


def test_the_prune_deletes_in_batches_each_its_own_short_transaction():
    for i in range(25):
        old_job(JobStatus.FINISHED, ended=NOW - 40 * DAY - i * MINUTE)
    kept = old_job(JobStatus.FINISHED, ended=NOW - DAY).pk
    seen = []

    def progress(result: retention.PruneResult) -> None:
        # Between batches no transaction is open (nothing holds a lock) and the batch is committed.
        seen.append((result.deleted, connection.in_atomic_block, Job.objects.count()))

    with CaptureQueriesContext(connection) as queries:
        result = retention.prune(policy=policy(), now=NOW, batch_size=10, progress=progress)

    deletes = [q["sql"] for q in queries.captured_queries if re.match(r'DELETE FROM "?jobs_job"? ', q["sql"])]
    assert len(deletes) == 3
    assert result.batches == 3
    assert seen == [(10, False, 16), (20, False, 6), (25, False, 1)]
    assert remaining() == {kept}


# --- the statistics keep their figures ------------------------------------------------------------


def stats_figures(client: APIClient) -> dict[str, Any]:
    body = client.get(STATS).json()
    return {
        "queues": {name: info["counts"] for name, info in body["queues"].items()},
        "totals": body["totals"],
        "processed": body["processed"],
        "failed": body["failed"],
    }


def admin_figures(client: Client) -> dict[str, Any]:
    response = client.get(STATISTICS)
    assert response.status_code == 200
    context = response.context
    return {
        "count_rows": [
            (row["name"], [value for value, _ in row["cells"]], row["total"]) for row in context["count_rows"]
        ],
        "count_totals": [value for value, _ in context["count_totals"]],
        "cards": [(card["label"], card["count"]) for card in context["status_cards"]],
        "grand_total": context["grand_total"],
        "per_minute": context["stats"]["per_minute"],
        "per_hour": context["stats"]["per_hour"],
        "per_type": context["per_type"],
        "slowest": context["slowest"],
        "most_failing": context["most_failing"],
        "minute_chart": (context["minute_chart"].total_processed, context["minute_chart"].total_failed),
        "hour_chart": (context["hour_chart"].total_processed, context["hour_chart"].total_failed),
        "processed": context["stats"]["processed"],
        "failed": context["stats"]["failed"],
    }


def ended(status: str, *, ago: timedelta, ran: float = 2.0, waited: float = 0.5, **fields: Any) -> Job:
    end = timezone.now() - ago
    start = end - timedelta(seconds=ran)
    job = history_row(
        status, attempts=1, enqueued_at=start - timedelta(seconds=waited), started_at=start, ended_at=end, **fields
    )
    Job.objects.filter(pk=job.pk).update(created_at=start - timedelta(seconds=waited))
    return job


@pytest.mark.parametrize("fold_between", [False, True], ids=["deltas pending", "folded"])
def test_every_figure_of_the_statistics_is_the_same_after_a_prune(fold_between, monkeypatch):
    # The charts end at the current minute: on a busy machine the test outlasts one, and the charts
    # would move under it. Everything reads the clock through timezone.now.
    moment = timezone.now()
    monkeypatch.setattr(timezone, "now", lambda: moment)
    # Recent jobs (the charts of the last hour and day) and old ones (the 30-day chart, the counts).
    for _ in range(3):
        ended(JobStatus.FINISHED, ago=timedelta(minutes=5))
    ended(JobStatus.FAILED, ago=timedelta(minutes=7))
    ended(JobStatus.FINISHED, ago=timedelta(hours=3), type="email", queue="high", params=EMAIL, ran=0.2)
    for days in (35, 40, 45):
        ended(JobStatus.FINISHED, ago=timedelta(days=days))
        ended(JobStatus.FINISHED, ago=timedelta(days=days), type="email", queue="high", params=EMAIL)
    for days in (20, 95):
        ended(JobStatus.FAILED, ago=timedelta(days=days), type="email", queue="high", params=EMAIL)
    ended(JobStatus.CANCELED, ago=timedelta(days=31))
    ended(JobStatus.LOST, ago=timedelta(days=100), queue="high")
    services.job_enqueue(type="example")
    services.job_enqueue(type="example", delay_seconds=600)
    if fold_between:
        stats.fold()
    user = viewer_user()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")
    admin = Client()
    admin.force_login(user)
    before_api, before_admin = stats_figures(api), admin_figures(admin)
    assert before_api["totals"]["total"] == 17
    assert before_admin["hour_chart"][0] >= 5  # the recent ones and those of 20 days ago are on the chart
    changelist = admin.get(CHANGELIST, {"status": "finished"})
    assert "10 jobs" in changelist.content.decode()

    result = retention.prune(policy=policy())

    assert result.deleted == 6 + 1 + 1 + 1  # finished 35-45 days, canceled 31, failed 95, lost 100
    assert Job.objects.count() == 8
    assert stats_figures(api) == before_api
    assert admin_figures(admin) == before_admin
    stats.fold()
    assert stats_figures(api) == before_api
    assert admin_figures(admin) == before_admin
    assert not JobCountDelta.objects.exists()
    # The list counts the rows there are; the statistics say how many pruned jobs they count.
    changelist = admin.get(CHANGELIST, {"status": "finished"})
    assert "4 jobs" in changelist.content.decode()
    assert "9 pruned jobs are still counted in the statistics." in admin.get(STATISTICS).content.decode()
    assert api.get(STATS).json()["history"]["pruned"] == 9


# --- the command ------------------------------------------------------------------------------------


def test_the_command_says_what_would_go_on_a_dry_run_then_prunes_with_a_progress_bar():
    for i in range(12):
        old_job(JobStatus.FINISHED, ended=timezone.now() - 40 * DAY - i * MINUTE)
    for i in range(3):
        old_job(JobStatus.FAILED, ended=timezone.now() - 100 * DAY - i * MINUTE, type="email", params=EMAIL)
    old_job(JobStatus.FAILED, ended=timezone.now() - 40 * DAY)  # failures are kept 90 days

    out, err = io.StringIO(), io.StringIO()
    call_command("prunehistory", "--dry-run", "--keep-last=0", stdout=out, stderr=err)
    assert Job.objects.count() == 16
    text = out.getvalue()
    assert "Would delete 15 jobs (finished 12, failed 3) of 15 past their age." in text
    assert "By type: example 12, email 3." in text

    out, err = io.StringIO(), io.StringIO()
    call_command("prunehistory", "--batch-size=5", "--keep-last=2", stdout=out, stderr=err)
    # Kept: the recent failure, and the 2 newest ended jobs of each type (for example: that failure
    # and the newest finished one).
    assert Job.objects.count() == 1 + 1 + 2
    text = out.getvalue()
    assert "Deleted 12 jobs (finished 11, failed 1) in 3 batches" in text, text
    assert "Kept whatever their age: 3 as the newest of their type, 0 as the newest of their schedule." in text
    bar = err.getvalue().splitlines()
    assert bar[-1].startswith("[##############################] 100%  15/15 examined, 12 deleted"), bar
    assert len(bar) >= 2


def test_the_command_refuses_a_negative_age():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="finished_days must be 0 or more"):
        call_command("prunehistory", "--finished-days=-1", stdout=io.StringIO())


# --- the scheduler prunes once a day ---------------------------------------------------------------


@override_settings(JOBS_RETENTION_HOUR=3, TIME_ZONE="Europe/Berlin", JOBS_RETENTION_KEEP_LAST=0)
def test_the_daily_prune_runs_once_a_day_after_its_hour(redis_db):
    berlin = ZoneInfo("Europe/Berlin")
    old_job(JobStatus.FINISHED, ended=NOW - 40 * DAY)
    redis_db.set(retention.LAST_RUN_KEY, datetime(2026, 12, 9, 3, 0, 5, tzinfo=berlin).timestamp())

    assert retention.prune_if_due(redis_db, now=datetime(2026, 12, 10, 2, 59, tzinfo=berlin)) is None
    assert Job.objects.count() == 1
    done = retention.prune_if_due(redis_db, now=datetime(2026, 12, 10, 3, 0, tzinfo=berlin))
    assert done is not None
    assert done.deleted == 1
    old_job(JobStatus.FINISHED, ended=NOW - 40 * DAY)
    # Already done today (by this scheduler or another): not again before tomorrow's hour.
    assert retention.prune_if_due(redis_db, now=datetime(2026, 12, 10, 23, 0, tzinfo=berlin)) is None
    assert Job.objects.count() == 1
    assert retention.prune_if_due(redis_db, now=datetime(2026, 12, 11, 3, 0, 1, tzinfo=berlin)) is not None
    assert Job.objects.count() == 0


@override_settings(JOBS_RETENTION_HOUR=-1)
def test_no_daily_prune_when_its_hour_is_off(redis_db):
    old_job(JobStatus.FINISHED, ended=timezone.now() - 40 * DAY)
    assert retention.prune_if_due(redis_db) is None
    assert Job.objects.count() == 1


@pytest.mark.slow
def test_the_active_scheduler_prunes_and_the_standby_does_not(processes, redis_db):
    doomed = {old_job(JobStatus.FINISHED, ended=timezone.now() - 40 * DAY - i * MINUTE).pk for i in range(5)}
    kept = old_job(JobStatus.FINISHED, ended=timezone.now() - DAY).pk
    settings_env = {"JOBS_RETENTION_HOUR": str(timezone.localtime().hour), "JOBS_RETENTION_KEEP_LAST": "0"}
    first = processes.scheduler(**settings_env)
    second = processes.scheduler(**settings_env)

    wait_for(lambda: not Job.objects.filter(pk__in=doomed).exists(), timeout=30, message="the daily prune")
    assert remaining() == {kept}
    assert redis_db.get(retention.LAST_RUN_KEY) is not None
    logs = processes.log(first) + processes.log(second)
    wait_for(lambda: "jobs pruned" in processes.log(first) + processes.log(second), message="the prune's log line")
    logs = processes.log(first) + processes.log(second)
    assert logs.count("retention: 5 jobs pruned") == 1, logs


# --- the API and the admin say how far back the history goes ---------------------------------------


@override_settings(JOBS_RETENTION_FINISHED_DAYS=14, JOBS_RETENTION_FAILED_DAYS=60, JOBS_RETENTION_KEEP_LAST=50)
def test_the_api_and_the_admin_say_how_far_back_the_history_goes():
    oldest = old_job(JobStatus.FAILED, ended=timezone.now() - 50 * DAY)
    old_job(JobStatus.FINISHED, ended=timezone.now() - DAY)
    user = viewer_user()
    api = APIClient()
    api.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=user).key}")

    history = api.get(STATS).json()["history"]

    assert history == {
        "since": history["since"],
        "finished_days": 14,
        "failed_days": 60,
        "canceled_days": 30,
        "keep_last": 50,
        "pruned": 0,
    }
    assert datetime.fromisoformat(history["since"]) == oldest.created_at
    admin = Client()
    admin.force_login(user)
    shown = timezone.localtime(oldest.created_at).strftime("%Y-%m-%d %H:%M")
    expected = (
        "History kept: finished 14 days, failed 60 days, canceled 30 days; the newest 50 jobs of each type "
        'and schedule whatever their age; oldest job <time datetime="'
    )
    for page in (CHANGELIST, STATISTICS):
        html = admin.get(page).content.decode()
        assert expected in html, page
        assert f">{shown}</time>." in html


def test_terminal_statuses_all_have_an_age():
    assert {s for group in retention.AGE_GROUPS.values() for s in group} == set(TERMINAL)
