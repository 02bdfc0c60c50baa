"""Evaluate a trained quality model as a router, against the baselines that matter.

On the prompts of a canonical outcome table (full information: every model's
realised quality and cost per prompt), `evaluate` computes:

* **router** (the default rule, what a caller gets without options): the quality
  bar is swept (`training.sweep.DEFAULT_SWEEP_BARS`); each bar routes every prompt
  with `router.policy.choose` (lambda(bar) from the model's `BarCalibration`) on
  the *predicted* quality and cost, and the point is scored with the *realised*
  quality and cost of the chosen models (mean per request). `aiq`,
  `cost_at_best_single_quality` and `quality_at_10pct_cost` are read off its hull.
* **the hard floor** (min_quality swept over quantiles of the predicted quality)
  and **the utility rule** (explicit lambda over a geometric grid scaled to the
  table's costs, `training.sweep.utility_lambdas`, shared with the promotion
  gate): `aiq_floor` and `aiq_utility`, each rule alone. The kNN baseline gets
  those two sweeps (it has no calibration) and its AIQ is the hull of both.
* **single models** and the **Zero router** (the hull over the single models, i.e.
  mixing them at random), which a router must beat to be worth anything.
* **random**: RouterBench's random router, calling the best single model with
  probability p and the cheapest one otherwise (expected values, p = 0, .1, ... 1).
* **kNN**: RouterBench's baseline router. Each model's quality for a prompt is the
  mean realised quality of its k nearest training prompts (cosine on
  `model.features_.embed`), its cost the model's mean training cost; the same bars
  are swept. Fitted on `train_table` when given (minus any evaluated prompt, so it
  is never in-sample); otherwise cross-fitted over 5 folds of the evaluated prompts.
* **oracle**: per prompt the cheapest model with the best realised quality.
* with exactly two models, RouteLLM's APGR and CPT(50%) / CPT(80%): the score is the
  predicted quality gap q_strong - q_weak, thresholded at RouteLLM's 10 quantile
  bins (the same protocol as the published figures).

Row weights (`weight`, from propensities) are not used: an evaluation table has
every model's outcome for every prompt, so no reweighting is needed.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd
from tqdm import tqdm

from router.errors import DataError
from router.policy import BarCalibration
from training import metrics
from training.data import conversations, outcome_matrices
from training.knn import DEFAULT_KNN_K, KnnPrediction, knn_baseline
from training.latency_eval import LatencyLimit, latency_limit, latency_section
from training.sweep import (
    DEFAULT_SWEEP_BARS,
    RowCalibrations,
    calibration_of,
    sweep_bars,
    sweep_floors,
    sweep_lambdas,
    utility_lambdas,
)
from training.two_model_eval import add_two_model

__all__ = ["EvalReport", "evaluate", "headline", "report_from_predictions"]

log = logging.getLogger(__name__)

_N_BAR_QUANTILES = 41


class _Predicts(Protocol):
    def predict(self, conversations: Sequence[Any], models: Sequence[str] | None = None) -> Any:
        ...


@dataclass
class EvalReport:
    """Every figure of one evaluation; `to_json()` is what `router eval --json` prints.

    Costs are mean USD per request; qualities mean realised quality; curves are lists
    of {bar, cost_usd, quality} (`curve`: the default rule's bars; `floor_curve`:
    {min_quality, ...}; `utility_curve`: {lambda, ...}). Fractions
    (`cost_at_best_single_quality`, CPT) are in [0, 1]; None where a target is never
    reached.
    """

    n_prompts: int
    models: list[str]
    curve: list[dict[str, float]]
    hull: list[dict[str, float]]
    single_models: list[dict[str, Any]]
    c_max: float
    aiq: float
    zero_router_aiq: float
    random: dict[str, Any]
    oracle: dict[str, float]
    best_single_model: str
    cost_at_best_single_quality: float | None
    quality_at_10pct_cost: float | None
    knn: dict[str, Any] | None = None
    utility_curve: list[dict[str, float]] = field(default_factory=list)
    floor_curve: list[dict[str, float]] = field(default_factory=list)
    aiq_floor: float | None = None
    # The model's default bar, and what it realised here: {bar, cost_usd, quality}.
    default_point: dict[str, float] | None = None
    aiq_utility: float | None = None
    apgr: float | None = None
    cpt50: float | None = None
    cpt80: float | None = None
    two_model: dict[str, Any] | None = None
    # Under `max_latency_ms` (training.latency_eval.latency_section), else None.
    latency: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# -- building blocks -----------------------------------------------------------------

def _floors(pred_quality: np.ndarray) -> list[float]:
    qs = np.quantile(pred_quality, np.linspace(0.0, 1.0, _N_BAR_QUANTILES))
    bars = np.unique(np.clip(np.concatenate([[0.0, 1.0], qs]), 0.0, 1.0))
    return [float(b) for b in bars]


def _curve_dicts(points: np.ndarray, setting: str = "bar") -> list[dict[str, float]]:
    return [{setting: float(b), "cost_usd": float(c), "quality": float(q)}
            for b, c, q in points]


def _hull_dicts(points: np.ndarray) -> list[dict[str, float]]:
    hull = metrics.convex_hull_upper(points)
    return [{"cost_usd": float(c), "quality": float(q)} for c, q in hull]


# -- the evaluation ------------------------------------------------------------------

def evaluate(
    model: _Predicts,
    table: pd.DataFrame,
    *,
    train_table: pd.DataFrame | None = None,
    prompt_ids: Collection[str] | None = None,
    bars: Sequence[float] | None = None,
    seed: int = 0,
    knn_k: int = DEFAULT_KNN_K,
    progress: bool = False,
    max_latency_ms: float | None = None,
) -> EvalReport:
    """Score `model` as a router on the prompts of `table` (see the module docstring).

    `model` needs `predict(conversations, models=...)` returning an object with
    `models`, `quality` (n, m) and `cost_usd` (n, m); the kNN baseline also needs
    `model.features_.embed` (skipped with a note otherwise). `prompt_ids` restricts
    the evaluation to those prompts (e.g. the ones the artifact held out). Prompts
    lacking an outcome for some evaluated model are dropped, with a note. With
    `max_latency_ms`, `EvalReport.latency` scores the default rule under that
    limit (`training.latency_eval`; needs the prediction's `latency_ms` and the
    table's).
    """
    notes: list[str] = []
    if prompt_ids is not None:
        wanted = {str(p) for p in prompt_ids}
        table = table[table["prompt_id"].astype(str).isin(wanted)]
    if len(table) == 0:
        raise DataError("no outcome rows to evaluate",
                        hint="check --data, and that held-out prompt ids exist in it")
    steps = tqdm(total=5, desc="evaluate", unit="step", disable=not progress)
    ids, convs = conversations(table)
    pred = model.predict(convs)
    models, cols = _evaluated_models([str(m) for m in pred.models], table, notes)
    quality, cost = outcome_matrices(table, models, ids)
    complete = _complete_prompts(quality, cost, notes)
    limit = None
    if max_latency_ms is not None:
        predicted = getattr(pred, "latency_ms", None)
        limit = latency_limit(max_latency_ms,
                              None if predicted is None else predicted[complete][:, cols],
                              table, models, [p for p, ok in zip(ids, complete, strict=True)
                                              if ok], notes)
    quality, cost = quality[complete], cost[complete]
    pq = np.asarray(pred.quality, dtype=np.float64)[complete][:, cols]
    pc = np.asarray(pred.cost_usd, dtype=np.float64)[complete][:, cols]
    kept_ids = [p for p, ok in zip(ids, complete, strict=True) if ok]
    kept_convs = [c for c, ok in zip(convs, complete, strict=True) if ok]
    steps.update()
    knn = knn_baseline(model, kept_ids, kept_convs, quality, cost, models, train_table,
                       knn_k, seed, notes)
    steps.update()
    report = report_from_predictions(models, quality, cost, pq, pc, model=model, knn=knn,
                                     bars=bars, notes=notes, latency=limit)
    steps.update(3)
    steps.close()
    return report


def _evaluated_models(pred_models: list[str], table: pd.DataFrame,
                      notes: list[str]) -> tuple[list[str], list[int]]:
    """(the predicted models with outcomes in the table, their prediction columns)."""
    data_models = set(table["model"].astype(str))
    models = [m for m in pred_models if m in data_models]
    unknown = sorted(data_models - set(pred_models))
    if unknown:
        notes.append(f"ignored models the artifact does not predict: {', '.join(unknown)}")
    if not models:
        raise DataError(f"none of the artifact's models ({', '.join(pred_models)}) has outcomes "
                        f"in the data (models: {', '.join(sorted(data_models))})",
                        hint="evaluate on outcomes of the models the artifact was trained on")
    missing = sorted(set(pred_models) - data_models)
    if missing:
        notes.append(f"models without outcomes in the data, not routed to: {', '.join(missing)}")
    return models, [pred_models.index(m) for m in models]


def _complete_prompts(quality: np.ndarray, cost: np.ndarray, notes: list[str]) -> np.ndarray:
    """Rows with an outcome for every evaluated model (full information)."""
    complete = np.isfinite(quality).all(axis=1) & np.isfinite(cost).all(axis=1)
    if not complete.any():
        raise DataError("no prompt has outcomes for every evaluated model",
                        hint="evaluation needs full information: each prompt answered by "
                             "every model")
    if not complete.all():
        notes.append(f"dropped {int((~complete).sum())} prompts lacking an outcome for some "
                     f"model")
    return complete


def report_from_predictions(
    models: Sequence[str],
    quality: np.ndarray,
    cost: np.ndarray,
    pred_quality: np.ndarray,
    pred_cost: np.ndarray,
    *,
    model: Any = None,
    calibration: BarCalibration | RowCalibrations | None = None,
    knn: KnnPrediction | None = None,
    bars: Sequence[float] | None = None,
    notes: list[str] | None = None,
    latency: LatencyLimit | None = None,
) -> EvalReport:
    """Every figure of the report from realised and predicted (n, m) matrices.

    This is `evaluate` without the model: benchmarks pool out-of-fold predictions
    from several fitted models and score them here, with the same definitions.
    `model` (or anything with its `metadata`) gives the bar calibration
    (`training.sweep.calibration_of`), unless `calibration` is given: e.g.
    `RowCalibrations` when the rows were predicted by several models (folds),
    each with its own. `latency` adds the section under a latency limit.
    """
    models = [str(m) for m in models]
    notes = list(notes or [])
    if calibration is None:
        calibration = calibration_of(model, pred_quality, pred_cost, notes)
    bar_list = list(bars) if bars is not None else list(DEFAULT_SWEEP_BARS)
    router_pts = sweep_bars(pred_quality, pred_cost, quality, cost, bar_list, calibration)
    floor_pts = sweep_floors(pred_quality, pred_cost, quality, cost, _floors(pred_quality))
    lambdas = utility_lambdas(cost)
    utility_pts = sweep_lambdas(pred_quality, pred_cost, quality, cost, lambdas)
    single_cost, single_quality = cost.mean(axis=0), quality.mean(axis=0)
    c_max = float(single_cost.max())
    best = _best_single(single_cost, single_quality)
    best_cost, best_quality = float(single_cost[best]), float(single_quality[best])
    orc = metrics.oracle(quality, cost)
    router_xy = router_pts[:, 1:]
    report = EvalReport(
        n_prompts=int(quality.shape[0]),
        models=models,
        curve=_curve_dicts(router_pts),
        hull=_hull_dicts(router_xy),
        single_models=[{"model": m, "cost_usd": float(c), "quality": float(q)}
                       for m, c, q in zip(models, single_cost, single_quality, strict=True)],
        c_max=c_max,
        aiq=metrics.aiq(router_xy[:, 0], router_xy[:, 1], c_max),
        zero_router_aiq=metrics.zero_router_aiq(single_cost, single_quality, c_max),
        random=_random_router(models, single_cost, single_quality, best, c_max),
        oracle={"cost_usd": orc.cost_usd, "quality": orc.quality},
        best_single_model=models[best],
        cost_at_best_single_quality=(metrics.cost_at_quality(
            router_xy, best_quality, reference_cost=best_cost) if best_cost > 0 else None),
        quality_at_10pct_cost=metrics.quality_at_cost(router_xy, 0.1 * best_cost),
        default_point=_default_point(model, pred_quality, pred_cost, quality, cost,
                                     calibration),
        knn=_knn_report(knn, quality, cost, lambdas, c_max),
        utility_curve=[{"lambda": float(lam), "cost_usd": float(c), "quality": float(q)}
                       for lam, c, q in utility_pts],
        floor_curve=_curve_dicts(floor_pts, "min_quality"),
        aiq_floor=metrics.aiq(floor_pts[:, 1], floor_pts[:, 2], c_max),
        aiq_utility=metrics.aiq(utility_pts[:, 1], utility_pts[:, 2], c_max),
        notes=notes,
    )
    if latency is not None:
        report.latency = latency_section(latency, models, pred_quality, pred_cost, quality,
                                         cost, bar_list, calibration, _default_bar(model), c_max)
    if len(models) == 2:
        add_two_model(report, pred_quality, None if knn is None else knn.quality, quality,
                       models, single_quality)
    return report


def _best_single(single_cost: np.ndarray, single_quality: np.ndarray) -> int:
    """The best single model: highest quality, the cheaper one among ties."""
    return int(np.lexsort((single_cost, -single_quality))[0])


def _random_router(models: list[str], single_cost: np.ndarray, single_quality: np.ndarray,
                   best: int, c_max: float) -> dict[str, Any]:
    """RouterBench's random router between the cheapest (the better among equally
    cheap) and the best single model."""
    cheapest = int(np.lexsort((-single_quality, single_cost))[0])
    points = metrics.mix_curve(single_cost[cheapest], single_quality[cheapest],
                               float(single_cost[best]), float(single_quality[best]))
    return {
        "between": [models[cheapest], models[best]],
        "curve": [{"p": float(p), "cost_usd": float(c), "quality": float(q)}
                  for p, (c, q) in zip(np.linspace(0, 1, len(points)), points, strict=True)],
        "aiq": metrics.aiq(points[:, 0], points[:, 1], c_max),
    }


def _knn_report(knn: KnnPrediction | None, quality: np.ndarray, cost: np.ndarray,
                lambdas: Sequence[float], c_max: float) -> dict[str, Any] | None:
    """The kNN baseline's floor and utility sweeps; its AIQ is the hull of both."""
    if knn is None:
        return None
    floor_pts = sweep_floors(knn.quality, knn.cost_usd, quality, cost, _floors(knn.quality))
    utility_pts = sweep_lambdas(knn.quality, knn.cost_usd, quality, cost, lambdas)
    xy = np.vstack([floor_pts[:, 1:], utility_pts[:, 1:]])
    return {"k": knn.k, "fitted_on": knn.fitted_on,
            "curve": _curve_dicts(floor_pts, "min_quality"),
            "aiq": metrics.aiq(xy[:, 0], xy[:, 1], c_max),
            "aiq_floor": metrics.aiq(floor_pts[:, 1], floor_pts[:, 2], c_max),
            "aiq_utility": metrics.aiq(utility_pts[:, 1], utility_pts[:, 2], c_max)}


