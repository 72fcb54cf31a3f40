"""Under pytest-xdist, each worker gets a Redis database of its own.

The tests empty their Redis database before and after each test, and the product's streams,
consumer groups and locks have fixed names: two workers on one database would wipe each other's
jobs. Worker `gwN` uses the database N after REDIS_URL's (REDIS_URL=.../4 with `-n 3`: 4, 5, 6);
the processes a test starts inherit it. The test databases need nothing here: pytest-django gives
each worker its own (suffixed `_gwN`).

The settings read REDIS_URL when they are imported, which happens in pytest-django's
`pytest_load_initial_conftests`, before any conftest is loaded: so this is a plugin, loaded with
`-p tests.parallel` (pyproject.toml), whose hook runs after pytest-env's (which sets REDIS_URL's
default) and before pytest-django's. tests/conftest.py checks that it did.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

import pytest

#: Redis's databases, unless its configuration says otherwise (`databases 16`).
REDIS_DATABASES = 16
#: The REDIS_URL this worker was given (None outside xdist).
assigned_url: str | None = None


def worker_index() -> int | None:
    """The xdist worker's number (gw3: 3), or None outside xdist."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    return int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else None


def redis_db(url: str) -> int:
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else 0


def worker_redis_url(url: str, index: int) -> str:
    """REDIS_URL with its database moved on by `index`."""
    db = redis_db(url) + index
    if db >= REDIS_DATABASES:
        raise pytest.UsageError(
            f"xdist worker gw{index} would use Redis database {db} (REDIS_URL={url} plus {index}); Redis has "
            f"{REDIS_DATABASES} (0-{REDIS_DATABASES - 1}): start REDIS_URL at a lower database, or run fewer workers"
        )
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config: pytest.Config, specs: list[object]) -> None:
    """Refuse, before any worker starts, a REDIS_URL that leaves the last worker no database."""
    url = os.environ.get("REDIS_URL")
    if url is not None and specs:
        worker_redis_url(url, len(specs) - 1)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    index = worker_index()
    url = os.environ.get("REDIS_URL")
    if index is None or url is None:
        return
    global assigned_url
    assigned_url = os.environ["REDIS_URL"] = worker_redis_url(url, index)
