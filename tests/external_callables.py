"""Plain callables, as a team enqueues them with django-rq before it adopts job types (tests only)."""

from __future__ import annotations

from pathlib import Path


def touch(path: str) -> str:
    """Leaves a file behind: the test sees whether it ran."""
    Path(path).write_text("ran")
    return path
