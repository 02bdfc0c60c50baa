"""The HTTP API: every endpoint and its edge (errors, body limit), assembled by
`install_api`.

One front door: every request, to every endpoint, passes the same middleware
stack (pure ASGI) and the same exception handlers. The two routing endpoints
(`/v1/route`, `/v1/chat/completions`) run `router.api.pipeline` on lean routes
(`router.api.lean`); the others are plain FastAPI routers, one per resource.
"""

from fastapi import FastAPI

from router.api import chat, feedback, models, ops, route
from router.api.body_limit import BodyLimitMiddleware
from router.api.errors import install_error_handlers

__all__ = ["install_api", "BodyLimitMiddleware"]


def install_api(app: FastAPI, *, max_body_bytes: int) -> None:
    """Every endpoint, the error handlers and the body limit, on `app`."""
    install_error_handlers(app)
    route.install(app)
    chat.install(app)
    for module in (feedback, models, ops):
        app.include_router(module.router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
