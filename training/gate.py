"""Champion/challenger gate: a retrained model reaches traffic only if it is not worse.

Two kinds of evidence, each turned into a cost/quality curve per policy by
sweeping the quality bar (the same `router.policy.choose` the server uses):

* **eval table**: a fixed outcome table with every model's outcome per prompt
  (full information), so each decision's realised quality and cost are known.
* **recent logs**: held-out recent logged traffic, where only the served model's
  outcome is known; each point is a doubly robust off-policy estimate
  (`training.offpolicy`), with one shared reward model (the champion's
  predictions) so the two policies are judged by the same yardstick.

For each source the comparison is the challenger's **quality at equal cost**:
both curves are closed under mixing and "spending more is allowed" (the
non-decreasing upper convex hull, as AIQ does), and the challenger's hull minus the
champion's hull is averaged over the costs both can reach. The challenger
passes a source when that difference is >= -tolerance, and is promoted only when
it passes every source that had enough data. No champion yet: promoted (there
is nothing to protect), with the evidence still recorded.

The report is printed by `router retrain` and stored in the version's meta.json
under `"gate"` so `router models show` explains every promotion and refusal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from router.conversation import parse_conversation
from router.errors import DataError
from router.policy import choose
from training.metrics import aiq, hull_quality_at
from training.offpolicy import bandit_from_table, doubly_robust

__all__ = [
    "DEFAULT_BARS",
    "Curve",
    "SourceResult",
    "GateReport",
    "hull_quality",
    "quality_at_equal_cost",
    "sweep_table",
    "sweep_logged",
    "run_gate",
]

DEFAULT_BARS: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 1.0, 21), 2))


@dataclass(frozen=True)
class Curve:
    """(mean cost per request, mean quality) for each swept bar."""

    bars: tuple[float, ...]
    cost_usd: tuple[float, ...]
    quality: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SourceResult:
    """One source's verdict: both curves, the difference at equal cost, pass/skip."""

    name: str
    n: int
    status: str  # "pass", "fail", "skipped"
    delta_quality: float | None = None
    champion_quality: float | None = None
    challenger_quality: float | None = None
    champion_aiq: float | None = None
    challenger_aiq: float | None = None
    note: str = ""
    champion_curve: Curve | None = None
    challenger_curve: Curve | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("champion_curve", "challenger_curve"):
            curve = getattr(self, key)
            out[key] = curve.to_dict() if curve else None
        return out


@dataclass
class GateReport:
    """The gate's decision and every number behind it."""

    passed: bool
    tolerance: float
    champion: str | None
    challenger: str | None
    sources: list[SourceResult] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "tolerance": self.tolerance, "champion": self.champion,
                "challenger": self.challenger, "reason": self.reason,
                "sources": [s.to_dict() for s in self.sources]}

    def format(self) -> str:
        """The printed comparison: one line per source, then the decision."""
        lines = [f"champion {self.champion or '(none)'} vs challenger "
                 f"{self.challenger or '(new)'}, tolerance {self.tolerance:.3f} "
                 "(quality at equal cost)",
                 f"  {'source':<12} {'rows':>6} {'champion':>9} {'challenger':>10} "
                 f"{'delta':>8} {'AIQ champ':>9} {'AIQ chall':>9}  verdict"]
        for s in self.sources:
            lines.append(
                f"  {s.name:<12} {s.n:>6} {_f(s.champion_quality):>9} "
                f"{_f(s.challenger_quality):>10} {_f(s.delta_quality, signed=True):>8} "
                f"{_f(s.champion_aiq):>9} {_f(s.challenger_aiq):>9}  "
                f"{s.status}{' (' + s.note + ')' if s.note else ''}")
        lines.append(f"decision: {'PROMOTE' if self.passed else 'REFUSE'}: {self.reason}")
        return "\n".join(lines)


def _f(value: float | None, *, signed: bool = False) -> str:
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


# -- curves --------------------------------------------------------------------

def hull_quality(cost: Sequence[float], quality: Sequence[float],
                 at: np.ndarray) -> np.ndarray:
    """Quality reachable at each cost in `at` (`training.metrics.hull_quality_at`).

    Mixing two policies reaches any point between them and a budget may be left
    unspent, so the reachable frontier is the non-decreasing upper convex hull,
    flat right of its last point; left of the cheapest point is NaN.
    """
    return hull_quality_at(np.column_stack([np.asarray(cost, dtype=np.float64),
                                            np.asarray(quality, dtype=np.float64)]), at)


