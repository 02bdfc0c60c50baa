"""`POST /v1/chat/completions`: OpenAI-compatible, routed or passed through.

`model` is `router` (default bar), `router:0.8` (bar in the name) or a catalog
model (pass-through, no prediction). The answer keeps the provider's body, with
`x-router-model` (the model that answered) and `x-request-id` headers;
streaming requests are passed through event by event. Every request, answered
or failed, leaves one outcome-log row; every answered one (upstream, cache or
stream) one server log line.

The HTTP side only: the request goes through `router.api._pipeline` (parse, plan,
answer, record) on a `LeanRoute`; a stream is sent by `EventStreamResponse`.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Request, Response

from router.api._lean import EventStreamResponse, add_lean_route, json_body
from router.api._pipeline import answer_chat, parse_chat, plan_chat
from router.api._schemas import LATENCY_HEADER, ChatRequest, latency_header_doc
from router.deps import AppContext, caller_key, new_request_id

__all__ = ["chat_completions", "install"]


async def chat_completions(request: Request) -> Response:
    """Answer one chat completion; the body is a `ChatRequest`."""
    started = time.perf_counter()
    state = request.state  # what the exception handlers read (router.api._errors)
    state.request_id = request_id = new_request_id()
    ctx: AppContext = request.app.state.ctx
    value = await json_body(request)
    client = await caller_key(request)
    ask = parse_chat(ctx, value)
    headers = request.headers
    plan = plan_chat(ctx, ask, request_id, client, started,
                     latency_header=headers.get(LATENCY_HEADER))
    state.model = plan.first_model  # what an upstream error is counted under
    answer = await answer_chat(ctx, plan, ask, headers)
    if answer.events is not None:
        return EventStreamResponse(answer.events, answer.headers)
    return Response(answer.body, media_type="application/json", headers=answer.headers)


def install(app: FastAPI) -> None:
    add_lean_route(app, "/v1/chat/completions", chat_completions, body=ChatRequest,
                   tags=["chat"], parameters=[latency_header_doc()])
