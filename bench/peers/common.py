"""The benchmark's jobs, shared by every system (no Django, no product import).

- `noop()`: returns at once.
- `cpu5()`: 5 ms of CPU (a busy loop on the thread's CPU clock), then returns.
- `stamp(token)`: its first line reads the wall clock; the time is pushed to the Redis list
  `bench:stamp:<token>` of `BENCH_STAMP_REDIS_URL`, where the enqueuing side waits for it
  (enqueue-to-start latency).
"""

from __future__ import annotations

import os
import time
from typing import Any

CPU_SECONDS = 0.005
STAMP_PREFIX = "bench:stamp:"

_redis: Any = None


def noop() -> None:
    return None


def cpu5() -> None:
    end = time.thread_time() + CPU_SECONDS
    while time.thread_time() < end:
        pass


def stamp(token: str) -> None:
    started = time.time()  # the job's first line of code
    global _redis
    if _redis is None:
        import redis

        _redis = redis.Redis.from_url(os.environ["BENCH_STAMP_REDIS_URL"])
    _redis.rpush(STAMP_PREFIX + token, repr(started))
