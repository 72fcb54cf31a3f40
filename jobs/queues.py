"""Queue names, their priority and the Redis connection: the one place that knows them.

Workers drain queues in the order of `QUEUE_NAMES` (highest priority first).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import django_rq
from redis import Redis
from rq import Queue
from rq.serializers import JSONSerializer

from jobs.queue_names import DEFAULT, HIGH, LOW, QUEUE_NAMES

__all__ = [
    "DEFAULT",
    "HIGH",
    "LOW",
    "PAUSED_KEY",
    "QUEUE_NAMES",
    "SERIALIZER",
    "all_queues",
    "get_queue",
    "new_redis",
    "paused_queues",
    "redis",
    "reset",
]

#: The serializer of every job: JSON, never pickle, so nothing in Redis can
#: name arbitrary Python objects.
SERIALIZER = JSONSerializer


def get_queue(name: str) -> Queue:
    if name not in QUEUE_NAMES:
        raise ValueError(f"unknown queue {name!r}; queues are {', '.join(QUEUE_NAMES)}")
    return _queue(name)


def all_queues() -> list[Queue]:
    return [get_queue(name) for name in QUEUE_NAMES]


#: Guards the making of the shared client and queues (reentrant: a queue is made with the client).
_lock = threading.RLock()
_client: dict[str, Redis] = {}  # "redis": the shared client
_queues: dict[str, Queue] = {}  # a queue's name: its Queue, on the shared client


def _new_lock_after_fork() -> None:
    """A child of a fork gets a lock of its own: one held by another thread of the parent at the
    fork would stay held in the child for ever (the client itself is fork-safe: its pool resets)."""
    global _lock
    _lock = threading.RLock()


os.register_at_fork(after_in_child=_new_lock_after_fork)


def redis() -> Redis:
    """The shared Redis connection (all queues live on one Redis), made once per process.

    Made under a lock: a client that two threads made at once, one of them then dropped, closed its
    connection pool when it was collected, under a request that was using a connection of that pool
    (a web process's first requests answered 500 or 503: "'NoneType' object has no attribute 'feed'",
    "Bad file descriptor").
    """
    conn = _client.get("redis")
    if conn is None:
        with _lock:
            conn = _client.get("redis")
            if conn is None:
                conn = _client["redis"] = django_rq.get_connection(DEFAULT)
    return conn


def new_redis(**options: Any) -> Redis:
    """A client with a connection pool of its own, connected as the queues are (django-rq's settings:
    password, TLS, Sentinel, timeouts); `options` change its connections' options (socket_timeout)."""
    from django.conf import settings
    from django_rq.connection_utils import get_redis_connection

    conn = get_redis_connection(settings.RQ_QUEUES[DEFAULT])
    conn.connection_pool.connection_kwargs.update(options)
    return conn


def _queue(name: str) -> Queue:
    # One connection pool for every queue (django-rq would make a new one per call).
    queue = _queues.get(name)
    if queue is None:
        with _lock:  # the client too: a reset meanwhile cannot leave a queue on a forgotten client
            queue = _queues.get(name)
            if queue is None:
                queue = _queues[name] = django_rq.get_queue(name, connection=redis(), serializer=SERIALIZER)
    return queue


def reset() -> None:
    """Forget the connection, e.g. after the Redis settings changed (tests)."""
    with _lock:
        _client.clear()
        _queues.clear()


#: The set of queue names whose jobs workers leave alone for now.
PAUSED_KEY = "jobs:paused-queues"


def paused_queues(conn: Redis | None = None) -> set[str]:
    members: Any = (conn or redis()).smembers(PAUSED_KEY)
    return {member.decode() if isinstance(member, bytes) else str(member) for member in members}
