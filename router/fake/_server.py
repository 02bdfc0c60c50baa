"""A simulated OpenAI-compatible provider for tests, simulations and the quickstart.

`create_fake_upstream(...)` returns a FastAPI app that answers
`POST /v1/chat/completions` (JSON and `stream: true` SSE) and `GET /v1/models`
deterministically: the same (prompt, model) always gives the same answer, so
tests can assert bytes and simulations are reproducible.

What it can be told to do, at start-up or at run time through `POST /_control`
(or `app.state.fake`, a `FakeUpstreamState`, when running in-process):

- latency before the first byte, and between stream chunks;
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
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from router.catalog import Catalog, estimate_tokens
from router.conversation import Conversation, parse_conversation
from router.errors import DataError, RouterError
from router.fake._answers import AnswerMemory, OutcomeTable, fake_answer, load_outcome_table
from router.upstream import DONE, encode_data

__all__ = [
    "create_fake_upstream",
    "ModelBehaviour",
    "FakeUpstreamState",
    "OutcomeTable",
    "load_outcome_table",
    "fake_answer",
]

_SERVER_ERRORS = (500, 502, 503)


@dataclass(frozen=True)
class ModelBehaviour:
    """How one model (or every model, as the default) behaves. `None` = not set.

    `fail_status`: every request fails with this status (503 for `fail_models`).
    `fail_next`: the next N requests fail with `fail_next_status` (default 429).
    `retry_after_s`: the `Retry-After` sent with 429 / 503 answers.
    `stream_fail_after`: a stream drops the connection after N content chunks.
    `degradation`: subtracted from the recorded quality (clipped to [0, 1]).
    """

    latency_ms: float | None = None
    chunk_delay_ms: float | None = None
    error_rate: float | None = None
    fail_status: int | None = None
    fail_next: int | None = None
    fail_next_status: int | None = None
    retry_after_s: float | None = None
    stream_fail_after: int | None = None
    degradation: float | None = None
    context_tokens: int | None = None


_BEHAVIOUR_KEYS = frozenset(f.name for f in fields(ModelBehaviour))


def _hash_unit(*parts: str) -> float:
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class FakeUpstreamState:
    """The mutable behaviour of a running fake, safe to change from another thread.

    `configure(model=None, **changes)` changes the default (model None) or one
    model; `reset()` goes back to the start-up configuration; `requests` records
    what arrived (model, stream flag, whether an Authorization header came).
    """

    def __init__(self, default: ModelBehaviour, per_model: Mapping[str, ModelBehaviour],
                 *, seed: int) -> None:
        self._initial = (default, dict(per_model), seed)
        self._lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        self.answers = AnswerMemory()
        self.reset()

    def reset(self) -> None:
        default, per_model, seed = self._initial
        with self._lock:
            self.default = default
            self.per_model: dict[str, ModelBehaviour] = dict(per_model)
            self._rng = random.Random(seed)
            self.requests.clear()
            self.answers.clear()

    def configure(self, model: str | None = None, **changes: Any) -> None:
        """Set behaviour fields (see `ModelBehaviour`); `None` values unset them."""
        unknown = set(changes) - _BEHAVIOUR_KEYS
        if unknown:
            raise ValueError(f"unknown behaviour field(s): {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(sorted(_BEHAVIOUR_KEYS))}")
        with self._lock:
            if model is None or model == "*":
                self.default = replace(self.default, **changes)
            else:
                current = self.per_model.get(model, ModelBehaviour())
                self.per_model[model] = replace(current, **changes)

    def behaviour(self, model: str) -> ModelBehaviour:
        """The effective behaviour of `model`: its own settings over the default."""
        with self._lock:
            own = self.per_model.get(model)
            if own is None:
                return self.default
            merged = {k: v for k, v in asdict(own).items() if v is not None}
            return replace(self.default, **merged)

    def take_forced_failure(self, model: str) -> int | None:
        """Consume one of the model's `fail_next` failures; the status, or None."""
        with self._lock:
            for key, spec in ((model, self.per_model.get(model)), (None, self.default)):
                if spec is not None and spec.fail_next:
                    updated = replace(spec, fail_next=spec.fail_next - 1)
                    if key is None:
                        self.default = updated
                    else:
                        self.per_model[key] = updated
                    return spec.fail_next_status or 429
        return None

    def draw(self) -> float:
        with self._lock:
            return self._rng.random()

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(entry)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "default": asdict(self.default),
                "models": {m: asdict(b) for m, b in self.per_model.items()},
                "requests": len(self.requests),
            }