def quality_at_equal_cost(reference: Curve, candidate: Curve,
                          n_grid: int = 101) -> tuple[float, float, float]:
    """(candidate - reference, reference mean, candidate mean) of hull quality at equal cost.

    Averaged over a linear cost grid from the dearer of the two cheapest points
    (below it one of them cannot go) to the dearest point of either curve.
    """
    lo = max(min(reference.cost_usd), min(candidate.cost_usd))
    hi = max(max(reference.cost_usd), max(candidate.cost_usd))
    grid = np.linspace(lo, hi, n_grid) if hi > lo else np.array([lo])
    ref = hull_quality(reference.cost_usd, reference.quality, grid)
    cand = hull_quality(candidate.cost_usd, candidate.quality, grid)
    return float(np.mean(cand - ref)), float(np.mean(ref)), float(np.mean(cand))


def _matrices(table: pd.DataFrame, where: str) -> tuple[list[str], list[Any], pd.DataFrame,
                                                        pd.DataFrame]:
    for col in ("prompt_id", "messages", "model", "quality", "cost_usd"):
        if col not in table:
            raise DataError(f"{where}: missing column {col!r}",
                            hint="load it with training.data.load_outcomes (it adds cost_usd)")
    first = table.drop_duplicates("prompt_id")
    ids = first["prompt_id"].astype(str).tolist()
    convs = [parse_conversation(m, where=f"{where} prompt {pid}")
             for pid, m in zip(ids, first["messages"], strict=True)]
    keyed = table.assign(prompt_id=table["prompt_id"].astype(str))
    quality = keyed.pivot_table(index="prompt_id", columns="model", values="quality",
                                aggfunc="mean").reindex(ids)
    cost = keyed.pivot_table(index="prompt_id", columns="model", values="cost_usd",
                             aggfunc="mean").reindex(ids)
    return ids, convs, quality, cost


def sweep_table(model: Any, table: pd.DataFrame, *, bars: Sequence[float] = DEFAULT_BARS,
                conversations: Sequence[Any] | None = None,
                where: str = "eval table") -> Curve:
    """Realised mean cost and quality of `model`'s decisions at each bar on a full table.

    Each policy may only choose models it knows that the table has an outcome
    for (per prompt), so a model missing from the table is never rewarded.
    """
    ids, convs, quality, cost = _matrices(table, where)
    pred = model.predict(conversations if conversations is not None else convs)
    models = [m for m in pred.models if m in quality.columns]
    if not models:
        raise DataError(f"{where}: none of the model's models ({', '.join(pred.models)}) "
                        "has outcomes in the table",
                        hint="evaluate on a table with outcomes for the catalog's models")
    cols = [list(pred.models).index(m) for m in models]
    q_true = quality[models].to_numpy(dtype=np.float64)
    c_true = cost[models].to_numpy(dtype=np.float64)
    allowed = np.isfinite(q_true) & np.isfinite(c_true)
    rows_ok = allowed.any(axis=1)
    q_pred, c_pred = pred.quality[rows_ok][:, cols], pred.cost_usd[rows_ok][:, cols]
    q_true, c_true, allowed = q_true[rows_ok], c_true[rows_ok], allowed[rows_ok]
    idx = np.arange(len(q_true))
    out_c, out_q = [], []
    for bar in bars:
        pick = choose(q_pred, c_pred, bar=float(bar), allowed=allowed)
        out_c.append(float(c_true[idx, pick].mean()))
        out_q.append(float(q_true[idx, pick].mean()))
    return Curve(tuple(float(b) for b in bars), tuple(out_c), tuple(out_q))


