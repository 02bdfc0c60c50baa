"""A simulated OpenAI-compatible provider for tests, simulations and the quickstart.

`create_fake_upstream(...)` returns a FastAPI app that answers
`POST /v1/chat/completions` (JSON and `stream: true` SSE) and `GET /v1/models`
deterministically: the same (prompt, model) always gives the same answer, so
tests can assert bytes and simulations are reproducible.

What it can be told to do, at start-up or at run time through `POST /_control`
(or `app.state.fake`, a `FakeUpstreamState`, when running in-process):

- latency before the first byte, and between stream chunks, per model
  (`model_latency_ms` at start-up);
- with an outcome table that records them, answer after the recorded time to
  first token and whole-answer latency of (prompt, model), times
  `latency_scale`; `slowdown` multiplies a model's every delay (a provider
  that just got slow);
- random 5xx / 429 (with `Retry-After`) at `error_rate`, drawn from a seeded RNG;
- always fail some models (`fail_models`, status configurable), or fail the next N
  requests of a model (a 429 followed by success, say);
- break a stream after N chunks by dropping the connection, as a crashing
  provider does;
- answer 400 `context_length_exceeded` when the prompt is longer than the
  model's window (from a catalog, or set per model);
- with an outcome table (`outcomes=`), answer with the recorded quality of
  (prompt, model) (`router_quality` in the body, `x-fake-quality` header) and
  the recorded number of output tokens; `degradation` lowers it at run time;
- judge mode: models named in `judge_models` answer `Rating: [[N]]`, N in
  1..`judge_scale` (default 10; 5 for the 1-5 rubric of `router collect`),
  N = 1 + round((judge_scale - 1) q): q is the quality of an answer this fake
  gave earlier when the judge prompt quotes one (so grading recovers the
  outcome table), else the quality of (judge prompt, judge model).

The behaviour and its state live in `router.fake._behaviour`, the bytes in
`router.fake._responses`; this module decides what to answer.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from router.catalog import Catalog, estimate_tokens
from router.conversation import Conversation, parse_conversation
from router.errors import DataError, RouterError
from router.fake._answers import OutcomeTable, fake_answer, load_outcome_table
from router.fake._behaviour import FakeUpstreamState, ModelBehaviour
from router.fake._responses import (
    chunk_count,
    completion,
    error,
    failure,
    stream_events,
)

__all__ = [
    "create_fake_upstream",
    "ModelBehaviour",
    "FakeUpstreamState",
    "OutcomeTable",
    "load_outcome_table",
    "fake_answer",
]

_SERVER_ERRORS = (500, 502, 503)


def _hash_unit(*parts: str) -> float:
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def create_fake_upstream(
    *,
    latency_ms: float = 0.0,
    error_rate: float = 0.0,
    fail_models: Iterable[str] = (),
    fail_status: int = 503,
    outcomes: str | os.PathLike[str] | OutcomeTable | None = None,
    catalog: Catalog | None = None,
    seed: int = 0,
    retry_after_s: float = 1.0,
    chunk_delay_ms: float = 0.0,
    stream_fail_after: int | None = None,
    judge_models: Iterable[str] = (),
    judge_scale: int = 10,
    api_key: str | None = None,
    default_output_tokens: tuple[int, int] = (16, 64),
    model_latency_ms: Mapping[str, float] | None = None,
    latency_scale: float | None = None,
) -> FastAPI:
    """Build the fake provider app. Nothing happens until a server runs it.

    `catalog` gives context windows (and the `/v1/models` list); `api_key`, when
    set, makes every request without `Authorization: Bearer <api_key>` a 401.
    `default_output_tokens` bounds the hash-derived answer length for
    (prompt, model) pairs the outcome table does not have. `model_latency_ms`
    sets a first-byte delay per model; `latency_scale` answers after the
    table's recorded latencies times that factor (see `ModelBehaviour`).
    """
    _check_options(error_rate, judge_scale, latency_scale, model_latency_ms)
    table = load_outcome_table(outcomes) if isinstance(outcomes, str | os.PathLike) else outcomes
    default = ModelBehaviour(latency_ms=latency_ms, chunk_delay_ms=chunk_delay_ms,
                             error_rate=error_rate, retry_after_s=retry_after_s,
                             stream_fail_after=stream_fail_after, degradation=0.0,
                             latency_scale=latency_scale, slowdown=1.0)
    per_model = {m: ModelBehaviour(latency_ms=float(v))
                 for m, v in (model_latency_ms or {}).items()}
    for m in fail_models:
        per_model[m] = ModelBehaviour(latency_ms=per_model.get(m, ModelBehaviour()).latency_ms,
                                      fail_status=fail_status)
    state = FakeUpstreamState(default, per_model, seed=seed)
    provider = _Provider(state, table, catalog, frozenset(judge_models), judge_scale, api_key,
                         default_output_tokens, int(time.time()))
    app = FastAPI(title="fake OpenAI-compatible upstream", docs_url=None, redoc_url=None)
    app.state.fake = state
    app.state.outcomes = table
    _add_control_routes(app, state)
    app.get("/v1/models")(provider.list_models)
    app.post("/v1/chat/completions")(provider.chat_completions)
    return app


def _check_options(error_rate: float, judge_scale: int, latency_scale: float | None,
                   model_latency_ms: Mapping[str, float] | None) -> None:
    if not 0.0 <= error_rate <= 1.0:
        raise RouterError(f"error_rate must be in [0, 1], got {error_rate!r}",
                          hint="e.g. --error-rate 0.05 for 5% failures")
    if judge_scale < 2:
        raise RouterError(f"judge_scale must be at least 2, got {judge_scale!r}",
                          hint="ratings run 1..judge_scale, e.g. 10 or 5")
    if latency_scale is not None and not latency_scale >= 0:
        raise RouterError(f"latency_scale must be >= 0, got {latency_scale!r}",
                          hint="e.g. --latency-scale 0.01: recorded latencies / 100")
    for model, value in (model_latency_ms or {}).items():
        if not value >= 0:
            raise RouterError(f"latency of {model} must be >= 0 ms, got {value!r}",
                              hint="e.g. --model-latency gpt-4o=800")


def _add_control_routes(app: FastAPI, state: FakeUpstreamState) -> None:
    @app.get("/_control")
    async def get_control() -> dict[str, Any]:
        return state.snapshot()

    @app.post("/_control")
    async def post_control(request: Request) -> JSONResponse:
        """`{"model": "m" | null, "reset": bool, <ModelBehaviour fields>...}`."""
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            if body.pop("reset", False):
                state.reset()
            model = body.pop("model", None)
            if body:
                state.configure(model, **body)
        except (ValueError, TypeError) as exc:
            return error(400, f"bad control request: {exc}", type="invalid_request_error")
        return JSONResponse(state.snapshot())


@dataclass(frozen=True)
class _Timing:
    """When an answer's bytes go out: before the first one, then between chunks."""

    first_s: float
    rest_s: float
    chunk_delay_s: float


