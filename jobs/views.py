from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from functools import wraps
from typing import Any
from uuid import UUID

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required, permission_required
from django.core.files import File
from django.core.handlers.asgi import ASGIRequest
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseBase, HttpResponseRedirect
from rest_framework.authentication import TokenAuthentication
from rest_framework.exceptions import AuthenticationFailed

from jobs import files
from jobs.tasks.report import report_path

#: Bytes read from the storage per chunk of a download.
CHUNK = 64 * 1024


def api_token_accepted(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    """Let an API client in with its token (`Authorization: Token <key>`), as the API does: the API's
    `download_url` then works for it as for a browser with a session. A wrong token is a 401."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if request.headers.get("Authorization", "").startswith("Token "):
            try:
                found = TokenAuthentication().authenticate(request)  # type: ignore[arg-type]
            except AuthenticationFailed as exc:
                response = HttpResponse(f"{exc.detail}\n", status=401, content_type="text/plain")
                response["WWW-Authenticate"] = "Token"
                return response
            if found is not None:
                request.user = found[0]
        return view(request, *args, **kwargs)

    return wrapped


async def _chunks(stored: File) -> AsyncIterator[bytes]:
    try:
        while chunk := await sync_to_async(stored.read)(CHUNK):
            yield chunk
    finally:
        await sync_to_async(stored.close)()


@api_token_accepted
@login_required
@permission_required("jobs.view_job", raise_exception=True)
def report_download(request: HttpRequest, job_id: UUID) -> HttpResponseBase:
    """The CSV file a report job wrote, from wherever the files are stored (jobs.files)."""
    name = report_path(str(job_id))
    filename = f"report-{job_id}.csv"
    try:
        url = files.signed_download_url(name, filename=filename)
    except FileNotFoundError:
        raise Http404("no report file for this job") from None
    if url:
        return HttpResponseRedirect(url)
    stored = files.open_job_file(name)
    if stored is None:
        raise Http404("no report file for this job")
    response = FileResponse(stored, as_attachment=True, filename=filename, content_type="text/csv")
    if isinstance(request, ASGIRequest):
        # Served by the ASGI server: chunks read in a thread each, not a file iterated in the event loop.
        response.streaming_content = _chunks(stored)
    return response
