"""`POST /v1/feedback`: a quality score or a thumb for an earlier request.

Nothing accepted is lost silently: a value the log could not store (a NUL
character, which PostgreSQL refuses, or a lone surrogate, which no database
stores) is a 400 naming the field, and while the
log's database cannot be asked whether the request exists the answer is a 503
to retry, naming no connection details (the log writes those server-side).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from router.api._schemas import ERROR_RESPONSES, FeedbackRequest
from router.conversation import invalid_text
from router.deps import ApiError, ClientKey, Ctx
from router.outcome_log import FeedbackRecord, OutcomeLogUnavailable

__all__ = ["router"]

router = APIRouter(tags=["feedback"], responses=ERROR_RESPONSES)


@router.post("/v1/feedback", status_code=202)
async def feedback(body: FeedbackRequest, request: Request, ctx: Ctx,
                   client: ClientKey) -> JSONResponse:
    """202 when queued for writing; 404 for an id the log has never seen; 400 for a bad
    score or a NUL character; 503 while the log's database is unavailable."""
    request.state.endpoint = "feedback"
    for name in ("request_id", "comment"):
        if "\x00" in (getattr(body, name) or ""):
            raise ApiError(400, f"{name} contains a NUL character (\\u0000), which cannot "
                           "be stored; remove it", param=name, code="invalid_feedback")
        found = invalid_text(getattr(body, name) or "", name)
        if found is not None:  # a lone surrogate: no database can store it either
            raise ApiError(400, f"{found[0]} {found[1]}", param=name, code="invalid_feedback")
    if (body.quality is None) == (body.thumbs is None):
        raise ApiError(400, "send exactly one of `quality` (a number in [0, 1]) and "
                       "`thumbs` (\"up\" or \"down\")", param="quality",
                       code="invalid_feedback")
    if body.quality is not None:
        if not 0.0 <= body.quality <= 1.0:
            raise ApiError(400, f"quality must be a number in [0, 1], got {body.quality!r}",
                           param="quality", code="invalid_feedback")
        record = FeedbackRecord(body.request_id, float(body.quality), source="score",
                                comment=body.comment)
    else:
        record = FeedbackRecord(body.request_id, 1.0 if body.thumbs == "up" else 0.0,
                                source="thumbs", comment=body.comment)
    try:
        known = await ctx.store.add_feedback(record)
    except OutcomeLogUnavailable as exc:
        raise ApiError(503, f"feedback was not recorded: {exc}", type="service_unavailable",
                       code="log_unavailable", headers={"retry-after": "5"}) from None
    if not known:
        raise ApiError(404, f"unknown request_id {body.request_id!r}: no request with this id "
                       "was routed here", param="request_id", code="request_not_found")
    ctx.metrics.requests.labels("feedback", "none", "202").inc()
    return JSONResponse({"request_id": body.request_id, "status": "accepted",
                         "quality": record.quality}, status_code=202)
