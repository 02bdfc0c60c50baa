"""The exact response cache: key, cacheability, memory and Redis backends."""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from cachetools import TTLCache

from router.errors import ConfigError
from router.outcome_log import redact_url
from router.throttle import Throttle

__all__ = [
    "IGNORED_FIELDS",
    "CachedResponse",
    "CacheHit",
    "CacheBackend",
    "MemoryCache",
    "RedisCache",
    "cache_key",
    "should_use_cache",
    "open_cache",
]

logger = logging.getLogger(__name__)

#: Request fields that never change the answer, left out of the key.
IGNORED_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store"})
# Fields at these values mean the same as absent (OpenAI defaults).
_DEFAULTS: dict[str, Any] = {"n": 1, "top_p": 1, "presence_penalty": 0,
                             "frequency_penalty": 0}

@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A cached answer: the response body exactly as first sent, and who served it."""

    body: bytes
    served_model: str
    created: float = 0.0

    def to_bytes(self) -> bytes:
        header = json.dumps({"m": self.served_model, "t": self.created}, separators=(",", ":"))
        return header.encode("utf-8") + b"\n" + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> CachedResponse:
        header, _, body = data.partition(b"\n")
        meta = json.loads(header)
        return cls(body=body, served_model=meta["m"], created=float(meta.get("t", 0.0)))


class CacheHit(NamedTuple):
    """A cached response and how the lookup found it."""

    response: CachedResponse
    kind: Literal["exact", "semantic"]


def _canonical(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def _cacheable(body: Mapping[str, Any]) -> bool:
    temperature = body.get("temperature")
    if isinstance(temperature, bool) or not isinstance(temperature, int | float):
        return False
    n = body.get("n")
    return temperature == 0 and (n is None or (not isinstance(n, bool) and n == 1))


def _digest(fields: Mapping[str, Any], namespace: str) -> str:
    normalised = {k: v for k, v in fields.items()
                  if k not in IGNORED_FIELDS and v is not None and _DEFAULTS.get(k, ...) != v}
    payload = json.dumps([namespace, _canonical(normalised)], sort_keys=True,
                         separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def cache_key(body: Mapping[str, Any], *, namespace: str = "") -> str | None:
    """The exact-cache key of a chat request body, or None when it must not be cached."""
    if not isinstance(body, Mapping) or not _cacheable(body):
        return None
    return _digest(body, namespace)


def should_use_cache(body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> bool:
    """True when this request may be answered from, and stored into, the cache.

    False for sampled requests (temperature absent or > 0, n > 1) and when the
    caller asks to bypass: `Cache-Control: no-cache` or `no-store`, `Pragma: no-cache`.
    Header names are matched case-insensitively (plain dicts work too).
    """
    if not isinstance(body, Mapping) or not _cacheable(body):
        return False
    if headers:
        lowered = {str(k).lower(): str(v).lower() for k, v in headers.items()}
        directives = {d.strip().split("=", 1)[0]
                      for d in lowered.get("cache-control", "").split(",")}
        if directives & {"no-cache", "no-store"} or "no-cache" in lowered.get("pragma", ""):
            return False
    return True


class CacheBackend(abc.ABC):
    """Where cached responses (and the semantic cache's index) live. Counters: `hits`,
    `misses`, `errors` (backend failures turned into misses or skipped stores)."""

    def __init__(self, ttl_s: float) -> None:
        if not ttl_s > 0:
            raise ConfigError(f"cache ttl_s={ttl_s} must be positive", hint="e.g. ttl_s=3600")
        self.ttl_s = float(ttl_s)
        self.hits = 0
        self.misses = 0
        self.errors = 0

    async def start(self) -> None:  # noqa: B027 - optional: MemoryCache has nothing to start
        """Connect and check; raises `ConfigError` when the backend is unusable."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    async def get(self, key: str) -> CachedResponse | None:
        value = await self._get(key)
        if value is None:
            self.misses += 1
        else:
            self.hits += 1
        return value

    async def set(self, key: str, value: CachedResponse) -> None:
        await self._set(key, value)

    @abc.abstractmethod
    async def _get(self, key: str) -> CachedResponse | None: ...

    @abc.abstractmethod
    async def _set(self, key: str, value: CachedResponse) -> None: ...

    @abc.abstractmethod
    async def index_get(self, names: Sequence[str]) -> list[bytes | None]:
        """The index values stored under `names` (None where absent or expired), in one
        round trip."""

    @abc.abstractmethod
    async def index_set(self, entries: Mapping[str, bytes]) -> None:
        """Store index values, each expiring after the TTL, in one round trip."""


class MemoryCache(CacheBackend):
    """In-process LRU cache with a TTL. `clock` (monotonic seconds) is injectable for tests.

    The semantic index is a second LRU of `index_per_entry` times `max_entries`
    values (a cached request writes one, plus one per typo-eligible word).
    """

    def __init__(self, max_entries: int = 10_000, ttl_s: float = 3600.0, *,
                 clock: Callable[[], float] = time.monotonic,
                 index_per_entry: int = 16) -> None:
        super().__init__(ttl_s)
        if max_entries < 1 or index_per_entry < 1:
            raise ConfigError(f"cache max_entries={max_entries} and index_per_entry="
                              f"{index_per_entry} must be positive",
                              hint="e.g. max_entries=10000")
        self.max_entries = max_entries
        self.max_index_entries = max_entries * index_per_entry
        # cachetools' TTLCache: least recently used out when full, expired on access.
        self._entries: TTLCache[str, CachedResponse] = TTLCache(max_entries, ttl_s, timer=clock)
        self._index: TTLCache[str, bytes] = TTLCache(self.max_index_entries, ttl_s,
                                                     timer=clock)

    def __len__(self) -> int:
        self._entries.expire()
        return len(self._entries)

    async def _get(self, key: str) -> CachedResponse | None:
        return self._entries.get(key)

    async def _set(self, key: str, value: CachedResponse) -> None:
        self._entries[key] = value

    async def index_get(self, names: Sequence[str]) -> list[bytes | None]:
        return [self._index.get(name) for name in names]

    async def index_set(self, entries: Mapping[str, bytes]) -> None:
        self._index.update(entries)


class RedisCache(CacheBackend):
    """Redis-backed cache shared by replicas; failures at request time become misses."""

    def __init__(self, url: str, ttl_s: float = 3600.0, prefix: str = "router:cache:", *,
                 socket_timeout_s: float = 0.25) -> None:
        super().__init__(ttl_s)
        self.url = url
        self.prefix = prefix
        self.socket_timeout_s = socket_timeout_s
        self._client: Any = None
        self._warnings = Throttle()
        #: Wall-clock time of the first failure of the current outage; None while Redis answers.
        self.failing_since: float | None = None

    async def start(self) -> None:
        from router.redis_connect import redis_client

        self._client = redis_client(self.url, setting="ROUTER_CACHE_URL",
                                    socket_timeout_s=self.socket_timeout_s)
        try:
            await self._client.ping()
        except Exception as exc:  # noqa: BLE001 - optional: start without it
            self.failing_since = time.time()
            logger.warning("the Redis cache at %s does not answer (%s): serving without the "
                           "cache until it is back (check ROUTER_CACHE_URL and that Redis "
                           "is running)", redact_url(self.url), str(exc) or type(exc).__name__)

    def health(self) -> tuple[bool, str | None]:
        """(True, None) while Redis answers; else (False, what that costs)."""
        since = self.failing_since
        if since is None:
            return True, None
        return False, (f"Redis unreachable for {time.time() - since:.0f} s: requests skip "
                       "the cache")

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None

    def _failed(self, action: str, exc: BaseException) -> None:
        self.errors += 1
        if self.failing_since is None:
            self.failing_since = time.time()
        if self._warnings.ready():
            logger.warning("Redis cache %s failed at %s (%s); treated as a miss "
                           "(%d cache errors so far)", action, redact_url(self.url),
                           str(exc) or type(exc).__name__, self.errors)

    def _require_client(self) -> Any:
        if self._client is None:
            raise ConfigError("the Redis cache was used before start()",
                              hint="await cache.start() in the app lifespan")
        return self._client

    async def _get(self, key: str) -> CachedResponse | None:
        client = self._require_client()
        try:
            data = await client.get(self.prefix + key)
        except Exception as exc:  # noqa: BLE001 - the request must not fail on the cache
            self._failed("get", exc)
            return None
        self.failing_since = None
        if data is None:
            return None
        try:
            return CachedResponse.from_bytes(data)
        except (ValueError, KeyError) as exc:
            self._failed("decode", exc)
            return None

    async def _set(self, key: str, value: CachedResponse) -> None:
        client = self._require_client()
        try:
            await client.set(self.prefix + key, value.to_bytes(), px=int(self.ttl_s * 1000))
        except Exception as exc:  # noqa: BLE001
            self._failed("set", exc)
            return
        self.failing_since = None

    async def index_get(self, names: Sequence[str]) -> list[bytes | None]:
        client = self._require_client()
        try:
            found = list(await client.mget([f"{self.prefix}sem:{n}" for n in names]))
        except Exception as exc:  # noqa: BLE001
            self._failed("semantic lookup", exc)
            return [None] * len(names)
        self.failing_since = None
        return found

    async def index_set(self, entries: Mapping[str, bytes]) -> None:
        client = self._require_client()
        ttl_ms = int(self.ttl_s * 1000)
        try:
            async with client.pipeline(transaction=False) as pipe:
                for name, value in entries.items():
                    pipe.set(f"{self.prefix}sem:{name}", value, px=ttl_ms)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001
            self._failed("semantic store", exc)
            return
        self.failing_since = None


def open_cache(url_or_none: str | None, *, ttl_s: float = 3600.0, max_entries: int = 10_000,
               prefix: str = "router:cache:") -> CacheBackend:
    """Build (not start) the cache named by `url_or_none`; see the module docstring."""
    text = (url_or_none or "").strip()
    if text in ("", "memory", "memory://"):
        return MemoryCache(max_entries=max_entries, ttl_s=ttl_s)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("redis", "rediss", "unix"):
        return RedisCache(text, ttl_s=ttl_s, prefix=prefix)
    raise ConfigError(f"cache URL {redact_url(text)!r} is not supported",
                      hint="use redis://host:6379/0, or leave ROUTER_CACHE_URL unset for the "
                           "in-process cache")
