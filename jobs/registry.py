"""The job-type registry: the only things that can run.

A job type maps a name to its function, its params schema (a pydantic model),
its queue, its retry policy and its timeout. Nothing from a request ever names
a Python callable: callers name a registered type.

Add a type from any module of your own::

    from pydantic import BaseModel
    from jobs.registry import RetryPolicy, job_type

    class ResizeParams(BaseModel):
        image_id: int

    @job_type("resize", params=ResizeParams, queue="low", retry=RetryPolicy(max_attempts=5))
    def resize(params: ResizeParams) -> dict:
        ...

and list the module in the `JOBS_MODULES` setting, or name it `job_types.py`
inside any installed app: both are imported at start-up.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from jobs import queues
from jobs.errors import InvalidParams, UnknownJobType

#: Params of a job request may not be bigger than this, serialized.
MAX_PARAMS_BYTES = 64 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter.

    Attempt n (n >= 2) waits ``min(cap, base * factor ** (n - 2))`` seconds after
    attempt n - 1 failed, scaled by a random factor in ``[1 - jitter, 1 + jitter]``
    so that jobs failing together do not retry together.
    """

    max_attempts: int = 3
    base: float = 5.0
    factor: float = 2.0
    cap: float = 3600.0
    jitter: float = 0.2
    #: Retry automatically when the worker died (abandoned) or Redis lost the job.
    #: Leave off for jobs that must not run twice (the first run may have done its work).
    retry_lost: bool = True

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.base < 0 or self.factor < 1 or self.cap < 0 or not 0 <= self.jitter < 1:
            raise ValueError("need base >= 0, factor >= 1, cap >= 0 and 0 <= jitter < 1")

    def delay(self, retry_number: int, rng: random.Random | None = None) -> int:
        """Seconds to wait before retry number `retry_number` (1 = the second attempt)."""
        raw = min(self.cap, self.base * self.factor ** (retry_number - 1))
        spread = (rng or random).uniform(1 - self.jitter, 1 + self.jitter)
        # RQ schedules whole seconds; 0 would mean "right away", which is not a backoff.
        return max(1, round(raw * spread))

    def delays(self, rng: random.Random | None = None) -> list[int]:
        """The waits before each retry of one job, drawn once when it is enqueued."""
        return [self.delay(n, rng) for n in range(1, self.max_attempts)]


@dataclass(frozen=True)
class JobType:
    name: str
    func: Callable[[Any], Any]
    params: type[BaseModel]
    queue: str = queues.DEFAULT
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    timeout: int = 600
    description: str = ""

    def validate(self, raw: Any) -> dict[str, Any]:
        """Return the params as they will be stored and passed, or raise InvalidParams."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise InvalidParams({"params": ["must be a JSON object"]})
        size = len(json.dumps(raw, default=str))
        if size > MAX_PARAMS_BYTES:
            raise InvalidParams({"params": [f"must be at most {MAX_PARAMS_BYTES} bytes as JSON, not {size}"]})
        try:
            model = self.params.model_validate(raw)
        except ValidationError as exc:
            errors: dict[str, list[str]] = {}
            for error in exc.errors():
                where = ".".join(str(part) for part in error["loc"]) or "params"
                errors.setdefault(where, []).append(error["msg"])
            raise InvalidParams(errors) from None
        return model.model_dump(mode="json")

    def json_schema(self) -> dict[str, Any]:
        return self.params.model_json_schema()


_registry: dict[str, JobType] = {}


def job_type(
    name: str,
    *,
    params: type[BaseModel],
    queue: str = queues.DEFAULT,
    retry: RetryPolicy | None = None,
    timeout: int = 600,
    description: str = "",
) -> Callable[[Callable[[Any], Any]], Callable[[Any], Any]]:
    """Register the decorated function as the job type `name`."""
    if queue not in queues.QUEUE_NAMES:
        raise ValueError(f"job type {name!r}: unknown queue {queue!r}")
    if timeout < 1:
        raise ValueError(f"job type {name!r}: timeout must be at least 1 second")

    def register(func: Callable[[Any], Any]) -> Callable[[Any], Any]:
        existing = _registry.get(name)
        # Re-importing the same module is harmless; two functions under one name is a bug.
        if existing is not None and _origin(existing.func) != _origin(func):
            raise ValueError(f"job type {name!r} is already registered by {existing.func.__module__}")
        _registry[name] = JobType(
            name=name,
            func=func,
            params=params,
            queue=queue,
            retry=retry or RetryPolicy(),
            timeout=timeout,
            description=description or (func.__doc__ or "").strip().split("\n")[0],
        )
        return func

    return register


def _origin(func: Callable[[Any], Any]) -> tuple[str, str]:
    return func.__module__, func.__qualname__


def get(name: Any) -> JobType:
    if not isinstance(name, str) or name not in _registry:
        known = ", ".join(sorted(_registry))
        raise UnknownJobType(f"unknown job type {name!r}; known types: {known}")
    return _registry[name]


def find(name: Any) -> JobType | None:
    """The registered type of that name, or None."""
    return _registry.get(name) if isinstance(name, str) else None


def names() -> frozenset[str]:
    return frozenset(_registry)


def all_types() -> list[JobType]:
    return [_registry[name] for name in sorted(_registry)]
