"""Schedules: their timing at any instant (a controllable clock), their runs with the real Redis and
database, exactly once under concurrent schedulers, the admin and the API."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.contrib.auth.models import User
from django.db import connections
from django.test import Client, override_settings
from django.utils import timezone
from rest_framework.test import APIClient

from jobs import queues, schedules, services, timing
from jobs.errors import InvalidJobRequest
from jobs.models import Job, JobAudit, Schedule, ScheduleRun
from jobs.rqstore import MirroredJob
from jobs.scheduler import Scheduler
from jobs.statuses import JobStatus
from tests.conftest import wait_for
from tests.helpers import OPERATORS, VIEWERS, make_user

BERLIN = ZoneInfo("Europe/Berlin")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# --- timing: pure, at any instant ------------------------------------------------------------------


def due_times(spec: timing.Timing, start: datetime, end: datetime) -> list[datetime]:
    found, moment = [], start
    while (moment := spec.next_after(moment)) is not None and moment <= end:  # type: ignore[assignment]
        found.append(moment)
    return found


@pytest.mark.parametrize(
    ("first_day", "change"),
    [(utc(2026, 3, 26), "spring forward, 29 March"), (utc(2026, 10, 22), "fall back, 25 October")],
)
def test_every_day_at_0230_berlin_runs_once_on_each_day_around_a_clock_change(first_day, change):
    spec = timing.Timing(cron="30 2 * * *", timezone="Europe/Berlin")
    runs = due_times(spec, first_day, first_day + timedelta(days=7))
    days = [run.astimezone(BERLIN).date() for run in runs]
    assert len(runs) == 7, runs
    assert len(set(days)) == 7, runs
    walls = [f"{run.astimezone(BERLIN):%H:%M}" for run in runs]
    if change.startswith("spring"):
        # 02:30 does not exist on 29 March: it runs an hour later by the new clock, once.
        assert walls == ["02:30", "02:30", "02:30", "03:30", "02:30", "02:30", "02:30"]
    else:
        # 02:30 happens twice on 25 October: it runs at the first, in summer time.
        assert walls == ["02:30"] * 7
        assert runs[3] == utc(2026, 10, 25, 0, 30)


def test_an_interval_counts_from_its_start_and_stops_at_its_end():
    spec = timing.Timing(every=90, start=utc(2026, 1, 1, 12), end=utc(2026, 1, 1, 12, 5))
    assert due_times(spec, utc(2026, 1, 1), utc(2026, 1, 2)) == [
        utc(2026, 1, 1, 12) + timedelta(seconds=90 * n) for n in range(4)
    ]
    assert spec.latest_at_or_before(utc(2026, 1, 1, 12, 4)) == utc(2026, 1, 1, 12, 3)
    assert spec.latest_at_or_before(utc(2026, 1, 1, 11)) is None


@pytest.mark.parametrize(
    ("kwargs", "field", "text"),
    [
        ({"cron": "61 * * * *"}, "cron", "not a cron expression"),
        ({"cron": "* * *"}, "cron", "five fields"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone", "unknown time zone"),
        ({"every": 0, "anchor": utc(2026, 1, 1)}, "every", "at least one second"),
        ({}, "cron", "one of the two"),
        ({"cron": "* * * * *", "every": 5}, "cron", "one of the two"),
    ],
)
def test_a_timing_that_cannot_be_used_is_refused_naming_its_field(kwargs, field, text):
    with pytest.raises(timing.InvalidTiming, match=text) as caught:
        timing.Timing(**kwargs)
    assert caught.value.field == field


def test_a_run_late_by_more_than_a_minute_follows_the_missed_run_policy():
    spec = timing.Timing(cron="0 * * * *")
    due = utc(2026, 5, 1, 10)
    on_time = timing.plan(spec, due, due + timedelta(seconds=3), timing.SKIP)
    assert (on_time.run_for, on_time.next_due, on_time.missed) == (due, utc(2026, 5, 1, 11), False)
    # The scheduler was away three hours: one run for the latest due time, or none.
    back = utc(2026, 5, 1, 13, 20)
    once = timing.plan(spec, due, back, timing.RUN_ONCE)
    assert (once.run_for, once.next_due, once.missed) == (utc(2026, 5, 1, 13), utc(2026, 5, 1, 14), True)
    skip = timing.plan(spec, due, back, timing.SKIP)
    assert (skip.run_for, skip.next_due, skip.missed) == (None, utc(2026, 5, 1, 14), True)
    assert timing.plan(spec, due, due - timedelta(seconds=1), timing.SKIP).run_for is None


# --- runs, with the real Redis and database ----------------------------------------------------------


pytestmark = pytest.mark.django_db(transaction=True)


def make_schedule(**fields: Any) -> Schedule:
    values: dict[str, Any] = {"name": "tick", "type": "example", "params": {"duration": 0}, "timezone": "UTC"}
    values.update(fields)
    if "every" not in fields and "cron" not in fields:
        values["cron"] = "*/5 * * * *"
    schedule = Schedule(**values)
    if "created_at" in fields:
        schedule.created_at = fields["created_at"]
    return schedules.schedule_save(schedule=schedule)


def jobs_of(schedule: Schedule) -> list[Job]:
    return list(Job.objects.filter(pk__in=schedule.runs.values("job_id")).order_by("created_at"))


def test_a_cron_schedule_creates_one_job_per_due_time_through_the_services(redis_db):
    schedule = make_schedule()
    first = schedule.next_due_at
    assert first is not None
    assert first.minute % 5 == 0

    assert schedules.run_due(now=first - timedelta(seconds=1)) == 0
    assert schedules.run_due(now=first) == 1
    assert schedules.run_due(now=first + timedelta(seconds=30)) == 0  # not due again until +5 min
    assert schedules.run_due(now=first + timedelta(minutes=5, seconds=2)) == 1

    runs = list(schedule.runs.order_by("due_at"))
    assert [run.due_at for run in runs] == [first, first + timedelta(minutes=5)]
    jobs = jobs_of(schedule)
    assert [job.type for job in jobs] == ["example", "example"]
    assert {job.status for job in jobs} == {JobStatus.QUEUED}  # dispatched to Redis on commit
    assert set(queues.get_queue("default").get_job_ids()) == {job.rq_id for job in jobs}
    audit = JobAudit.objects.get(job_id=jobs[0].pk)
    assert (audit.action, audit.via) == ("create", JobAudit.Via.SCHEDULE)
    assert audit.note == f"schedule 'tick', due {first:%Y-%m-%d %H:%M:%S} UTC"


@pytest.mark.parametrize(("policy", "made"), [(Schedule.Missed.ONCE, 1), (Schedule.Missed.SKIP, 0)])
def test_runs_missed_while_no_scheduler_ran_follow_the_schedules_policy(redis_db, policy, made):
    schedule = make_schedule(missed=policy)
    first = schedule.next_due_at
    assert first is not None
    back = first + timedelta(hours=2, minutes=2)  # 25 due times passed, the last 2 minutes ago

    assert schedules.run_due(now=back) == made
    schedule.refresh_from_db()
    assert schedule.next_due_at == first + timedelta(hours=2, minutes=5)
    assert len(jobs_of(schedule)) == made
    if made:
        run = schedule.runs.get()
        assert (run.due_at, run.missed) == (first + timedelta(hours=2), True)


@pytest.mark.parametrize(
    ("first_day", "walls"),
    [
        # 02:30 does not exist on 29 March: its run is at 03:30 by the new clock.
        (utc(2026, 3, 28), ["02:30 CET", "03:30 CEST", "02:30 CEST"]),
        # 02:30 happens twice on 25 October: one run, at the first (summer time).
        (utc(2026, 10, 24), ["02:30 CEST", "02:30 CEST", "02:30 CET"]),
    ],
    ids=["spring forward", "fall back"],
)
def test_every_day_at_0230_berlin_makes_one_run_a_day_across_a_clock_change(redis_db, first_day, walls):
    schedule = make_schedule(name="nightly", cron="30 2 * * *", timezone="Europe/Berlin", missed=Schedule.Missed.SKIP)
    # As if made the evening before: the scheduler's rounds then come every ten minutes for three days.
    Schedule.objects.filter(pk=schedule.pk).update(next_due_at=schedules.timing_of(schedule).next_after(first_day))
    moment = first_day
    while moment < first_day + timedelta(days=3):
        moment += timedelta(minutes=10)
        schedules.run_due(now=moment)

    runs = list(schedule.runs.order_by("due_at"))
    assert [f"{run.due_at.astimezone(BERLIN):%H:%M %Z}" for run in runs] == walls
    assert [run.due_at.astimezone(BERLIN).date() for run in runs] == [
        (first_day + timedelta(days=day)).date() for day in range(3)
    ]
    assert not any(run.missed for run in runs)  # each made at its time (a late one would be skipped)
    assert len(jobs_of(schedule)) == 3


def test_an_edit_or_a_disable_is_followed_at_the_next_tick(redis_db):
    schedule = make_schedule()
    first = schedule.next_due_at
    assert first is not None
    schedules.schedules_enable(schedules=[schedule], enabled=False)
    assert schedules.run_due(now=first) == 0
    assert Schedule.objects.get(pk=schedule.pk).next_due_at is None

    schedule.refresh_from_db()
    schedule.enabled, schedule.cron, schedule.every = True, "", 60
    schedules.schedule_save(schedule=schedule)
    now = timezone.now()
    assert schedule.next_due_at is not None
    assert now < schedule.next_due_at <= now + timedelta(seconds=60)
    assert schedules.run_due(now=schedule.next_due_at) == 1
    Schedule.objects.filter(pk=schedule.pk).delete()
    assert schedules.run_due(now=schedule.next_due_at + timedelta(minutes=5)) == 0


def test_two_schedulers_running_the_same_due_schedules_at_once_make_each_run_once(redis_db):
    made = [make_schedule(name=f"s{index:03d}", every=60) for index in range(60)]
    due = max(schedule.next_due_at for schedule in made if schedule.next_due_at)
    counts: list[int] = []

    def scheduler() -> None:
        try:
            counts.append(schedules.run_due(now=due))
        finally:
            connections.close_all()

    for _ in range(3):  # three rounds of the same due times: the later rounds find nothing
        threads = [threading.Thread(target=scheduler) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert ScheduleRun.objects.count() == 60, counts
    assert sum(counts) == 60
    assert Job.objects.count() == 60
    assert len(queues.get_queue("default").get_job_ids()) == 60


def test_a_due_time_already_claimed_makes_no_second_job(redis_db):
    schedule = make_schedule()
    first = schedule.next_due_at
    ScheduleRun.objects.create(schedule=schedule, due_at=first)  # another scheduler's run, committed
    assert schedules.run_due(now=first) == 0
    assert Job.objects.count() == 0
    assert Schedule.objects.get(pk=schedule.pk).next_due_at == first + timedelta(minutes=5)


def test_a_schedule_is_refused_with_a_message_per_bad_field():
    with pytest.raises(InvalidJobRequest) as caught:
        schedules.schedule_save(
            schedule=Schedule(
                name="bad", type="example", params={"duration": "soon"}, cron="0 25 * * *", timezone="Nowhere/Land"
            )
        )
    errors = caught.value.errors
    assert "not a cron expression" in errors["cron"][0]
    assert "duration: Input should be a valid number" in errors["params"][0]
    assert not Schedule.objects.exists()
    with pytest.raises(InvalidJobRequest, match="unknown time zone"):
        schedules.schedule_save(schedule=Schedule(name="bad", type="example", cron="* * * * *", timezone="Mars/X"))


def test_schedules_declared_in_code_appear_keep_their_enabled_flag_and_go_when_removed():
    declared = [{"name": "nightly", "type": "example", "cron": "30 2 * * *", "timezone": "Europe/Berlin"}]
    (nightly,) = schedules.sync_declared(declared)
    assert (nightly.declared, nightly.cron, nightly.enabled) == (True, "30 2 * * *", True)
    schedules.schedules_enable(schedules=[nightly], enabled=False)
    schedules.sync_declared([{**declared[0], "cron": "45 3 * * *"}])
    nightly.refresh_from_db()
    assert (nightly.cron, nightly.enabled) == ("45 3 * * *", False)
    schedules.sync_declared([])
    assert not Schedule.objects.exists()


def test_a_schedules_job_gets_its_types_retry_policy(redis_db):
    schedule = make_schedule(
        name="digest", type="email", params={"to": "ops@example.com", "subject": "Digest", "body": "..."}
    )
    assert schedule.next_due_at is not None
    assert schedules.run_due(now=schedule.next_due_at) == 1
    (job,) = jobs_of(schedule)
    assert (job.type, job.queue, job.max_attempts) == ("email", "high", 5)  # email: RetryPolicy(max_attempts=5)
    stored = MirroredJob.fetch(str(job.pk), connection=queues.redis(), serializer=queues.SERIALIZER)
    assert stored.retries_left == 4


DECLARED = {"name": "each 5 min", "type": "example", "params": {"duration": 0}, "cron": "*/5 * * * *"}


@pytest.mark.parametrize(
    ("policy", "down", "made", "missed"),
    [
        # The leader died at the due time; a scheduler takes over 15 s later.
        (Schedule.Missed.ONCE, timedelta(0), 1, False),
        (Schedule.Missed.SKIP, timedelta(0), 1, False),  # a run on time is always made
        # No scheduler ran for two hours; one starts two minutes after a due time.
        (Schedule.Missed.ONCE, timedelta(hours=2), 1, True),
        (Schedule.Missed.SKIP, timedelta(hours=2), 0, True),
    ],
    ids=["takeover-once", "takeover-skip", "down-once", "down-skip"],
)
def test_a_declared_schedule_due_while_no_scheduler_ran_follows_its_policy_after_a_start(
    redis_db, policy, down, made, missed
):
    declared = [{**DECLARED, "timezone": "UTC", "missed": policy}]
    schedules.sync_declared(declared)  # the last scheduler's start
    latest = timezone.now().replace(second=0, microsecond=0)
    latest -= timedelta(minutes=latest.minute % 5)  # the last due time
    # Its next run time was then, or two hours before; no scheduler made the run.
    Schedule.objects.filter(name=DECLARED["name"]).update(next_due_at=latest - down)

    schedules.sync_declared(declared)  # the next scheduler's first round
    assert Schedule.objects.get(name=DECLARED["name"]).next_due_at == latest - down
    back = latest + (timedelta(minutes=2) if down else timedelta(seconds=15))
    assert schedules.run_due(now=back) == made
    schedule = Schedule.objects.get(name=DECLARED["name"])
    assert [(run.due_at, run.missed) for run in schedule.runs.all()] == ([(latest, missed)] if made else [])
    assert len(jobs_of(schedule)) == made
    assert schedule.next_due_at == latest + timedelta(minutes=5)  # then as usual

    # A change of its timing in code sets its next run time anew, as an edit in the admin does.
    schedules.sync_declared([{**declared[0], "cron": "0 3 * * *"}])
    schedule.refresh_from_db()
    assert schedule.next_due_at == timing.Timing(cron="0 3 * * *").next_after(timezone.now())


def test_a_declared_start_and_end_are_read_as_iso_8601_in_the_schedules_zone():
    (later, berlin) = schedules.sync_declared(
        [
            {**DECLARED, "name": "later", "every": 60, "cron": "", "start_at": "2027-01-01T00:00:00+00:00"},
            {
                **DECLARED,
                "name": "berlin",
                "timezone": "Europe/Berlin",
                "start_at": "2027-07-01T09:00",
                "end_at": "2027-07-02 09:00:00",
            },
        ]
    )
    assert (later.start_at, later.next_due_at, later.end_at) == (utc(2027, 1, 1), utc(2027, 1, 1), None)
    # Without an offset: the schedule's own zone (summer time in Berlin, UTC+2).
    berlin.refresh_from_db()
    assert (berlin.start_at, berlin.end_at) == (utc(2027, 7, 1, 7), utc(2027, 7, 2, 7))
    assert berlin.next_due_at == utc(2027, 7, 1, 7)


def test_a_bad_declared_start_is_refused_by_name_and_the_other_declared_schedules_apply(redis_db, caplog):
    declared = [
        {**DECLARED, "name": "good"},
        {**DECLARED, "name": "bad start", "start_at": "next Monday"},
        {**DECLARED, "name": "bad end", "end_at": 1767225600},
    ]
    with pytest.raises(InvalidJobRequest) as caught:
        schedules.sync_declared(declared)
    errors = caught.value.errors
    assert "is not a date and time in ISO 8601" in errors["JOBS_SCHEDULES 'bad start'.start_at"][0]
    assert "is not a date and time" in errors["JOBS_SCHEDULES 'bad end'.end_at"][0]
    assert list(Schedule.objects.values_list("name", flat=True)) == ["good"]

    # The scheduler says so in its log, and goes on with the others.
    Schedule.objects.all().delete()
    with override_settings(JOBS_SCHEDULES=declared), caplog.at_level(logging.ERROR, logger="jobs.scheduler"):
        Scheduler(tick=1.0, reconcile_every=3600).run_once()
    assert "JOBS_SCHEDULES 'bad start'.start_at" in caplog.text
    assert list(Schedule.objects.values_list("name", flat=True)) == ["good"]


# --- the admin and the API ----------------------------------------------------------------------------


def staff(name: str, groups: tuple[str, ...]) -> User:
    user = make_user(name, groups=groups)
    user.is_staff = True
    user.save()
    return user


@pytest.fixture
def operator() -> Client:
    client = Client()
    client.force_login(staff("otto", (OPERATORS,)))
    return client


def form_data(**fields: Any) -> dict[str, Any]:
    data = {
        "name": "nightly report",
        "type": "example",
        "params": '{"duration": 0}',
        "queue": "",
        "cron": "30 2 * * *",
        "every": "",
        "timezone": "Europe/Berlin",
        "missed": "once",
        "enabled": "on",
    }
    data.update(fields)
    return data


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"cron": "30 26 * * *"}, "is not a cron expression"),
        ({"timezone": "Europe/Atlantis"}, "unknown time zone"),
        ({"params": '{"duration": "forever"}'}, "duration: Input should be a valid number"),
        ({"cron": ""}, "give a cron expression or an interval"),
    ],
)
def test_the_admin_refuses_a_bad_expression_zone_or_params_with_a_message(operator, fields, message):
    response = operator.post("/admin/jobs/schedule/add/", form_data(**fields))
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not Schedule.objects.exists()


def test_the_admin_makes_a_schedule_shows_its_next_run_in_its_zone_and_runs_it_now(operator, redis_db):
    response = operator.post("/admin/jobs/schedule/add/", form_data())
    assert response.status_code == 302, response.content.decode()[:2000]
    schedule = Schedule.objects.get()
    assert schedule.next_due_at is not None
    assert f"{schedule.next_due_at.astimezone(BERLIN):%H:%M}" == "02:30"

    listing = operator.get("/admin/jobs/schedule/").content.decode()
    assert "02:30 CE" in listing  # CET or CEST, by the season

    response = operator.post(
        "/admin/jobs/schedule/", {"action": "run_now", "_selected_action": [schedule.pk]}, follow=True
    )
    assert "1 job(s) created." in response.content.decode()
    job = Job.objects.get()
    assert job.status == JobStatus.QUEUED
    audit = JobAudit.objects.get(job_id=job.pk)
    assert (audit.via, audit.username, audit.note) == (JobAudit.Via.ADMIN, "otto", "schedule 'nightly report', run now")
    page = operator.get(f"/admin/jobs/schedule/{schedule.pk}/change/").content.decode()
    assert f"/admin/jobs/job/{job.pk}/change/" in page
    assert "run now" in page

    operator.post("/admin/jobs/schedule/", {"action": "disable", "_selected_action": [schedule.pk]})
    schedule.refresh_from_db()
    assert (schedule.enabled, schedule.next_due_at) == (False, None)


def test_declared_schedules_appear_in_the_admin_once_a_scheduler_was_active(operator, redis_db):
    assert "nightly digest" not in operator.get("/admin/jobs/schedule/").content.decode()
    declared = [{"name": "nightly digest", "type": "example", "cron": "30 2 * * *", "timezone": "Europe/Berlin"}]
    with override_settings(JOBS_SCHEDULES=declared):
        Scheduler(tick=1.0, reconcile_every=3600).run_once()  # its first round as the active scheduler
    listing = operator.get("/admin/jobs/schedule/").content.decode()
    assert "nightly digest" in listing
    assert "02:30 CE" in listing
    schedule = Schedule.objects.get()
    page = operator.get(f"/admin/jobs/schedule/{schedule.pk}/change/").content.decode()
    assert "declared in code" in page.lower()


@pytest.fixture
def type_with_a_schedule():
    """A job type declared with its schedule (`job_type(..., schedules=[...])`), unregistered after."""
    from pydantic import BaseModel

    from jobs import registry

    class DigestParams(BaseModel):
        to: str = "team"

    @registry.job_type(
        "test-digest",
        params=DigestParams,
        schedules=[
            {"name": "weekly digest", "cron": "0 8 * * 1", "timezone": "Europe/Berlin", "params": {"to": "ops"}}
        ],
    )
    def digest(params: DigestParams) -> None:
        """Send the digest."""

    yield "test-digest"
    registry._registry.pop("test-digest", None)


def test_a_schedule_declared_next_to_its_job_type_is_made_and_shown_in_the_admin(
    operator, redis_db, type_with_a_schedule
):
    Scheduler(tick=1.0, reconcile_every=3600).run_once()  # its first round as the active scheduler
    schedule = Schedule.objects.get(name="weekly digest")
    assert (schedule.type, schedule.params, schedule.declared) == (type_with_a_schedule, {"to": "ops"}, True)
    assert schedule.next_due_at == timing.Timing(cron="0 8 * * 1", timezone="Europe/Berlin").next_after(timezone.now())
    listing = operator.get("/admin/jobs/schedule/").content.decode()
    assert "weekly digest" in listing
    assert schedules.run_due(now=schedule.next_due_at) == 1
    assert Job.objects.get().params == {"to": "ops"}


def test_the_admin_enable_action_runs_a_disabled_schedule_again_from_its_next_time(operator, redis_db):
    schedule = make_schedule(name="hourly", cron="0 * * * *", enabled=False)
    assert schedule.next_due_at is None
    response = operator.post(
        "/admin/jobs/schedule/", {"action": "enable", "_selected_action": [schedule.pk]}, follow=True
    )
    assert "1 schedule(s) enabled." in response.content.decode()
    schedule.refresh_from_db()
    now = timezone.now()
    assert schedule.enabled
    assert schedule.next_due_at == timing.Timing(cron="0 * * * *").next_after(now)
    assert schedules.run_due(now=schedule.next_due_at) == 1


def test_the_api_lists_schedules_to_viewers_only():
    make_schedule(name="hourly", cron="0 * * * *")
    api = APIClient()
    assert api.get("/api/schedules").status_code in (401, 403)
    api.force_authenticate(make_user("vic", groups=(VIEWERS,)))
    body = api.get("/api/schedules").json()
    (listed,) = body["results"]
    assert (listed["name"], listed["cron"], listed["enabled"]) == ("hourly", "0 * * * *", True)
    assert listed["next_due_at"] is not None
    api.force_authenticate(make_user("nobody"))
    assert api.get("/api/schedules").status_code == 403


@pytest.mark.slow
def test_the_scheduler_process_runs_a_schedule_at_each_due_time_once(processes):
    schedule = make_schedule(name="every second", every=1)
    processes.scheduler()
    wait_for(lambda: schedule.runs.count() >= 4, 30, message="four runs")
    due = list(schedule.runs.order_by("due_at").values_list("due_at", flat=True))
    assert len(set(due)) == len(due)
    assert {(later - earlier).total_seconds() for earlier, later in pairwise(due)} == {1.0}
    assert Job.objects.filter(pk__in=schedule.runs.values("job_id")).count() == len(due)


@pytest.mark.slow
def test_the_scheduler_wakes_for_a_due_time_sooner_than_its_tick(processes):
    """With a tick of a minute, the active scheduler still makes each run of a six-second schedule, and
    promotes a delayed job due between two of them, at its time: it sleeps until the next due time."""
    first = timezone.now().replace(microsecond=0) + timedelta(seconds=12)  # after its first round, mostly
    schedule = make_schedule(name="every six seconds", every=6, start_at=first)
    processes.start("runscheduler", "--tick", "60")
    # Its first run may come late (a scheduler slow to start makes it at its first round); from then on
    # each round is a schedule's run, and the round before a due time knows of it.
    first_run = wait_for(lambda: schedule.runs.order_by("due_at").first(), 60, interval=0.05, message="a run")
    due = first_run.due_at.replace(microsecond=0) + timedelta(seconds=3)
    while (due - timezone.now()).total_seconds() < 3.5:  # created before the round that precedes it
        due += timedelta(seconds=6)
    delayed = services.job_enqueue(type="example", params={"duration": 0}, run_at=due)
    wait_for(lambda: schedule.runs.filter(due_at__gt=due).count() >= 2, 40, interval=0.05, message="more runs")
    runs = list(schedule.runs.filter(due_at__gt=first_run.due_at).order_by("due_at"))
    assert [(run.due_at - runs[0].due_at).total_seconds() for run in runs] == [6 * n for n in range(len(runs))]
    late = [round((run.created_at - run.due_at).total_seconds(), 3) for run in runs]
    # At their time (a busy machine may take a moment to wake a process), not at the next tick a minute later.
    assert max(late) < 2.0, late
    job = wait_for(lambda: Job.objects.filter(pk=delayed.pk, status=JobStatus.QUEUED).first(), 10)
    assert job.enqueued_at is not None
    # A scheduler that did not wake for it would promote it at the next run, 3 s late.
    assert 0 <= (job.enqueued_at - due).total_seconds() < 2.5
