"""Upstream errors: one documented tree, and the one boundary that produces it.

Every provider failure the router sees, whether a transport exception, an
error response, a stream's error event or an answer it cannot use, becomes an
`UpstreamError` subclass in `translate_error` and nowhere else, so the
fallback rules (`router.upstream._client`) and the HTTP error handler
(`router.api`) reason about a small closed set of kinds instead of httpx
exceptions and status codes. `status_code` is what the router answers
with; `to_openai()` is the OpenAI-shaped body.

What the client sees and what the server log sees differ: `message` (client
error, SSE error event, outcome log) names the model and what went wrong, never
the provider's URL (an internal address, often) nor a transport's text (which
names hosts and ports); those go to `detail`, which only `log_text()` shows.
The API key is redacted from anything the provider echoes back *before* any
of it is cut short, so no part of a key survives a cut.
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
    from router.upstream._results import Attempt

__all__ = [
    "UpstreamError",
    "UpstreamUnavailable",
    "UpstreamTimeout",
    "UpstreamRateLimited",
    "UpstreamServerError",
    "ContextLengthExceeded",
    "UpstreamClientError",
    "UpstreamRejected",
    "translate_error",
]


class UpstreamError(RouterError):
    """A provider call failed. `status_code` is what the router should answer with.

    `model` and `url` say which call; `upstream_status` is the provider's HTTP
    status (None when no response came); `attempts` is set on the error raised
    when a whole chain failed. `to_openai()` gives the OpenAI error body, built
    from `message` only; `detail` (the URL, a transport's words) is for
    `log_text()`, the server log, never for the client.
    """

    status_code: int = 502
    openai_type: str = "upstream_error"
    kind: str = "upstream_error"

    def __init__(self, message: str, *, model: str | None = None, url: str | None = None,
                 upstream_status: int | None = None, code: str | None = None,
                 hint: str | None = None, detail: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.model = model
        self.url = url
        self.upstream_status = upstream_status
        self.code = code
        self.detail = detail
        self.attempts: list[Attempt] = []

    def to_openai(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.openai_type,
                          "param": None, "code": self.code}}

    def log_text(self) -> str:
        """`message` with the URL and the detail: for the server log only."""
        text = f"{self.message} [{self.url}]" if self.url else self.message
        return f"{text}: {self.detail}" if self.detail else text


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


class UpstreamRejected(UpstreamError):
    """401, 403 or 404: the provider refused the router's own set-up for this model
    (its key, its permissions, the model name or the base URL), not the caller's request.

    The caller cannot fix it and another model may answer, so the chain moves on
    and the model's breaker opens. The router answers 502 with a message that blames
    the provider: passing the 401 on would make an OpenAI client report *its* key
    as wrong. `kind` is 'auth' (401, 403) or 'not_found' (404); the provider's own
    words (which may say "Incorrect API key provided") stay in `detail`, for the log.
    """

    status_code = 502
    kind = "rejected"

    def __init__(self, message: str, *, kind: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.kind = kind


class UpstreamClientError(UpstreamError):
    """Any other 4xx: the request is wrong; passed to the caller with its status."""

    openai_type = "invalid_request_error"
    kind = "client_error"

    def __init__(self, message: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.status_code = self.upstream_status or 400


_TOKENS_RE = re.compile(r"(\d+)\s+tokens")

#: The longest quote of a provider's words kept in an error, in characters.
_QUOTE_CHARS = 300


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "[redacted]") if secret else text


def _quote(text: str, secret: str | None) -> str:
    """`text` as an error may quote it: the key redacted first, then cut short.

    In that order: a cut first could leave part of a key that no longer matches.
    """
    return _redact(text, secret)[:_QUOTE_CHARS].strip()


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


def _error_fields(content: bytes, secret: str | None) -> tuple[str, str | None]:
    """(message, code) from an OpenAI-shaped error body, or the raw text; `secret`
    redacted, then cut to `_QUOTE_CHARS`."""
    try:
        payload = json.loads(content)
    except ValueError:
        return _quote(content.decode("utf-8", errors="replace"), secret), None
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        return (_quote(str(error.get("message") or ""), secret),
                _quote(str(code), secret) if code is not None else None)
    if isinstance(error, str):
        return _quote(error, secret), None
    return _quote(json.dumps(payload), secret), None


def translate_error(model: str, url: str, *, response: httpx.Response | None = None,
                    exc: BaseException | None = None, event: bytes | None = None,
                    problem: str | None = None, secret: str | None = None
                    ) -> UpstreamError:
    """The one boundary where provider failures become our errors.

    Give one of: `exc`, a transport exception; `response`, an error response
    (its body read); `event`, the data of an SSE error event; `problem`, what
    was wrong with an answer that is not usable (`response`, if given, for its
    status). `secret` (the API key) is removed from anything quoted back.
    Messages never carry `url` or a transport's text: both go to `detail`.
    """
    where = f"upstream {model}"
    if exc is not None:
        return _from_exception(where, model, url, exc, secret)
    if problem is not None:
        return UpstreamServerError(f"{where} {problem}", model=model, url=url,
                                   upstream_status=response.status_code if response else None,
                                   hint="provider-side failure; retry later")
    if event is not None:
        message, code = _error_fields(event, secret)
        return UpstreamServerError(f"{where} sent an error event: {message}", model=model,
                                   url=url, code=code, hint="provider-side failure; retry later")
    assert response is not None
    return _from_status(where, model, url, response, secret)


def _from_exception(where: str, model: str, url: str, exc: BaseException,
                    secret: str | None) -> UpstreamError:
    detail = _redact(str(exc) or type(exc).__name__, secret)
    name = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamTimeout(f"{where} timed out ({name})", model=model, url=url,
                               detail=detail,
                               hint="the provider is slow or down; the router fell back "
                                    "where it could; raise the timeout if this persists")
    return UpstreamUnavailable(f"{where} unreachable ({name})", model=model, url=url,
                               detail=detail, hint="check the model's base_url and the network")


def _from_status(where: str, model: str, url: str, response: httpx.Response,
                 secret: str | None) -> UpstreamError:
    status = response.status_code
    message, code = _error_fields(response.content, secret)
    if status in (401, 403, 404):
        return _rejected(model, url, status, f"{message} (code {code})" if code else message)
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


def _rejected(model: str, url: str, status: int, said: str) -> UpstreamRejected:
    """401, 403 or 404: the router's set-up for `model` is wrong; the provider's own
    words (`said`) go to the log only."""
    if status == 404:
        return UpstreamRejected(
            f"upstream provider for model {model} does not know the model or the "
            f"endpoint (404); the router's catalog entry is wrong, not your request",
            kind="not_found", model=model, url=url, upstream_status=status,
            code="upstream_not_found", detail=said or None,
            hint="fix the model's base_url or its name at the provider in the catalog")
    return UpstreamRejected(
        f"upstream provider for model {model} rejected the router's credentials "
        f"({status}); the router's key for that provider is wrong, not yours",
        kind="auth", model=model, url=url, upstream_status=status,
        code="upstream_auth_failed", detail=said or None,
        hint="fix the provider key the router sends (the catalog's api_key_env, or "
             "ROUTER_UPSTREAM_API_KEY with --upstream-base-url)")


class _Retry(Exception):
    """Internal: move on (next try or next model) after `error`."""

    def __init__(self, error: UpstreamError) -> None:
        self.error = error
