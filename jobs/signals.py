"""Signal handlers that stop a loop waiting on a `threading.Event`."""

from __future__ import annotations

import threading
from collections.abc import Callable
from types import FrameType


def stop_on_signal(stop: threading.Event) -> Callable[[int, FrameType | None], None]:
    """A signal handler that sets `stop` from a thread of its own.

    Set in the handler itself, it could hang for ever. The handler runs in the main thread, and that
    thread may hold the event's lock at that moment, inside its own `stop.wait`. The lock is not
    reentrant. (Seen: a mirror process that then ignored every SIGTERM, its parent long gone.)
    """

    def handler(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=stop.set, name="stop-on-signal", daemon=True).start()

    return handler
