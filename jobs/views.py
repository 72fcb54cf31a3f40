from __future__ import annotations

from uuid import UUID

from django.contrib.auth.decorators import login_required, permission_required
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, HttpRequest

from jobs.tasks.report import report_path


@login_required
@permission_required("jobs.view_job", raise_exception=True)
def report_download(request: HttpRequest, job_id: UUID) -> FileResponse:
    """The CSV file a report job wrote."""
    name = report_path(str(job_id))
    if not default_storage.exists(name):
        raise Http404("no report file for this job")
    return FileResponse(default_storage.open(name, "rb"), as_attachment=True, filename=f"report-{job_id}.csv")
