"""The process's shared Redis client (`jobs.queues.redis`): one per process, whatever its threads do."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import django_rq
import pytest

from jobs import queues


@pytest.fixture
def slow_first_connection(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """Each client django-rq makes takes 0.3 s to make (a slow Redis set-up): threads meet in it."""
    made: list[int] = []  # their ids: a reference here would keep a dropped client alive
    real = django_rq.get_connection

    def slow(name: str) -> Any:
        conn = real(name)
        made.append(id(conn))
        time.sleep(0.3)
        return conn

    queues.reset()
    monkeypatch.setattr(django_rq, "get_connection", slow)
    yield made
    queues.reset()


def test_threads_asking_at_once_share_one_client_and_none_closes_a_connection_in_use(slow_first_connection):
    """A web process's first requests come at once, each in a thread. Two clients were made; the one
    dropped closed its connection pool when it was collected, under the request still using one of its
    connections: that request answered 500 ("'NoneType' object has no attribute 'feed'") or 503."""
    got: dict[str, Any] = {}
    asked = threading.Event()

    def first() -> None:
        pool = queues.redis().connection_pool  # the cache backend keeps the pool, not the client
        connection = pool.get_connection()
        try:
            connection.send_command("PING")
            asked.set()
            second.join()  # the other thread has its client now
            got["first"] = connection.read_response()
        except Exception as exc:
            got["first"] = exc
        finally:
            pool.release(connection)

    def later() -> None:
        time.sleep(0.1)  # while the first thread makes the client
        got["later"] = queues.redis()

    second = threading.Thread(target=later)
    one = threading.Thread(target=first)
    one.start()
    second.start()
    one.join(10)
    assert asked.is_set()
    assert got["first"] in (b"PONG", "PONG"), got["first"]
    assert len(slow_first_connection) == 1
    assert got["later"] is queues.redis()
    assert queues.get_queue("default").connection is queues.redis()
