"""The Jobs page: the history, live, with the actions a user may take. Views parse, call, render.

Partials are chosen by `request.htmx`; the live feed is `events` (Server-Sent
Events, an async view: see `jobs.live`). Errors answer with their own status
(400 field errors, 403, 404, 409 for an action the job's state does not allow,
503 when Redis is away) and a message the page shows.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db import connections
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseRedirect,
    QueryDict,
    StreamingHttpResponse,
)
from django.shortcuts import render
from django.urls import reverse
from django.utils.cache import patch_cache_control
from django.views.decorators.http import require_GET, require_POST
from django.views.decorators.vary import vary_on_headers

from jobs import live, permissions, queues, registry, selectors, services
from jobs.display import job_context
from jobs.errors import ActionNotAllowed, InvalidJobRequest, QueueUnavailable
from jobs.forms import JobCreateForm
from jobs.models import Job, JobAudit
from jobs.statuses import ACTION_DONE, ALLOWED_BY_ACTION, JobStatus

VIA = JobAudit.Via.PAGE
PAGE_SIZE = 50
#: The list's filters, as the page's query parameters.
FILTERS = ("status", "type", "queue", "q")


def _require_view(request: HttpRequest) -> None:
    if not request.user.has_perm(permissions.VIEW):
        raise PermissionDenied


def home(request: HttpRequest) -> HttpResponse:
    """`/`: the Jobs page for a user who is logged in, the login page for anyone else."""
    if request.user.is_authenticated:
        return HttpResponseRedirect(reverse("jobs:page"))
    return HttpResponseRedirect(f"{reverse('login')}?{urlencode({'next': reverse('jobs:page')})}")


def _page_filter(params: QueryDict) -> dict[str, Any]:
    """The page's query parameters as the list selector's filters (unknown values give an empty list)."""
    filters: dict[str, Any] = {}
    statuses = [value for value in params.getlist("status") if value]
    if statuses:
        filters["status"] = statuses
    for name in ("type", "queue"):
        if params.get(name):
            filters[name] = params[name]
    search = str(params.get("q", "")).strip()
    if search:
        filters["search"] = search[:200]
    return filters


def _query(params: QueryDict, **extra: str) -> str:
    pairs = [(name, value) for name in FILTERS for value in params.getlist(name) if value]
    pairs += [(name, value) for name, value in extra.items() if value]
    return urlencode(pairs)


def _list_context(request: HttpRequest) -> dict[str, Any]:
    params = request.GET
    granted = permissions.granted_actions(request.user)
    cursor = params.get("cursor") or None
    error = None
    try:
        page = selectors.job_page(filters=_page_filter(params), cursor=cursor, size=PAGE_SIZE)
    except InvalidJobRequest as exc:
        page, error = selectors.JobPage(jobs=[], next_cursor=None), exc
    rows = [{"job": job, "actions": permissions.allowed_actions(job.status, granted)} for job in page.jobs]
    return {
        "rows": rows,
        "list_error": error,
        "next_url": f"?{_query(params, cursor=page.next_cursor)}" if page.next_cursor else None,
        "first_url": f"?{_query(params)}" if cursor else None,
        "first_page": cursor is None,
        "filters": {
            "status": params.getlist("status"),
            "type": params.get("type", ""),
            "queue": params.get("queue", ""),
            "q": params.get("q", ""),
        },
        "filter_query": _query(params),
    }


@login_required
@require_GET
@vary_on_headers("HX-Request")
def jobs_page(request: HttpRequest) -> HttpResponse:
    """The history, newest first, filtered; live. With HX-Request: just the list (rows and paging)."""
    _require_view(request)
    context = _list_context(request)
    status = 400 if context["list_error"] else 200
    if request.htmx and request.GET.get("part") == "rows":  # type: ignore[attr-defined]
        return render(request, "jobs/_list.html", context, status=status)
    context.update(
        {
            "statuses": JobStatus.choices,
            "types": sorted(registry.names()),
            "queue_names": queues.QUEUE_NAMES,
            "form": JobCreateForm() if request.user.has_perm(permissions.CREATE) else None,
            "may_create": request.user.has_perm(permissions.CREATE),
            "events_url": _events_url(request.GET, first_page=context["first_page"]),
            "poll": request.GET.get("live") == "poll",
            **_cards_context(),
        }
    )
    return render(request, "jobs/page.html", context, status=status)


def _events_url(params: QueryDict, *, first_page: bool) -> str:
    """The page's live feed: its filters, and the moment it was drawn (what came after is replayed)."""
    return f"{reverse('jobs:events')}?{_query(params, since=live.position_now(), first='1' if first_page else '0')}"


def _cards_context() -> dict[str, Any]:
    try:
        return {"cards": selectors.job_stats(), "cards_unavailable": False}
    except QueueUnavailable:
        return {"cards": None, "cards_unavailable": True}


@login_required
@require_GET
def job_cards(request: HttpRequest) -> HttpResponse:
    """The statistics cards: counts by status, per queue, workers, the oldest waiting job, warnings."""
    _require_view(request)
    context = _cards_context()
    return render(request, "jobs/_cards.html", context, status=503 if context["cards_unavailable"] else 200)


