"""No-op jobs for the benchmarks: the product's job type and the bare RQ function.

Loaded by the product worker through `JOBS_MODULES=bench.noop_jobs`; the bare
RQ worker imports `bench.noop_jobs.noop` by name when it runs a job.
"""

from __future__ import annotations

from pydantic import BaseModel

from jobs.registry import job_type


class NoopParams(BaseModel):
    """No parameters."""


@job_type("noop", params=NoopParams, description="Does nothing (benchmark job).")
def noop_job(params: NoopParams) -> None:
    """Does nothing (benchmark job)."""
    return None


def noop() -> None:
    """The bare RQ job: a module-level function that does nothing."""
    return None
