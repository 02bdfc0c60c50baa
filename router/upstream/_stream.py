"""`UpstreamStream`: a started streaming completion, forwarded as whole SSE events.

The fallback chain has already been walked when one exists (see
`router.upstream._client.UpstreamClient.stream`); from here on a provider failure can no
longer move to another model, because bytes may have reached the client. So it
becomes an SSE error event followed by `data: [DONE]`, never a silent cut, and
the model's breaker is told. Usage is taken from the provider's usage chunk, or
estimated from the streamed text when none came.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import httpx

from router.catalog import estimate_tokens
from router.upstream._breaker import Cooldowns
from router.upstream._errors import UpstreamError, _Retry, translate_error
from router.upstream._results import (
    Attempt,
    Usage,
    _delta_text,
    _loads,
    _needs_parse,
    _usage_from,
)
from router.upstream._sse import DONE, SSEDecoder, error_event

__all__ = ["UpstreamStream"]

log = logging.getLogger(__name__)

_DRAIN_S = 0.5


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

    def __init__(self, cooldowns: Cooldowns, clock: Callable[[], float], model: str,
                 attempts: list[Attempt],
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
        self._cooldowns = cooldowns
        self._clock = clock
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
                    raise _Retry(translate_error(
                        self.model, self._url, secret=self._secret,
                        problem="ended the stream without data: [DONE]"))
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
                self._cooldowns.record_success(self.model)
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
            self.latency_s = self._clock() - self._started
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
                raise _Retry(translate_error(self.model, self._url,
                                             event=json.dumps(payload).encode(),
                                             secret=self._secret))
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
        self._cooldowns.record_failure(self.model)
        log.warning("upstream %s failed mid-stream: %s", self.model, error.log_text())

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
            self._cooldowns.release(self.model)
        await self._response.aclose()
