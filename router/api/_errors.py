"""Every error leaves as OpenAI's error body `{"error": {message, type, param, code}}`.

One place turns exceptions into responses: our `ApiError`, validation errors
(FastAPI's, and the routing pipeline's `BodyInvalid`: 400 instead of FastAPI's
422, with the field and the problem spelled out, echoing at most the start of
the refused value), malformed JSON, the
project's `RouterError` tree (bad bar, unknown model, empty messages), upstream
failures (their own status), unknown paths, and anything unexpected (500, logged
with the request id, details never echoed).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from router.api._pipeline import BodyInvalid
from router.api._schemas import INVALID_MESSAGES
from router.deps import ApiError
from router.errors import ArtifactError, ConfigError, RouterError
from router.upstream import UpstreamError

__all__ = ["install_error_handlers", "error_response", "describe_validation_error",
           "upstream_error_response", "internal_error_response"]

log = logging.getLogger(__name__)

_STATUS_TYPES = {401: "invalid_request_error", 404: "invalid_request_error",
                 405: "invalid_request_error", 413: "invalid_request_error",
                 429: "rate_limit_error", 503: "service_unavailable"}


#: Longest echo of a refused value in an error message.
_ECHO_LIMIT = 64

_ENDPOINTS = {"/v1/route": "route", "/v1/chat/completions": "chat",
              "/v1/feedback": "feedback", "/v1/models": "models"}


def error_response(status: int, message: str, *, type: str = "invalid_request_error",
                   param: str | None = None, code: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


def upstream_error_response(exc: UpstreamError) -> JSONResponse:
    """A failed upstream chain, with the upstream's own status."""
    return JSONResponse(exc.to_openai(), status_code=exc.status_code)


def internal_error_response(request_id: str | None) -> JSONResponse:
    """A bug of ours: 500 naming the request id (for the logs), never the details."""
    return error_response(500, "internal error in the router"
                          + (f" (request {request_id})" if request_id else ""),
                          type="server_error", code="internal_error")


def _observe(request: Request, status: int) -> None:
    ctx = getattr(request.app.state, "ctx", None)
    endpoint = getattr(request.state, "endpoint", None) or _ENDPOINTS.get(request.url.path)
    if ctx is None or endpoint is None:
        return
    model = getattr(request.state, "model", None) or "none"
    ctx.metrics.requests.labels(endpoint, model, str(status)).inc()


def _echo(value: object, limit: int = _ECHO_LIMIT) -> str:
    """`repr(value)` for an error message, cut to `limit` characters (with the size
    it had): an error names what it refused, it does not send a megabyte back."""
    text = repr(value)
    if len(text) <= limit:
        return text
    size = f" ({len(value)} characters)" if isinstance(value, str) else ""
    return f"{text[:limit]}...{size}"


def describe_validation_error(errors: list[dict[str, Any]]) -> tuple[str, str | None, str]:
    """(message, param, code) for the first problem of a validation error list."""
    first = errors[0] if errors else {"msg": "invalid request", "loc": ()}
    kind = str(first.get("type", ""))
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    if kind == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "")
        return (f"malformed JSON in the request body: {detail}".rstrip(": "), None,
                "invalid_json")
    param = ".".join(loc) or None
    if param is not None and len(param) > _ECHO_LIMIT:  # a field name is caller's text too
        param = param[:_ECHO_LIMIT] + "..."
    ctx = first.get("ctx") or {}
    if kind == INVALID_MESSAGES and "param" in ctx:  # says what and where itself
        return str(first.get("msg")), str(ctx["param"]), kind
    if kind == "missing" and param:
        return f"missing required field {param!r}", param, "missing_field"
    if kind == "extra_forbidden" and param:
        return f"unknown field {param!r}", param, "unknown_field"
    if not loc and kind in ("model_type", "dict_type", "model_attributes_type"):
        return "the request body must be a JSON object", None, "invalid_body"
    value = first.get("input")
    shown = "" if isinstance(value, dict | list) else f", got {_echo(value)}"
    where = f"{param}: " if param else ""
    return f"{where}{first.get('msg', 'invalid value')}{shown}", param, "invalid_value"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        _observe(request, exc.status)
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    @app.exception_handler(BodyInvalid)
    async def validation_error(request: Request,
                               exc: RequestValidationError | BodyInvalid) -> JSONResponse:
        errors = exc.errors if isinstance(exc, BodyInvalid) else list(exc.errors())
        message, param, code = describe_validation_error(errors)
        _observe(request, 400)
        return error_response(400, message, param=param, code=code)

    @app.exception_handler(UpstreamError)
    async def upstream_error(request: Request, exc: UpstreamError) -> JSONResponse:
        _observe(request, exc.status_code)
        return upstream_error_response(exc)

    @app.exception_handler(RouterError)
    async def router_error(request: Request, exc: RouterError) -> JSONResponse:
        status = 503 if isinstance(exc, ArtifactError) else 400
        if isinstance(exc, ConfigError) and "unknown model" in exc.message:
            status = 404
        _observe(request, status)
        param = getattr(request.state, "error_param", None)
        return error_response(status, str(exc), param=param,
                              type=_STATUS_TYPES.get(status, "invalid_request_error"),
                              code="model_not_found" if status == 404 else None)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "request failed"
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path}"
        elif exc.status_code == 405:
            message = f"method {request.method} is not allowed on {request.url.path}"
        return error_response(exc.status_code, message,
                              type=_STATUS_TYPES.get(exc.status_code, "invalid_request_error"),
                              headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = getattr(request.state, "request_id", None)
        log.exception("unhandled error on %s %s (request %s)", request.method,
                      request.url.path, request_id)
        _observe(request, 500)
        return internal_error_response(request_id)
