"""A CSV summary of the job history over a time window, stored as a file."""

from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta

from django.db.models import Avg, Count, DurationField, ExpressionWrapper, F
from django.urls import reverse
from django.utils import timezone
from pydantic import BaseModel, Field, model_validator
from rq import get_current_job

from jobs import queues
from jobs.files import save_job_file
from jobs.registry import RetryPolicy, job_type
from jobs.runner import report_progress

REPORT_DIR = "reports"


class ReportParams(BaseModel):
    since: datetime | None = Field(None, description="Start of the window; 24 hours before `until` when empty.")
    until: datetime | None = Field(None, description="End of the window; now when empty.")

    @model_validator(mode="after")
    def window_is_sane(self) -> ReportParams:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"{name} must include a time zone")
        if self.since and self.until and self.since >= self.until:
            raise ValueError("since must be before until")
        return self


def report_path(job_id: str) -> str:
    return f"{REPORT_DIR}/{job_id}.csv"


@job_type("report", params=ReportParams, queue=queues.LOW, retry=RetryPolicy(max_attempts=3, base=30), timeout=1800)
def build_report(params: ReportParams) -> dict[str, object]:
    """Counts jobs by type and status over a time window, as CSV."""
    from jobs.models import Job

    until = params.until or timezone.now()
    since = params.since or until - timedelta(hours=24)
    report_progress(5, "counting")
    rows = (
        Job.objects.filter(created_at__gte=since, created_at__lt=until)
        .values("type", "status")
        .annotate(
            jobs=Count("id"),
            avg_seconds=Avg(ExpressionWrapper(F("ended_at") - F("started_at"), output_field=DurationField())),
        )
        .order_by("type", "status")
    )
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["type", "status", "jobs", "avg_seconds"])
    total = 0
    for row in rows:
        avg = row["avg_seconds"]
        writer.writerow([row["type"], row["status"], row["jobs"], f"{avg.total_seconds():.3f}" if avg else ""])
        total += row["jobs"]
    report_progress(80, "writing")
    current = get_current_job()
    name = report_path(current.id if current else timezone.now().strftime("%Y%m%d%H%M%S%f"))
    stored = save_job_file(name, buffer.getvalue())  # the configured storage: a local folder or S3
    report_progress(100)
    return {
        "since": since.isoformat(),
        "until": until.isoformat(),
        "jobs": total,
        "file": stored,
        "download_url": reverse("jobs:report-download", args=[current.id]) if current else None,
    }
