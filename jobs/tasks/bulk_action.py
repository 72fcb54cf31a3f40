"""An action over every job a filter selects, run as a job of its own: large ones would time out a request.

The admin enqueues it for a filter-wide action over more jobs than it does in
one request; its progress shows how far it got, its result what it did and
what it skipped, and each job it acts on gets an audit entry naming the user.

It acts as the user who created it (its row's `created_by`), whose permission
for the action is checked again when it runs: creating one needs no more than
the right to create jobs, so it can never do what its creator may not.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Literal

from pydantic import BaseModel, Field
from rq import get_current_job

from jobs import permissions, queues, selectors, services
from jobs.models import Job
from jobs.registry import RetryPolicy, job_type
from jobs.runner import report_progress
from jobs.statuses import ACTION_DONE


class BulkActionParams(BaseModel):
    action: Literal["retry", "cancel", "stop", "promote", "remove"]
    filters: dict[str, Any] = Field(description="The jobs list's filters (status, type, queue, search, ...).")
    via: Literal["admin", "api", "page", "code"] = "admin"


class NotAllowed(PermissionError):
    pass


#: Seconds the job waits for its own row: a worker can take a job the moment it reaches Redis, just
#: before the transaction that created it commits its row.
OWN_ROW_WAIT = 10.0


def _own_row(job_id: str) -> Job | None:
    """The job's row, with its creator, once the creating transaction has committed it (None if it never does)."""
    deadline = time.monotonic() + OWN_ROW_WAIT
    while True:
        row = Job.objects.filter(pk=job_id).select_related("created_by").first()
        if row is not None or time.monotonic() > deadline:
            return row
        time.sleep(0.05)


@job_type(
    "bulk_action",
    params=BulkActionParams,
    queue=queues.HIGH,
    retry=RetryPolicy(max_attempts=1, retry_lost=False),
    timeout=6 * 3600,
)
def bulk_action(params: BulkActionParams) -> dict[str, Any]:
    """Retries, cancels, stops, promotes or removes every job a filter selects, in batches."""
    current = get_current_job()
    row = _own_row(current.id) if current else None
    user = row.created_by if row is not None else None
    if user is None or not user.is_active or not permissions.may_act(user, params.action):
        raise NotAllowed(f"the user who created this job may not {params.action} jobs")
    done_word = ACTION_DONE[params.action]

    def progress(result: services.BulkResult, total: int) -> None:
        percent = 100 * result.matched / total if total else 100
        report_progress(percent, f"{result.done} {done_word}, {result.skipped} skipped of {total}")

    report_progress(0, "counting the jobs")
    result = services.jobs_act(
        jobs=selectors.job_list(filters=params.filters),
        action=params.action,
        user=user,
        via=params.via,
        progress=progress,
    )
    report_progress(100, f"{result.done} {done_word}, {result.skipped} skipped")
    return asdict(result)
