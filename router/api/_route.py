"""`POST /v1/route`: which model the router would pick, and why (every candidate).

The HTTP side only: the request goes through `router.api._pipeline` (parse, plan,
answer, record) on a `LeanRoute`.
"""

from __future__ import annotations

import time

from fastapi import FastAPI, Request, Response

from router.api._lean import add_lean_route, json_body
from router.api._pipeline import answer_route, parse_route, plan_route
from router.api._schemas import LATENCY_HEADER, RouteRequest, latency_header_doc
from router.deps import AppContext, caller_key, new_request_id

__all__ = ["route", "install"]


async def route(request: Request) -> Response:
    """Decide one request; the body is a `RouteRequest`."""
    started = time.perf_counter()
    ctx: AppContext = request.app.state.ctx
    value = await json_body(request)
    client = await caller_key(request)
    ask = parse_route(ctx, value)
    plan = plan_route(ctx, ask, new_request_id(), client, started,
                      latency_header=request.headers.get(LATENCY_HEADER))
    answer = answer_route(ctx, plan)
    return Response(answer.body, media_type="application/json", headers=answer.headers)


def install(app: FastAPI) -> None:
    add_lean_route(app, "/v1/route", route, body=RouteRequest, tags=["route"],
                   parameters=[latency_header_doc()])
