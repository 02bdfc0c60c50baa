"""The HTTP API: every endpoint and its edge (errors, body limit), assembled by
`install_api`.

One front door: every request, to every endpoint, passes the same middleware
stack (pure ASGI) and the same exception handlers. The two routing endpoints
(`/v1/route`, `/v1/chat/completions`) run `router.api._pipeline` on lean routes
(`router.api._lean`); the others are plain FastAPI routers, one per resource.
The modules are private; outside the package only the names below are used.
"""

from fastapi import FastAPI

from router.api._body_limit import BodyLimitMiddleware
from router.api._chat import install as install_chat
from router.api._errors import install_error_handlers
from router.api._feedback import router as feedback_router
from router.api._models import router as models_router
from router.api._ops import router as ops_router
from router.api._route import install as install_route

__all__ = ["install_api"]


def install_api(app: FastAPI, *, max_body_bytes: int) -> None:
    """Every endpoint, the error handlers and the body limit, on `app`."""
    install_error_handlers(app)
    install_route(app)
    install_chat(app)
    for router in (feedback_router, models_router, ops_router):
        app.include_router(router)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes)
