"""A lean ASGI path for the two hot endpoints, in front of the FastAPI app.

Why: FastAPI's machinery around a request (middleware stack, routing, dependency
resolution, pydantic body validation, `Response` rendering, and for a stream
Starlette's `StreamingResponse` with its anyio task group) cost about twice the
`/v1/route` handler itself, and a fifth of the router's CPU per proxied stream.
This path reads the body, parses it with the stdlib, validates it with the same
pydantic models as the handlers (`router.api.schemas`: validation is written
once), does the same auth (`router.deps.authenticate`) and calls the same
functions as the FastAPI handlers (`route_response`; `chat_inputs`, `plan_chat`
then `answer_chat`), then speaks ASGI directly.

It only takes the well-formed case. Anything else (another path or method, a
body that is not a JSON object or that its model refuses, an oversize or chunked
body, an `ApiError` such as a 401, a bad bar or no model loaded, an unexpected
exception before the request had an effect, a test's `dependency_overrides`) is
replayed to the FastAPI app unchanged, so every such error keeps exactly the
message, status and metrics it has there. `route_response` and `plan_chat`
raise before they log or count anything, so a replayed request is never counted
twice. Once a chat request has been planned it has had effects (a decision
counted, maybe an exploration draw), so from there on this path answers it
itself, errors included, with the same bodies the FastAPI handlers render.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any

from pydantic import ValidationError

from router.api.chat import ChatAnswer, answer_chat, chat_inputs, plan_chat
from router.api.errors import internal_error_response, upstream_error_response
from router.api.route import route_response
from router.api.schemas import ChatRequest, RouteRequest
from router.deps import AppContext, authenticate, new_request_id
from router.upstream import UpstreamError

__all__ = ["FastPath"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_PATHS = frozenset(("/v1/route", "/v1/chat/completions"))


class _Fallback(Exception):
    """The request is not the plain well-formed case: let the FastAPI app answer it."""


def _json_object(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise _Fallback from None
    if type(body) is not dict:
        raise _Fallback
    return body


def _route_fields(raw: bytes) -> RouteRequest:
    """The body as the FastAPI handler gets it, validated by the same model."""
    try:
        return RouteRequest.model_validate(_json_object(raw))
    except ValidationError:
        raise _Fallback from None  # FastAPI words the 400


def _chat_fields(raw: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(`plan_chat` keyword arguments, the body to forward), as the FastAPI handler
    has them (`chat_inputs` of the same validated `ChatRequest`)."""
    try:
        body = ChatRequest.model_validate(_json_object(raw))
    except ValidationError:
        raise _Fallback from None
    return chat_inputs(body)


def _start(status: int, headers: dict[str, str], media_type: bytes,
           length: int | None = None) -> Message:
    """`http.response.start` with the header list Starlette's `Response` would send."""
    raw = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
    if length is not None:
        raw.append((b"content-length", str(length).encode()))
    raw.append((b"content-type", media_type))
    return {"type": "http.response.start", "status": status, "headers": raw}


