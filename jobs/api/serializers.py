"""What the API reads and writes. Serializers only parse and render: services decide."""

from __future__ import annotations

from typing import Any

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from jobs import queues, registry
from jobs.models import Job, JobAttempt, Schedule
from jobs.services import ACTIONS, JobRequest
from jobs.statuses import JobStatus

MAX_ID = 2**63 - 1


class StrictCharField(serializers.CharField):
    """A string, and only a string (DRF would turn 0 into "0")."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return str(super().to_internal_value(data))


class StrictFloatField(serializers.FloatField):
    """A number, and only a number (DRF would take true as 1)."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        return float(super().to_internal_value(data))


class JobCreateSerializer(serializers.Serializer):
    type = StrictCharField(default="example", max_length=100, help_text="A registered job type.")
    params = serializers.JSONField(
        default=dict, help_text=f"The type's params (see /api/jobs/types); at most {registry.MAX_PARAMS_BYTES} bytes."
    )
    queue = serializers.ChoiceField(
        choices=list(queues.QUEUE_NAMES), required=False, help_text="Override the type's queue."
    )
    delay_seconds = StrictFloatField(required=False, min_value=0, help_text="Run no sooner than this.")
    run_at = serializers.DateTimeField(required=False, help_text="Run no sooner than this time.")

    def to_request(self) -> JobRequest:
        return job_request(self.validated_data)


def job_request(data: dict[str, Any]) -> JobRequest:
    """A validated `JobCreateSerializer` payload as a service request."""
    return JobRequest(
        type=data["type"],
        params=data["params"],
        queue=data.get("queue"),
        delay_seconds=data.get("delay_seconds"),
        run_at=data.get("run_at"),
    )


class JobAttemptSerializer(serializers.ModelSerializer):
    class Meta:
        model = JobAttempt
        fields = ["number", "outcome", "worker_name", "started_at", "ended_at", "error", "traceback", "retry_at"]


_ID_PLACEHOLDER = "00000000-0000-0000-0000-000000000000"


def job_url(job_id: Any) -> str:
    """The job's API address."""
    return _job_url_template().replace(_ID_PLACEHOLDER, str(job_id))


def _job_url_template() -> str:
    # One URL resolve, not one per job (bulk answers list thousands).
    return reverse("jobs-api:job-detail", args=[_ID_PLACEHOLDER])


class JobCreatedSerializer(serializers.Serializer):
    """What a bulk create answers for each job: enough to follow it up."""

    id = serializers.UUIDField()
    url = serializers.SerializerMethodField()
    type = serializers.CharField()
    queue = serializers.CharField()
    status = serializers.CharField()
    scheduled_for = serializers.DateTimeField(allow_null=True)

    def get_url(self, job: Job) -> str:
        return job_url(job.id)

    def to_representation(self, instance: Job) -> dict[str, Any]:
        # The fields above, written out: a bulk answer lists up to 10,000 jobs, and rendering
        # them field by field took longer than creating them.
        template = self.__dict__.get("_url_template")
        if template is None:
            template = self.__dict__["_url_template"] = _job_url_template()
        job_id = str(instance.id)
        scheduled_for = instance.scheduled_for
        return {
            "id": job_id,
            "url": template.replace(_ID_PLACEHOLDER, job_id),
            "type": str(instance.type),
            "queue": str(instance.queue),
            "status": str(instance.status),
            "scheduled_for": None
            if scheduled_for is None
            else self.fields["scheduled_for"].to_representation(scheduled_for),
        }


class ParamsField(serializers.JSONField):
    """A job's params as its readers may see them: secret params shown as "********" (`JobType.masked`)."""

    def __init__(self, **kwargs: Any):
        super().__init__(source="*", read_only=True, **kwargs)

    def to_representation(self, value: Any) -> Any:
        job: Job = value  # source="*": the job itself
        return registry.masked_params(job.type, job.params)


