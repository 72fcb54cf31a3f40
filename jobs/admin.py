"""The Django admin as the jobs control room.

The admin only parses, calls `jobs.selectors` or `jobs.services`, and renders:

- the jobs list: status badges, progress bars, run time; filters whose
  parameters are the API's own (`status`, `type`, `queue`, `created_by`, plus
  `created` and `ended` periods); search over id, params and error text; counts
  from the status counters, or capped ("10,000+") where no counter answers;
- actions on the selected jobs, or on every job the filter matches, through
  the services (a large filter-wide action runs as a `bulk_action` job);
- "Create job" (the add page): a form built from the type's params schema;
- a job's page: params, result, error and traceback, the attempt timeline,
  live progress, the audit trail, and the buttons its status and your
  permissions allow; "Remove" asks first;
- the statistics view: counts, charts from rollups, per-type figures and queue
  health, refreshing itself.
"""

from __future__ import annotations

import uuid
from datetime import timedelta
from functools import cached_property
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.admin.views.main import ChangeList
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.http import urlencode
from django.views.decorators.http import require_POST

from jobs import charts, permissions, queues, registry, retention, rq_dashboard, selectors, services, stats
from jobs.display import badge, human_seconds, job_context, when
from jobs.errors import ActionNotAllowed, InvalidJobRequest, QueueUnavailable
from jobs.forms import JobCreateForm
from jobs.models import Job, JobAudit
from jobs.statuses import ACTION_DONE, ALLOWED_BY_ACTION, STATUS_TONE, JobStatus

#: A filter-wide action over more jobs than this runs as a job of its own.
INLINE_LIMIT = 1_000
#: Where no counter answers, the list counts at most this many jobs ("10,000+").
COUNT_CAP = 10_000
#: The periods of the "created" and "ended" filters.
PERIODS = {
    "1h": ("Past hour", timedelta(hours=1)),
    "24h": ("Past 24 hours", timedelta(hours=24)),
    "7d": ("Past 7 days", timedelta(days=7)),
    "30d": ("Past 30 days", timedelta(days=30)),
}
#: The changelist parameters the status counters can count exactly.
COUNTED_PARAMS = {"status", "queue"}
#: Changelist parameters that are not filters.
NOT_FILTERS = {"p", "o", "all", "_changelist_filters", "_popup", "_to_field", "e"}
VIA = JobAudit.Via.ADMIN


# --- list filters: their parameters are the selector's own ---------------------------------


class ChoiceListFilter(admin.SimpleListFilter):
    def choices_for(self, request: HttpRequest) -> list[tuple[str, str]]:
        raise NotImplementedError

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return self.choices_for(request)

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        value = self.value()
        if value is None:
            return queryset
        if value not in dict(self.choices_for(request)):
            return queryset.none()
        return queryset.filter(**{str(self.parameter_name): value})


class StatusFilter(ChoiceListFilter):
    title = "status"
    parameter_name = "status"

    def choices_for(self, request: HttpRequest) -> list[tuple[str, str]]:
        return list(JobStatus.choices)


class TypeFilter(ChoiceListFilter):
    title = "type"
    parameter_name = "type"

    def choices_for(self, request: HttpRequest) -> list[tuple[str, str]]:
        return [(name, name) for name in sorted(registry.names())]


class QueueFilter(ChoiceListFilter):
    title = "queue"
    parameter_name = "queue"

    def choices_for(self, request: HttpRequest) -> list[tuple[str, str]]:
        return [(name, name) for name in queues.QUEUE_NAMES]


class CreatedByFilter(admin.SimpleListFilter):
    title = "created by"
    parameter_name = "created_by"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        users = get_user_model().objects.filter(is_active=True).order_by("username")[:100]
        return [(str(user.pk), user.get_username()) for user in users]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        value = self.value()
        if value is None:
            return queryset
        if not str(value).isdigit():
            return queryset.none()
        return queryset.filter(created_by_id=int(value))


class PeriodFilter(admin.SimpleListFilter):
    field_name = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _) in PERIODS.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Job]) -> QuerySet[Job]:
        value = self.value()
        if value is None:
            return queryset
        if value not in PERIODS:
            return queryset.none()
        return queryset.filter(**{f"{self.field_name}__gte": timezone.now() - PERIODS[value][1]})


class CreatedFilter(PeriodFilter):
    title = "created"
    parameter_name = "created"
    field_name = "created_at"


class EndedFilter(PeriodFilter):
    title = "ended"
    parameter_name = "ended"
    field_name = "ended_at"