@dataclass
class _Provider:
    """The chat endpoint's decisions, one method per step."""

    state: FakeUpstreamState
    table: OutcomeTable | None
    catalog: Catalog | None
    judges: frozenset[str]
    judge_scale: int
    api_key: str | None
    default_output_tokens: tuple[int, int]
    started: int

    async def list_models(self) -> dict[str, Any]:
        names: list[str] = list(self.catalog.names) if self.catalog is not None else []
        if self.table is not None:
            names += [m for m in self.table.models if m not in names]
        names += [m for m in sorted(self.state.per_model) if m not in names]
        return {"object": "list",
                "data": [{"id": n, "object": "model", "created": self.started,
                          "owned_by": "fake"} for n in names]}

    async def chat_completions(self, request: Request) -> Any:
        parsed = await self._parse(request)
        if isinstance(parsed, JSONResponse):
            return parsed
        body, model, conversation = parsed
        stream = bool(body.get("stream"))
        self.state.record({"model": model, "stream": stream,
                           "authorization": "authorization" in request.headers})
        behaviour = self.state.behaviour(model)
        timing = self._timing(conversation, model, behaviour)
        await asyncio.sleep(timing.first_s)
        refused = self._refusal(model, behaviour, conversation)
        if refused is not None:
            return refused
        quality, text = self._answer(body, model, conversation, behaviour)
        completion_tokens = estimate_tokens(text)
        usage = {"prompt_tokens": conversation.input_tokens,
                 "completion_tokens": completion_tokens,
                 "total_tokens": conversation.input_tokens + completion_tokens}
        completion_id = "chatcmpl-fake-" + conversation.digest[:16]
        headers = {"x-fake-quality": f"{quality:.6g}"}
        if not stream:
            # A whole answer arrives at once, after all of its latency.
            await asyncio.sleep(timing.rest_s)
            return JSONResponse(completion(completion_id, self.started, model, text, usage,
                                           quality), headers=headers)
        options = body.get("stream_options") or {}
        include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
        events = stream_events(
            completion_id, self.started, model, text, usage if include_usage else None, quality,
            chunk_delay_s=timing.chunk_delay_s + timing.rest_s / chunk_count(text),
            fail_after=behaviour.stream_fail_after)
        return StreamingResponse(events, media_type="text/event-stream",
                                 headers={**headers, "cache-control": "no-cache"})

    async def _parse(self, request: Request
                     ) -> JSONResponse | tuple[dict[str, Any], str, Conversation]:
        """(body, model, conversation) of a well-formed request, else its error."""
        if self.api_key is not None and (
                request.headers.get("authorization") != f"Bearer {self.api_key}"):
            return error(401, "Incorrect API key provided.", type="invalid_request_error",
                         code="invalid_api_key")
        try:
            body = await request.json()
        except ValueError:
            return error(400, "request body is not valid JSON", type="invalid_request_error")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return error(400, "you must provide a model parameter",
                         type="invalid_request_error", param="model")
        try:
            conversation = parse_conversation(body.get("messages"), where="messages")
        except DataError as exc:
            return error(400, exc.message, type="invalid_request_error", param="messages")
        return body, body["model"], conversation

    def _timing(self, conversation: Conversation, model: str,
                behaviour: ModelBehaviour) -> _Timing:
        """The fixed first-byte delay, plus the recorded latencies times
        `latency_scale` where the table has them; all times `slowdown`."""
        first_ms, rest_ms = behaviour.latency_ms or 0.0, 0.0
        if behaviour.latency_scale is not None and self.table is not None:
            latency, ttft = self.table.timing(conversation.digest, model)
            if latency is not None:
                ttft = min(latency, ttft) if ttft is not None else latency
                first_ms += ttft * behaviour.latency_scale
                rest_ms = (latency - ttft) * behaviour.latency_scale
        slow = behaviour.slowdown if behaviour.slowdown is not None else 1.0
        return _Timing(first_ms * slow / 1000, rest_ms * slow / 1000,
                       (behaviour.chunk_delay_ms or 0.0) * slow / 1000)

    def _refusal(self, model: str, behaviour: ModelBehaviour,
                 conversation: Conversation) -> JSONResponse | None:
        """The failure this request gets (forced, configured, random, too long), if any."""
        forced = self.state.take_forced_failure(model)
        if forced is not None:
            return failure(forced, model, behaviour.retry_after_s)
        if behaviour.fail_status is not None:
            return failure(behaviour.fail_status, model, behaviour.retry_after_s)
        if behaviour.error_rate and self.state.draw() < behaviour.error_rate:
            # Deterministic given the seed and the order of requests.
            status = (429, *_SERVER_ERRORS)[int(self.state.draw() * 4)]
            return failure(status, model, behaviour.retry_after_s)
        window = behaviour.context_tokens
        if window is None and self.catalog is not None and model in self.catalog:
            window = self.catalog[model].context_tokens
        tokens = conversation.input_tokens
        if window is not None and tokens > window:
            return error(
                400,
                f"This model's maximum context length is {window} tokens. However, your "
                f"messages resulted in {tokens} tokens. Please reduce the length of "
                "the messages.",
                type="invalid_request_error", code="context_length_exceeded", param="messages")
        return None

    def _answer(self, body: dict[str, Any], model: str, conversation: Conversation,
                behaviour: ModelBehaviour) -> tuple[float, str]:
        """(quality, text): the recorded outcome, or a judge's rating of an earlier answer."""
        quality, n_tokens = self._recorded(conversation, model, behaviour)
        if model in self.judges:
            # Grading an answer this fake gave: rate it by that answer's quality, so
            # a judged simulation recovers the outcome table; else the hash quality.
            graded = self.state.answers.find(conversation.text)
            if graded is not None:
                quality = graded
            return quality, f"Rating: [[{1 + round((self.judge_scale - 1) * quality)}]]"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and limit > 0:
            n_tokens = min(n_tokens, limit)
        text = fake_answer(conversation.digest, model, n_tokens)
        self.state.answers.remember(text, quality)
        return quality, text

    def _recorded(self, conversation: Conversation, model: str,
                  behaviour: ModelBehaviour) -> tuple[float, int]:
        quality = n_tokens = None
        if self.table is not None:
            quality, n_tokens = self.table.lookup(conversation.digest, model)
        if quality is None:
            quality = round(_hash_unit("quality", model, conversation.digest), 4)
        if n_tokens is None:
            low, high = self.default_output_tokens
            n_tokens = low + int(_hash_unit("tokens", model, conversation.digest) *
                                 (high - low + 1))
        quality = min(1.0, max(0.0, quality - (behaviour.degradation or 0.0)))
        return quality, n_tokens
