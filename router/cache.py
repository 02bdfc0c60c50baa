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
app turns them into SSE for a streaming request).

Backends
--------
- `MemoryCache(max_entries, ttl_s)`: in-process LRU with TTL (clock injectable).
  The default; each replica has its own.
- `RedisCache(url, ttl_s, prefix)`: shared by replicas (`redis.asyncio`). `start()`
  pings and raises `ConfigError` naming the URL (password hidden) when Redis is
  unreachable, so a bad URL stops start-up. At request time a Redis failure never
  fails the request: it is logged (at most once every 10 s), counted in `errors`
  and treated as a miss (or a skipped store). Short socket timeouts (0.25 s) and
  no retries bound the extra latency Redis can add when it is down.

`open_cache(url_or_none)`: None, "" or "memory" -> `MemoryCache`; `redis://`,
`rediss://`, `unix://` -> `RedisCache`; anything else is a `ConfigError`.

Semantic near-duplicate cache (off by default)
----------------------------------------------
`SemanticCache(backend, embed, threshold=0.97)` also answers a request whose
**last user message** is a near duplicate of a cached one, when everything else
(model asked for, parameters, and all earlier messages) is identical: those form
the *scope*, hashed exactly like the key. `embed` is the router's fitted
`FeatureExtractor.embed` (passed in; this module does not import it): a callable
taking a list of `Conversation` and returning an (n, k) array.

Cosine similarity alone is not enough: "Translate 'good morning' into French" and
"... into German" embed almost identically and must not share an answer. So a
candidate with cosine >= `threshold` is accepted only if the intent guard
(`same_intent`) also passes, on case-folded word tokens of the two last user
messages:

