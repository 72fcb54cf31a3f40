"""The job history: one row per job (also the outbox) and its attempt timeline."""

from __future__ import annotations

import uuid
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import Value
from django.db.models.functions import Cast, Coalesce, Concat, Upper
from django.utils import timezone

from jobs.statuses import AttemptOutcome, JobStatus


class SearchParamsField(models.JSONField):
    """A job's params as search may read them, set from its `type` and `params` whenever the
    row is written (by `save()` and by `jobs.sql`'s bulk writes alike): None when they hold
    no secret, else with every secret masked (`jobs.registry.searchable_params`)."""

    def pre_save(self, model_instance: models.Model, add: bool) -> Any:
        from jobs import registry

        value = registry.searchable_params(getattr(model_instance, "type", ""), getattr(model_instance, "params", None))
        setattr(model_instance, self.attname, value)
        return value


class Job(models.Model):
    """A job's whole life, kept after Redis forgets it.

    The row is written before the job reaches Redis and holds everything needed
    to run it again (type, params, queue), so a retry works even when Redis has
    expired or lost the job. Its id is the RQ job id.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    type = models.CharField(max_length=100)
    queue = models.CharField(max_length=50)
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING)
    progress = models.PositiveSmallIntegerField(default=0)
    progress_message = models.CharField(max_length=200, blank=True)
    #: When the worker reported the progress shown (reports can reach the mirror out of order).
    progress_at = models.DateTimeField(null=True, blank=True, editable=False)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True, help_text="The last attempt's error, one line.")
    traceback = models.TextField(blank=True, help_text="The last attempt's traceback.")
    attempts = models.PositiveIntegerField(default=0, help_text="Attempts started so far.")
    max_attempts = models.PositiveIntegerField(default=1)
    timeout = models.PositiveIntegerField(help_text="Seconds an attempt may run.")

    created_at = models.DateTimeField(auto_now_add=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    scheduled_for = models.DateTimeField(
        null=True, blank=True, help_text="When a delayed job, or the next retry, is due."
    )
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    worker_name = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,  # job_created_by_idx leads with it
    )
    #: The params as search reads them when they hold a secret (masked); None otherwise: see `SEARCH_TEXT`.
    search_params = SearchParamsField(null=True, blank=True, editable=False)
    #: Order of the last transition applied by the mirror (attempt * 4 + phase):
    #: events may arrive twice or out of order, and only newer ones apply.
    mirror_seq = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["-created_at", "-id"], name="job_created_idx"),
            models.Index(fields=["status", "-created_at"], name="job_status_created_idx"),
            models.Index(fields=["type", "status", "-created_at"], name="job_type_status_idx"),
            models.Index(fields=["queue", "status", "-created_at"], name="job_queue_status_idx"),
            models.Index(fields=["created_by", "-created_at"], name="job_created_by_idx"),
            # Only ended jobs: a job is inserted without it, and filters on it are ranges.
            models.Index(fields=["-ended_at"], name="job_ended_idx", condition=models.Q(ended_at__isnull=False)),
        ]

    def __str__(self) -> str:
        return f"{self.type} {self.id} ({self.status})"

    @property
    def rq_id(self) -> str:
        return str(self.id)

    @property
    def duration(self) -> float | None:
        if self.started_at and self.ended_at:
            return (self.ended_at - self.started_at).total_seconds()
        return None


#: What `search` looks through (`Job.objects.alias(search_text=SEARCH_TEXT)`): the params (as
#: `search_params` has them when they hold a secret, so no secret can be found by searching for it)
#: and the error, upper-cased. On PostgreSQL a trigram index is built on this very expression
#: (migration 0010): a query that uses it as it is gets the index.
SEARCH_TEXT = Upper(
    Concat(
        Cast(Coalesce("search_params", "params"), models.TextField()),
        Value("\n"),
        "error",
        output_field=models.TextField(),
    )
)


class JobAttempt(models.Model):
    """One run of a job by a worker: the job's timeline."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="attempt_set")
    number = models.PositiveIntegerField()
    worker_name = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=16, choices=AttemptOutcome.choices, default=AttemptOutcome.RUNNING)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    #: When the job will be tried again after this attempt failed, if it will.
    retry_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["job", "number"]
        constraints = [models.UniqueConstraint(fields=["job", "number"], name="attempt_unique_number")]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.job_id}: {self.outcome}"


