"""Scheduler rounds slower than the scheduler's lock: for the leader tests only (`JOBS_MODULES`).

Imported by a scheduler process, it makes every call of `jobs.schedules.run_due` wait
`SLOW_ROUND_SECONDS` first (a slow database, say). Never import it in a test's own process.
"""

from __future__ import annotations

import os
import time
from datetime import datetime

from jobs import schedules

_run_due = schedules.run_due


def slow_run_due(now: datetime | None = None) -> int:
    time.sleep(float(os.environ.get("SLOW_ROUND_SECONDS", "0")))
    return _run_due(now)


schedules.run_due = slow_run_due
