"""`RoutingService`: one loaded quality model + catalog + policy + exploration, and
loading and checking it (`load_service`)."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from router.catalog import Catalog
from router.conversation import Conversation
from router.errors import ArtifactError, PolicyError
from router.live_latency import LiveLatency, blend
from router.policy import (
    BarCalibration,
    Candidate,
    Decision,
    decide,
    validate_bar,
    validate_lambda,
    validate_max_latency,
)
from router.service._cache import DEFAULT_DECISION_CACHE_SIZE, DecisionCache
from router.service._result import RouteResult

__all__ = [
    "FALLBACK_DEFAULT_BAR",
    "QualityModelLike",
    "RoutingService",
    "load_service",
    "model_version_of",
    "parse_router_model",
]

log = logging.getLogger(__name__)

#: The bar when neither settings nor the model's metadata give one.
FALLBACK_DEFAULT_BAR = 0.7

_NO_LATENCY_HINT = ("retrain on an outcome table with a latency_ms column (router demo-data "
                    "writes one; the outcome log records it), or drop the latency limit")

# A fixed conversation every freshly loaded model must score sensibly before it serves.
_PROBE = Conversation.from_prompt("Summarise the following paragraph in one sentence: "
                                  "the router checks a new model before it serves traffic.")


class QualityModelLike(Protocol):
    """What the service needs of `router.predictor.QualityModel`."""

    metadata: Mapping[str, Any]

    def predict(self, conversations: Sequence[Conversation],
                models: Sequence[str] | None = None) -> Any: ...


def model_version_of(model: Any, path: Path | None = None) -> str:
    """The version id a model reports (metadata `version_id`), else its folder name."""
    meta = getattr(model, "metadata", None) or {}
    for key in ("version_id", "version"):
        value = meta.get(key) if isinstance(meta, Mapping) else None
        if value:
            return str(value)
    return path.name if path is not None else "unknown"


@dataclass(frozen=True)
class RoutingService:
    """Immutable: the model, its version, the models it may route to, the bar.

    `routable` are the predictor's models that the upstream can call (catalog
    models with a base_url, or every catalog model under `--upstream-base-url`).
    `default_max_latency_ms` applies to requests that give no limit;
    `live_latency` (shared with the app, so it outlives hot reloads) scales the
    artifact's expected latencies by each model's observed slowdown.
    """

    model: Any
    version: str
    catalog: Catalog
    default_bar: float
    calibration: BarCalibration | None = None
    exploration: float = 0.0
    routable: tuple[str, ...] = ()
    predictor_models: tuple[str, ...] = ()
    loaded_at: float = field(default_factory=time.time)
    path: Path | None = None
    decisions: DecisionCache = field(default_factory=DecisionCache, compare=False,
                                     repr=False)
    default_max_latency_ms: float | None = None
    live_latency: LiveLatency | None = field(default=None, compare=False, repr=False)

    @classmethod
    def build(cls, model: Any, catalog: Catalog, *, default_bar: float | None = None,
              exploration: float = 0.0, proxy_all: bool = False,
              path: Path | None = None,
              decision_cache_size: int = DEFAULT_DECISION_CACHE_SIZE,
              default_max_latency_ms: float | None = None,
              live_latency: LiveLatency | None = None) -> RoutingService:
        meta = getattr(model, "metadata", None) or {}
        bar = default_bar
        if bar is None and isinstance(meta, Mapping) and meta.get("default_bar") is not None:
            bar = float(meta["default_bar"])
        if bar is None:
            bar = FALLBACK_DEFAULT_BAR
        predictor_models = tuple(_predictor_models(model))
        routable = tuple(m for m in predictor_models
                         if m in catalog and (proxy_all or catalog[m].base_url))
        calibration = BarCalibration.from_metadata(meta if isinstance(meta, Mapping) else None)
        return cls(model=model, version=model_version_of(model, path), catalog=catalog,
                   default_bar=bar, calibration=calibration, exploration=exploration,
                   routable=routable,
                   predictor_models=predictor_models, path=path,
                   decisions=DecisionCache(decision_cache_size),
                   default_max_latency_ms=validate_max_latency(
                       default_max_latency_ms, name="ROUTER_MAX_LATENCY_MS"),
                   live_latency=live_latency)

    def validate(self) -> None:
        """Refuse a model that cannot serve: no models, no bar calibration,
        non-finite predictions, or a default latency limit it cannot apply."""
        if not self.predictor_models:
            raise ArtifactError(f"model {self.version}: predicts for no models")
        if self.calibration is None:
            raise ArtifactError(f"model {self.version}: no bar calibration, so a quality bar "
                                f"has no meaning", hint="retrain it with router train")
        prediction = self.model.predict([_PROBE])
        latency = getattr(prediction, "latency_ms", None)
        if self.default_max_latency_ms is not None and latency is None:
            raise ArtifactError(f"model {self.version}: predicts no latency, so "
                                f"ROUTER_MAX_LATENCY_MS={self.default_max_latency_ms:g} "
                                "cannot be applied", hint=_NO_LATENCY_HINT)
        quality = np.asarray(prediction.quality, dtype=np.float64)
        cost = np.asarray(prediction.cost_usd, dtype=np.float64)
        expected = (1, len(prediction.models))
        if quality.shape != expected or cost.shape != expected:
            raise ArtifactError(f"model {self.version}: prediction shape {quality.shape} / "
                                f"{cost.shape}, expected {expected}")
        if not (np.isfinite(quality).all() and np.isfinite(cost).all()):
            raise ArtifactError(f"model {self.version}: predictions are not finite",
                                hint="the artifact is corrupt; retrain it")
        # NaN is allowed (a model the data had no latency for); negative or inf is not.
        if latency is not None and (np.asarray(latency).shape != expected or (
                np.asarray(latency)[~np.isnan(latency)] < 0).any() or np.isinf(latency).any()):
            raise ArtifactError(f"model {self.version}: latency predictions are malformed",
                                hint="the artifact is corrupt; retrain it")

    def route(self, conversation: Conversation, *, bar: float | None = None,
              max_cost_usd: float | None = None, models: Sequence[str] | None = None,
              rng: random.Random | None = None, proxy_only: bool = False,
              utility_lambda: float | None = None,
              min_quality: float | None = None,
              max_latency_ms: float | None = None) -> RouteResult:
        """Decide for one conversation. `rng` given = explore with `self.exploration`.

        At most one of `bar` (a target mean quality; default: the service's),
        `min_quality` (a hard per-request floor) and `utility_lambda` (quality per
        USD); see `router.policy`. `max_latency_ms` (default: the service's
        `default_max_latency_ms`) drops models expected to take longer, live
        slowdowns included. `proxy_only` limits the choice to models the upstream
        can serve (chat). Raises `PolicyError` for a bad bar, floor, lambda or
        limit, a limit the model has no latency prediction for, unknown models or
        no usable model.
        """
        started = time.perf_counter()
        bar = self._rule(bar, min_quality, utility_lambda)
        limit = validate_max_latency(max_latency_ms)
        if limit is None:
            limit = self.default_max_latency_ms
        pool = self._pool(models, proxy_only)
        live = self.live_latency
        key = (conversation.digest, bar, min_quality, utility_lambda, max_cost_usd, pool,
               limit, live.current_generation() if live is not None else 0)
        cached = self.decisions.get(key)
        if cached is None:
            decision = self._decide(conversation, bar, min_quality, utility_lambda,
                                    max_cost_usd, pool, limit)
            # The chain after the policy's choice, computed once with the decision.
            cached = (decision, self._meeting(decision, decision.model))
            self.decisions.put(key, cached)
        decision, policy_fallbacks = cached
        chosen, propensity, explored = self._explore(decision, rng)
        picked = next(c for c in decision.candidates if c.model == chosen)
        return RouteResult(
            model=chosen, policy_model=decision.model, quality_bar=bar,
            expected_quality=picked.expected_quality, expected_cost_usd=picked.expected_cost_usd,
            candidates=decision.candidates, propensity=propensity, explored=explored,
            fallbacks=(policy_fallbacks if chosen == decision.model
                       else self._meeting(decision, chosen)),
            decision_s=time.perf_counter() - started,
            utility_lambda=utility_lambda, min_quality=min_quality,
            expected_latency_ms=picked.expected_latency_ms, max_latency_ms=limit,
            latency_limit_met=decision.latency_limit_met,
            latency_reason=decision.latency_reason,
        )

    def _rule(self, bar: float | None, min_quality: float | None,
              utility_lambda: float | None) -> float | None:
        """The request's bar: its own, or the default when it gives no floor or lambda."""
        if sum(v is not None for v in (bar, min_quality, utility_lambda)) > 1:
            raise PolicyError("give at most one of quality_bar, min_quality and utility_lambda")
        validate_lambda(utility_lambda)
        validate_bar(min_quality, name="min_quality")
        if utility_lambda is None and min_quality is None:
            return self.default_bar if bar is None else bar
        return bar

    def _pool(self, models: Sequence[str] | None, proxy_only: bool) -> tuple[str, ...]:
        """The models this request may go to."""
        pool = self.routable if proxy_only else self.predictor_models
        if models is not None:
            unknown = sorted(set(models) - set(self.predictor_models))
            if unknown:  # named, but never more than a few: the error echoes the caller
                more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
                raise PolicyError(f"unknown model(s) in models: {', '.join(unknown[:5])}{more}",
                                  hint="routable models: " + ", ".join(pool))
            wanted = set(models)
            pool = tuple(m for m in pool if m in wanted)
        if not pool:
            raise PolicyError("no model left to route to"
                              + (" that the upstream can serve" if proxy_only else ""),
                              hint="allow more models, or configure base_url / "
                                   "--upstream-base-url for them")
        return pool

    def _explore(self, decision: Decision, rng: random.Random | None
                 ) -> tuple[str, float, bool]:
        """(served model, its propensity, explored) under epsilon-uniform exploration."""
        if rng is None or self.exploration <= 0 or len(decision.candidates) <= 1:
            return decision.model, 1.0, False
        eps, m = self.exploration, len(decision.candidates)
        chosen, explored = decision.model, False
        if rng.random() < eps:
            chosen = decision.candidates[rng.randrange(m)].model
            explored = True
        return chosen, (1.0 - eps) * (chosen == decision.model) + eps / m, explored

    def _decide(self, conversation: Conversation, bar: float | None,
                min_quality: float | None, utility_lambda: float | None,
                max_cost_usd: float | None, pool: tuple[str, ...],
                max_latency_ms: float | None) -> Decision:
        prediction = self.model.predict([conversation])
        quality = np.asarray(prediction.quality, dtype=np.float64)[0]
        cost = np.asarray(prediction.cost_usd, dtype=np.float64)[0]
        latency = getattr(prediction, "latency_ms", None)
        if latency is not None:
            latency = np.asarray(latency, dtype=np.float64)[0]
            if self.live_latency is not None:
                latency = blend(latency, self.live_latency.factors(prediction.models))
        elif max_latency_ms is not None:
            raise PolicyError(f"max_latency_ms={max_latency_ms:g}: model {self.version} "
                              "predicts no latency, so a latency limit cannot be applied",
                              hint=_NO_LATENCY_HINT)
        return decide(list(prediction.models), quality, cost, bar=bar,
                      calibration=self.calibration, min_quality=min_quality,
                      utility_lambda=utility_lambda, max_cost_usd=max_cost_usd,
                      allowed_models=pool, latency_ms=latency, max_latency_ms=max_latency_ms)

    @staticmethod
    def _meeting(decision: Decision, chosen: str) -> tuple[str, ...]:
        """The rest of the chain after `chosen`.

        A floor: the other candidates meeting it, cheapest first. A bar or a
        lambda: the other candidates by utility under the decision's lambda, best
        first. Under a latency limit the candidates expected within it come first.
        """
        others = [c for c in decision.candidates if c.model != chosen]
        limit = decision.max_latency_ms

        def too_slow(c: Candidate) -> bool:
            return limit is not None and not (c.expected_latency_ms is not None
                                              and c.expected_latency_ms <= limit)

        lam = decision.utility_lambda
        if lam is not None:
            ranked = sorted(others, key=lambda c: (too_slow(c), -(c.expected_quality - lam
                                                                  * c.expected_cost_usd),
                                                   c.model))
        else:
            floor = decision.min_quality
            ranked = sorted((c for c in others if c.expected_quality >= floor),
                            key=lambda c: (too_slow(c), c.expected_cost_usd, c.model))
        return tuple(c.model for c in ranked)


def _predictor_models(model: Any) -> list[str]:
    meta = getattr(model, "metadata", None) or {}
    names = meta.get("models") if isinstance(meta, Mapping) else None
    if not names:
        names = getattr(model, "models_", None) or getattr(model, "models", None)
    if not names:
        names = list(model.predict([_PROBE]).models)
    return [str(n) for n in names]


def load_service(path: Path, catalog: Catalog, *, default_bar: float | None,
                 exploration: float, proxy_all: bool,
                 decision_cache_size: int = DEFAULT_DECISION_CACHE_SIZE,
                 default_max_latency_ms: float | None = None,
                 live_latency: LiveLatency | None = None) -> RoutingService:
    """Load, check and wrap the artifact at `path` (blocking; run it in a thread).

    Raises `ArtifactError` when the folder is not a usable model.
    """
    from router.predictor import QualityModel  # heavy (lightgbm): only when loading

    try:
        model = QualityModel.load(path)
    except ArtifactError:
        raise
    except Exception as exc:  # a truncated LightGBM file raises its own errors
        raise ArtifactError(f"{path}: cannot load the model: {exc}",
                            hint="the artifact is corrupt; retrain or roll back") from exc
    service = RoutingService.build(model, catalog, default_bar=default_bar,
                                   exploration=exploration, proxy_all=proxy_all, path=path,
                                   decision_cache_size=decision_cache_size,
                                   default_max_latency_ms=default_max_latency_ms,
                                   live_latency=live_latency)
    try:
        service.validate()
    except ArtifactError:
        raise
    except Exception as exc:
        raise ArtifactError(f"{path}: the model failed its check prediction: {exc}",
                            hint="the artifact is corrupt; retrain or roll back") from exc
    return service


def parse_router_model(name: str) -> float | None | bool:
    """`router` -> None (default bar); `router:0.8` -> 0.8; anything else -> False.

    Raises `PolicyError` for `router:` followed by something that is not a bar in [0, 1].
    """
    if name == "router":
        return None
    if not name.startswith("router:"):
        return False
    text = name[len("router:"):]
    try:
        bar = float(text)
    except ValueError:
        bar = math.nan
    if not (0.0 <= bar <= 1.0):
        raise PolicyError(f"model {name!r}: the quality bar after 'router:' must be a number "
                          f"in [0, 1], got {text!r}", hint="e.g. \"model\": \"router:0.8\"")
    return bar
