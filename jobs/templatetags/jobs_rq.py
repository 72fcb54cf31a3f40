"""Template filters for django-rq's dashboard pages (see jobs.rq_dashboard)."""

from __future__ import annotations

from typing import Any

from django import template

from jobs.rq_dashboard import ShownJob

register = template.Library()


@register.filter
def shown_job(rq_job: Any) -> ShownJob:
    """The job as its page may show it: secret params masked."""
    return ShownJob(rq_job)
