"""The product's job types for `bench/workers.py` (loaded with `JOBS_MODULES=bench.peers.product_jobs`)."""

from __future__ import annotations

from pydantic import BaseModel

from bench.peers import common
from jobs.registry import job_type


class NoParams(BaseModel):
    """No parameters."""


class StampParams(BaseModel):
    token: str


@job_type("bench_noop", params=NoParams, description="Does nothing (benchmark job).")
def bench_noop(params: NoParams) -> None:
    common.noop()


@job_type("bench_cpu5", params=NoParams, description="5 ms of CPU (benchmark job).")
def bench_cpu5(params: NoParams) -> None:
    common.cpu5()


@job_type("bench_stamp", params=StampParams, description="Records when it started (benchmark job).")
def bench_stamp(params: StampParams) -> None:
    common.stamp(params.token)