1. the numbers are the same (as a multiset): "top 5" is not "top 3";
2. the negations are the same (not, no, never, without, except, n't, ...);
3. content words (stop words removed) have Jaccard similarity >= `min_jaccard`
   (default 0.9), and the words they share come in the same order
   ("dog bites man" is not "man bites dog");
4. no content word that differs is a capitalised name (capitalised anywhere but
   at the start of a sentence) or contains a digit.

What passes in practice: case, whitespace, punctuation, stop-word and small
wording differences in long prompts. Prompts differing in a name, number,
negation or a key word of a short prompt miss. Storage: each scope keeps its
most recent `max_vectors_per_scope` (default 1000) vectors with the guard's
signature (hashed words, not prompt text); a lookup scores them all with numpy
(memory: a bounded deque per scope; Redis: one list per scope, trimmed on
write, expiring with the TTL). Scopes with more entries than that forget the
oldest for semantic lookups; exact hits are unaffected.
"""

from __future__ import annotations

import abc
import base64
import contextlib
import hashlib
import json
import logging
import math
import re
import time
import unicodedata
from collections import OrderedDict, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from router.conversation import Conversation, parse_conversation
from router.errors import ConfigError, DataError
from router.outcome_log import redact_url

__all__ = [
    "IGNORED_FIELDS",
    "CachedResponse",
    "CacheBackend",
    "MemoryCache",
    "RedisCache",
    "SemanticCache",
    "cache_key",
    "should_use_cache",
    "same_intent",
    "open_cache",
]

logger = logging.getLogger(__name__)

#: Request fields that never change the answer, left out of the key.
IGNORED_FIELDS = frozenset({"stream", "stream_options", "user", "metadata", "store"})
# Fields at these values mean the same as absent (OpenAI defaults).
_DEFAULTS: dict[str, Any] = {"n": 1, "top_p": 1, "presence_penalty": 0,
                             "frequency_penalty": 0}

Embed = Callable[[Sequence[Conversation]], Any]


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
    """Where cached responses (and semantic vectors) live. Counters: `hits`,
    `misses`, `errors` (backend failures turned into misses or skipped stores)."""

    def __init__(self, ttl_s: float, max_vectors_per_scope: int) -> None:
        if not ttl_s > 0 or max_vectors_per_scope < 1:
            raise ConfigError(f"cache ttl_s={ttl_s} and max_vectors_per_scope="
                              f"{max_vectors_per_scope} must be positive",
                              hint="e.g. ttl_s=3600")
        self.ttl_s = float(ttl_s)
        self.max_vectors_per_scope = max_vectors_per_scope
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
    async def add_vector(self, scope: str, item: bytes) -> None:
        """Remember one semantic entry in `scope` (bounded, oldest forgotten)."""

    @abc.abstractmethod
    async def vectors(self, scope: str) -> list[bytes]:
        """The semantic entries of `scope` still alive, oldest first."""


class MemoryCache(CacheBackend):
    """In-process LRU cache with a TTL. `clock` (monotonic seconds) is injectable for tests."""

    def __init__(self, max_entries: int = 10_000, ttl_s: float = 3600.0, *,
                 clock: Callable[[], float] = time.monotonic,
                 max_vectors_per_scope: int = 1000) -> None:
        super().__init__(ttl_s, max_vectors_per_scope)
        if max_entries < 1:
            raise ConfigError(f"cache max_entries={max_entries} must be positive",
                              hint="e.g. max_entries=10000")
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, CachedResponse]] = OrderedDict()
        self._scopes: OrderedDict[str, deque[tuple[float, bytes]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    async def _get(self, key: str) -> CachedResponse | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, value = entry
        if self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return value

    async def _set(self, key: str, value: CachedResponse) -> None:
        self._entries[key] = (self._clock() + self.ttl_s, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def add_vector(self, scope: str, item: bytes) -> None:
        items = self._scopes.get(scope)
        if items is None:
            items = self._scopes[scope] = deque(maxlen=self.max_vectors_per_scope)
        items.append((self._clock() + self.ttl_s, item))
        self._scopes.move_to_end(scope)
        while len(self._scopes) > self.max_entries:
            self._scopes.popitem(last=False)

    async def vectors(self, scope: str) -> list[bytes]:
        items = self._scopes.get(scope)
        if not items:
            return []
        now = self._clock()
        while items and items[0][0] <= now:
            items.popleft()
        return [item for _, item in items]


class RedisCache(CacheBackend):
    """Redis-backed cache shared by replicas; failures at request time become misses."""

    def __init__(self, url: str, ttl_s: float = 3600.0, prefix: str = "router:cache:", *,
                 socket_timeout_s: float = 0.25, max_vectors_per_scope: int = 1000) -> None:
        super().__init__(ttl_s, max_vectors_per_scope)
        self.url = url
        self.prefix = prefix
        self.socket_timeout_s = socket_timeout_s
        self._client: Any = None
        self._last_warning = -math.inf

    async def start(self) -> None:
        import redis.asyncio as aioredis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        where = redact_url(self.url)
        try:
            client = aioredis.from_url(
                self.url, socket_timeout=self.socket_timeout_s,
                socket_connect_timeout=max(self.socket_timeout_s, 1.0),
                retry=Retry(NoBackoff(), 0), health_check_interval=0)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"cache URL {where!r} is not a valid Redis URL: {exc}",
                              hint="use redis://host:6379/0 (ROUTER_CACHE_URL)") from exc
        try:
            await client.ping()
        except Exception as exc:  # noqa: BLE001 - any failure here means "cannot use this URL"
            await client.aclose()
            raise ConfigError(f"cannot reach the Redis cache at {where}: "
                              f"{str(exc) or type(exc).__name__}",
                              hint="check the host/port/password in ROUTER_CACHE_URL and that "
                                   "Redis is running, or unset it to use the in-process cache"
                              ) from exc
        self._client = client

    async def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):
                await self._client.aclose()
            self._client = None

    def _failed(self, action: str, exc: BaseException) -> None:
        self.errors += 1
        now = time.monotonic()
        if now - self._last_warning >= 10.0:
            self._last_warning = now
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

    async def add_vector(self, scope: str, item: bytes) -> None:
        client = self._require_client()
        name = f"{self.prefix}sem:{scope}"
        try:
            async with client.pipeline(transaction=False) as pipe:
                pipe.rpush(name, item)
                pipe.ltrim(name, -self.max_vectors_per_scope, -1)
                pipe.pexpire(name, int(self.ttl_s * 1000))
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001
            self._failed("semantic store", exc)

    async def vectors(self, scope: str) -> list[bytes]:
        client = self._require_client()
        try:
            return list(await client.lrange(f"{self.prefix}sem:{scope}", 0, -1))
        except Exception as exc:  # noqa: BLE001
            self._failed("semantic lookup", exc)
            return []


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


# -- the intent guard ----------------------------------------------------------------------

def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


_STOPWORDS = _wordset("""
a an the this that these those is are was were be been being am do does did of to in on at
by for with from into onto about as and or but if then so than too very can could would
should will shall may might must i me my we our you your he she it its they them their
what which who whom whose please hi hello hey just kindly tell give let s
""")
_NEGATIONS = _wordset("""
not no never none nor nothing nobody nowhere neither without except cannot cant dont doesnt
didnt isnt arent wasnt werent wont wouldnt shouldnt couldnt hasnt havent hadnt
""")
_WORD_RE = re.compile(r"\w+(?:['’]\w+)*")
_SENTENCE_END = re.compile(r"[.!?:\n]\s*$")


def _h(token: str) -> str:
    return hashlib.blake2b(token.encode("utf-8"), digest_size=6).hexdigest()


def _signature(text: str) -> dict[str, list[str]]:
    """What the guard compares, with words hashed so no prompt text is stored."""
    text = unicodedata.normalize("NFKC", text)
    words, numbers, negations, names = [], [], [], []
    for match in _WORD_RE.finditer(text):
        raw = match.group(0)
        token = raw.casefold().replace("’", "'")
        bare = token.replace("'", "")
        if (bare.endswith("nt") and "'" in token) or bare in _NEGATIONS:
            negations.append(bare)
            continue
        if any(ch.isdigit() for ch in token):
            numbers.append(token)
            words.append(token)
            continue
        if bare in _STOPWORDS or token.split("'")[0] in _STOPWORDS:
            continue
        words.append(token)
        start = match.start()
        sentence_start = start == 0 or bool(_SENTENCE_END.search(text[:start]))
        if raw[:1].isupper() and not sentence_start:
            names.append(token)
    return {"w": [_h(w) for w in words], "n": sorted(_h(x) for x in numbers),
            "x": sorted(negations), "e": sorted({_h(x) for x in names})}


def _guard(a: Mapping[str, list[str]], b: Mapping[str, list[str]], min_jaccard: float) -> bool:
    if a["n"] != b["n"] or a["x"] != b["x"]:
        return False
    wa, wb = set(a["w"]), set(b["w"])
    union = wa | wb
    if union and len(wa & wb) / len(union) < min_jaccard:
        return False
    differing = wa ^ wb
    if differing & (set(a["e"]) | set(b["e"])) or differing & (set(a["n"]) | set(b["n"])):
        return False
    shared = wa & wb
    order_a = list(dict.fromkeys(w for w in a["w"] if w in shared))
    order_b = list(dict.fromkeys(w for w in b["w"] if w in shared))
    return order_a == order_b


def same_intent(a: str, b: str, *, min_jaccard: float = 0.9) -> bool:
    """The semantic cache's guard beyond cosine; see the module docstring for the rules."""
    return _guard(_signature(a), _signature(b), min_jaccard)


# -- the semantic cache ----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Probe:
    key: str
    scope: str
    signature: dict[str, list[str]]
    vector: np.ndarray


class SemanticCache:
    """Exact cache plus conservative near-duplicate lookup; see the module docstring.

    `lookup(body)` tries the exact key first, then near duplicates in the same
    scope. `store(body, response)` writes the exact entry and the vector. Counters:
    `exact_hits`, `semantic_hits`, `misses`, `embed_errors` (an `embed` that raises,
    e.g. before a model is loaded, is logged and the request falls back to the
    exact cache: it never fails the request). Embedding runs inline on the event
    loop (it is a small CPU call for the router's extractor); pass a faster or
    thread-offloaded `embed` if yours is heavy.
    """

    def __init__(self, backend: CacheBackend, embed: Embed, *, threshold: float = 0.97,
                 min_jaccard: float = 0.9, namespace: str = "") -> None:
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"semantic cache threshold {threshold} must be in (0, 1]",
                              hint="e.g. 0.97; lower values risk wrong answers")
        if not 0.0 <= min_jaccard <= 1.0:
            raise ConfigError(f"semantic cache min_jaccard {min_jaccard} must be in [0, 1]",
                              hint="e.g. 0.9")
        self.backend = backend
        self.embed = embed
        self.threshold = threshold
        self.min_jaccard = min_jaccard
        self.namespace = namespace
        self.exact_hits = 0
        self.semantic_hits = 0
        self.misses = 0
        self.embed_errors = 0
        self._last_warning = -math.inf

    def _probe(self, body: Mapping[str, Any]) -> _Probe | None:
        key = cache_key(body, namespace=self.namespace)
        messages = body.get("messages")
        if key is None or not isinstance(messages, list) or not messages:
            return None
        last = messages[-1]
        if not isinstance(last, Mapping) or last.get("role") != "user":
            return None
        try:
            conversation = parse_conversation(messages, where="cached request")
        except DataError:
            return None
        scope_fields = dict(body)
        scope_fields["messages"] = messages[:-1]
        scope = _digest(scope_fields, "semantic:" + self.namespace)
        try:
            vector = np.asarray(self.embed([conversation]), dtype=np.float32).reshape(-1)
        except Exception as exc:  # noqa: BLE001 - a failing embedder degrades to exact-only
            self.embed_errors += 1
            now = time.monotonic()
            if now - self._last_warning >= 10.0:
                self._last_warning = now
                logger.warning("semantic cache: embedding failed (%s); exact matches only "
                               "(%d failures so far)", str(exc) or type(exc).__name__,
                               self.embed_errors)
            return None
        norm = float(np.linalg.norm(vector))
        if not norm or not math.isfinite(norm):
            return None
        return _Probe(key, scope, _signature(conversation.last_user), vector / norm)

    async def lookup(self, body: Mapping[str, Any]) -> CachedResponse | None:
        """The cached response for `body` (exact, else a guarded near duplicate) or None."""
        key = cache_key(body, namespace=self.namespace)
        if key is None:
            return None
        found = await self.backend.get(key)
        if found is not None:
            self.exact_hits += 1
            return found
        probe = self._probe(body)
        if probe is not None:
            for other_key in self._candidates(probe, await self.backend.vectors(probe.scope)):
                found = await self.backend.get(other_key)
                if found is not None:
                    self.semantic_hits += 1
                    return found
        self.misses += 1
        return None

    def _candidates(self, probe: _Probe, items: list[bytes]) -> list[str]:
        """Keys of entries over the threshold that pass the guard, most similar first."""
        decoded, vectors = [], []
        for raw in items:
            try:
                item = json.loads(raw)
                vec = np.frombuffer(base64.b64decode(item["v"]), dtype=np.float32)
            except (ValueError, KeyError, TypeError):
                continue
            if vec.shape != probe.vector.shape:
                continue  # written by another embedding (a retrained extractor)
            decoded.append(item)
            vectors.append(vec)
        if not vectors:
            return []
        scores = np.stack(vectors) @ probe.vector
        keys = []
        for index in np.argsort(-scores, kind="stable"):
            if scores[index] < self.threshold:
                break
            item = decoded[index]
            if item["k"] != probe.key and _guard(probe.signature, item["g"], self.min_jaccard):
                keys.append(item["k"])
        return list(dict.fromkeys(keys))[:3]

    async def store(self, body: Mapping[str, Any], response: CachedResponse) -> None:
        """Cache `response` for `body` (no-op when the body is not cacheable)."""
        key = cache_key(body, namespace=self.namespace)
        if key is None:
            return
        await self.backend.set(key, response)
        probe = self._probe(body)
        if probe is None:
            return
        item = json.dumps({"k": probe.key, "g": probe.signature,
                           "v": base64.b64encode(probe.vector.tobytes()).decode("ascii")},
                          separators=(",", ":"))
        await self.backend.add_vector(probe.scope, item.encode("utf-8"))

