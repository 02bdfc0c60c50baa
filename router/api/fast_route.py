"""A lean ASGI path for `POST /v1/route`, in front of the FastAPI app.

Why: /v1/route is the router's hottest small request, and FastAPI's machinery
around it (middleware stack, routing, dependency resolution, pydantic body
validation, `Response` rendering) cost about twice the handler itself. This path
reads the body, parses it with the stdlib, checks the fields by hand, does the
same auth (`router.deps.authenticate`) and calls the same `route_response` as
the FastAPI handler, then sends the answer in two ASGI messages.

It only takes the well-formed case. Anything else (another path or method, a
body that is not a JSON object of the expected types, an oversize or chunked
body, an `ApiError` such as a 401, a bad bar or no model loaded, an unexpected
exception, a test's `dependency_overrides`) is replayed to the FastAPI app
unchanged, so every error keeps exactly the message, status and metrics it has
there. `route_response` raises before it logs or counts anything, so a replayed
request is never counted twice.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from router.api.route import route_response
from router.deps import AppContext, authenticate

__all__ = ["FastRoute"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_FIELDS = frozenset(("messages", "quality_bar", "utility_lambda", "max_cost_usd", "models"))
_NUMBERS = ("quality_bar", "utility_lambda", "max_cost_usd")


class _Fallback(Exception):
    """The request is not the plain well-formed case: let the FastAPI app answer it."""


def _number(body: dict[str, Any], name: str) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    kind = type(value)
    if kind is float:
        return value
    if kind is int:  # pydantic's float field takes an int (not a bool) as its float
        try:
            return float(value)
        except OverflowError:
            raise _Fallback from None
    raise _Fallback  # strings, bools, lists...: pydantic decides (and words the error)


def _fields(raw: bytes) -> tuple[Any, float | None, float | None, float | None,
                                 list[str] | None]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise _Fallback from None
    if type(body) is not dict or not body.keys() <= _FIELDS:
        raise _Fallback
    messages = body.get("messages")
    if type(messages) is list:
        messages = list(messages)  # pydantic hands the handler a copy
    elif type(messages) is not str:
        raise _Fallback
    models = body.get("models")
    if models is not None and (type(models) is not list
                               or any(type(m) is not str for m in models)):
        raise _Fallback
    return (messages, _number(body, "quality_bar"), _number(body, "utility_lambda"),
            _number(body, "max_cost_usd"), list(models) if models is not None else None)


class FastRoute:
    """ASGI app: answers plain `POST /v1/route` itself, everything else goes to `app`.

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
        if (scope["type"] != "http" or scope["path"] != "/v1/route"
                or scope["method"] != "POST" or self.fastapi_app.dependency_overrides):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        length = content_type = api_key = authorization = None
        for name, value in scope["headers"]:
            if name == b"content-length" and length is None:
                length = value
            elif name == b"content-type" and content_type is None:
                content_type = value
            elif name == b"x-api-key" and api_key is None:
                api_key = value.decode("latin-1")
            elif name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
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
        try:
            ctx: AppContext = self.fastapi_app.state.ctx
            client = authenticate(ctx, api_key, authorization)
            messages, bar, lam, max_cost, models = _fields(raw)
            content, request_id, model = route_response(
                ctx, client, messages, bar, lam, max_cost, models, started)
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

    async def _replay(self, scope: Scope, receive: Receive, send: Send, raw: bytes) -> None:
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