class JobCountDelta(models.Model):
    """+1/-1 per status change of a job, written by database triggers (never by code).

    Insert-only, so concurrent writers never wait on one another; the scheduler
    folds these rows into `JobCount` and `JobEndMinute` every few seconds.
    """

    queue = models.CharField(max_length=50)
    status = models.CharField(max_length=16)
    delta = models.IntegerField()
    at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.queue}/{self.status} {self.delta:+d}"


class JobCount(models.Model):
    """How many jobs are in each status, per queue (folded from `JobCountDelta`)."""

    queue = models.CharField(max_length=50)
    status = models.CharField(max_length=16)
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["queue", "status"], name="jobcount_unique")]

    def __str__(self) -> str:
        return f"{self.queue}/{self.status}: {self.count}"


class JobEndMinute(models.Model):
    """How many jobs ended (finished or failed) in each minute, per queue: windowed statistics."""

    minute = models.DateTimeField()
    queue = models.CharField(max_length=50)
    status = models.CharField(max_length=16)
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["minute", "queue", "status"], name="jobendminute_unique")]
        indexes = [models.Index(fields=["minute"], name="jobendminute_minute_idx")]

    def __str__(self) -> str:
        return f"{self.minute:%Y-%m-%d %H:%M} {self.queue}/{self.status}: {self.count}"


class JobRunDelta(models.Model):
    """One row per job that ended (finished or failed), with its run and wait time, written by
    database triggers (migration 0007); `stats.fold()` adds them into `JobEndHour` and deletes them."""

    type = models.CharField(max_length=100)
    queue = models.CharField(max_length=50)
    status = models.CharField(max_length=16)
    run_ms = models.BigIntegerField(null=True)
    wait_ms = models.BigIntegerField(null=True)
    at = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.type} {self.status} at {self.at:%Y-%m-%d %H:%M}"


class RunRollup(models.Model):
    """Jobs that ended, per queue, type and status, with histograms of their run and wait times
    (milliseconds, in `stats.bucket` buckets): what `stats.HourRollup` reads and stores."""

    queue = models.CharField(max_length=50)
    type = models.CharField(max_length=100)
    status = models.CharField(max_length=16)
    count = models.BigIntegerField(default=0)
    run_ms_sum = models.BigIntegerField(default=0)
    run_hist = models.JSONField(default=dict)
    wait_ms_sum = models.BigIntegerField(default=0)
    wait_hist = models.JSONField(default=dict)

    class Meta:
        abstract = True


class JobEndHour(RunRollup):
    """Jobs that ended in each hour: charts and percentiles without reading the history."""

    hour = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["hour", "queue", "type", "status"], name="jobendhour_unique"),
        ]
        indexes = [models.Index(fields=["hour"], name="jobendhour_hour_idx")]

    def __str__(self) -> str:
        return f"{self.hour:%Y-%m-%d %H:00} {self.queue}/{self.type}/{self.status}: {self.count}"


class JobTypeTotal(RunRollup):
    """Every job that ever ended: `stats.fold()` adds the same `JobRunDelta` rows into it as into
    `JobEndHour`, and nothing deletes it (neither the rollups' 90 days nor the history's pruning), so
    the metrics' counters never go down."""

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["queue", "type", "status"], name="jobtypetotal_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.queue}/{self.type}/{self.status}: {self.count}"


