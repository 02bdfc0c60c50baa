"""Operations endpoints: `/healthz` (process up), `/readyz` (can serve), `/metrics`.

Readiness means "send this replica traffic": a model is loaded and routes to at
least one model the upstream can call. The outcome log, the Redis cache and the
breaker sharing are not part of it: requests succeed while any is down (log
rows queue up and are written when the database is back, or are dropped and
counted once the queue is full; the cache is skipped; each replica learns
failing providers alone), and with a database or Redis shared by every
replica, failing readiness on them would take all replicas out of service at
once for something that costs no request. They are reported instead, in the
body's `degraded` (what is wrong, without connection details) and as
`router_dependency_up{dependency}` (1 working, 0 degraded).

They need no client key: orchestrators and Prometheus call them, and they
reveal no prompts or keys (bind the router to a private network if the model
version and traffic counts are sensitive).
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from router.deps import AppContext, Ctx
from router.metrics import CONTENT_TYPE_LATEST

__all__ = ["router", "degraded"]

router = APIRouter(tags=["ops"])


def degraded(ctx: AppContext) -> dict[str, str]:
    """What is wrong with the optional dependencies (name -> problem; empty when all
    work), with `router_dependency_up` brought up to date."""
    problems: dict[str, str] = {}
    parts = {"outcome_log": ctx.store, "cache": ctx.cache, "cooldown_sync": ctx.cooldown_sync}
    for name, part in parts.items():
        health = getattr(part, "health", None)
        if health is None:
            continue  # absent, or a part with nothing that can fail (the in-process cache)
        ok, problem = health()
        if name == "outcome_log" and not ctx.log_started:
            ok, problem = False, "not started"
        ctx.metrics.dependency_up.labels(name).set(1 if ok else 0)
        if not ok:
            problems[name] = problem or "not working"
    return problems


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


_READINESS = {"description": "checks (model_loaded, can_route), degraded dependencies, "
                             "model_version",
              "content": {"application/json": {"schema": {"type": "object"}}}}


@router.get("/readyz", responses={200: _READINESS,
                                  503: {**_READINESS, "description": "not ready: no model "
                                        "loaded, or none the upstream can call"}})
async def readyz(ctx: Ctx) -> JSONResponse:
    """200 when a model is loaded and can route; `degraded` lists what runs without
    its optional dependencies (see the module docstring)."""
    service = ctx.service
    checks = {"model_loaded": service is not None,
              "can_route": service is not None and bool(service.routable)}
    ready = all(checks.values())
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks,
                         "degraded": degraded(ctx),
                         "model_version": service.version if service else None},
                        status_code=200 if ready else 503)


@router.get("/metrics", response_class=PlainTextResponse)  # Prometheus text, not JSON
async def metrics(ctx: Ctx) -> Response:
    if ctx.store is not None:
        ctx.metrics.sync_log_dropped(int(getattr(ctx.store, "dropped", 0)))
    degraded(ctx)
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)
