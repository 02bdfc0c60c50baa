"""One way to open a Redis connection for the router's shared state.

The cache (`router.cache.RedisCache`) and the shared circuit breakers
(`router.cooldown_sync`) both want the same client: short socket timeouts and no
retries (Redis is an optimisation here, so when it is down a request must lose at
most a fraction of a second, never wait on it), and a ping at start-up so a bad
URL stops `router serve` with one clear line instead of failing later.
"""

from __future__ import annotations

from typing import Any

from router.errors import ConfigError
from router.outcome_log import redact_url

__all__ = ["connect_redis"]


async def connect_redis(url: str, *, what: str, setting: str,
                        socket_timeout_s: float = 0.25) -> Any:
    """A pinged `redis.asyncio` client for `url`, or `ConfigError` naming `what`
    (e.g. "the Redis cache") and the `setting` to fix, password hidden."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    where = redact_url(url)
    try:
        client = aioredis.from_url(
            url, socket_timeout=socket_timeout_s,
            socket_connect_timeout=max(socket_timeout_s, 1.0),
            retry=Retry(NoBackoff(), 0), health_check_interval=0)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{setting} {where!r} is not a valid Redis URL: {exc}",
                          hint=f"use redis://host:6379/0 ({setting})") from exc
    try:
        await client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure here means "cannot use this URL"
        await client.aclose()
        raise ConfigError(f"cannot reach {what} at {where}: {str(exc) or type(exc).__name__}",
                          hint=f"check the host/port/password in {setting} and that Redis is "
                               "running, or unset it") from exc
    return client