class FastPath:
    """ASGI app: answers plain `POST /v1/route` and `POST /v1/chat/completions`
    itself, everything else goes to `app`.

    `app` is the ASGI callable that answers the rest (FastAPI's own `__call__`);
    `fastapi_app` is the FastAPI app (for `state.ctx` and `dependency_overrides`);
    `max_bytes` is the body limit, enforced by falling back to the app's
    `BodyLimitMiddleware` for anything not plainly under it.
    """

    def __init__(self, app: Any, fastapi_app: Any, max_bytes: int) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["path"] not in _PATHS
                or scope["method"] != "POST" or self.fastapi_app.dependency_overrides):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        length = content_type = api_key = authorization = None
        cache_headers: dict[str, str] = {}
        for name, value in scope["headers"]:
            if name == b"content-length" and length is None:
                length = value
            elif name == b"content-type" and content_type is None:
                content_type = value
            elif name == b"x-api-key" and api_key is None:
                api_key = value.decode("latin-1")
            elif name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif name == b"cache-control" or name == b"pragma":
                cache_headers.setdefault(name.decode(), value.decode("latin-1"))
        try:
            size = int(length) if length is not None else -1
        except ValueError:
            size = -1
        if (size < 0 or size > self.max_bytes or content_type is None
                or content_type.split(b";", 1)[0].strip().lower() != b"application/json"):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body: nobody to answer
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        ctx: AppContext = self.fastapi_app.state.ctx
        if scope["path"] == "/v1/route":
            await self._route(scope, receive, send, ctx, raw, started, api_key, authorization)
        else:
            await self._chat(scope, receive, send, ctx, raw, started, api_key, authorization,
                             cache_headers)

    async def _route(self, scope: Scope, receive: Receive, send: Send, ctx: AppContext,
                     raw: bytes, started: float, api_key: str | None,
                     authorization: str | None) -> None:
        try:
            client = authenticate(ctx, api_key, authorization)
            body = _route_fields(raw)
            content, request_id, model = route_response(
                ctx, client, body.messages, body.quality_bar, body.min_quality,
                body.utility_lambda, body.max_cost_usd, body.models, started)
        except Exception:
            await self._replay(scope, receive, send, raw)
            return
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"x-request-id", request_id.encode()),
            (b"x-router-model", model.encode()),
            (b"content-length", str(len(content)).encode()),
            (b"content-type", b"application/json"),
        ]})
        await send({"type": "http.response.body", "body": content})

    async def _chat(self, scope: Scope, receive: Receive, send: Send, ctx: AppContext,
                    raw: bytes, started: float, api_key: str | None,
                    authorization: str | None, cache_headers: dict[str, str]) -> None:
        try:
            client = authenticate(ctx, api_key, authorization)
            fields, upstream_body = _chat_fields(raw)
            request_id = new_request_id()
            plan = plan_chat(ctx, request_id, client, started, **fields)
        except Exception:
            await self._replay(scope, receive, send, raw)
            return
        try:
            answer = await answer_chat(ctx, plan, upstream_body, cache_headers)
        except UpstreamError as exc:  # already logged and timed by answer_chat
            ctx.metrics.requests.labels("chat", plan.first_model or "none",
                                        str(exc.status_code)).inc()
            await upstream_error_response(exc)(scope, receive, send)
            return
        except Exception:
            log.exception("unhandled error on POST /v1/chat/completions (request %s)",
                          request_id)
            ctx.metrics.requests.labels("chat", plan.first_model or "none", "500").inc()
            await internal_error_response(request_id)(scope, receive, send)
            return
        if answer.events is None:
            assert answer.body is not None
            await send(_start(200, answer.headers, b"application/json", len(answer.body)))
            await send({"type": "http.response.body", "body": answer.body})
        else:
            await _stream(answer, answer.events, receive, send)

    async def _replay(self, scope: Scope, receive: Receive, send: Send, raw: bytes) -> None:
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _stream(answer: ChatAnswer, events: AsyncIterator[bytes], receive: Receive,
                  send: Send) -> None:
    """Send the events as they come; stop reading the upstream when the client leaves.

    The server's `send` silently drops what a gone client would have received, so
    a watcher waits for `http.disconnect` and cancels this task: the event
    generator's cleanup then logs the request as cut short (499) and closes the
    upstream stream. One watcher task per stream, where Starlette's
    `StreamingResponse` runs an anyio task group.
    """
    task = asyncio.current_task()
    assert task is not None
    finished = client_left = False

    def on_disconnect(_: asyncio.Future[Message]) -> None:
        nonlocal client_left
        if not finished:
            client_left = True
            task.cancel()

    watcher = asyncio.ensure_future(receive())
    watcher.add_done_callback(on_disconnect)
    try:
        await send(_start(200, answer.headers, b"text/event-stream; charset=utf-8"))
        async for chunk in events:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        if not client_left:
            raise
        task.uncancel()
    finally:
        finished = True
        watcher.remove_done_callback(on_disconnect)
        watcher.cancel()
        await events.aclose()  # type: ignore[attr-defined]
