from __future__ import annotations

from typing import Any

from rest_framework.exceptions import NotFound, ValidationError
from rest_framework.pagination import CursorPagination


class JobCursorPagination(CursorPagination):
    """Newest first, by a cursor: as fast 10,000 rows deep as on the first page."""

    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request: Any) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if not 1 <= size <= self.max_page_size:
            raise ValidationError({"page_size": [f"must be a whole number from 1 to {self.max_page_size}"]})
        return size

    def decode_cursor(self, request: Any) -> Any:
        try:
            return super().decode_cursor(request)
        except NotFound:
            raise ValidationError({"cursor": ["invalid cursor"]}) from None


class ScheduleCursorPagination(JobCursorPagination):
    """Schedules by name."""

    ordering = ("name", "id")
