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

#: The statuses each action (by the name the API, the admin and the page use) applies to.
ALLOWED_BY_ACTION: dict[str, frozenset[JobStatus]] = {
    "retry": RETRYABLE,
    "cancel": CANCELABLE,
    "stop": STOPPABLE,
    "promote": PROMOTABLE,
    "remove": REMOVABLE,
}
#: Past tense of each action, for messages ("40 retried").
ACTION_DONE = {
    "retry": "retried",
    "cancel": "canceled",
    "stop": "asked to stop",
    "promote": "promoted",
    "remove": "removed",
}

#: How each status looks: its tone, shared by the admin, the Jobs page and the charts
#: (the CSS gives each tone its colour; a badge always says its status in words too).
STATUS_TONE: dict[str, str] = {
    JobStatus.PENDING: "waiting",
    JobStatus.QUEUED: "waiting",
    JobStatus.SCHEDULED: "waiting",
    JobStatus.DEFERRED: "waiting",
    JobStatus.STARTED: "running",
    JobStatus.FINISHED: "good",
    JobStatus.FAILED: "bad",
    JobStatus.STOPPED: "muted",
    JobStatus.CANCELED: "muted",
    JobStatus.ABANDONED: "bad",
    JobStatus.LOST: "bad",
}


class AttemptOutcome(models.TextChoices):
    RUNNING = "running", "Running"
    FINISHED = "finished", "Finished"
    FAILED = "failed", "Failed"
    STOPPED = "stopped", "Stopped"
    ABANDONED = "abandoned", "Abandoned"
    LOST = "lost", "Lost"
