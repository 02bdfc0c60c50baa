"""The fallback chain and its rules: `chain_for`, `UpstreamClient` (see the package docstring)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import httpx

from router.catalog import Catalog, estimate_tokens
from router.errors import RouterError
from router.upstream._breaker import Cooldowns
from router.upstream._errors import (
    ContextLengthExceeded,
    UpstreamClientError,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
    _Retry,
    translate_error,
)
from router.upstream._results import (
    Attempt,
    UpstreamResult,
    Usage,
    _message_text,
    _prompt_tokens,
    _usage_from,
)
from router.upstream._sse import SSEDecoder
from router.upstream._stream import UpstreamStream

__all__ = ["UpstreamClient", "chain_for"]

log = logging.getLogger(__name__)


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


class UpstreamClient:
    """Calls OpenAI-compatible providers along a fallback chain (see module docstring).

    `http` is injected (a `MockTransport` in unit tests, a real pool in serving);
    `base_url_override` sends every model to one URL (fake upstream, a gateway)
    with `override_api_key` as its key, never the providers' keys (see `key_for`);
    `sleep` is injectable so backoff is instant in tests; `clock` times attempts.
    """

    def __init__(self, catalog: Catalog, *, http: httpx.AsyncClient,
                 base_url_override: str | None = None,
                 override_api_key: str | None = None, max_retries: int = 1,
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
        self.override_api_key = override_api_key or None
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
                f"model {model!r} has no base_url in the catalog", model=model,
                detail=f"catalog {self.catalog.source}",
                hint="add base_url to the catalog entry, or run with --upstream-base-url")
        return base.rstrip("/") + "/chat/completions"

    def key_for(self, model: str) -> str | None:
        """The key sent to `model`'s URL: its provider's, or under `base_url_override`
        `override_api_key` (None: no `Authorization` header).

        One URL for every model must not collect every provider's key: a gateway
        has its own, and a local fake needs none.
        """
        if self.base_url_override is not None:
            return self.override_api_key
        return self.catalog[model].api_key if model in self.catalog else None

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
                raise _Retry(translate_error(
                    model, url, response=response, secret=secret,
                    problem=f"answered {response.status_code} with a body that is not a "
                            "chat completion")) from None
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
            chunks, first, decoder = await _first_events(response, model, url, secret)
            return UpstreamStream(self.cooldowns, self.clock, model, [], response, chunks,
                                  first, decoder,
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
            result, last_error = await self._try_model(
                model, url, attempt, attempts, respect_cooldowns=respect_cooldowns,
                closes_breaker=success_closes_breaker)
            if last_error is None:
                return result, attempts
            if isinstance(last_error, ContextLengthExceeded):
                remaining = self._bigger_windows(model, remaining, last_error, prompt_tokens)
        raise _chain_failed(last_error, attempts)

    async def _try_model(self, model: str, url: str, attempt: Callable[..., Any],
                         attempts: list[Attempt], *, respect_cooldowns: bool,
                         closes_breaker: bool) -> tuple[Any, UpstreamError | None]:
        """Call `model` until it answers or retrying it is over: (its result, None),
        or (None, its last error) to move on. A client error is raised at once."""
        secret = self.key_for(model)
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
                log.warning("upstream %s attempt %d failed (%s): %s", model, tries,
                            error.kind, error.log_text())
                wait = self._settle_failure(model, error, tries, attempts,
                                            respect_cooldowns=respect_cooldowns)
                if wait is None:
                    return None, error
                await self.sleep(wait)
                continue
            except BaseException:
                self.cooldowns.release(model)  # cancelled: no verdict on the provider
                raise
            self._record(attempts, Attempt(model, 200, None, self.clock() - started))
            if closes_breaker:
                self.cooldowns.record_success(model)
            return result, None

    def _settle_failure(self, model: str, error: UpstreamError, tries: int,
                        attempts: list[Attempt], *, respect_cooldowns: bool) -> float | None:
        """Tell the breaker about a failed try; the seconds to wait before trying
        `model` again, or None: move on. A client error is raised here."""
        if isinstance(error, UpstreamClientError):
            self.cooldowns.record_success(model)  # the provider is up
            error.attempts = attempts
            raise error from None
        if isinstance(error, UpstreamRejected):
            # The provider refused the router's key or does not know the model:
            # every request to it would get the same answer, so no retry, and the
            # breaker opens now rather than after `failure_threshold` callers paid.
            self.cooldowns.record_failure(model, open_for=self.cooldowns.cooldown_s)
            return None
        if isinstance(error, ContextLengthExceeded):
            self.cooldowns.release(model)
            return None
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
            return None
        return wait

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


def _chain_failed(last_error: UpstreamError | None, attempts: list[Attempt]) -> UpstreamError:
    """The error a whole failed chain raises: the last one, with every attempt."""
    assert last_error is not None
    last_error.attempts = attempts
    if len(attempts) > 1:
        tried = ", ".join(f"{a.model} ({a.error})" for a in attempts)
        last_error.message = f"{last_error.message} [chain tried: {tried}]"
        last_error.args = (last_error.message,)
    return last_error


async def _first_events(response: httpx.Response, model: str, url: str, secret: str | None
                        ) -> tuple[AsyncIterator[bytes], list[Any], SSEDecoder]:
    """Read a started stream up to its first data event: (the rest of the body,
    the events so far, the decoder). Anything else (an error status, an error
    event, a stream that ends or breaks first) closes the response and raises
    `_Retry`, so the chain may still move on."""
    try:
        if response.status_code >= 400:
            await response.aread()
            raise _Retry(translate_error(model, url, response=response, secret=secret))
        decoder = SSEDecoder()
        first: list[Any] = []
        # An SSE body is seldom compressed; when it is not, skip httpx's
        # decoder and re-chunking layers (a few per cent of a stream's CPU).
        raw = (not response.is_stream_consumed  # else already read (a test mock)
               and response.headers.get("content-encoding", "identity") == "identity")
        chunks = response.aiter_raw() if raw else response.aiter_bytes()
        async for chunk in chunks:
            first.extend(decoder.feed(chunk))
            if any(e.data is not None for e in first):
                break
        else:
            first.extend(decoder.flush())
        if not any(e.data is not None for e in first):
            raise _Retry(translate_error(model, url, response=response, secret=secret,
                                         problem="closed the stream before any event"))
        for event in first:
            payload = event.json()
            if isinstance(payload, dict) and "error" in payload:
                raise _Retry(translate_error(model, url, event=event.data.encode(),
                                             secret=secret))
    except httpx.HTTPError as exc:
        await response.aclose()
        raise _Retry(translate_error(model, url, exc=exc, secret=secret)) from None
    except BaseException:
        await response.aclose()
        raise
    return chunks, first, decoder
