"""The OpenAI-compatible upstream client: fallback chains, retries and cooldowns.

The router must never be the reason for an outage, so a call goes to a *chain*
of models (`chain_for`: the chosen model, its catalog fallbacks, then the other
candidates that meet the bar, cheapest first) and moves along it when a provider
fails. The rules, in one place (`UpstreamClient._call_chain`):

- connect error, timeout, 429, 5xx: retry the same model up to `max_retries`
  times (exponential backoff, or the `Retry-After` it sent when that is at most
  `max_retry_after_s`; a longer `Retry-After` opens the model's breaker for that
  long and moves on, since waiting would hold the caller), then the next model.
  A timeout is not retried on the same model: it already cost the caller a full
  timeout.
- 400 `context_length_exceeded`: the next model in the chain with a larger
  window; if none, the smallest-window catalog model that fits.
- any other 4xx: raised at once as `UpstreamClientError` with the upstream's
  status and message. It is the request that is wrong; another model would
  reject it too, and retrying would hide the caller's bug.
- a model whose breaker is open (`Cooldowns`) is skipped, unless every model of
  the chain is, in which case the chain is tried anyway.

Errors are translated at ONE boundary (`translate_error`) into the tree below;
when the whole chain fails, the last error is raised with `.attempts` set.
Streaming (`UpstreamClient.stream`) falls back only until the first event has
arrived; once bytes went to the client a failure becomes an SSE error event then
`data: [DONE]`, never a silent cut. API keys come from the environment
(`ModelSpec.api_key`), go only into the `Authorization` header and are redacted
from anything the upstream echoes back.

Metrics and logs hook in through `on_attempt(Attempt)` and
`Cooldowns(on_state_change=...)`, and every result carries its attempts.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx

from router.catalog import Catalog, estimate_tokens
from router.conversation import parse_conversation
from router.errors import DataError, RouterError
from router.sse import DONE, SSEDecoder, error_event

__all__ = [
    "UpstreamError",
    "UpstreamUnavailable",
    "UpstreamTimeout",
    "UpstreamRateLimited",
    "UpstreamServerError",
    "ContextLengthExceeded",
    "UpstreamClientError",
    "translate_error",
    "Attempt",
    "Usage",
    "UpstreamResult",
    "UpstreamStream",
    "Cooldowns",
    "UpstreamClient",
    "chain_for",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- errors


class UpstreamError(RouterError):
    """A provider call failed. `status_code` is what the router should answer with.

    `model` and `url` say which call; `upstream_status` is the provider's HTTP
    status (None when no response came); `attempts` is set on the error raised
    when a whole chain failed. `to_openai()` gives the OpenAI error body.
    """

    status_code: int = 502
    openai_type: str = "upstream_error"
    kind: str = "upstream_error"

    def __init__(self, message: str, *, model: str | None = None, url: str | None = None,
                 upstream_status: int | None = None, code: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.model = model
        self.url = url
        self.upstream_status = upstream_status
        self.code = code
        self.attempts: list[Attempt] = []

    def to_openai(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.openai_type,
                          "param": None, "code": self.code}}


class UpstreamUnavailable(UpstreamError):
    """No answer: connection refused or reset, DNS, a model with no base_url."""

    status_code = 503
    kind = "unavailable"


class UpstreamTimeout(UpstreamUnavailable):
    """The provider did not answer within the client's timeout."""

    status_code = 504
    kind = "timeout"


class UpstreamRateLimited(UpstreamError):
    """429. `retry_after` (seconds) is the provider's `Retry-After`, if it sent one."""

    status_code = 429
    openai_type = "rate_limit_error"
    kind = "rate_limited"

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class UpstreamServerError(UpstreamError):
    """5xx, or a 200 whose body is not a usable completion."""

    status_code = 502
    kind = "server_error"


