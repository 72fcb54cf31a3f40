"""Django settings for the django-q2 peer: `python -m django qcluster`, 2 workers, `CONN_MAX_AGE=None`.

`save_limit: 0` keeps every successful task (the default, 250, prunes them), so the bench can
count N rows of `Success`; `max_attempts: 1` and an `ack_failures` never retry a failure.
"""

from __future__ import annotations

from bench.peers.peer_settings import REDIS_URL, common

globals().update(common(["django_q"]))

Q_CLUSTER = {
    "name": "bench",
    "workers": 2,
    "recycle": 500,
    "timeout": 60,
    "retry": 120,
    "save_limit": 0,
    "max_attempts": 1,
    "ack_failures": True,
    "catch_up": False,
    "redis": REDIS_URL,
}