def selector_filters(params: Any) -> dict[str, Any]:
    """The changelist's query parameters as the jobs list selector's filters (as the API takes them)."""
    filters: dict[str, Any] = {}
    if params.get("status"):
        filters["status"] = [params["status"]]
    for name in ("type", "queue", "created_by"):
        if params.get(name):
            filters[name] = params[name]
    for name, field in (("created", "created_after"), ("ended", "ended_after")):
        if params.get(name) in PERIODS:
            filters[field] = (timezone.now() - PERIODS[params[name]][1]).isoformat()
    if params.get("q", "").strip():
        filters["search"] = params["q"].strip()
    return filters


# --- counting without COUNT(*) over the whole history ---------------------------------------


class JobPaginator(Paginator):
    """A paginator told its count: exact from the status counters, or capped."""

    def __init__(self, *args: Any, count: int, capped: bool, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._known_count = count
        self.capped = capped

    @cached_property
    def count(self) -> int:
        return self._known_count

    @property
    def count_label(self) -> str:
        return f"{self._known_count - 1:,}+" if self.capped else f"{self._known_count:,}"


def count_jobs(params: Any, queryset: QuerySet[Job]) -> tuple[int, bool]:
    """(count, capped): from the counters when only status and queue filter, else at most COUNT_CAP + 1.
    The rows there are: the counters less the pruned jobs they still count (`jobs.retention`)."""
    active = {key for key in params if key not in NOT_FILTERS}
    if active <= COUNTED_PARAMS:
        counts = retention.present_counts(stats.status_counts())
        status, queue = params.get("status"), params.get("queue")
        return (
            sum(
                count
                for queue_name, by_status in counts.items()
                if queue in (None, queue_name)
                for status_name, count in by_status.items()
                if status in (None, status_name)
            ),
            False,
        )
    count = queryset.order_by()[: COUNT_CAP + 1].count()
    return count, count > COUNT_CAP


class JobChangeList(ChangeList):
    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        self.count_label = self.paginator.count_label


# --- the admin ------------------------------------------------------------------------------


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = [
        "short_id",
        "type",
        "queue",
        "status_badge",
        "progress_bar",
        "attempts_shown",
        "created",
        "ended",
    ]
    list_display_links = ["short_id"]
    list_filter = [StatusFilter, TypeFilter, QueueFilter, CreatedByFilter, CreatedFilter, EndedFilter]
    search_fields = ["id"]  # shows the search box; get_search_results searches id, params and error
    search_help_text = "Search a job's id, params and error text."
    sortable_by = ["created"]
    list_per_page = 50
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    actions = ["retry_jobs", "cancel_jobs", "stop_jobs", "promote_jobs", "remove_jobs"]
    change_list_template = "admin/jobs/job/change_list.html"

    class Media:
        css = {"all": ["jobs/jobs.css"]}

    # The list --------------------------------------------------------------------------------

    def get_queryset(self, request: HttpRequest) -> QuerySet[Job]:
        return selectors.job_list()

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Job], search_term: str
    ) -> tuple[QuerySet[Job], bool]:
        if not search_term.strip():
            return queryset, False
        return selectors.JobFilter().filter_search(queryset, "search", search_term[:200]), False

    def get_paginator(self, request: HttpRequest, queryset: Any, per_page: int, *args: Any, **kwargs: Any) -> Any:
        count, capped = count_jobs(request.GET, queryset)
        return JobPaginator(queryset, per_page, count=count, capped=capped)

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return JobChangeList

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # rows are removed through the services only
        return actions

    @admin.display(description="created", ordering="created_at")
    def created(self, job: Job) -> str:
        return when(job.created_at)

    @admin.display(description="ended · ran")
    def ended(self, job: Job) -> str:
        if job.ended_at is None:
            return "-"
        return format_html("{} · {}", when(job.ended_at), human_seconds(job.duration))

    @admin.display(description="job")
    def short_id(self, job: Job) -> str:
        return format_html('<code title="{}">{}</code>', job.id, str(job.id)[:8])

    @admin.display(description="status")
    def status_badge(self, job: Job) -> str:
        return badge(job.status)

    @admin.display(description="progress")
    def progress_bar(self, job: Job) -> str:
        if job.status != JobStatus.STARTED:
            return ""
        return format_html(
            '<div class="job-progress" role="progressbar" aria-valuenow="{0}" aria-valuemin="0" '
            'aria-valuemax="100" title="{1}"><span style="width: {0}%"></span></div>'
            '<small class="job-progress-text">{0} %{2}</small>',
            job.progress,
            job.progress_message,
            f" · {job.progress_message}" if job.progress_message else "",
        )

    @admin.display(description="attempts")
    def attempts_shown(self, job: Job) -> str:
        return f"{job.attempts}/{job.max_attempts}"

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        extra = {
            "title": "Jobs",
            "statistics_url": reverse("admin:jobs_job_statistics"),
            "history": selectors.history_kept(),
            **(extra_context or {}),
        }
        return super().changelist_view(request, extra)

    # Actions ---------------------------------------------------------------------------------

    def _act(self, request: HttpRequest, queryset: QuerySet[Job], action: str) -> HttpResponse | None:
        across = request.POST.get("select_across") == "1"
        if across and queryset.order_by()[: INLINE_LIMIT + 1].count() > INLINE_LIMIT:
            return self._act_in_background(request, action)
        try:
            result = services.jobs_act(jobs=queryset, action=action, user=request.user, via=VIA)
        except QueueUnavailable:
            self.message_user(request, "The queue (Redis) is unavailable: nothing more was done.", messages.ERROR)
            return None
        report_bulk(self, request, result)
        return None

    def _act_in_background(self, request: HttpRequest, action: str) -> HttpResponse | None:
        try:
            job = services.job_enqueue(
                type="bulk_action",
                params={"action": action, "filters": selector_filters(request.GET), "via": VIA},
                user=request.user,
            )
        except (QueueUnavailable, InvalidJobRequest) as exc:
            self.message_user(request, f"Could not start the action: {exc}", messages.ERROR)
            return None
        url = reverse("admin:jobs_job_change", args=[job.pk])
        self.message_user(
            request,
            format_html(
                'More than {} jobs match: they are being {} in the background by <a href="{}">job {}</a>, '
                "which shows its progress and what it did.",
                f"{INLINE_LIMIT:,}",
                ACTION_DONE[action],
                url,
                str(job.pk)[:8],
            ),
            messages.SUCCESS,
        )
        return None

    @admin.action(permissions=["change"], description="Retry the selected jobs")
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> HttpResponse | None:
        return self._act(request, queryset, "retry")

    @admin.action(permissions=["change"], description="Cancel the selected jobs")
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> HttpResponse | None:
        return self._act(request, queryset, "cancel")

    @admin.action(permissions=["change"], description="Stop the selected jobs")
    def stop_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> HttpResponse | None:
        return self._act(request, queryset, "stop")

    @admin.action(permissions=["change"], description="Promote the selected jobs (run now)")
    def promote_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> HttpResponse | None:
        return self._act(request, queryset, "promote")

    @admin.action(permissions=["delete"], description="Remove the selected jobs (from Redis and the history)")
    def remove_jobs(self, request: HttpRequest, queryset: QuerySet[Job]) -> HttpResponse | None:
        if request.POST.get("confirmed") != "yes":
            across = request.POST.get("select_across") == "1"
            count, capped = (
                count_jobs(request.GET, queryset) if across else (len(request.POST.getlist("_selected_action")), False)
            )
            return TemplateResponse(
                request,
                "admin/jobs/job/remove_selected.html",
                {
                    **self.admin_site.each_context(request),
                    "opts": self.opts,
                    "title": "Remove jobs?",
                    "count_label": f"{count - 1:,}+" if capped else f"{count:,}",
                    "selected": request.POST.getlist("_selected_action"),
                    "select_across": "1" if across else "0",
                    "action_checkbox_name": ACTION_CHECKBOX_NAME,
                },
            )
        return self._act(request, queryset, "remove")

    # Pages -----------------------------------------------------------------------------------

    def get_urls(self) -> list[Any]:
        wrap = self.admin_site.admin_view
        return [
            path("statistics/", wrap(self.statistics_view), name="jobs_job_statistics"),
            path(
                "statistics/queues/<str:name>/<str:change>/",
                wrap(require_POST(self.queue_view)),
                name="jobs_job_queue",
            ),
            path("<uuid:object_id>/act/", wrap(require_POST(self.act_view)), name="jobs_job_act"),
            *super().get_urls(),
        ]

    def _job_or_404(self, object_id: Any) -> Job:
        try:
            return selectors.job_get(job_id=object_id)
        except (Job.DoesNotExist, InvalidJobRequest):
            raise Http404("no such job") from None

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """ "Create job": a form built from the chosen type's params schema."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        status = 200
        if request.method == "POST":
            form = JobCreateForm(request.POST)
            try:
                job = form.create(user=request.user)
            except QueueUnavailable:
                form.add_error(None, "The queue (Redis) is unavailable: nothing was created. Try again shortly.")
                job, status = None, 503
            if job is not None:
                self.message_user(request, f"Job {job.type} {job.pk} created.", messages.SUCCESS)
                return HttpResponseRedirect(reverse("admin:jobs_job_change", args=[job.pk]))
            if status == 200:
                status = 400
        else:
            form = JobCreateForm(job_type=request.GET.get("type"))
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Create job",
            "form": form,
            "types": {spec.name: spec.description for spec in registry.all_types()},
        }
        template = "admin/jobs/job/_create_form.html" if request.htmx else "admin/jobs/job/create.html"  # type: ignore[attr-defined]
        return TemplateResponse(request, template, context, status=status)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """A job's page: everything about it, and the actions its status and your permissions allow."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        job = self._job_or_404(object_id)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"Job {job.type} {str(job.pk)[:8]}",
            "job": job,
            **job_context(job, request.user),
        }
        if request.htmx:  # type: ignore[attr-defined]
            return TemplateResponse(request, "admin/jobs/job/_live.html", context)
        return TemplateResponse(request, "admin/jobs/job/detail.html", context)

    def act_view(self, request: HttpRequest, object_id: Any) -> HttpResponse:
        action = request.POST.get("action", "")
        if action not in ALLOWED_BY_ACTION:
            return HttpResponse(f"unknown action {action!r}", status=400, content_type="text/plain")
        if not permissions.may_act(request.user, action):
            raise PermissionDenied
        job = self._job_or_404(object_id)
        change_url = reverse("admin:jobs_job_change", args=[job.pk])
        try:
            services.job_act(job=job, action=action, user=request.user, via=VIA)
        except ActionNotAllowed as exc:
            self.message_user(request, f"Not done: {exc}.", messages.ERROR)
        except QueueUnavailable:
            self.message_user(request, "The queue (Redis) is unavailable: nothing was done. Try again.", messages.ERROR)
        else:
            self.message_user(request, f"Job {str(job.pk)[:8]} {ACTION_DONE[action]}.", messages.SUCCESS)
            if action == "remove":
                return HttpResponseRedirect(reverse("admin:jobs_job_changelist"))
        return HttpResponseRedirect(change_url)

    def delete_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """Remove, after asking: through the services, so Redis and the history stay in step."""
        if not permissions.may_act(request.user, "remove"):
            raise PermissionDenied
        job = self._job_or_404(object_id)
        if request.method == "POST":
            return self.act_view(request, object_id)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Remove this job?",
            "job": job,
            "allowed": job.status in ALLOWED_BY_ACTION["remove"],
        }
        return TemplateResponse(request, "admin/jobs/job/remove.html", context)

    def history_view(
        self, request: HttpRequest, object_id: str, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The job's audit trail: every action taken on it, from the admin, the API, the page or code."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        job = self._job_or_404(object_id)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": f"History of job {str(job.pk)[:8]}",
            "job": job,
            "audit": selectors.job_audit(job_id=job.pk),
        }
        return TemplateResponse(request, "admin/jobs/job/history.html", context)

    def statistics_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        try:
            data = selectors.job_statistics()
            unavailable = False
        except QueueUnavailable:
            data, unavailable = {}, True
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Job statistics",
            "unavailable": unavailable,
            "may_manage_queues": request.user.has_perm(permissions.MANAGE_QUEUES),
            **statistics_context(data),
        }
        template = "admin/jobs/job/_statistics.html" if request.htmx else "admin/jobs/job/statistics.html"  # type: ignore[attr-defined]
        return TemplateResponse(request, template, context, status=503 if unavailable else 200)

    def queue_view(self, request: HttpRequest, name: str, change: str) -> HttpResponse:
        if not request.user.has_perm(permissions.MANAGE_QUEUES):
            raise PermissionDenied
        if name not in queues.QUEUE_NAMES or change not in ("pause", "resume"):
            raise Http404("no such queue")
        try:
            (services.queue_pause if change == "pause" else services.queue_resume)(name=name)
        except QueueUnavailable:
            self.message_user(request, "The queue (Redis) is unavailable: try again.", messages.ERROR)
        else:
            verb = "paused: workers take no new job from it" if change == "pause" else "resumed"
            self.message_user(request, f"Queue {name} {verb}.", messages.SUCCESS)
        return HttpResponseRedirect(reverse("admin:jobs_job_statistics"))