def sweep_logged(model: Any, logged: pd.DataFrame, reward: Any, *,
                 bars: Sequence[float] = DEFAULT_BARS,
                 conversations: Sequence[Any] | None = None) -> Curve:
    """Doubly robust estimates of `model`'s mean cost and quality at each bar on logs.

    `reward` is the model whose predictions serve as the DR reward model.
    """
    if conversations is None:
        conversations = [parse_conversation(m, where=f"logged row {i}")
                         for i, m in enumerate(logged["messages"])]
    pred = model.predict(conversations)
    rpred = pred if reward is model else reward.predict(conversations)
    models = list(pred.models)
    log = bandit_from_table(logged, models, where="recent logs")
    rq = np.column_stack([rpred.quality[:, list(rpred.models).index(m)]
                          if m in rpred.models else pred.quality[:, j]
                          for j, m in enumerate(models)])
    rc = np.column_stack([rpred.cost_usd[:, list(rpred.models).index(m)]
                          if m in rpred.models else pred.cost_usd[:, j]
                          for j, m in enumerate(models)])
    out_c, out_q = [], []
    for bar in bars:
        pick = choose(pred.quality, pred.cost_usd, bar=float(bar))
        est = doubly_robust(log, pick, rq, rc)
        out_c.append(est.cost_usd)
        out_q.append(est.quality)
    return Curve(tuple(float(b) for b in bars), tuple(out_c), tuple(out_q))


def _compare(name: str, n: int, champ: Curve, chall: Curve, tolerance: float,
             c_max: float | None) -> SourceResult:
    delta, q_ref, q_new = quality_at_equal_cost(champ, chall)
    result = SourceResult(name=name, n=n, status="pass" if delta >= -tolerance else "fail",
                          delta_quality=delta, champion_quality=q_ref, challenger_quality=q_new,
                          champion_curve=champ, challenger_curve=chall)
    if c_max:
        result.champion_aiq = aiq(champ.cost_usd, champ.quality, c_max)
        result.challenger_aiq = aiq(chall.cost_usd, chall.quality, c_max)
    if result.status == "fail":
        result.note = f"worse by {-delta:.4f} > {tolerance:.3f}"
    return result


def run_gate(
    challenger: Any,
    champion: Any | None,
    *,
    recent: pd.DataFrame | None = None,
    eval_table: pd.DataFrame | None = None,
    tolerance: float = 0.01,
    bars: Sequence[float] = DEFAULT_BARS,
    min_logged_rows: int = 200,
    champion_id: str | None = None,
    challenger_id: str | None = None,
) -> GateReport:
    """Compare `challenger` with `champion` on the eval table and recent logs; decide.

    `recent` is held-out recent logged traffic (one row per served request with
    `messages`, `model`, `propensity`, `quality`, `cost_usd`); rows served by a
    fallback model should be left out by the caller (their propensity is not the
    served model's). `eval_table` is a canonical outcome table.
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    report = GateReport(passed=False, tolerance=tolerance, champion=champion_id,
                        challenger=challenger_id)
    if eval_table is not None and len(eval_table):
        chall_curve = sweep_table(challenger, eval_table, bars=bars)
        if champion is None:
            report.sources.append(SourceResult(
                "eval table", eval_table["prompt_id"].nunique(), "skipped",
                note="no champion", challenger_curve=chall_curve))
        else:
            champ_curve = sweep_table(champion, eval_table, bars=bars)
            single = eval_table.groupby("model")["cost_usd"].mean()
            report.sources.append(_compare("eval table", eval_table["prompt_id"].nunique(),
                                           champ_curve, chall_curve, tolerance,
                                           float(single.max())))
    if recent is not None:
        n = len(recent)
        if champion is None:
            report.sources.append(SourceResult("recent logs", n, "skipped", note="no champion"))
        elif n < min_logged_rows:
            report.sources.append(SourceResult("recent logs", n, "skipped",
                                               note=f"fewer than {min_logged_rows} rows"))
        else:
            convs = [parse_conversation(m, where=f"logged row {i}")
                     for i, m in enumerate(recent["messages"])]
            champ_curve = sweep_logged(champion, recent, champion, bars=bars,
                                       conversations=convs)
            chall_curve = sweep_logged(challenger, recent, champion, bars=bars,
                                       conversations=convs)
            report.sources.append(_compare("recent logs", n, champ_curve, chall_curve,
                                           tolerance, None))
    decided = [s for s in report.sources if s.status != "skipped"]
    failed = [s.name for s in decided if s.status == "fail"]
    if champion is None:
        report.passed, report.reason = True, "no champion yet; the first model is promoted"
    elif failed:
        report.passed = False
        report.reason = f"worse than the champion at equal cost on {', '.join(failed)}"
    elif not decided:
        report.passed = False
        report.reason = ("no evidence: no eval table and too few recent logged rows; "
                         "the champion stays")
    else:
        report.passed = True
        report.reason = ("not worse than the champion at equal cost on "
                         + ", ".join(s.name for s in decided))
    return report
