"""The HTTP side of the two hot endpoints, kept lean: FastAPI routes without
FastAPI's per-request machinery.

Why: for each request FastAPI solves the dependency graph, decodes and
validates a body parameter, runs two exit stacks and its telemetry hooks, and
Starlette's `StreamingResponse` runs an anyio task group per stream; together
that cost more CPU than routing the request (measured in-process: 110 us per
`/v1/route` against 40 us for the route below, same middleware). So
`LeanRoute` is a FastAPI `APIRoute` (in the app's router, behind every
middleware, documented in the OpenAPI schema) whose endpoint takes the
`Request` and returns a `Response`, awaited directly. The endpoint then does
itself what FastAPI would have done, in the same order: `json_body` decodes the
body as FastAPI decodes one (so a malformed body is the same 400),
`router.deps.caller_key` authenticates (honouring `dependency_overrides`), and
the shared pydantic models validate it (`router.api._pipeline`).

`EventStreamResponse` sends SSE events as they come and stops reading the
upstream when the client leaves, with one watcher task per stream.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Message, Receive, Scope, Send

from router.api._schemas import ERROR_RESPONSES, request_body
from router.deps import ApiError

__all__ = ["LeanRoute", "EventStreamResponse", "json_body", "add_lean_route"]

Endpoint = Callable[[Request], Awaitable[Response]]


class LeanRoute(APIRoute):
    """An `APIRoute` whose endpoint, `async (Request) -> Response`, is awaited
    directly: no dependency solving, body parsing or response validation (the
    endpoint does what it needs of those itself). Exceptions go to the app's
    exception handlers, as any route's do."""

    def __init__(self, path: str, endpoint: Endpoint, **options: Any) -> None:
        super().__init__(path, endpoint, **options)

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            response = await endpoint(Request(scope, receive))
            await response(scope, receive, send)

        self.app = app


def add_lean_route(app: FastAPI, path: str, endpoint: Endpoint, *, body: type[BaseModel],
                   tags: list[str], parameters: list[dict[str, Any]] | None = None) -> None:
    """`POST path` served by `endpoint` through `LeanRoute`, documented with `body`
    as its JSON body and the router's error responses.

    Added to the app's own router: FastAPI rebuilds a route it includes from
    another router with its standard handler, which would undo the lean one.
    """
    extra = request_body(body)
    if parameters:
        extra["parameters"] = parameters
    app.router.add_api_route(path, endpoint, methods=["POST"], route_class_override=LeanRoute,
                             tags=list(tags), responses=ERROR_RESPONSES, openapi_extra=extra)


async def _read(receive: Receive) -> bytes:
    """The whole body, straight from `receive` (a third of `Request.body()`'s cost,
    which goes through an async generator); a client gone before sending it all
    raises `ClientDisconnect`, as there."""
    message = await receive()
    if message["type"] == "http.request" and not message.get("more_body", False):
        return message.get("body", b"")
    chunks: list[bytes] = []
    while message["type"] == "http.request":
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)
        message = await receive()
    raise ClientDisconnect


def _is_json(content_type: str | None) -> bool:
    if content_type is None:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    main, _, sub = media.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


async def json_body(request: Request) -> Any:
    """The body as FastAPI hands one to a body parameter: decoded JSON when the
    content type is JSON, else the raw bytes (which no model accepts), None when
    empty. Malformed JSON is a 400 naming the parser's complaint."""
    raw = await _read(request.receive)
    if not raw:
        return None
    if not _is_json(request.headers.get("content-type")):
        return raw
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ApiError(400, f"malformed JSON in the request body: {exc.msg}".rstrip(": "),
                       code="invalid_json") from None
    except ValueError:  # not UTF-8, -16 or -32 text
        raise HTTPException(400, "There was an error parsing the body") from None


class EventStreamResponse(Response):
    """`text/event-stream` from an async iterator of SSE bytes, sent as they come.

    The server's `send` silently drops what a gone client would have received,
    so a watcher waits for `http.disconnect` and cancels the sending task: the
    events' cleanup then logs the request as cut short (499) and closes the
    upstream stream. One watcher task per stream, where Starlette's
    `StreamingResponse` runs an anyio task group.
    """

    media_type = "text/event-stream"

    def __init__(self, events: AsyncIterator[bytes], headers: Mapping[str, str]) -> None:
        self.events = events
        self.status_code = 200
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
            await send({"type": "http.response.start", "status": 200,
                        "headers": self.raw_headers})
            async for chunk in self.events:
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
            await self.events.aclose()  # type: ignore[attr-defined]
