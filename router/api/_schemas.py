"""Request bodies at the HTTP edge (pydantic); everything inside uses dataclasses.

Validation of a body's shape happens here, once, for every endpoint (the
routing endpoints call these models from `router.api._pipeline`, FastAPI's
handlers through their signatures): a bad body is a 400 naming the field before
anything is logged or forwarded.

Chat requests keep every field the caller sent (`extra="allow"`) because the
router forwards them to the provider unchanged, except the router's own
extensions (`ROUTER_FIELDS`), which are removed before forwarding. Only the
standard fields whose types OpenAI documents are checked, strictly as OpenAI
does (`"stream": "yes"` or `"temperature": "0.5"` is refused, not coerced).
Messages follow `router.conversation.conversation_problem`.

The generated OpenAPI schema says what the server does: the constraints below
(lengths, ranges, the message shape), and 400 with `ErrorResponse` for a bad
request (`ERROR_RESPONSES`), never FastAPI's 422.
"""

from __future__ import annotations

from itertools import combinations
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, WithJsonSchema
from pydantic_core import PydanticCustomError

from router.conversation import ROLES, conversation_problem

__all__ = ["RouteRequest", "ChatRequest", "FeedbackRequest", "ErrorResponse",
           "ERROR_RESPONSES", "ROUTER_FIELDS", "INVALID_MESSAGES", "LATENCY_HEADER",
           "request_body", "latency_header_doc"]

#: The request header that sets `max_latency_ms` for OpenAI clients that cannot add a
#: body field (the body field wins when both are given).
LATENCY_HEADER = "x-router-max-latency-ms"

#: Error type (and OpenAI `code`) of a bad conversation; its context names the field.
INVALID_MESSAGES = "invalid_messages"


def _checked_messages(value: Any, *, prompt_ok: bool) -> Any:
    problem = conversation_problem(value, prompt_ok=prompt_ok)
    if problem is not None:
        param, message = problem
        raise PydanticCustomError(INVALID_MESSAGES, "{message}",
                                  {"message": message, "param": param})
    return value


def _chat_messages(value: Any) -> Any:
    return _checked_messages(value, prompt_ok=False)


def _route_messages(value: Any) -> Any:
    return _checked_messages(value, prompt_ok=True)


