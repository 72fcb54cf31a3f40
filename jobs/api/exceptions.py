"""Every API error is JSON with a clear message; nothing answers a bare 500.

400 {"detail": "...", "errors": {"field": ["message", ...]}}
401/403/404/405/429 {"detail": "..."}
409 {"detail": "cannot retry a job that is started (...)"}
503 {"detail": "The job queue is unavailable; try again shortly."} with Retry-After (the cause is logged)
"""

from __future__ import annotations

import logging
from typing import Any

import redis
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from jobs.errors import ActionNotAllowed, InvalidJobRequest, QueueUnavailable

log = logging.getLogger(__name__)

RETRY_AFTER = QueueUnavailable.retry_after


def _flatten(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error details as {"field.sub": ["message"]}."""
    if isinstance(detail, dict):
        flat: dict[str, list[str]] = {}
        for key, value in detail.items():
            flat.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(detail, list) and detail and all(isinstance(item, (dict, list)) for item in detail):
        flat = {}
        for index, value in enumerate(detail):
            flat.update(_flatten(value, f"{prefix}.{index}" if prefix else str(index)))
        return flat
    if isinstance(detail, list):
        return {prefix or "non_field_errors": [str(item) for item in detail]}
    return {prefix or "non_field_errors": [str(detail)]}


def bad_request(errors: dict[str, list[str]]) -> Response:
    summary = "; ".join(f"{field}: {' '.join(messages)}" for field, messages in errors.items())
    return Response({"detail": f"Invalid request: {summary}", "errors": errors}, status=status.HTTP_400_BAD_REQUEST)


def unavailable(detail: str) -> Response:
    return Response(
        {"detail": detail}, status=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": str(RETRY_AFTER)}
    )


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, InvalidJobRequest):
        return bad_request(exc.errors)
    if isinstance(exc, exceptions.ValidationError):
        return bad_request(_flatten(exc.detail))
    if isinstance(exc, ActionNotAllowed):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, QueueUnavailable | redis.RedisError | ConnectionError | TimeoutError):
        if not isinstance(exc, QueueUnavailable):  # (a QueueUnavailable's cause was logged where it was raised)
            log.warning("answering 503: %s: %s", type(exc).__name__, exc)
        # Never Redis's own text: it names the host and port.
        return unavailable(QueueUnavailable.message)
    if isinstance(exc, DatabaseError):
        log.warning("answering 503: database error %s", exc)
        return unavailable("the database is unavailable")
    if isinstance(exc, Http404 | PermissionDenied | exceptions.APIException):
        return drf_exception_handler(exc, context)
    log.exception("unexpected error in %s", context.get("view"))
    return Response({"detail": "internal error"}, status=status.HTTP_500_INTERNAL_SERVER_ERROR)