class JobSerializer(serializers.ModelSerializer):
    created_by = serializers.IntegerField(source="created_by_id", allow_null=True, read_only=True)
    params = ParamsField(help_text="The params; secret ones (writeOnly in the type's params schema) read ********.")
    duration = serializers.FloatField(read_only=True, allow_null=True, help_text="Seconds the last attempt ran.")
    url = serializers.SerializerMethodField()

    class Meta:
        model = Job
        fields = [
            "id",
            "url",
            "type",
            "queue",
            "status",
            "progress",
            "progress_message",
            "params",
            "result",
            "error",
            "attempts",
            "max_attempts",
            "timeout",
            "created_at",
            "enqueued_at",
            "scheduled_for",
            "started_at",
            "ended_at",
            "duration",
            "worker_name",
            "created_by",
        ]
        read_only_fields = fields

    def get_url(self, job: Job) -> str:
        return job_url(job.id)


class JobDetailSerializer(JobSerializer):
    timeline = JobAttemptSerializer(source="attempt_set", many=True, read_only=True)

    class Meta(JobSerializer.Meta):
        fields = [*JobSerializer.Meta.fields, "traceback", "timeline"]
        read_only_fields = fields


class JobActionSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=list(ACTIONS))


class JobFilterFieldsSerializer(serializers.Serializer):
    """The list filters, as a JSON object (for bulk actions)."""

    status = serializers.ListField(child=serializers.ChoiceField(choices=JobStatus.choices), required=False)
    type = StrictCharField(required=False)
    queue = serializers.ChoiceField(choices=list(queues.QUEUE_NAMES), required=False)
    created_by = serializers.IntegerField(required=False, min_value=1, max_value=MAX_ID)
    created_after = serializers.DateTimeField(required=False)
    created_before = serializers.DateTimeField(required=False)
    ended_after = serializers.DateTimeField(required=False)
    ended_before = serializers.DateTimeField(required=False)
    search = StrictCharField(required=False, max_length=200)


