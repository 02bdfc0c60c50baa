"""One way to open a Redis connection for the router's shared state.

The cache (`router.cache.RedisCache`) and the shared circuit breakers
(`router.upstream.SharedCooldowns`) both want the same client: short socket timeouts and no
retries (Redis is an optimisation here, so when it is down a request must lose at
most a fraction of a second, never wait on it). `redis_client` builds it (a
malformed URL is a `ConfigError`); `connect_redis` also pings it, for callers
that cannot work without Redis. The cache and the breaker sharing are optional:
they start on `redis_client` while Redis is down and use it once it is back.
"""

from __future__ import annotations

from typing import Any

from router.errors import ConfigError
from router.outcome_log import redact_url

__all__ = ["connect_redis", "redis_client"]


def redis_client(url: str, *, setting: str, socket_timeout_s: float = 0.25) -> Any:
    """A `redis.asyncio` client for `url` (no I/O: it connects on first use), or
    `ConfigError` naming the `setting` when the URL is malformed, password hidden."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    try:
        return aioredis.from_url(
            url, socket_timeout=socket_timeout_s,
            socket_connect_timeout=max(socket_timeout_s, 1.0),
            retry=Retry(NoBackoff(), 0), health_check_interval=0)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{setting} {redact_url(url)!r} is not a valid Redis URL: {exc}",
                          hint=f"use redis://host:6379/0 ({setting})") from exc


async def connect_redis(url: str, *, what: str, setting: str,
                        socket_timeout_s: float = 0.25) -> Any:
    """A pinged `redis.asyncio` client for `url`, or `ConfigError` naming `what`
    (e.g. "the Redis cache") and the `setting` to fix, password hidden."""
    where = redact_url(url)
    client = redis_client(url, setting=setting, socket_timeout_s=socket_timeout_s)
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure here means "cannot use this URL"
        await client.aclose()
        raise ConfigError(f"cannot reach {what} at {where}: {str(exc) or type(exc).__name__}",
                          hint=f"check the host/port/password in {setting} and that Redis is "
                               "running, or unset it") from exc
    return client
