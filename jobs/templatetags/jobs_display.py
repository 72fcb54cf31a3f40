"""Template filters for how a status looks (one place: jobs.statuses.STATUS_TONE)."""

from __future__ import annotations

from django import template

from jobs.statuses import STATUS_TONE, JobStatus

register = template.Library()


@register.filter
def tone(status: str) -> str:
    return STATUS_TONE.get(status, "muted")


@register.filter
def status_label(status: str) -> str:
    return str(JobStatus(status).label) if status in JobStatus.values else str(status)