def report_bulk(model_admin: admin.ModelAdmin, request: HttpRequest, result: services.BulkResult) -> None:
    """One message for what was done, one for what was skipped and why."""
    done_word = ACTION_DONE[result.action]
    model_admin.message_user(request, f"{result.done:,} {done_word}.", messages.SUCCESS)
    if result.skipped:
        model_admin.message_user(request, skipped_message(result), messages.WARNING)


def skipped_message(result: services.BulkResult) -> str:
    reasons = ", ".join(
        f"{count:,} {status}" for status, count in sorted(result.skipped_by_status.items(), key=lambda kv: -kv[1])
    )
    allowed = " or ".join(sorted(ALLOWED_BY_ACTION[result.action]))
    verb = {"stop": "stopped", "remove": "removed"}.get(result.action, ACTION_DONE[result.action])
    return f"{result.skipped:,} skipped ({reasons}): only {allowed} jobs can be {verb}."


def statistics_context(data: dict[str, Any]) -> dict[str, Any]:
    """The statistics view's figures, with charts and links to the filtered list."""
    if not data:
        return {}
    changelist = reverse("admin:jobs_job_changelist")

    def link(**params: str) -> str:
        return f"{changelist}?{urlencode(params)}" if params else changelist

    statuses = data["statuses"]
    rows = []
    for name, info in data["queues"].items():
        rows.append(
            {
                "name": name,
                "link": link(queue=name),
                "cells": [(info["counts"][s], link(queue=name, status=s)) for s in statuses],
                "total": info["counts"]["total"],
            }
        )
    totals = [(data["totals"][s], link(status=s)) for s in statuses]
    cards = [
        {"label": JobStatus(s).label, "tone": STATUS_TONE[s], "count": data["totals"][s], "url": link(status=s)}
        for s in statuses
    ]
    workers = [{**worker, "job_url": _job_url(worker["current_job"])} for worker in data["health"]["workers"]]
    health = data["health"]
    queue_health = [{"name": name, **data["queues"][name]} for name in data["queues"]]
    return {
        "stats": data,
        "status_headers": [(s, JobStatus(s).label, STATUS_TONE[s]) for s in statuses],
        "count_rows": rows,
        "count_totals": totals,
        "status_cards": cards,
        "grand_total": data["totals"]["total"],
        "minute_chart": charts.bar_chart(
            "Jobs processed per minute, last hour", data["per_minute"], label_format="%H:%M", label_every=10
        ),
        "hour_chart": charts.bar_chart(
            "Jobs processed per hour, last 30 days", data["per_hour"], label_format="%b %d", label_every=24 * 5
        ),
        "per_type": [{**entry, **_figures(entry)} for entry in data["per_type"]],
        "slowest": [{**entry, **_figures(entry)} for entry in data["slowest"]],
        "most_failing": [{**entry, **_figures(entry)} for entry in data["most_failing"]],
        "queue_health": queue_health,
        "workers": workers,
        "scheduler": health["scheduler"],
        "mirror": health["mirror"],
        "failure_rate": health["failure_rate"],
        "warnings": health["warnings"],
        "type_link": {entry["type"]: link(type=entry["type"]) for entry in data["per_type"]},
        "history": data["history"],
    }


