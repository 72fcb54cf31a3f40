"""Django's Redis cache on the queues' own connection.

Django's `RedisCache` connects from a URL, which cannot say "through these Sentinels" nor carry
every option. This one takes its connections from the queues' shared client (`jobs.queues.redis`,
built by django-rq from `RQ_QUEUES`): the same password, TLS, Sentinel, socket timeouts and one-try
retry, and one pool per process for both. Its `LOCATION` is not used.
"""

from __future__ import annotations

from typing import Any

from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient
from redis import ConnectionPool


class QueueConnectionClient(RedisCacheClient):
    def _get_connection_pool(self, write: bool) -> ConnectionPool:
        from jobs import queues  # imported late: the cache backend is loaded with the settings

        pool: ConnectionPool = queues.redis().connection_pool
        return pool


class RedisCache(DjangoRedisCache):
    def __init__(self, server: Any, params: dict[str, Any]) -> None:
        super().__init__(server, params)
        self._class = QueueConnectionClient