def _default_bar(model: Any) -> float | None:
    meta = getattr(model, "metadata", None) or {}
    bar = meta.get("default_bar") if isinstance(meta, dict) else None
    return None if bar is None else float(bar)


def _default_point(model: Any, pred_quality: np.ndarray, pred_cost: np.ndarray,
                   quality: np.ndarray, cost: np.ndarray,
                   calibration: Any) -> dict[str, float] | None:
    bar = _default_bar(model)
    if bar is None:
        return None
    [(b, c, q)] = sweep_bars(pred_quality, pred_cost, quality, cost, [bar], calibration)
    return {"bar": float(b), "cost_usd": float(c), "quality": float(q)}


def headline(data: Mapping[str, Any]) -> str:
    """What an evaluation measured (`EvalReport.to_dict()`), in the sentences the
    README quotes for the demo."""
    best = next(s for s in data["single_models"] if s["model"] == data["best_single_model"])
    parts = [f"On {data['n_prompts']:,} prompts it never saw, the router"]
    point = data.get("default_point")
    if point is not None:
        parts.append(f" at its default bar ({point['bar']:.2f}) answered with mean quality "
                     f"{point['quality']:.3f} at {point['cost_usd'] / best['cost_usd']:.0%} "
                     f"of the cost of the best single model ({data['best_single_model']}, "
                     f"{best['quality']:.3f}).")
    else:
        parts.append(".")
    reach = data["cost_at_best_single_quality"]
    parts.append(" Swept over bars, it reaches that model's quality at "
                 + (f"{reach:.0%} of its cost" if reach is not None else "no cost on this curve")
                 + f"; AIQ {data['aiq']:.3f} against the Zero router's "
                 f"{data['zero_router_aiq']:.3f}"
                 + (f" and kNN's {data['knn']['aiq']:.3f}" if data.get("knn") else "") + ".")
    return "".join(parts)
