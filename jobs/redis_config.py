"""How every process connects to Redis: one description, built from the environment by the settings.

`rq_connection` turns REDIS_URL (`redis://` or `rediss://`, with a user and password), the socket
timeout and, optionally, Redis Sentinel into django-rq's own connection settings (an `RQ_QUEUES`
entry). Every client of the product connects from that entry: the queues, workers and their mirror,
the scheduler and its lock, /readyz and the cache through django-rq (`jobs.queues`), the Jobs page's
asyncio reader through `async_client`. A password, TLS or Sentinel set once reaches them all.

Free of Django imports: the settings import it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry

#: TLS options a `rediss://` URL may carry in its query string (redis-py's names), e.g.
#: `rediss://:password@redis.example.com:6380/0?ssl_ca_certs=/etc/redis/ca.pem`.
TLS_OPTIONS = ("ssl_ca_certs", "ssl_cert_reqs", "ssl_certfile", "ssl_keyfile", "ssl_check_hostname")
CERT_REQS = ("required", "optional", "none")


class RedisConfigError(ValueError):
    """A Redis setting that cannot work; the message names the variable."""


def parse_sentinels(raw: str) -> list[tuple[str, int]]:
    """`host:port,host:port` (REDIS_SENTINELS) as django-rq's SENTINELS list."""
    sentinels = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise RedisConfigError(f"REDIS_SENTINELS takes host:port pairs separated by commas, got {item!r}")
        sentinels.append((host.strip("[]"), int(port)))
    return sentinels


def _tls_options(url: str, parsed: dict[str, Any]) -> dict[str, Any]:
    """The TLS options of a `rediss://` URL (none for `redis://`); anything else in the query is refused."""
    unknown = sorted(set(parsed) - {"host", "port", "db", "username", "password", "connection_class", *TLS_OPTIONS})
    if unknown:
        raise RedisConfigError(
            f"REDIS_URL's query may only hold TLS options ({', '.join(TLS_OPTIONS)}), not {', '.join(unknown)}"
        )
    tls = {name: parsed[name] for name in TLS_OPTIONS if name in parsed}
    if urlsplit(url).scheme != "rediss":
        if tls:
            raise RedisConfigError("REDIS_URL has TLS options but is not a rediss:// URL")
        return {}
    reqs = str(tls.get("ssl_cert_reqs", "required")).lower()
    if reqs not in CERT_REQS:
        raise RedisConfigError(f"REDIS_URL's ssl_cert_reqs must be one of {', '.join(CERT_REQS)}, got {reqs!r}")
    tls["ssl_cert_reqs"] = reqs
    return tls


def rq_connection(
    url: str,
    *,
    socket_timeout: float,
    sentinels: list[tuple[str, int]] | None = None,
    master: str = "",
    sentinel_password: str = "",
) -> dict[str, Any]:
    """django-rq's connection settings for one Redis (every queue shares it).

    Without Sentinel: HOST/PORT/DB/USERNAME/PASSWORD/SSL/SSL_CERT_REQS and the client options
    (socket timeouts, one try, CA certificates) in REDIS_CLIENT_KWARGS. With Sentinel: SENTINELS
    and MASTER_NAME, the URL's database, user, password and TLS for the master, SENTINEL_KWARGS for
    the Sentinels themselves (their own password; TLS when the URL is rediss://).
    """
    try:
        parsed = parse_url(url)
    except ValueError as exc:
        raise RedisConfigError(f"REDIS_URL is not a valid Redis URL: {exc}") from None
    if "path" in parsed:
        raise RedisConfigError("REDIS_URL must be redis:// or rediss://, not a unix socket")
    tls = _tls_options(url, parsed)
    client: dict[str, Any] = {
        "socket_connect_timeout": socket_timeout,
        "health_check_interval": 30,
        # One try: a caller waiting on a dead Redis gets its answer (503) in seconds.
        # Workers and the mirror retry on their own, with backoff.
        "retry": Retry(NoBackoff(), 0),
    }
    common = {"DB": parsed.get("db", 0), "USERNAME": parsed.get("username"), "PASSWORD": parsed.get("password")}
    if sentinels:
        if not master:
            raise RedisConfigError("REDIS_SENTINEL_MASTER must name the master the Sentinels watch (e.g. mymaster)")
        return {
            "SENTINELS": sentinels,
            "MASTER_NAME": master,
            **common,
            "SOCKET_TIMEOUT": socket_timeout,
            "CONNECTION_KWARGS": {**client, **({"ssl": True, **tls} if tls else {})},
            "SENTINEL_KWARGS": {
                "socket_connect_timeout": socket_timeout,
                "socket_timeout": socket_timeout,
                "password": sentinel_password or None,
                **({"ssl": True, **tls} if tls else {}),
            },
        }
    return {
        "HOST": parsed.get("host", "127.0.0.1"),
        "PORT": parsed.get("port", 6379),
        **common,
        "SSL": bool(tls),
        "SSL_CERT_REQS": tls.pop("ssl_cert_reqs", "required"),
        "REDIS_CLIENT_KWARGS": {**client, "socket_timeout": socket_timeout, **tls},
    }


def async_client(config: dict[str, Any], *, socket_timeout: float) -> Any:
    """A `redis.asyncio` client connected as django-rq's `config` says (an `RQ_QUEUES` entry)."""
    import redis.asyncio as aioredis
    from redis.asyncio.sentinel import Sentinel as AsyncSentinel

    def options(kwargs: dict[str, Any]) -> dict[str, Any]:
        # The synchronous Retry object is not asyncio's: the reader retries on its own.
        return {key: value for key, value in kwargs.items() if key != "retry"}

    if "SENTINELS" in config:
        sentinel = AsyncSentinel(
            config["SENTINELS"],
            sentinel_kwargs=config.get("SENTINEL_KWARGS", {}),
            db=config.get("DB", 0),
            username=config.get("USERNAME"),
            password=config.get("PASSWORD"),
            **{**options(config.get("CONNECTION_KWARGS", {})), "socket_timeout": socket_timeout},
        )
        return sentinel.master_for(config["MASTER_NAME"])
    ssl: dict[str, Any] = (
        {"ssl": True, "ssl_cert_reqs": config.get("SSL_CERT_REQS", "required")} if config.get("SSL") else {}
    )
    return aioredis.Redis(
        host=config.get("HOST", "127.0.0.1"),
        port=config.get("PORT", 6379),
        db=config.get("DB", 0),
        username=config.get("USERNAME"),
        password=config.get("PASSWORD"),
        **{**options(config.get("REDIS_CLIENT_KWARGS", {})), **ssl, "socket_timeout": socket_timeout},
    )
