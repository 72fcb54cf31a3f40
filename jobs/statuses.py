"""Job statuses and which actions each one allows: the one place that decides."""

from __future__ import annotations

from django.db import models


class JobStatus(models.TextChoices):
    # The product's own: the row is written, the job is not yet confirmed in Redis
    # (written inside a caller's transaction; dispatched on commit or by the reconciler).
    PENDING = "pending", "Pending"
    # RQ's statuses.
    QUEUED = "queued", "Queued"
    SCHEDULED = "scheduled", "Scheduled"
    DEFERRED = "deferred", "Deferred"
    STARTED = "started", "Started"
    FINISHED = "finished", "Finished"
    FAILED = "failed", "Failed"
    STOPPED = "stopped", "Stopped"
    CANCELED = "canceled", "Canceled"
    # The product's own: the worker running it died (found by the reconciler).
    ABANDONED = "abandoned", "Abandoned"
    # The product's own: Redis no longer knows the job (flushed, restarted, evicted).
    LOST = "lost", "Lost"


#: Waiting for a worker: the job exists (or will) in a queue or registry.
WAITING = frozenset({JobStatus.PENDING, JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED})
#: Nothing more will happen to the job unless someone retries it.
TERMINAL = frozenset(
    {
        JobStatus.FINISHED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
        JobStatus.CANCELED,
        JobStatus.ABANDONED,
        JobStatus.LOST,
    }
)
#: Not finished yet: what the reconciler watches.
ACTIVE = WAITING | {JobStatus.STARTED}

#: Which statuses each action applies to.
RETRYABLE = frozenset({JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED, JobStatus.ABANDONED, JobStatus.LOST})
CANCELABLE = frozenset({JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED, JobStatus.PENDING})
STOPPABLE = frozenset({JobStatus.STARTED})
PROMOTABLE = frozenset({JobStatus.SCHEDULED})
REMOVABLE = frozenset(set(JobStatus) - {JobStatus.STARTED})


class AttemptOutcome(models.TextChoices):
    RUNNING = "running", "Running"
    FINISHED = "finished", "Finished"
    FAILED = "failed", "Failed"
    STOPPED = "stopped", "Stopped"
    ABANDONED = "abandoned", "Abandoned"
    LOST = "lost", "Lost"
