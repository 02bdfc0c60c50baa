"""`GET /v1/models`: the catalog models (pass-through) plus `router`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from router.deps import ClientKey, Ctx

__all__ = ["router"]

router = APIRouter(tags=["models"])


@router.get("/v1/models")
async def list_models(ctx: Ctx, client: ClientKey) -> dict[str, Any]:
    service = ctx.service
    data: list[dict[str, Any]] = [{
        "id": "router", "object": "model", "created": 0, "owned_by": "router",
        "description": "cheapest model predicted to meet the bar; `router:0.8` sets the bar",
        "quality_bar": service.default_bar if service else None,
        "model_version": service.version if service else None,
        "routes_to": list(service.routable) if service else [],
    }]
    for name, spec in ctx.catalog.models.items():
        data.append({"id": name, "object": "model", "created": 0,
                     "owned_by": spec.provider or "unknown",
                     "input_usd_per_mtok": spec.input_usd_per_mtok,
                     "output_usd_per_mtok": spec.output_usd_per_mtok,
                     "context_tokens": spec.context_tokens})
    return {"object": "list", "data": data}