def _job_url(job_id: Any) -> str | None:
    try:
        return reverse("admin:jobs_job_change", args=[uuid.UUID(str(job_id))]) if job_id else None
    except ValueError:
        return None


def _figures(entry: dict[str, Any]) -> dict[str, str]:
    def ms(value: float | None) -> str:
        return human_seconds(None if value is None else value / 1000)

    return {
        "failure_pct": f"{entry['failure_rate']:.1%}",
        "run_p50": ms(entry["run_ms_p50"]),
        "run_p95": ms(entry["run_ms_p95"]),
        "wait_p50": ms(entry["wait_ms_p50"]),
        "wait_p95": ms(entry["wait_ms_p95"]),
    }


rq_dashboard.register_admin()


@admin.register(JobAudit)
class JobAuditAdmin(admin.ModelAdmin):
    """The audit trail of every job, read-only."""

    list_display = ["at", "action", "job_link", "job_type", "status_before", "username", "via"]
    list_filter = ["action", "via", "job_type"]
    search_fields = ["username", "job_type"]
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER

    @admin.display(description="job")
    def job_link(self, entry: JobAudit) -> str:
        url = reverse("admin:jobs_job_change", args=[entry.job_id])
        return format_html('<a href="{}"><code>{}</code></a>', url, str(entry.job_id)[:8])

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


from jobs import schedule_admin as schedule_admin  # noqa: E402  (registers the schedules' admin)
