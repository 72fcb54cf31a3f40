"""The seed's example job: five seconds of work, reporting progress 0 -> 100 %."""

from __future__ import annotations

import time

from pydantic import BaseModel, Field

from jobs import queues
from jobs.registry import RetryPolicy, job_type
from jobs.runner import report_progress


class ExampleParams(BaseModel):
    duration: float = Field(5.0, ge=0, le=3600, description="Seconds the job works.")
    steps: int = Field(10, ge=1, le=1000, description="How many progress reports it makes.")
    fail: bool = Field(False, description="Raise at the end, to watch a failure and its retries.")
    message: str = Field("", max_length=200, description="Returned in the result.")


class ExampleJobFailed(RuntimeError):
    pass


@job_type(
    "example",
    params=ExampleParams,
    queue=queues.DEFAULT,
    retry=RetryPolicy(max_attempts=3, base=2, factor=2, cap=60),
    timeout=3700,
)
def example(params: ExampleParams) -> dict[str, object]:
    """Sleeps in steps and reports its progress; fails on request."""
    report_progress(0)
    step = params.duration / params.steps
    for done in range(1, params.steps + 1):
        time.sleep(step)
        report_progress(100 * done / params.steps, f"step {done} of {params.steps}")
    if params.fail:
        raise ExampleJobFailed("the example job was asked to fail")
    return {"slept": params.duration, "message": params.message}
