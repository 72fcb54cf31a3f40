"""A job type for the fault tests only: it calls a "downstream service" that may be down.

Worker processes started by the tests import this module through `JOBS_MODULES`;
the test process registers it with the `flaky_job_type` fixture and takes it out
again afterwards, so no other test ever sees the type.

The failure depends on the worker's world, not on the job's params: a retry
runs with the very params stored in the row, so only a job that failed for an
outside reason can succeed when it is retried.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel

from jobs.registry import RetryPolicy, job_type

NAME = "faults-downstream-call"
#: The worker's environment names a file; while it exists, the downstream is down.
DOWN_FLAG_ENV = "FAULTS_DOWNSTREAM_DOWN_FLAG"


class DownstreamParams(BaseModel):
    pass


def call_downstream(params: DownstreamParams) -> dict[str, object]:
    """Fails while the downstream service is down."""
    flag = os.environ.get(DOWN_FLAG_ENV)
    if flag and Path(flag).exists():
        raise ConnectionError("the downstream service is down")
    return {"called": True}


def register() -> None:
    # One attempt per round: the job fails for good at once, with no backoff to wait for.
    job_type(NAME, params=DownstreamParams, retry=RetryPolicy(max_attempts=1), timeout=60)(call_downstream)


register()
