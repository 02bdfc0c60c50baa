"""Operations endpoints: `/healthz` (process up), `/readyz` (can serve), `/metrics`.

They need no client key: orchestrators and Prometheus call them, and they
reveal no prompts or keys (bind the router to a private network if the model
version and traffic counts are sensitive).
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from router.deps import AppContext, Ctx
from router.metrics import CONTENT_TYPE_LATEST

__all__ = ["router", "log_writable"]

router = APIRouter(tags=["ops"])


def log_writable(ctx: AppContext) -> bool:
    """The outcome log started, its writer is alive and its queue is not full."""
    store = ctx.store
    if store is None or not ctx.log_started:
        return False
    thread = getattr(store, "_thread", None)
    if thread is not None and not thread.is_alive():
        return False
    return store.queue_size < getattr(store, "max_queue", float("inf"))


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(ctx: Ctx) -> JSONResponse:
    service = ctx.service
    checks = {"model_loaded": service is not None, "log_writable": log_writable(ctx)}
    ready = all(checks.values())
    return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks,
                         "model_version": service.version if service else None},
                        status_code=200 if ready else 503)


@router.get("/metrics")
async def metrics(ctx: Ctx) -> Response:
    if ctx.store is not None:
        ctx.metrics.sync_log_dropped(int(getattr(ctx.store, "dropped", 0)))
    return Response(ctx.metrics.render(), media_type=CONTENT_TYPE_LATEST)
