"""Upstream errors: one documented tree, and the one boundary that produces it.

Every provider failure the router sees, whether a transport exception or an
error response, becomes an `UpstreamError` subclass in `translate_error` and
nowhere else, so the fallback rules (`router.upstream`) and the HTTP error
handler (`router.api.errors`) reason about a small closed set of kinds instead
of httpx exceptions and status codes. `status_code` is what the router answers
with; `to_openai()` is the OpenAI-shaped body. The API key is redacted from
anything the provider echoes back.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from typing import TYPE_CHECKING, Any

import httpx

from router.errors import RouterError

if TYPE_CHECKING:
    from router.upstream_results import Attempt

__all__ = [
    "UpstreamError",
    "UpstreamUnavailable",
    "UpstreamTimeout",
    "UpstreamRateLimited",
    "UpstreamServerError",
    "ContextLengthExceeded",
    "UpstreamClientError",
    "translate_error",
]


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


class _Retry(Exception):
    """Internal: move on (next try or next model) after `error`."""

    def __init__(self, error: UpstreamError) -> None:
        self.error = error
