"""Health checks for load balancers and orchestrators: JSON, no login, nothing secret.

`/healthz` says the process is alive and touches nothing else. `/readyz` says
whether the process can do its work: Redis answers PING and the database
answers `SELECT 1`. A failing check carries a short generic reason, never the
exception's text (it may name a host, a URL or a password); the details go to
the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import redis
from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_safe

from jobs import queues
from jobs.errors import QueueUnavailable

log = logging.getLogger(__name__)

#: Seconds a client should wait before asking again after a 503.
RETRY_AFTER = QueueUnavailable.retry_after


def _json(payload: dict[str, Any], status: int = 200) -> JsonResponse:
    response = JsonResponse(payload, status=status)
    response["Cache-Control"] = "no-store"
    return response


@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is alive: touches neither Redis nor the database."""
    return _json({"status": "ok"})


def _redis_reason(exc: Exception) -> str:
    if isinstance(exc, redis.TimeoutError | TimeoutError):
        return "timed out"
    if isinstance(exc, redis.AuthenticationError):
        return "authentication failed"
    if isinstance(exc, redis.ConnectionError | ConnectionError | OSError):
        return "unreachable"
    return "error"


def _database_reason(exc: Exception) -> str:
    if isinstance(exc, DatabaseError):
        return "unreachable"
    return "error"


def _ping_redis() -> None:
    # The shared client has socket timeouts and does not retry, so a hung Redis
    # costs at most REDIS_SOCKET_TIMEOUT seconds here.
    if not queues.redis().ping():
        raise redis.ConnectionError("no PONG")


def _select_one() -> None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception:
        # Never keep a connection that just failed: the next request opens a
        # fresh one once the database is back. (Inside a transaction the caller
        # owns the connection and rolls back.)
        if not connection.in_atomic_block:
            try:
                connection.close()
            except Exception:
                log.debug("closing the failed database connection failed too", exc_info=True)
        raise


def _check(name: str, probe: Callable[[], None], reason: Callable[[Exception], str]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        probe()
    except Exception as exc:
        elapsed = round((time.perf_counter() - started) * 1000, 1)
        log.warning("readiness check %s failed after %.1f ms: %s: %s", name, elapsed, type(exc).__name__, exc)
        return {"ok": False, "ms": elapsed, "reason": reason(exc)}
    return {"ok": True, "ms": round((time.perf_counter() - started) * 1000, 1)}


@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """Redis and the database both answer: 200, otherwise 503 with Retry-After."""
    checks = {
        "redis": _check("redis", _ping_redis, _redis_reason),
        "database": _check("database", _select_one, _database_reason),
    }
    if all(check["ok"] for check in checks.values()):
        return _json({"status": "ok", "checks": checks})
    response = _json({"status": "unavailable", "checks": checks}, status=503)
    response["Retry-After"] = str(RETRY_AFTER)
    return response