def _error(status: int, message: str, *, type: str, code: str | None = None,
           param: str | None = None, headers: Mapping[str, str] | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type, "param": param, "code": code}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _failure(status: int, model: str, retry_after_s: float | None) -> JSONResponse:
    headers = {}
    if status in (429, 503) and retry_after_s is not None:
        headers["Retry-After"] = f"{retry_after_s:g}"
    if status == 429:
        return _error(429, f"Rate limit reached for {model} (simulated)",
                      type="requests", code="rate_limit_exceeded", headers=headers)
    if status >= 500:
        return _error(status, f"The server had an error processing the request for {model} "
                      "(simulated)", type="server_error", code=None, headers=headers)
    return _error(status, f"Simulated failure for {model}", type="invalid_request_error",
                  headers=headers)


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
) -> FastAPI:
    """Build the fake provider app. Nothing happens until a server runs it.

    `catalog` gives context windows (and the `/v1/models` list); `api_key`, when
    set, makes every request without `Authorization: Bearer <api_key>` a 401.
    `default_output_tokens` bounds the hash-derived answer length for
    (prompt, model) pairs the outcome table does not have.
    """
    if not 0.0 <= error_rate <= 1.0:
        raise RouterError(f"error_rate must be in [0, 1], got {error_rate!r}",
                          hint="e.g. --error-rate 0.05 for 5% failures")
    if judge_scale < 2:
        raise RouterError(f"judge_scale must be at least 2, got {judge_scale!r}",
                          hint="ratings run 1..judge_scale, e.g. 10 or 5")
    table = load_outcome_table(outcomes) if isinstance(outcomes, str | os.PathLike) else outcomes
    default = ModelBehaviour(latency_ms=latency_ms, chunk_delay_ms=chunk_delay_ms,
                             error_rate=error_rate, retry_after_s=retry_after_s,
                             stream_fail_after=stream_fail_after, degradation=0.0)
    per_model = {m: ModelBehaviour(fail_status=fail_status) for m in fail_models}
    state = FakeUpstreamState(default, per_model, seed=seed)
    judges = frozenset(judge_models)
    started = int(time.time())

    app = FastAPI(title="fake OpenAI-compatible upstream", docs_url=None, redoc_url=None)
    app.state.fake = state
    app.state.outcomes = table

    def context_window(model: str, behaviour: ModelBehaviour) -> int | None:
        if behaviour.context_tokens is not None:
            return behaviour.context_tokens
        if catalog is not None and model in catalog:
            return catalog[model].context_tokens
        return None

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        names: list[str] = list(catalog.names) if catalog is not None else []
        if table is not None:
            names += [m for m in table.models if m not in names]
        names += [m for m in sorted(state.per_model) if m not in names]
        return {"object": "list",
                "data": [{"id": n, "object": "model", "created": started, "owned_by": "fake"}
                         for n in names]}

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
            return _error(400, f"bad control request: {exc}", type="invalid_request_error")
        return JSONResponse(state.snapshot())

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        if api_key is not None and request.headers.get("authorization") != f"Bearer {api_key}":
            return _error(401, "Incorrect API key provided.", type="invalid_request_error",
                          code="invalid_api_key")
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "request body is not valid JSON", type="invalid_request_error")
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            return _error(400, "you must provide a model parameter",
                          type="invalid_request_error", param="model")
        model = body["model"]
        try:
            conversation = parse_conversation(body.get("messages"), where="messages")
        except DataError as exc:
            return _error(400, exc.message, type="invalid_request_error", param="messages")
        stream = bool(body.get("stream"))
        state.record({"model": model, "stream": stream,
                      "authorization": "authorization" in request.headers})
        behaviour = state.behaviour(model)

        if behaviour.latency_ms:
            await asyncio.sleep(behaviour.latency_ms / 1000)
        forced = state.take_forced_failure(model)
        if forced is not None:
            return _failure(forced, model, behaviour.retry_after_s)
        if behaviour.fail_status is not None:
            return _failure(behaviour.fail_status, model, behaviour.retry_after_s)
        if behaviour.error_rate and state.draw() < behaviour.error_rate:
            # Deterministic given the seed and the order of requests.
            status = (429, *_SERVER_ERRORS)[int(state.draw() * 4)]
            return _failure(status, model, behaviour.retry_after_s)

        prompt_tokens = conversation.input_tokens
        window = context_window(model, behaviour)
        if window is not None and prompt_tokens > window:
            return _error(
                400,
                f"This model's maximum context length is {window} tokens. However, your "
                f"messages resulted in {prompt_tokens} tokens. Please reduce the length of "
                "the messages.",
                type="invalid_request_error", code="context_length_exceeded", param="messages")

        quality, n_tokens = _recorded(conversation, model)
        if model in judges:
            # Grading an answer this fake gave: rate it by that answer's quality, so
            # a judged simulation recovers the outcome table; else the hash quality.
            graded = state.answers.find(conversation.text)
            if graded is not None:
                quality = graded
            text = f"Rating: [[{1 + round((judge_scale - 1) * quality)}]]"
        else:
            limit = body.get("max_completion_tokens") or body.get("max_tokens")
            if isinstance(limit, int) and limit > 0:
                n_tokens = min(n_tokens, limit)
            text = fake_answer(conversation.digest, model, n_tokens)
            state.answers.remember(text, quality)
        completion_tokens = estimate_tokens(text)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                 "total_tokens": prompt_tokens + completion_tokens}
        completion_id = "chatcmpl-fake-" + conversation.digest[:16]
        headers = {"x-fake-quality": f"{quality:.6g}"}

        if not stream:
            return JSONResponse({
                "id": completion_id, "object": "chat.completion", "created": started,
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                             "logprobs": None, "finish_reason": "stop"}],
                "usage": usage, "router_quality": quality,
            }, headers=headers)

        options = body.get("stream_options") or {}
        include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
        return StreamingResponse(
            _stream(completion_id, started, model, text, usage if include_usage else None,
                    quality, behaviour),
            media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"})

    def _recorded(conversation: Conversation, model: str) -> tuple[float, int]:
        behaviour = state.behaviour(model)
        quality = n_tokens = None
        if table is not None:
            quality, n_tokens = table.lookup(conversation.digest, model)
        if quality is None:
            quality = round(_hash_unit("quality", model, conversation.digest), 4)
        if n_tokens is None:
            low, high = default_output_tokens
            n_tokens = low + int(_hash_unit("tokens", model, conversation.digest) *
                                 (high - low + 1))
        quality = min(1.0, max(0.0, quality - (behaviour.degradation or 0.0)))
        return quality, n_tokens

    return app


class _SimulatedCrash(ConnectionError):
    """Raised inside a stream to drop the connection, like a provider dying mid-answer."""


async def _stream(completion_id: str, created: int, model: str, text: str,
                  usage: dict[str, int] | None, quality: float,
                  behaviour: ModelBehaviour) -> AsyncIterator[bytes]:
    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        payload: dict[str, Any] = {
            "id": completion_id, "object": "chat.completion.chunk", "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if usage is not None:
            payload["usage"] = None
        return encode_data(payload)

    pieces = _split(text, max(1, math.ceil(len(text) / 8)))
    delay = (behaviour.chunk_delay_ms or 0.0) / 1000
    yield chunk({"role": "assistant", "content": ""}, None)
    for sent, piece in enumerate(pieces):
        if behaviour.stream_fail_after is not None and sent >= behaviour.stream_fail_after:
            raise _SimulatedCrash(f"fake upstream: simulated crash of {model} after "
                                  f"{sent} chunks")
        if delay:
            await asyncio.sleep(delay)
        yield chunk({"content": piece}, None)
    yield chunk({}, "stop")
    if usage is not None:
        yield encode_data({"id": completion_id, "object": "chat.completion.chunk",
                           "created": created, "model": model, "choices": [], "usage": usage,
                           "router_quality": quality})
    yield DONE


def _split(text: str, size: int) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]
