"""What differs between the RQ majors the product runs on (2.12 and 3.x), in one place.

RQ 3 hands a job's execution (`rq.executions.Execution`) to the worker's hooks instead of keeping
one on the worker (`worker.execution` in 2.x), lets a worker hold several executions (the set
`rq:worker:<name>:executions` replaces the worker hash's `current_job` field), and names its keys
with `RQ_KEY_PREFIX` (an environment variable RQ reads at import; `rq` unless set). Everything else
the product uses of RQ is the same in both.
"""

from __future__ import annotations

from typing import Any

import rq
import rq.defaults

#: The major version of the RQ installed.
RQ_MAJOR = int(rq.__version__.split(".", 1)[0])
#: Whether RQ hands executions to the worker's hooks and tells when a job's failure is recorded
#: (`_release_slot_safely`, RQ 3 and later).
RQ3 = RQ_MAJOR >= 3

#: The prefix of RQ's keys (RQ 3 reads it from the environment; RQ 2.x has a fixed one).
KEY_PREFIX: str = getattr(rq.defaults, "RQ_KEY_PREFIX", "rq")


def execution_kwargs(execution: Any) -> dict[str, Any]:
    """The keyword to pass an execution on to a worker hook that takes one (RQ 3), or none (RQ 2.x)."""
    return {"execution": execution} if RQ3 else {}


def execution_key(member: str) -> str:
    """The hash of the execution a started-registry member (`<job id>:<execution id>`) names."""
    return f"{KEY_PREFIX}:execution:{member}"


def worker_executions_key(worker_name: str) -> str:
    """RQ 3's set of a worker's executions (`<job id>:<execution id>`): what it runs now."""
    return f"{KEY_PREFIX}:worker:{worker_name}:executions"
