"""The response cache: exact by default, semantic near-duplicates on request; memory or Redis.

Which requests are cached
-------------------------
Only deterministic ones: `temperature` present and equal to 0, and `n` absent or 1.
An absent temperature is **not** cached, because OpenAI-compatible providers then
sample at temperature 1: two calls would legitimately differ and replaying one
would hide that. `should_use_cache(body, headers)` is the one test the app makes;
it is also False when the caller sends `Cache-Control: no-cache` / `no-store` (or
`Pragma: no-cache`): such a request is neither answered from nor stored into the
cache.

The key (`cache_key`) is the sha256 of the normalised request: every body field
except those that cannot change the answer (`stream`, `stream_options`, `user`,
`metadata`, `store`), null fields and fields at their OpenAI default (`n=1`,
`top_p=1`, penalties 0) removed, integral floats written as integers (so `0.0`
and `0` agree), keys sorted, compact JSON. So JSON key order and whitespace do
not matter; any change to the model asked for, the messages, tools,
response_format, seed, max_tokens... does. The app may pass a `namespace` (e.g.
the catalog hash) so a configuration change starts a fresh key space.

The value (`CachedResponse`) is the full JSON response body as bytes plus the model
that served it, so a hit replays exactly the bytes the first caller received (the
app turns them into SSE for a streaming request). A lookup that finds one returns
a `CacheHit`, which also says how it was found: "exact" (this key) or "semantic"
(a near duplicate, `router.cache._semantic`); the app sends that as `x-router-cache`.

Backends
--------
- `MemoryCache(max_entries, ttl_s)`: in-process LRU with TTL (clock injectable).
  The default; each replica has its own.
- `RedisCache(url, ttl_s, prefix)`: shared by replicas (`redis.asyncio`). The cache
  is optional, so Redis being down never stops a replica: `start()` raises
  `ConfigError` only for a malformed URL; when Redis does not answer its ping it
  logs a warning and the replica starts without the cache, reported by
  `health()` (the app's `/readyz` `degraded` and `router_dependency_up{dependency=
  "cache"}`), and uses it as soon as Redis answers again. At request time a
  Redis failure never fails the request: it is logged (at most once every 10 s),
  counted in `errors` and treated as a miss (or a skipped store). Short socket
  timeouts (0.25 s) and no retries bound the extra latency Redis can add when it
  is down.

`open_cache(url_or_none)`: None, "" or "memory" -> `MemoryCache`; `redis://`,
`rediss://`, `unix://` -> `RedisCache`; anything else is a `ConfigError`.

The semantic near-duplicate cache (off by default) lives in `router.cache._semantic`
and keeps its index through these backends (`index_get`, `index_set`: small values
under their own keys, with the same TTL).
"""

from router.cache._exact import (
    CacheBackend,
    CachedResponse,
    CacheHit,
    MemoryCache,
    RedisCache,
    cache_key,
    open_cache,
    should_use_cache,
)
from router.cache._semantic import (
    SemanticCache,
    same_intent,
)

__all__ = [
    "CacheBackend",
    "CacheHit",
    "CachedResponse",
    "MemoryCache",
    "RedisCache",
    "SemanticCache",
    "cache_key",
    "open_cache",
    "same_intent",
    "should_use_cache",
]