class JobAudit(models.Model):
    """Who did what to which job, and when: every action, from the admin, the API, the page or code.

    Kept when the job itself is removed (no foreign key to it).
    """

    class Via(models.TextChoices):
        ADMIN = "admin", "Admin"
        API = "api", "API"
        PAGE = "page", "Jobs page"
        CODE = "code", "Code"
        SCHEDULE = "schedule", "Schedule"

    job_id = models.UUIDField()
    job_type = models.CharField(max_length=100)
    action = models.CharField(max_length=16)
    status_before = models.CharField(max_length=16, help_text="The job's status when the action was taken.")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+", db_index=False
    )
    #: The user's name at the time (kept if the user is deleted).
    username = models.CharField(max_length=150, blank=True)
    via = models.CharField(max_length=16, choices=Via.choices, default=Via.CODE)
    #: More on the action: which schedule, and for which due time, created the job.
    note = models.CharField(max_length=300, blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [
            models.Index(fields=["job_id", "-at"], name="jobaudit_job_idx"),
            models.Index(fields=["-at"], name="jobaudit_at_idx"),
        ]
        verbose_name = "job action"
        verbose_name_plural = "job actions"

    def __str__(self) -> str:
        who = self.username or "someone"
        return f"{who} {self.action} {self.job_type} {self.job_id} via {self.via}"


#: `timezone.now`, under a name a `timezone` field does not hide.
NOW = timezone.now


class Schedule(models.Model):
    """A job created again and again: on a cron expression in a time zone, or every N seconds.

    Run by the active scheduler process (`jobs.schedules`); its timing rules are `jobs.timing`'s.
    """

    class Missed(models.TextChoices):
        ONCE = "once", "Run once"
        SKIP = "skip", "Skip"

    name = models.CharField(max_length=100, unique=True)
    type = models.CharField("job type", max_length=100)
    params = models.JSONField(default=dict, blank=True)
    queue = models.CharField(max_length=50, blank=True, help_text="Empty: the job type's queue.")
    cron = models.CharField(
        max_length=100,
        blank=True,
        help_text="Five fields: minute hour day month weekday, e.g. <code>30 2 * * *</code>.",
    )
    every = models.PositiveIntegerField("interval (seconds)", null=True, blank=True, help_text="Instead of a cron.")
    timezone = models.CharField("time zone", max_length=64, help_text="An IANA name, e.g. Europe/Berlin.")
    enabled = models.BooleanField(default=True)
    start_at = models.DateTimeField(null=True, blank=True, help_text="Nothing runs before.")
    end_at = models.DateTimeField(null=True, blank=True, help_text="Nothing runs after.")
    missed = models.CharField(
        "missed runs",
        max_length=8,
        choices=Missed.choices,
        default=Missed.ONCE,
        help_text="Runs due while no scheduler was running: run once when one is back, or skip them.",
    )
    #: Declared in code (`JOBS_SCHEDULES`): its timing and job are set from there at each start.
    declared = models.BooleanField("declared in code", default=False, editable=False)
    #: The next due time; None when disabled or ended. The scheduler reads the due ones by it.
    next_due_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_due_at = models.DateTimeField(null=True, blank=True, editable=False)
    #: Interval schedules without a start count from here.
    created_at = models.DateTimeField(default=NOW, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        indexes = [
            models.Index(fields=["next_due_at"], name="schedule_due_idx", condition=models.Q(enabled=True)),
        ]

    def __str__(self) -> str:
        return self.name


class ScheduleRun(models.Model):
    """One run of a schedule: the job it created for one due time. Unique per due time, so that a
    run is created once even when two schedulers act at once."""

    schedule = models.ForeignKey(Schedule, on_delete=models.CASCADE, related_name="runs")
    due_at = models.DateTimeField()
    job = models.ForeignKey(Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    missed = models.BooleanField(default=False, help_text="Made for due times missed while no scheduler ran.")
    by_hand = models.BooleanField(default=False, help_text="Run now, from the admin or the API.")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-due_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["schedule", "due_at"], name="schedulerun_once", condition=models.Q(by_hand=False)
            ),
        ]

    def __str__(self) -> str:
        return f"{self.schedule} at {self.due_at:%Y-%m-%d %H:%M:%S}"
