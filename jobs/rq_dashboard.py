"""django-rq's dashboard, read-only in this product.

django-rq's dashboard can requeue, delete, enqueue and stop jobs and empty
queues straight in Redis. The job history would never hear of it, so in this
product the dashboard only shows: every request other than GET and HEAD is
refused, and so are its action pages. Jobs are acted on in the admin's Jobs
pages (or the API), which keep the history right. The same guard covers both
places the dashboard is served: `/django-rq/` and the admin's "Django-RQ" link.

Its job page shows a job's arguments: the product's jobs carry their params there,
secrets included (the worker needs them). The page is drawn with `ShownJob` instead
(templates/django_rq/job_detail.html), whose params are masked as everywhere else
(`jobs.registry.JobType.masked`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse, HttpResponseForbidden, HttpResponseNotAllowed
from django.urls import URLPattern, reverse
from django.utils.html import format_html
from django_rq import views as rq_views
from django_rq.admin import QueueAdmin
from django_rq.models import Dashboard
from django_rq.urls import get_admin_urlpatterns, get_api_urlpatterns
from rq.job import Job as RQJob

from jobs import registry
from jobs.rqstore import RUN_FUNC

View = Callable[..., HttpResponse]

#: django-rq's pages that change jobs or queues in Redis (on POST; on GET they
#: ask for a confirmation that could only be refused, so they are refused at once).
RQ_ACTION_VIEWS: frozenset[Callable[..., Any]] = frozenset(
    {
        rq_views.delete_job,
        rq_views.requeue_job_view,
        rq_views.enqueue_job,
        rq_views.stop_job,
        rq_views.clear_queue,
        rq_views.requeue_all,
        rq_views.delete_failed_jobs,
        rq_views.confirm_action,
        rq_views.actions,
    }
)
READ_ONLY_METHODS = ("GET", "HEAD")


def read_only_refusal(response_class: type[HttpResponse] = HttpResponseForbidden) -> HttpResponse:
    """The short page that says why the dashboard refused, and where to act instead."""
    body = format_html(
        "<!doctype html><title>Read-only</title>"
        "<h1>django-rq's dashboard is read-only here</h1>"
        "<p>Its actions would change jobs in Redis behind the job history's back. "
        'Retry, cancel, stop or remove jobs in the admin\'s <a href="{}">Jobs</a> pages instead, '
        "so the history stays right.</p>",
        reverse("admin:jobs_job_changelist"),
    )
    if response_class is HttpResponseNotAllowed:
        return HttpResponseNotAllowed(READ_ONLY_METHODS, body)
    return response_class(body)


def _refuse(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    return read_only_refusal(HttpResponseForbidden)


def _is_action(view: Callable[..., Any]) -> bool:
    return view in RQ_ACTION_VIEWS or getattr(view, "__wrapped__", None) in RQ_ACTION_VIEWS


def read_only(view: View, login: Callable[[View], View] | None = None) -> View:
    """`view` for GET and HEAD only (405 otherwise); an action page is refused (403)
    once `login` let the user in."""
    target = (login or (lambda refuse: refuse))(_refuse) if _is_action(view) else view

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if request.method not in READ_ONLY_METHODS:
            return read_only_refusal(HttpResponseNotAllowed)
        return target(request, *args, **kwargs)

    return wrapper


def _read_only_patterns(patterns: list[URLPattern], login: Callable[[View], View] | None = None) -> list[URLPattern]:
    return [URLPattern(p.pattern, read_only(p.callback, login), p.default_args, p.name) for p in patterns]


def _dashboard_page(view: View) -> View:
    """A django-rq page under /django-rq/: staff only (the admin's login), read-only."""
    return read_only(admin.site.admin_view(view), admin.site.admin_view)


class ShownJob:
    """An RQ job as django-rq's job page shows it: everything as RQ has it, but the arguments
    of a job the product runs, `(type, params)`, have the type's secret params masked."""

    def __init__(self, rq_job: RQJob):
        self._job = rq_job

    def __getattr__(self, name: str) -> Any:
        return getattr(self._job, name)

    @property
    def args(self) -> tuple[Any, ...]:
        args = tuple(self._job.args or ())
        if self._job.func_name != RUN_FUNC or len(args) != 2:
            return args  # not the product's: no params of a job type
        type_name, params = args
        return (type_name, registry.masked_params(type_name, params))


class ReadOnlyQueueAdmin(QueueAdmin):
    """django-rq's dashboard inside the admin (/admin/django_rq/dashboard/), read-only."""

    def get_urls(self) -> list[URLPattern]:
        return _read_only_patterns(super().get_urls(), self.admin_site.admin_view)


def register_admin() -> None:
    """Serve the admin's copy of the dashboard read-only too (called by jobs.admin)."""
    if admin.site.is_registered(Dashboard):  # RQ_SHOW_ADMIN_LINK
        admin.site.unregister(Dashboard)
        admin.site.register(Dashboard, ReadOnlyQueueAdmin)


urlpatterns = _read_only_patterns(get_api_urlpatterns()) + get_admin_urlpatterns(view_wrapper=_dashboard_page)