_NOT_BLANK = r"\S"
_TEXT_PART = {"type": "object", "required": ["type", "text"],
              "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}
_OTHER_PART = {"type": "object", "required": ["type"],
               "properties": {"type": {"type": "string", "not": {"const": "text"}}}}
_PART = {"anyOf": [_TEXT_PART, _OTHER_PART]}
_TEXT = {"anyOf": [{"type": "string", "pattern": _NOT_BLANK},
                   {"type": "array", "minItems": 1, "items": _OTHER_PART},
                   {"type": "array", "minItems": 1, "items": _PART,
                    "contains": {"type": "object", "properties": {
                        "type": {"const": "text"},
                        "text": {"type": "string", "pattern": _NOT_BLANK}}}}]}
_ANY_CONTENT = {"anyOf": [{"type": "string"}, {"type": "array", "items": _PART}]}
_TOOL_CALLS = {"anyOf": [{"type": "array"}, {"type": "null"}]}
# One schema per kind of message, as `conversation_problem` checks them.
_MESSAGE = {
    "title": "Message",
    "description": "An OpenAI chat message; other fields (name, tool_call_id...) pass "
                   "through. A system, developer or user message needs non-blank text; "
                   "content may be null or absent only for an assistant message with "
                   "tool_calls.",
    "anyOf": [
        {"type": "object", "required": ["role", "content"],
         "properties": {"role": {"enum": ["developer", "system", "user"]}, "content": _TEXT,
                        "tool_calls": _TOOL_CALLS}},
        {"type": "object", "required": ["role", "content"],
         "properties": {"role": {"enum": sorted(ROLES - {"developer", "system", "user"})},
                        "content": _ANY_CONTENT, "tool_calls": _TOOL_CALLS}},
        {"type": "object", "required": ["role", "tool_calls"],
         "properties": {"role": {"const": "assistant"},
                        "content": {"anyOf": [_ANY_CONTENT, {"type": "null"}]},
                        "tool_calls": {"type": "array", "minItems": 1}}},
        {"type": "object", "required": ["role", "function_call"],
         "properties": {"role": {"const": "assistant"},
                        "content": {"anyOf": [_ANY_CONTENT, {"type": "null"}]},
                        "tool_calls": _TOOL_CALLS, "function_call": {"type": "object"}}},
    ],
}
_MESSAGES = {"type": "array", "minItems": 1, "items": _MESSAGE}
_PROMPT = {"type": "string", "pattern": _NOT_BLANK,
           "description": "a prompt (one user message), or a JSON messages list as text"}

ChatMessages = Annotated[list[dict[str, Any]], PlainValidator(_chat_messages),
                         WithJsonSchema(_MESSAGES)]
RouteMessages = Annotated[list[dict[str, Any]] | str, PlainValidator(_route_messages),
                          WithJsonSchema({"anyOf": [_MESSAGES, _PROMPT]})]
# Identifiers the router may echo in an error: bounded, so an error stays small.
ModelName = Annotated[str, Field(min_length=1, max_length=256)]
ModelList = Annotated[list[ModelName], Field(min_length=1)]
# The router's numbers are JSON numbers (no strings, no booleans), as OpenAI's are.
# The rule fields' ranges are checked by `router.policy` (one message for HTTP and
# CLI) and documented here.
Unit = Annotated[float, Field(strict=True, json_schema_extra={"minimum": 0, "maximum": 1})]
Lambda = Annotated[float, Field(strict=True, json_schema_extra={"minimum": 0})]
Budget = Annotated[float, Field(strict=True, gt=0)]
Milliseconds = Annotated[float, Field(strict=True, json_schema_extra={"exclusiveMinimum": 0})]
# OpenAI's standard fields, strict as OpenAI is.
Temperature = Annotated[float, Field(strict=True, ge=0, le=2)]
TopP = Annotated[float, Field(strict=True, ge=0, le=1)]
Penalty = Annotated[float, Field(strict=True, ge=-2, le=2)]


def _integral(value: Any) -> Any:
    """`5.0` as 5: JSON Schema's integer includes it; `5.5`, `"5"` and `true` stay refused."""
    return int(value) if type(value) is float and value.is_integer() else value


Integer = Annotated[int, Field(strict=True), BeforeValidator(_integral)]
PositiveInt = Annotated[int, Field(strict=True, ge=1), BeforeValidator(_integral)]
StrictBool = Annotated[bool, Field(strict=True)]


def _at_most_one(*names: str) -> dict[str, Any]:
    """JSON Schema for "no two of these fields set" (null counts as not set)."""
    return {"not": {"anyOf": [
        {"required": [a, b], "properties": {a: {"type": "number"}, b: {"type": "number"}}}
        for a, b in combinations(names, 2)]}}


_ONE_RULE = _at_most_one("quality_bar", "min_quality", "utility_lambda")


class RouterFields(BaseModel):
    """The rule and limits a request may carry, on both routing endpoints."""

    quality_bar: Unit | None = None
    min_quality: Unit | None = None
    utility_lambda: Lambda | None = None
    max_cost_usd: Budget | None = None
    max_latency_ms: Milliseconds | None = None
    models: ModelList | None = None


#: Body fields the router reads and never forwards upstream.
ROUTER_FIELDS = tuple(RouterFields.model_fields)


class RouteRequest(RouterFields):
    """`POST /v1/route`: a conversation (messages list or a prompt string) and limits."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_ONE_RULE)

    messages: RouteMessages


class ChatRequest(RouterFields):
    """`POST /v1/chat/completions`: OpenAI's body, plus the optional router fields."""

    model_config = ConfigDict(extra="allow", json_schema_extra=_ONE_RULE)

    model: ModelName
    messages: ChatMessages
    stream: StrictBool | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    n: PositiveInt | None = None
    max_tokens: PositiveInt | None = None
    max_completion_tokens: PositiveInt | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    seed: Integer | None = None
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[int, Field(strict=True, ge=0, le=20),
                            BeforeValidator(_integral)] | None = None
    parallel_tool_calls: StrictBool | None = None
    user: Annotated[str, Field(strict=True)] | None = None
    stream_options: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None


class FeedbackRequest(BaseModel):
    """`POST /v1/feedback`: exactly one of `quality` (in [0, 1]) and `thumbs`."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
        {"required": ["quality"], "properties": {"quality": {"type": "number"}}},
        {"required": ["thumbs"], "properties": {"thumbs": {"type": "string"}}}]})

    # A router request id is `req_` + 32 hex digits; the bound keeps an echo small.
    request_id: Annotated[str, Field(min_length=1, max_length=128)]
    quality: Unit | None = None
    thumbs: Literal["up", "down"] | None = None
    comment: str | None = None


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorResponse(BaseModel):
    """Every error the router answers: OpenAI's error body."""

    error: ErrorDetail


#: `responses=` for the routers with a body: 400 for a bad request (not FastAPI's
#: 422), and every other error in the same shape.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse,
          "description": "Bad request: the message says what, `param` names the field"},
    "default": {"model": ErrorResponse,
                "description": "Any other error (401, 404, 413, 429, 5xx), same shape"},
}


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting `model` as the JSON body of an endpoint that
    parses its body itself (`router.api._pipeline`), as FastAPI documents a body
    parameter. The routing bodies have no nested models, so the schema stands
    alone (no `$ref` into components)."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": model.model_json_schema(ref_template="#/components/schemas/{model}")}}}}


def latency_header_doc() -> dict[str, Any]:
    """The OpenAPI parameter of `LATENCY_HEADER`."""
    return {"name": LATENCY_HEADER, "in": "header", "required": False,
            "description": "max_latency_ms for clients that cannot add a body field; the "
                           "body field wins when both are given",
            "schema": {"type": "number", "exclusiveMinimum": 0}}
