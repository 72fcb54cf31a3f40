"""What the peers' Django settings share: the database (as the product configures its kind) and Redis.

Environment (set by `bench/workers.py`):
    BENCH_DATABASE_URL  the peer's own database (a SQLite file or a Postgres database)
    BENCH_REDIS_URL     the peer's broker (a Redis database of the bench's own redis-server)

Connections are persistent (`CONN_MAX_AGE=None`: "tuned" for django-q2, "DB connections reused"
for Celery). A SQLite file gets the product's options: WAL, synchronous=NORMAL, IMMEDIATE
transactions, a 20 s busy timeout (queueproject/settings.py), so both sides run the same kind of
database the same way.
"""

from __future__ import annotations

import os
from typing import Any

import dj_database_url


def database() -> dict[str, Any]:
    config: dict[str, Any] = dict(dj_database_url.parse(os.environ["BENCH_DATABASE_URL"], conn_max_age=None))
    if config["ENGINE"] == "django.db.backends.sqlite3":
        config["OPTIONS"] = {
            "timeout": 20,
            "transaction_mode": "IMMEDIATE",
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    else:
        config["CONN_HEALTH_CHECKS"] = True
    return config


def common(installed_apps: list[str]) -> dict[str, Any]:
    return {
        "DEBUG": False,
        "SECRET_KEY": "bench-peers-" + "x" * 40,
        "ALLOWED_HOSTS": ["127.0.0.1"],
        "INSTALLED_APPS": ["django.contrib.contenttypes", "django.contrib.auth", *installed_apps],
        "DATABASES": {"default": database()},
        "DEFAULT_AUTO_FIELD": "django.db.models.BigAutoField",
        "USE_TZ": True,
        "TIME_ZONE": "UTC",
        "LOGGING_CONFIG": None,
    }


REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6401/0")