def _job_or_404(job_id: Any) -> Job:
    try:
        return selectors.job_get(job_id=job_id)
    except (Job.DoesNotExist, InvalidJobRequest):
        raise Http404("no such job") from None


@login_required
@require_GET
def job_detail(request: HttpRequest, job_id: Any) -> HttpResponse:
    """One job: params, result, error and traceback, its attempts and its audit trail; live."""
    _require_view(request)
    job = _job_or_404(job_id)
    context = {
        "job": job,
        **job_context(job, request.user),
        "actions": permissions.actions_for(request.user, job.status),
        "events_url": f"{reverse('jobs:events')}?{urlencode({'since': live.position_now(), 'first': '0'})}",
    }
    return render(request, "jobs/detail.html", context)


def _message(
    request: HttpRequest, text: str, level: str, status: int, job: Job | None = None, removed_id: Any = None
) -> HttpResponse:
    context: dict[str, Any] = {"message": text, "level": level, "job": job, "removed_id": removed_id}
    if job is not None:
        context["actions"] = permissions.actions_for(request.user, job.status)
    return render(request, "jobs/_action_result.html", context, status=status)


@login_required
@require_POST
def job_act(request: HttpRequest, job_id: Any) -> HttpResponse:
    """Retry, cancel, stop, promote or remove a job; answers the message and the job's new cells."""
    action = request.POST.get("action", "")
    if action not in ALLOWED_BY_ACTION:
        return _message(request, f"Unknown action {action!r}.", "error", 400)
    if not permissions.may_act(request.user, action):
        return _message(request, f"You may not {action} jobs.", "error", 403)
    job = _job_or_404(job_id)
    short = str(job.pk)[:8]
    try:
        result = services.job_act(job=job, action=action, user=request.user, via=VIA)
    except ActionNotAllowed as exc:
        return _message(request, f"Job {short} was not changed: {exc}.", "error", 409, job)
    except QueueUnavailable:
        response = _message(
            request, "The queue (Redis) is unavailable: nothing was done. Try again.", "error", 503, job
        )
        response["Retry-After"] = str(QueueUnavailable.retry_after)
        return response
    if result is None:
        return _message(request, f"Job {short} removed.", "success", 200, removed_id=job.pk)
    result.refresh_from_db()
    return _message(request, f"Job {short} {ACTION_DONE[action]}.", "success", 200, result)


@login_required
@require_POST
def job_create(request: HttpRequest) -> HttpResponse:
    """Create a job (the one-click test job is `type=example` and nothing else); answers the form again."""
    if not request.user.has_perm(permissions.CREATE):
        return _message(request, "You may not create jobs.", "error", 403)
    form = JobCreateForm(request.POST)
    try:
        job = form.create(user=request.user)
    except QueueUnavailable:
        form.add_error(None, "The queue (Redis) is unavailable: nothing was created. Try again shortly.")
        return render(request, "jobs/_create.html", {"form": form}, status=503)
    if job is None:
        return render(request, "jobs/_create.html", {"form": form}, status=400)
    if not request.htmx:  # type: ignore[attr-defined]
        return HttpResponseRedirect(reverse("jobs:detail", args=[job.pk]))
    context = {"form": JobCreateForm(job_type=job.type), "created": job}
    return render(request, "jobs/_create.html", context, status=201)


@login_required
@require_GET
def job_form(request: HttpRequest) -> HttpResponse:
    """The create form for another job type (the type select swaps it in)."""
    if not request.user.has_perm(permissions.CREATE):
        raise PermissionDenied
    return render(request, "jobs/_create.html", {"form": JobCreateForm(job_type=request.GET.get("type"))})


async def events(request: HttpRequest) -> HttpResponseBase:
    """The live feed of a page (Server-Sent Events): transitions, progress, rows created and removed."""
    user = await request.auser()
    if not user.is_authenticated:
        return HttpResponse("log in first", status=401, content_type="text/plain")
    granted = await sync_to_async(_granted_if_viewer)(user)
    # The stream may stay open for hours: give back the database connection the session and
    # permission look-ups took (this request's own thread), so a waiting page holds none.
    await sync_to_async(connections.close_all)()
    if granted is None:
        return HttpResponse("you may not view jobs", status=403, content_type="text/plain")
    since = live.parse_position(request.headers.get("Last-Event-ID")) or live.parse_position(request.GET.get("since"))
    page = live.PageFilter(
        statuses=frozenset(value for value in request.GET.getlist("status") if value),
        type=request.GET.get("type", ""),
        queue=request.GET.get("queue", ""),
        search=request.GET.get("q", "").strip(),
        first_page=request.GET.get("first", "1") == "1",
    )

    def actions_for(status: str) -> list[str]:
        return permissions.allowed_actions(status, granted)

    stream = live.follow(since, page, actions_for)
    response = StreamingHttpResponse(stream, content_type="text/event-stream")
    patch_cache_control(response, no_cache=True, no_store=True)
    response["X-Accel-Buffering"] = "no"  # nginx: pass events through as they come
    return response


def _granted_if_viewer(user: Any) -> frozenset[str] | None:
    if not user.has_perm(permissions.VIEW):
        return None
    return permissions.granted_actions(user)
