"""What the fake provider is told to do: per-model behaviour and the running state.

`ModelBehaviour` is one model's settings (or every model's, as the default);
`FakeUpstreamState` holds them for a running fake and is safe to change from
another thread (`POST /_control` and `app.state.fake` both land here).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from router.fake._answers import AnswerMemory

__all__ = ["ModelBehaviour", "FakeUpstreamState", "BEHAVIOUR_KEYS"]


@dataclass(frozen=True)
class ModelBehaviour:
    """How one model (or every model, as the default) behaves. `None` = not set.

    `latency_ms`: a fixed delay before the first byte.
    `latency_scale`: answer after the outcome table's recorded `ttft_ms` (first
    byte) and `latency_ms` (whole answer) of (prompt, model), times this factor
    (0.01 keeps tests fast; None: recorded latencies are not used).
    `slowdown`: every delay of the model times this factor (1: as recorded), the
    run-time control for "this provider just got slow".
    `fail_status`: every request fails with this status (503 for `fail_models`).
    `fail_next`: the next N requests fail with `fail_next_status` (default 429).
    `retry_after_s`: the `Retry-After` sent with 429 / 503 answers.
    `stream_fail_after`: a stream drops the connection after N content chunks.
    `degradation`: subtracted from the recorded quality (clipped to [0, 1]).
    """

    latency_ms: float | None = None
    latency_scale: float | None = None
    slowdown: float | None = None
    chunk_delay_ms: float | None = None
    error_rate: float | None = None
    fail_status: int | None = None
    fail_next: int | None = None
    fail_next_status: int | None = None
    retry_after_s: float | None = None
    stream_fail_after: int | None = None
    degradation: float | None = None
    context_tokens: int | None = None


BEHAVIOUR_KEYS = frozenset(f.name for f in fields(ModelBehaviour))
# Fields that are delays or factors of delays: a negative one is a typo, refused.
_NON_NEGATIVE = ("latency_ms", "latency_scale", "slowdown", "chunk_delay_ms")


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
        unknown = set(changes) - BEHAVIOUR_KEYS
        if unknown:
            raise ValueError(f"unknown behaviour field(s): {', '.join(sorted(unknown))}; "
                             f"known: {', '.join(sorted(BEHAVIOUR_KEYS))}")
        for name in _NON_NEGATIVE:
            value = changes.get(name)
            if value is not None and not (isinstance(value, int | float) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
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
