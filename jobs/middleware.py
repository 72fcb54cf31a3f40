"""A page whose database is unreachable answers 503 with Retry-After, not a server error.

The API answers its own (`jobs.api.exceptions`); this covers the pages and the admin, whose
first query (the session's user) fails when the database is down.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse

from jobs.errors import QueueUnavailable

log = logging.getLogger(__name__)

#: What the page says (never the database's own error: it names the host).
PAGE = (
    '<!doctype html>\n<html lang="en">\n<head>\n  <title>Service unavailable</title>\n</head>\n<body>\n'
    "  <h1>Service unavailable</h1>\n  <p>The database is unavailable; try again shortly.</p>\n</body>\n</html>\n"
)


class DatabaseUnavailableMiddleware:
    """Turn a view's lost or refused database connection into 503 with Retry-After."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not isinstance(exception, OperationalError | InterfaceError):
            return None  # anything else is a server error, reported as one
        log.warning("answering 503 to %s %s: database error %s", request.method, request.path, exception)
        response = HttpResponse(PAGE, status=503)
        response["Retry-After"] = str(QueueUnavailable.retry_after)
        return response
