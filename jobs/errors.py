"""Domain errors raised by services. The API, admin and pages translate them:
`InvalidJobRequest` -> 400 with field errors, `ActionNotAllowed` -> 409,
`QueueUnavailable` -> 503."""

from __future__ import annotations

import redis


class JobError(Exception):
    """Base of every error a service raises on purpose."""


class InvalidJobRequest(JobError):
    """The request to create a job is wrong; `errors` maps a field to its messages."""

    def __init__(self, errors: dict[str, list[str]]):
        self.errors = errors
        super().__init__("; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in errors.items()))


class UnknownJobType(InvalidJobRequest):
    def __init__(self, message: str):
        super().__init__({"type": [message]})


class InvalidParams(InvalidJobRequest):
    def __init__(self, errors: dict[str, list[str]]):
        super().__init__({f"params.{field}" if field != "params" else field: msgs for field, msgs in errors.items()})


class ActionNotAllowed(JobError):
    """The job's status does not allow the action (retry a running job, promote a finished one)."""

    def __init__(self, action: str, status: str, allowed: frozenset[str] | set[str]):
        self.action = action
        self.status = status
        allowed_text = ", ".join(sorted(allowed))
        super().__init__(f"cannot {action} a job that is {status} (only a job that is {allowed_text})")


class QueueUnavailable(JobError):
    """Redis could not be reached; nothing was written.

    Its text is what a user may read, so it never carries the Redis error (whose text names
    the host and port): the cause is logged where it is caught (`jobs.rqstore.unavailable`)
    and kept as `__cause__`."""

    retry_after = 5
    message = "The job queue is unavailable; try again shortly."

    def __init__(self) -> None:
        super().__init__(self.message)


#: Redis failures that mean "the queue is unavailable" (answered with 503, nothing written), or,
#: in a worker, "Redis blinked": its bookkeeping waits for Redis rather than failing a job.
REDIS_ERRORS: tuple[type[Exception], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    redis.exceptions.OutOfMemoryError,  # maxmemory reached with noeviction
    OSError,
)
