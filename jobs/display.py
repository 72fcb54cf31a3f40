"""How jobs look, shared by the admin and the Jobs page: badges, times, durations, a job's page."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.html import format_html

from jobs import permissions, registry, selectors
from jobs.models import Job
from jobs.statuses import STATUS_TONE, JobStatus


def badge(status: str) -> str:
    return format_html(
        '<span class="job-badge tone-{}">{}</span>', STATUS_TONE.get(status, "muted"), JobStatus(status).label
    )


def when(moment: datetime | None) -> str:
    """A time in the current time zone, short: the date only when it is not today; the full time on hover."""
    if moment is None:
        return "-"
    local = timezone.localtime(moment)
    today = timezone.localdate()
    short = local.strftime("%H:%M:%S") if local.date() == today else local.strftime("%b %d, %H:%M")
    return format_html(
        '<time datetime="{}" title="{}">{}</time>', local.isoformat(), local.strftime("%Y-%m-%d %H:%M:%S %Z"), short
    )


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def params_shown(job: Job) -> Any:
    """A job's params as a person may see them: secret ones read "********" (`JobType.masked`)."""
    return registry.masked_params(job.type, job.params)


def job_context(job: Job, user: Any) -> dict[str, Any]:
    """What a job's page shows besides the row: timeline with waits, audit, actions, formatted JSON
    (secret params masked: `params_shown`)."""
    attempts = list(job.attempt_set.all())
    timeline = []
    for attempt in attempts:
        duration = (
            (attempt.ended_at - attempt.started_at).total_seconds() if attempt.started_at and attempt.ended_at else None
        )
        wait = (attempt.retry_at - attempt.ended_at).total_seconds() if attempt.retry_at and attempt.ended_at else None
        timeline.append({"attempt": attempt, "duration": human_seconds(duration), "wait": human_seconds(wait)})
    result = job.result
    download = result.get("download_url") if isinstance(result, dict) else None
    return {
        "badge": badge(job.status),
        "params_json": json.dumps(params_shown(job), indent=2, ensure_ascii=False, sort_keys=True),
        "result_json": None if result is None else json.dumps(result, indent=2, ensure_ascii=False),
        "download_url": download if isinstance(download, str) and download.startswith("/") else None,
        "timeline": timeline,
        "audit": selectors.job_audit(job_id=job.pk, limit=50),
        "actions": [action for action in permissions.actions_for(user, job.status) if action != "remove"],
        "may_remove": "remove" in permissions.actions_for(user, job.status),
        "run_time": human_seconds(job.duration),
        "live": job.status in (JobStatus.STARTED, JobStatus.QUEUED, JobStatus.PENDING),
    }
