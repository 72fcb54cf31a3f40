from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import UserRateThrottle


class JobWriteThrottle(UserRateThrottle):
    """Limits writes per user (reads are free). Counts live in the shared Redis cache,
    so the limit holds across every web process."""

    scope = "job_writes"

    def allow_request(self, request: Request, view: Any) -> bool:
        if request.method in ("GET", "HEAD", "OPTIONS"):
            return True
        return super().allow_request(request, view)
