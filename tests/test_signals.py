"""The stop handlers of the loops that wait on an event (the mirror process, the scheduler)."""

from __future__ import annotations

import signal
import threading

from jobs.signals import stop_on_signal
from tests.conftest import wait_for


def test_a_stop_signal_that_lands_while_the_event_is_locked_comes_back_and_stops_the_loop():
    """A signal lands in the main thread, which may hold the event's lock (inside its own wait): a
    handler that set the event there waited for that lock for ever, and the process never stopped."""
    stop = threading.Event()
    handler = stop_on_signal(stop)
    returned = threading.Event()

    def deliver() -> None:
        handler(signal.SIGTERM, None)
        returned.set()

    with stop._cond:  # the lock `stop.wait` holds around its bookkeeping
        threading.Thread(target=deliver, daemon=True).start()
        assert returned.wait(5), "the handler waited for the event's lock"
        assert not stop.is_set()
    wait_for(stop.is_set, 5, message="the stop to be set once the lock is free")