class JobBulkActionSerializer(serializers.Serializer):
    action = serializers.ChoiceField(choices=list(ACTIONS))
    filters = JobFilterFieldsSerializer(help_text="Which jobs: the same filters as the list.")

    def validate_filters(self, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise serializers.ValidationError("give at least one filter (a bulk action over every job is refused)")
        return value


class JobBulkActionResultSerializer(serializers.Serializer):
    action = serializers.CharField()
    matched = serializers.IntegerField(help_text="Jobs the filters selected.")
    done = serializers.IntegerField(help_text="Jobs the action was applied to.")
    skipped = serializers.IntegerField(help_text="Jobs whose status did not allow the action.")
    skipped_by_status = serializers.DictField(
        child=serializers.IntegerField(), help_text="Skipped jobs by the status that did not allow the action."
    )


class RetryPolicySerializer(serializers.Serializer):
    max_attempts = serializers.IntegerField()
    base = serializers.FloatField()
    factor = serializers.FloatField()
    cap = serializers.FloatField()
    jitter = serializers.FloatField()
    retry_lost = serializers.BooleanField()


class JobTypeSerializer(serializers.Serializer):
    name = serializers.CharField()
    description = serializers.CharField()
    queue = serializers.CharField()
    timeout = serializers.IntegerField()
    retry = RetryPolicySerializer()
    params_schema = serializers.DictField(source="json_schema", help_text="JSON Schema of the params.")


class QueueStateSerializer(serializers.Serializer):
    """A queue's live state, from Redis."""

    workers = serializers.IntegerField(help_text="Workers alive that listen to it.", required=False)
    waiting = serializers.IntegerField(help_text="Jobs on the queue in Redis now.")
    scheduled = serializers.IntegerField(help_text="Delayed jobs and retries waiting for their time.")
    running = serializers.IntegerField()
    paused = serializers.BooleanField()
    oldest_waiting_age = serializers.FloatField(allow_null=True, help_text="Seconds the oldest waiting job waited.")


class QueueHealthSerializer(QueueStateSerializer):
    name = serializers.CharField()


class QueueStatsSerializer(QueueStateSerializer):
    counts = serializers.DictField(child=serializers.IntegerField(), help_text="Jobs per status, and total.")


class WindowSerializer(serializers.Serializer):
    last_hour = serializers.IntegerField()
    last_day = serializers.IntegerField()


class WorkersSerializer(serializers.Serializer):
    alive = serializers.IntegerField()
    busy = serializers.IntegerField()


class WorkerHealthSerializer(serializers.Serializer):
    name = serializers.CharField()
    queues = serializers.ListField(child=serializers.CharField())
    state = serializers.CharField()
    current_job = serializers.CharField(allow_null=True)
    heartbeat_age = serializers.FloatField(allow_null=True, help_text="Seconds since the worker last showed it lives.")
    stale = serializers.BooleanField(help_text="It stopped beating: it died or hangs.")
    successful_jobs = serializers.IntegerField()
    failed_jobs = serializers.IntegerField()


class SchedulerHealthSerializer(serializers.Serializer):
    alive = serializers.BooleanField()
    name = serializers.CharField(allow_null=True)
    lock_expires_in = serializers.FloatField(allow_null=True)


class MirrorHealthSerializer(serializers.Serializer):
    backlog = serializers.IntegerField(help_text="Transitions written by workers and not in the database yet.")
    oldest_age = serializers.FloatField(allow_null=True, help_text="Seconds the oldest of them has waited.")


class FailureRateSerializer(serializers.Serializer):
    last_15_minutes = serializers.FloatField(allow_null=True)
    last_day = serializers.FloatField(allow_null=True)
    failed_last_15_minutes = serializers.IntegerField()


class WarningSerializer(serializers.Serializer):
    code = serializers.ChoiceField(
        choices=["no_worker", "stale_worker", "no_scheduler", "mirror_behind", "failure_spike"]
    )
    message = serializers.CharField()
    queue = serializers.CharField(required=False)


class HealthSerializer(serializers.Serializer):
    workers = WorkerHealthSerializer(many=True)
    scheduler = SchedulerHealthSerializer()
    mirror = MirrorHealthSerializer()
    failure_rate = FailureRateSerializer()
    warnings = WarningSerializer(many=True, help_text="What an operator should look at now.")


class HistorySerializer(serializers.Serializer):
    """How far back the history goes (`JOBS_RETENTION_*`)."""

    since = serializers.DateTimeField(allow_null=True, help_text="When the oldest job kept was created.")
    finished_days = serializers.IntegerField(help_text="Days finished jobs are kept after they end (0: for good).")
    failed_days = serializers.IntegerField(help_text="Days failed, abandoned and lost jobs are kept (0: for good).")
    canceled_days = serializers.IntegerField(help_text="Days canceled and stopped jobs are kept (0: for good).")
    keep_last = serializers.IntegerField(help_text="Newest jobs of each type and schedule kept whatever their age.")
    pruned = serializers.IntegerField(help_text="Jobs pruned from the history that the counts still include.")


class JobStatsSerializer(serializers.Serializer):
    queues = serializers.DictField(child=QueueStatsSerializer())
    totals = serializers.DictField(
        child=serializers.IntegerField(), help_text="Jobs per status, pruned ones included (see history)."
    )
    paused_queues = serializers.ListField(child=serializers.CharField())
    workers = WorkersSerializer()
    processed = WindowSerializer(help_text="Jobs that finished or failed.")
    failed = WindowSerializer()
    history = HistorySerializer()
    health = HealthSerializer()
    generated_at = serializers.DateTimeField()


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField()


class ValidationErrorSerializer(ErrorSerializer):
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()), help_text="Messages by field."
    )


class TokenSerializer(serializers.Serializer):
    token = serializers.CharField()


class ScheduleSerializer(serializers.ModelSerializer):
    """A schedule as the API lists it; its params with secrets masked."""

    params = serializers.SerializerMethodField()

    class Meta:
        model = Schedule
        fields = [
            "id",
            "name",
            "type",
            "params",
            "queue",
            "cron",
            "every",
            "timezone",
            "enabled",
            "missed",
            "start_at",
            "end_at",
            "declared",
            "next_due_at",
            "last_due_at",
        ]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_params(self, schedule: Schedule) -> Any:
        return registry.masked_params(schedule.type, schedule.params)