class ContextLengthExceeded(UpstreamError):
    """400 `context_length_exceeded`. `needed_tokens` is parsed from the message if given."""

    status_code = 400
    openai_type = "invalid_request_error"
    kind = "context_length"

    def __init__(self, message: str, *, needed_tokens: int | None = None,
                 **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.needed_tokens = needed_tokens


class UpstreamClientError(UpstreamError):
    """Any other 4xx: the request is wrong; passed to the caller with its status."""

    openai_type = "invalid_request_error"
    kind = "client_error"

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.status_code = self.upstream_status or 400


_DRAIN_S = 0.5
_TOKENS_RE = re.compile(r"(\d+)\s+tokens")


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "[redacted]") if secret else text


def _retry_after(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(value) if value else None
        if parsed is None:
            return None
        return max(0.0, parsed.timestamp() - time.time())


def _error_fields(content: bytes) -> tuple[str, str | None]:
    """(message, code) from an OpenAI-shaped error body, or the raw text."""
    try:
        payload = json.loads(content)
    except ValueError:
        return content[:300].decode("utf-8", errors="replace").strip(), None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        return str(error.get("message") or ""), str(code) if code is not None else None
    if isinstance(error, str):
        return error, None
    return json.dumps(payload)[:300], None


def translate_error(model: str, url: str, *, response: httpx.Response | None = None,
                    exc: BaseException | None = None, secret: str | None = None
                    ) -> UpstreamError:
    """The one boundary where transport failures and error responses become our errors.

    `response` must have its body read. `secret` (the API key) is removed from
    anything quoted back.
    """
    where = f"upstream {model} ({url})"
    if exc is not None:
        detail = _redact(str(exc) or type(exc).__name__, secret)
        if isinstance(exc, httpx.TimeoutException):
            return UpstreamTimeout(f"{where} timed out: {detail}", model=model, url=url,
                                   hint="the provider is slow or down; the router fell back "
                                        "where it could; raise the timeout if this persists")
        return UpstreamUnavailable(f"{where} unreachable: {detail}", model=model, url=url,
                                   hint="check the model's base_url and the network")
    assert response is not None
    status = response.status_code
    message, code = _error_fields(response.content)
    message = _redact(message, secret)
    text = f"{where} answered {status}: {message}" if message else f"{where} answered {status}"
    common = {"model": model, "url": url, "upstream_status": status, "code": code}
    if status == 429:
        return UpstreamRateLimited(text, retry_after=_retry_after(response.headers), **common,
                                   hint="the provider is rate limiting; slow down or add quota")
    if status >= 500:
        return UpstreamServerError(text, **common, hint="provider-side failure; retry later")
    if code == "context_length_exceeded" or (
        status in (400, 413) and "context length" in message.lower()
    ):
        found = [int(n) for n in _TOKENS_RE.findall(message)]
        return ContextLengthExceeded(text, needed_tokens=max(found) if found else None,
                                     **{**common, "code": "context_length_exceeded"},
                                     hint="shorten the messages or allow a model with a "
                                          "larger context window")
    return UpstreamClientError(text, **common,
                               hint="the request was rejected as invalid; fix it, another "
                                    "model would reject it too")


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try of one model. `error` is the error kind ('timeout', 'rate_limited',
    'server_error', 'unavailable', 'context_length', 'client_error', 'cooldown'),
    None on success; `status` the upstream HTTP status, None when none came."""

    model: str
    status: int | None
    error: str | None
    latency_s: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts; `estimated` when the upstream sent none and we counted."""

    prompt_tokens: int
    completion_tokens: int
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class UpstreamResult:
    """A successful non-streaming call."""

    response: dict[str, Any]
    model: str
    attempts: list[Attempt]
    usage: Usage
    ttfb_s: float
    latency_s: float
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def fallbacks(self) -> int:
        """How many models before the one that answered were given up on."""
        return len({a.model for a in self.attempts if a.model != self.model})


# --------------------------------------------------------------------------- cooldowns


@dataclass
class _Breaker:
    failures: int = 0
    opened_at: float | None = None
    open_for: float = 0.0
    trial_started: float | None = None


class Cooldowns:
    """Per-model circuit breaker.

    Closed: requests go through; `failure_threshold` consecutive failures open
    it. Open: the model is skipped for `cooldown_s` (or longer if a provider's
    `Retry-After` said so). Half-open: after that, one trial request is let
    through; success closes the breaker, failure opens it again. A trial that
    never reports back (cancelled) is given up on after `cooldown_s`.
    `on_state_change(model, state)` is called with 'open', 'half_open', 'closed'.

    State is per process and not locked: share one instance per event loop
    (each router replica learns on its own; a dead provider is found in
    `failure_threshold` requests anyway).
    """

    def __init__(self, failure_threshold: int = 3, cooldown_s: float = 30.0, *,
                 clock: Callable[[], float] = time.monotonic,
                 on_state_change: Callable[[str, str], None] | None = None) -> None:
        if failure_threshold < 1 or cooldown_s < 0:
            raise RouterError(f"Cooldowns: failure_threshold must be >= 1 and cooldown_s >= 0, "
                              f"got {failure_threshold!r}, {cooldown_s!r}")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.on_state_change = on_state_change
        self._breakers: dict[str, _Breaker] = {}

    def state(self, model: str) -> str:
        b = self._breakers.get(model)
        if b is None or b.opened_at is None:
            return "closed"
        if self.clock() - b.opened_at >= b.open_for:
            return "half_open"
        return "open"

    def is_available(self, model: str) -> bool:
        """Would `acquire` let a request through now (without taking the trial)?"""
        state = self.state(model)
        if state == "closed":
            return True
        if state == "open":
            return False
        b = self._breakers[model]
        return b.trial_started is None or self.clock() - b.trial_started >= self.cooldown_s

    def acquire(self, model: str) -> bool:
        """May a request go to `model` now? In half-open state this takes the one trial."""
        if not self.is_available(model):
            return False
        if self.state(model) == "half_open":
            self._breakers[model].trial_started = self.clock()
            self._notify(model, "half_open")
        return True

    def release(self, model: str) -> None:
        """A request that got through ended without a verdict (cancelled)."""
        b = self._breakers.get(model)
        if b is not None:
            b.trial_started = None

    def record_success(self, model: str) -> None:
        b = self._breakers.pop(model, None)
        if b is not None and b.opened_at is not None:
            self._notify(model, "closed")

    def record_failure(self, model: str, *, open_for: float | None = None) -> None:
        """Count a failure; `open_for` opens the breaker at once for that long."""
        b = self._breakers.setdefault(model, _Breaker())
        b.failures += 1
        was_half_open = b.opened_at is not None
        if open_for is not None or was_half_open or b.failures >= self.failure_threshold:
            b.opened_at = self.clock()
            b.open_for = max(self.cooldown_s, open_for or 0.0)
            b.trial_started = None
            self._notify(model, "open")

    def open_models(self) -> list[str]:
        return [m for m in self._breakers if self.state(m) == "open"]

    def _notify(self, model: str, state: str) -> None:
        log.info("upstream %s: circuit %s", model, state)
        if self.on_state_change is not None:
            self.on_state_change(model, state)


def chain_for(catalog: Catalog, model: str, candidates_by_cost: Iterable[str] = (), *,
              cooldowns: Cooldowns | None = None, proxyable_only: bool = False) -> list[str]:
    """The fallback chain: `model`, its catalog fallbacks, then `candidates_by_cost`
    (the other models meeting the bar, cheapest first, as the caller ranks them).

    Duplicates and names not in the catalog are dropped (the chosen model must be
    in it). Models in cooldown are left out unless every model is, in which case
    the full chain is returned: trying a cooling model beats refusing outright.
    `proxyable_only` drops models without a `base_url`.
    """
    catalog[model]  # raises ConfigError naming the known models
    chain: list[str] = []
    for name in (model, *catalog[model].fallbacks, *candidates_by_cost):
        if name in catalog and name not in chain and (
            not proxyable_only or catalog[name].base_url
        ):
            chain.append(name)
    if cooldowns is not None:
        warm = [m for m in chain if cooldowns.is_available(m)]
        if warm:
            return warm
    return chain


# --------------------------------------------------------------------------- client


def _prompt_tokens(body: Mapping[str, Any]) -> int:
    try:
        return parse_conversation(body.get("messages"), where="messages").input_tokens
    except DataError:
        return estimate_tokens(json.dumps(body.get("messages", ""), ensure_ascii=False))


def _usage_from(payload: Any) -> tuple[int, int] | None:
    usage = payload.get("usage") if isinstance(payload, dict) else None
    if isinstance(usage, dict):
        try:
            return int(usage["prompt_tokens"]), int(usage["completion_tokens"])
        except (KeyError, TypeError, ValueError):
            return None
    return None


def _message_text(payload: dict[str, Any]) -> str:
    parts = []
    for choice in payload.get("choices") or []:
        message = choice.get("message") if isinstance(choice, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            parts.append(message["content"])
    return "".join(parts)


def _delta_text(payload: Any) -> str:
    parts = []
    for choice in (payload.get("choices") or []) if isinstance(payload, dict) else []:
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if isinstance(delta, dict) and isinstance(delta.get("content"), str):
            parts.append(delta["content"])
    return "".join(parts)


def _needs_parse(data: str) -> bool:
    """Whether an event's JSON may hold an error or a (non-null) usage.

    Inside JSON strings quotes are escaped, so `"error"` and `"usage"` unescaped
    can only be keys (or whole string values, which merely cost a parse).
    """
    if '"error"' in data:
        return True
    usages = data.count('"usage"')
    return usages > 0 and usages != data.count('"usage":null') + data.count('"usage": null')


def _loads(data: str) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


class _Retry(Exception):
    """Internal: move on (next try or next model) after `error`."""

    def __init__(self, error: UpstreamError) -> None:
        self.error = error


class UpstreamStream:
    """A started stream: iterate it for SSE byte events (whole events, in order),
    or `batches()` for the same bytes grouped per network read (what a proxy sends).

    The chain was already tried when you get one: `model` is the model that
    answered; `attempts` and `ttfb_s` are set; `usage`, `latency_s` and `error`
    are filled in when the stream ends. `finished` is True only when the stream
    ran to its end (`[DONE]`, or the error event then `[DONE]`), False when it was
    cut short on our side (the client went away). If the provider fails
    mid-stream the iterator yields an SSE error event then `data: [DONE]` and sets
    `error`. Call `aclose()` if you stop reading early.
    """

    def __init__(self, client: UpstreamClient, model: str, attempts: list[Attempt],
                 response: httpx.Response, chunks: AsyncIterator[bytes],
                 first_events: list[Any], decoder: SSEDecoder, *, prompt_tokens: int,
                 started: float, ttfb_s: float, url: str, secret: str | None,
                 forward_usage: bool) -> None:
        self.model = model
        self.attempts = attempts
        self.ttfb_s = ttfb_s
        self.usage: Usage | None = None
        self.error: UpstreamError | None = None
        self.finished = False
        self.latency_s: float | None = None
        self._client = client
        self._response = response
        self._chunks = chunks
        self._pending = first_events
        self._decoder = decoder
        self._prompt_tokens = prompt_tokens
        self._started = started
        self._url = url
        self._secret = secret
        self._forward_usage = forward_usage
        self._text: list[tuple[bool, str]] = []  # (still raw JSON, text)
        self._upstream_usage: tuple[int, int] | None = None
        self._iterator: Any = None
        self._verdict = False  # whether the breaker was told how this stream went

    @property
    def fallbacks(self) -> int:
        return len({a.model for a in self.attempts if a.model != self.model})

    def __aiter__(self) -> AsyncIterator[bytes]:
        """Whole SSE events, one per item."""
        if self._iterator is None:
            self._iterator = self._events()
        return self._iterator

    def batches(self) -> AsyncIterator[bytes]:
        """Whole SSE events, joined per network read: what a proxy should forward.

        One ASGI send and one socket write per upstream read instead of per event,
        with the same bytes. Use either this or plain iteration, not both.
        """
        if self._iterator is None:
            self._iterator = self._joined()
        return self._iterator

    async def _events(self) -> AsyncIterator[bytes]:
        batches = self._batches()
        try:
            async for batch in batches:
                for event in batch:
                    yield event
        finally:
            await batches.aclose()

    async def _joined(self) -> AsyncIterator[bytes]:
        batches = self._batches()
        try:
            async for batch in batches:
                yield batch[0] if len(batch) == 1 else b"".join(batch)
        finally:
            await batches.aclose()

    async def _batches(self) -> AsyncIterator[list[bytes]]:
        # Events are grouped as they arrived (one network read) and only whole.
        client = self._client
        batch: list[bytes] = []
        try:
            try:
                saw_done = self._take(self._pending, batch)
                self._pending = []
                if batch:
                    out, batch = batch, []
                    yield out
                if not saw_done:
                    async for chunk in self._chunks:
                        saw_done = self._take(self._decoder.feed(chunk), batch)
                        if batch:
                            out, batch = batch, []
                            yield out
                        if saw_done:
                            break
                if not saw_done:
                    saw_done = self._take(self._decoder.flush(), batch)
                    if batch:
                        out, batch = batch, []
                        yield out
                if not saw_done:
                    raise _Retry(UpstreamServerError(
                        f"upstream {self.model} ({self._url}) ended the stream without "
                        "data: [DONE]", model=self.model, url=self._url))
            except httpx.HTTPError as exc:
                self._fail(translate_error(self.model, self._url, exc=exc, secret=self._secret))
            except _Retry as failed:
                self._fail(failed.error)
            if self.error is None:
                await self._drain()
            if self.error is not None:
                # Whole events that came before the failure, then the error, then DONE.
                yield [*batch, error_event(
                    f"the upstream failed mid-stream: {self.error.message}",
                    code=self.error.kind, status=self.error.status_code), DONE]
            else:
                self._verdict = True
                client.cooldowns.record_success(self.model)
            self.finished = True
        finally:
            self._settle()
            await self._response.aclose()

    def _take(self, events: Iterable[Any], batch: list[bytes]) -> bool:
        """Observe `events`, append what to forward to `batch`; True once `[DONE]` was seen."""
        saw_done = False
        for event in events:
            out = self._observe(event)
            if out is not None:
                batch.append(out)
            saw_done = saw_done or event.is_done
        return saw_done

    def _settle(self) -> None:
        if self.latency_s is None:
            self.latency_s = self._client.clock() - self._started
            self._finish_usage()

    async def _drain(self) -> None:
        """Read the end of the HTTP body after `[DONE]` (the chunked-encoding
        terminator), so the connection goes back to the pool instead of being
        closed: a new connection per stream costs about a millisecond on loopback
        and a TLS handshake in production. Bounded, in case an upstream lingers."""
        with contextlib.suppress(httpx.HTTPError, TimeoutError):
            async with asyncio.timeout(_DRAIN_S):
                async for _ in self._chunks:
                    pass

    def _observe(self, event: Any) -> bytes | None:
        data = event.data
        if data is None or not _needs_parse(data):
            # Most chunks are plain deltas: keep their text for a token count the
            # upstream may never send, and parse it only then (`_finish_usage`).
            if data is not None:
                self._text.append((True, data))
            return event.raw
        payload = event.json()
        if isinstance(payload, dict):
            if "error" in payload:
                message, code = _error_fields(json.dumps(payload).encode())
                raise _Retry(UpstreamServerError(
                    f"upstream {self.model} ({self._url}) sent an error event: "
                    f"{_redact(message, self._secret)}", model=self.model, url=self._url,
                    code=code))
            self._text.append((False, _delta_text(payload)))
            usage = _usage_from(payload)
            if usage is not None:
                self._upstream_usage = usage
                if not self._forward_usage and not payload.get("choices"):
                    return None  # the caller did not ask for the usage-only chunk
        return event.raw

    def _fail(self, error: UpstreamError) -> None:
        self.error = error
        self._verdict = True
        self._client.cooldowns.record_failure(self.model)
        log.warning("upstream %s failed mid-stream: %s", self.model, error.message)

    def _finish_usage(self) -> None:
        if self._upstream_usage is not None:
            self.usage = Usage(*self._upstream_usage)
        else:
            text = "".join(_delta_text(_loads(part)) if raw else part
                           for raw, part in self._text)
            self.usage = Usage(self._prompt_tokens, estimate_tokens(text) if text else 0,
                               estimated=True)

    async def aclose(self) -> None:
        """Stop early (the client went away): close the connection, no verdict on the model."""
        if self._iterator is not None:
            await self._iterator.aclose()
        self._settle()
        if not self._verdict:
            self._client.cooldowns.release(self.model)
        await self._response.aclose()


class UpstreamClient:
    """Calls OpenAI-compatible providers along a fallback chain (see module docstring).

    `http` is injected (a `MockTransport` in unit tests, a real pool in serving);
    `base_url_override` sends every model to one URL (fake upstream, local use);
    `sleep` is injectable so backoff is instant in tests; `clock` times attempts.
    """

    def __init__(self, catalog: Catalog, *, http: httpx.AsyncClient,
                 base_url_override: str | None = None, max_retries: int = 1,
                 backoff_s: float = 0.25, max_backoff_s: float = 4.0,
                 max_retry_after_s: float = 5.0, cooldown: Cooldowns | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Any] = asyncio.sleep,
                 on_attempt: Callable[[Attempt], None] | None = None) -> None:
        if max_retries < 0:
            raise RouterError(f"max_retries must be >= 0, got {max_retries!r}")
        self.catalog = catalog
        self.http = http
        self.base_url_override = base_url_override.rstrip("/") if base_url_override else None
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_retry_after_s = max_retry_after_s
        self.cooldowns = cooldown if cooldown is not None else Cooldowns(clock=clock)
        self.clock = clock
        self.sleep = sleep
        self.on_attempt = on_attempt

    def chain_for(self, model: str, candidates_by_cost: Iterable[str] = ()) -> list[str]:
        """`chain_for` with this client's catalog and cooldowns."""
        return chain_for(self.catalog, model, candidates_by_cost, cooldowns=self.cooldowns,
                         proxyable_only=self.base_url_override is None)

    def url_for(self, model: str) -> str:
        base = self.base_url_override or self.catalog[model].base_url
        if not base:
            raise UpstreamUnavailable(
                f"model {model!r} has no base_url in {self.catalog.source}",
                model=model, hint="add base_url to the catalog entry, or run with "
                                  "--upstream-base-url")
        return base.rstrip("/") + "/chat/completions"

    async def complete(self, body: Mapping[str, Any], chain: Sequence[str]) -> UpstreamResult:
        """A non-streaming completion from the first model of `chain` that answers."""
        prompt_tokens = _prompt_tokens(body)

        async def attempt(model: str, url: str, headers: dict[str, str], secret: str | None,
                          started: float) -> UpstreamResult:
            payload = {**body, "model": model, "stream": False}
            payload.pop("stream_options", None)
            request = self.http.build_request("POST", url, json=payload, headers=headers)
            try:
                response = await self.http.send(request, stream=True)
                ttfb = self.clock() - started
                try:
                    await response.aread()
                finally:
                    await response.aclose()
            except httpx.HTTPError as exc:
                raise _Retry(translate_error(model, url, exc=exc, secret=secret)) from None
            if response.status_code >= 400:
                raise _Retry(translate_error(model, url, response=response, secret=secret))
            try:
                data = response.json()
                if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
                    raise ValueError("no choices")
            except ValueError:
                raise _Retry(UpstreamServerError(
                    f"upstream {model} ({url}) answered {response.status_code} with a body "
                    "that is not a chat completion", model=model, url=url,
                    upstream_status=response.status_code)) from None
            counted = _usage_from(data)
            usage = (Usage(*counted) if counted is not None else
                     Usage(prompt_tokens, estimate_tokens(_message_text(data)), estimated=True))
            return UpstreamResult(data, model, [], usage, ttfb_s=ttfb,
                                  latency_s=self.clock() - started,
                                  headers=dict(response.headers))

        result, attempts = await self._call_chain(body, chain, attempt, prompt_tokens)
        return UpstreamResult(result.response, result.model, attempts, result.usage,
                              result.ttfb_s, result.latency_s, result.headers)

    async def stream(self, body: Mapping[str, Any], chain: Sequence[str]) -> UpstreamStream:
        """Start a streaming completion; falls back along `chain` until the first event.

        Raises the chain's last `UpstreamError` when no model produced a first
        event, so the caller can still answer with a proper HTTP status.
        """
        prompt_tokens = _prompt_tokens(body)
        options = body.get("stream_options")
        forward_usage = bool(isinstance(options, dict) and options.get("include_usage"))

        async def attempt(model: str, url: str, headers: dict[str, str], secret: str | None,
                          started: float) -> UpstreamStream:
            payload = {**body, "model": model, "stream": True,
                       "stream_options": {**(options if isinstance(options, dict) else {}),
                                          "include_usage": True}}
            request = self.http.build_request("POST", url, json=payload, headers=headers)
            try:
                response = await self.http.send(request, stream=True)
            except httpx.HTTPError as exc:
                raise _Retry(translate_error(model, url, exc=exc, secret=secret)) from None
            try:
                if response.status_code >= 400:
                    await response.aread()
                    raise _Retry(translate_error(model, url, response=response, secret=secret))
                decoder = SSEDecoder()
                first: list[Any] = []
                chunks = response.aiter_bytes()
                async for chunk in chunks:
                    first.extend(decoder.feed(chunk))
                    if any(e.data is not None for e in first):
                        break
                else:
                    first.extend(decoder.flush())
                if not any(e.data is not None for e in first):
                    raise _Retry(UpstreamServerError(
                        f"upstream {model} ({url}) closed the stream before any event",
                        model=model, url=url, upstream_status=response.status_code))
                for event in first:
                    payload_json = event.json()
                    if isinstance(payload_json, dict) and "error" in payload_json:
                        message, code = _error_fields(event.data.encode())
                        raise _Retry(UpstreamServerError(
                            f"upstream {model} ({url}) sent an error event: "
                            f"{_redact(message, secret)}", model=model, url=url, code=code))
            except httpx.HTTPError as exc:
                await response.aclose()
                raise _Retry(translate_error(model, url, exc=exc, secret=secret)) from None
            except BaseException:
                await response.aclose()
                raise
            return UpstreamStream(self, model, [], response, chunks, first, decoder,
                                  prompt_tokens=prompt_tokens, started=started,
                                  ttfb_s=self.clock() - started, url=url, secret=secret,
                                  forward_usage=forward_usage)

        result, attempts = await self._call_chain(body, chain, attempt, prompt_tokens,
                                                  success_closes_breaker=False)
        result.attempts = attempts
        return result

    # The rules live here, once, for both call styles.
    async def _call_chain(self, body: Mapping[str, Any], chain: Sequence[str],
                          attempt: Callable[..., Any], prompt_tokens: int, *,
                          success_closes_breaker: bool = True) -> tuple[Any, list[Attempt]]:
        if not chain:
            raise UpstreamUnavailable("no model to call: the fallback chain is empty",
                                      hint="pass at least one catalog model")
        remaining = list(chain)
        attempts: list[Attempt] = []
        last_error: UpstreamError | None = None
        # Never refuse outright because of cooldowns: if every model is cooling,
        # try them anyway.
        respect_cooldowns = any(self.cooldowns.is_available(m) for m in remaining)

        while remaining:
            model = remaining.pop(0)
            if respect_cooldowns and not self.cooldowns.is_available(model):
                self._record(attempts, Attempt(model, None, "cooldown", 0.0))
                continue
            try:
                url = self.url_for(model)
            except UpstreamError as exc:
                self._record(attempts, Attempt(model, None, exc.kind, 0.0))
                last_error = exc
                continue
            secret = self.catalog[model].api_key if model in self.catalog else None
            headers = {"authorization": f"Bearer {secret}"} if secret else {}
            tries = 0
            while True:
                tries += 1
                self.cooldowns.acquire(model)  # takes the half-open trial, if that is the state
                started = self.clock()
                try:
                    result = await attempt(model, url, headers, secret, started)
                except _Retry as failed:
                    error = failed.error
                    self._record(attempts, Attempt(model, error.upstream_status, error.kind,
                                                   self.clock() - started))
                    last_error = error
                    log.warning("upstream %s attempt %d failed (%s): %s", model, tries,
                                error.kind, error.message)
                    if isinstance(error, UpstreamClientError):
                        self.cooldowns.record_success(model)  # the provider is up
                        error.attempts = attempts
                        raise error from None
                    if isinstance(error, ContextLengthExceeded):
                        self.cooldowns.release(model)
                        remaining = self._bigger_windows(model, remaining, error,
                                                         prompt_tokens)
                        break
                    wait = self._wait_before_retry(error, tries)
                    if isinstance(error, UpstreamRateLimited) and error.retry_after and (
                        error.retry_after > self.max_retry_after_s
                    ):
                        self.cooldowns.record_failure(model, open_for=error.retry_after)
                    else:
                        self.cooldowns.record_failure(model)
                    if wait is None or tries > self.max_retries or (
                        respect_cooldowns and not self.cooldowns.is_available(model)
                    ):
                        break
                    await self.sleep(wait)
                    continue
                except BaseException:
                    self.cooldowns.release(model)  # cancelled: no verdict on the provider
                    raise
                self._record(attempts, Attempt(model, 200, None, self.clock() - started))
                if success_closes_breaker:
                    self.cooldowns.record_success(model)
                return result, attempts

        assert last_error is not None
        last_error.attempts = attempts
        if len(attempts) > 1:
            tried = ", ".join(f"{a.model} ({a.error})" for a in attempts)
            last_error.message = f"{last_error.message} [chain tried: {tried}]"
            last_error.args = (last_error.message,)
        raise last_error

    def _wait_before_retry(self, error: UpstreamError, tries: int) -> float | None:
        """Seconds to wait before retrying the same model, or None: do not retry it."""
        if isinstance(error, UpstreamTimeout):
            return None
        if isinstance(error, UpstreamRateLimited) and error.retry_after is not None:
            return error.retry_after if error.retry_after <= self.max_retry_after_s else None
        return min(self.backoff_s * 2 ** (tries - 1), self.max_backoff_s)

    def _bigger_windows(self, model: str, remaining: list[str], error: ContextLengthExceeded,
                        prompt_tokens: int) -> list[str]:
        """What is left of the chain after `model` said the prompt does not fit."""
        current = self.catalog[model].context_tokens if model in self.catalog else 0
        needed = max(error.needed_tokens or prompt_tokens, current + 1)
        fits = [m for m in remaining
                if m in self.catalog and self.catalog[m].context_tokens >= needed]
        if fits:
            return fits
        usable = [m for m in self.catalog
                  if self.catalog[m].context_tokens >= needed and m != model
                  and (self.base_url_override or self.catalog[m].base_url)]
        usable.sort(key=lambda m: (self.catalog[m].context_tokens,
                                   self.catalog[m].cost_usd(1000, 1000), m))
        return usable[:1]

    def _record(self, attempts: list[Attempt], attempt: Attempt) -> None:
        attempts.append(attempt)
        if self.on_attempt is not None:
            try:
                self.on_attempt(attempt)
            except Exception:  # a metrics hook must never break a request
                log.exception("on_attempt hook failed")
