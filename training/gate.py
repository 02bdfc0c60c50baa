"""Champion/challenger gate: a retrained model reaches traffic only if it is not worse.

Two kinds of evidence, each turned into a cost/quality curve per policy by
sweeping two decision rules of `router.policy.choose` (the rule the server
runs): the default rule at each quality bar (`DEFAULT_BARS`; each policy's own
bar calibration turns a bar into its lambda, so a bar is compared with what
that bar buys from each model) and the utility rule, argmax q - lambda * c, at
each explicit lambda (`training.sweep.utility_lambdas`,
the grid `router eval` uses, scaled to the source's costs and so the same for
both policies). A deployment may run any of these operating points, so a
policy is judged on all of them, as `router eval`'s AIQ is:

* **eval table**: a fixed outcome table with every model's outcome per prompt
  (full information), so each decision's realised quality and cost are known.
* **recent logs**: held-out recent logged traffic, where only the served model's
  outcome is known; each point is a doubly robust off-policy estimate
  (`training.offpolicy`), with one shared reward model (the champion's
  predictions) so the two policies are judged by the same yardstick. Beside
  the curves, each policy's IPS, SNIPS and DR estimates at the settings the
  traffic asked for (its bars and lambdas), with standard errors and the
  effective sample size (`offpolicy`). When either policy's ESS there is below
  `training.offpolicy.MIN_ESS` (30), the source is not judged ("too small to
  judge"): the DR estimate would be little more than the reward model's, that
  is the champion's, own opinion.

For each source the comparison is the challenger's **quality at equal cost**,
per decision rule: each rule's operating points are closed under mixing and
"spending more is allowed" (the non-decreasing upper convex hull, as AIQ does),
and the challenger's hull minus the champion's hull is averaged over the costs
both can reach. A challenger must not be worse by more than the tolerance on
any rule the traffic uses (`rules`): serving runs one rule per request, so a
gain on one rule never pays for a loss on the other. Which rules are in use is
read off the recent logs (`rules_in_use`: the default rule, plus the utility
rule when some logged request asked for it); without logs both are judged. The
difference over all operating points together is reported too, with the AIQ of
each policy, as information. The challenger is promoted only when it passes
every source that had enough data. No champion yet: promoted (there is nothing
to protect), with the evidence still recorded.

The report is printed by `router retrain` and stored in the version's meta.json
under `"gate"` (both curves, every operating point labelled by its bar or
lambda, DR points with their standard error and ESS) so `router models show`
explains every promotion and refusal; `router models show --gate` prints it as
`router retrain` did (`GateReport.from_dict`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from router.conversation import parse_conversation
from router.errors import DataError
from training.metrics import aiq, hull_quality_at
from training.offpolicy import (
    MIN_ESS,
    Estimate,
    bandit_from_table,
    doubly_robust,
    evaluate_policy,
    reward_matrices,
)
from training.sweep import (
    RULE_KEYWORDS,
    calibration_of,
    decisions,
    sweep_bars,
    sweep_lambdas,
    utility_lambdas,
)

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
    "rules_in_use",
    "format_offpolicy",
    "RULES",
]

DEFAULT_BARS: tuple[float, ...] = tuple(np.round(np.linspace(0.0, 1.0, 21), 2))
# The rules the gate judges. The hard floor is not among them: the outcome log does
# not record it, so no traffic can be shown to use it.
RULES: tuple[str, ...] = ("default", "utility")


@dataclass(frozen=True)
class Curve:
    """(mean cost per request, mean quality) at each operating point of one policy.

    `bars`, `cost_usd`, `quality`: the default rule at each swept bar;
    `lambdas`, `utility_cost_usd`, `utility_quality`: the utility rule at each
    swept lambda (empty when it was not swept). The policy reaches the hull of
    all of them (`points()`).
    """

    bars: tuple[float, ...]
    cost_usd: tuple[float, ...]
    quality: tuple[float, ...]
    lambdas: tuple[float, ...] = ()
    utility_cost_usd: tuple[float, ...] = ()
    utility_quality: tuple[float, ...] = ()
    # Off-policy curves only (`sweep_logged`): each point's standard error and
    # effective sample size, so a reader sees which points rest on few rows.
    quality_se: tuple[float, ...] = ()
    ess: tuple[float, ...] = ()
    utility_quality_se: tuple[float, ...] = ()
    utility_ess: tuple[float, ...] = ()

    @classmethod
    def from_sweeps(cls, default: np.ndarray, utility: np.ndarray) -> Curve:
        """From (setting, cost, quality) rows of each rule, as `training.sweep` returns,
        or (setting, cost, quality, quality SE, ESS) rows of off-policy estimates."""
        width = np.asarray(default).shape[-1] if np.size(default) else 3

        def col(points: np.ndarray, j: int) -> tuple[float, ...]:
            return tuple(float(v) for v in np.asarray(points).reshape(-1, width)[:, j])

        extra = ((col(default, 3), col(default, 4), col(utility, 3), col(utility, 4))
                 if width == 5 else ())
        return cls(col(default, 0), col(default, 1), col(default, 2),
                   col(utility, 0), col(utility, 1), col(utility, 2), *extra)

    def points(self, rule: str | None = None) -> np.ndarray:
        """(cost, quality) rows of every operating point, or only `rule`'s.

        `rule` is "default" (the bars) or "utility" (the lambdas).
        """
        parts = {"default": (self.cost_usd, self.quality),
                 "utility": (self.utility_cost_usd, self.utility_quality)}
        if rule is not None and rule not in parts:
            raise ValueError(f"rule must be 'default' or 'utility', got {rule!r}")
        chosen = [parts[rule]] if rule else list(parts.values())
        cost = np.concatenate([np.asarray(c, dtype=np.float64) for c, _ in chosen])
        quality = np.concatenate([np.asarray(q, dtype=np.float64) for _, q in chosen])
        return np.column_stack([cost, quality])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SourceResult:
    """One source's verdict: both curves, the differences at equal cost, pass/skip.

    `delta_by_rule` is the difference on each rule's points ({"default": ...,
    "utility": ...}); `rules` are the ones judged, and `delta_quality` is the
    smallest of their differences (the decisive one). `delta_all_points` is the
    difference over every operating point together, for information.
    """

    name: str
    n: int
    status: str  # "pass", "fail", "skipped"
    delta_quality: float | None = None
    champion_quality: float | None = None
    challenger_quality: float | None = None
    champion_aiq: float | None = None
    challenger_aiq: float | None = None
    note: str = ""
    delta_by_rule: dict[str, float] | None = None
    rules: tuple[str, ...] = ()
    delta_all_points: float | None = None
    champion_curve: Curve | None = None
    challenger_curve: Curve | None = None
    # Recent logs only: IPS, SNIPS and DR estimates of each policy at the logged
    # settings, {"champion": {"ips": Estimate, ...}, "challenger": {...}}.
    offpolicy: dict[str, dict[str, Estimate]] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in ("champion_curve", "challenger_curve"):
            curve = getattr(self, key)
            out[key] = curve.to_dict() if curve else None
        if self.offpolicy is not None:
            out["offpolicy"] = {"min_ess": MIN_ESS, **{
                policy: {name: est.to_dict() for name, est in estimates.items()}
                for policy, estimates in self.offpolicy.items()}}
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

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GateReport:
        """A report read back from `to_dict` (a version's meta.json), so `router models
        show --gate` prints it as `router retrain` did. JSON nulls read as NaN."""
        def number(value: Any) -> Any:
            return float("nan") if value is None else value

        def curve(value: dict[str, Any] | None) -> Curve | None:
            return None if value is None else Curve(**{
                k: tuple(number(v) for v in vs) for k, vs in value.items()})

        def estimate(value: dict[str, Any]) -> Estimate:
            return Estimate(**{k: number(v) if k != "quality_unclipped" else v
                               for k, v in value.items() if k != "too_small"})

        known = {f.name for f in fields(SourceResult)}
        sources = []
        for stored in data.get("sources", []):
            # Fields a newer or older version stored and this one lacks are left out.
            raw = {k: v for k, v in stored.items() if k in known}
            offpolicy = raw.pop("offpolicy", None)
            source = SourceResult(**{**raw, "rules": tuple(raw.get("rules") or ()),
                                     "champion_curve": curve(raw.get("champion_curve")),
                                     "challenger_curve": curve(raw.get("challenger_curve"))})
            if offpolicy:
                source.offpolicy = {policy: {name: estimate(e) for name, e in ests.items()}
                                    for policy, ests in offpolicy.items()
                                    if isinstance(ests, dict)}
            sources.append(source)
        return cls(passed=bool(data["passed"]), tolerance=float(data["tolerance"]),
                   champion=data.get("champion"), challenger=data.get("challenger"),
                   sources=sources, reason=data.get("reason", ""))

    def format(self) -> str:
        """The printed comparison: a line per source (plus each rule alone), the decision."""
        lines = [f"champion {self.champion or '(none)'} vs challenger "
                 f"{self.challenger or '(new)'}, tolerance {self.tolerance:.3f} "
                 "(quality at equal cost; delta = the worst judged rule)",
                 f"  {'source':<12} {'rows':>6} {'champion':>9} {'challenger':>10} "
                 f"{'delta':>8} {'AIQ champ':>9} {'AIQ chall':>9}  verdict"]
        for s in self.sources:
            lines.append(
                f"  {s.name:<12} {s.n:>6} {_f(s.champion_quality):>9} "
                f"{_f(s.challenger_quality):>10} {_f(s.delta_quality, signed=True):>8} "
                f"{_f(s.champion_aiq):>9} {_f(s.challenger_aiq):>9}  "
                f"{s.status}{' (' + s.note + ')' if s.note else ''}")
            if s.delta_by_rule:
                lines.append(f"  {'':<19} by rule: " + ", ".join(
                    f"{rule} {_f(d, signed=True)}"
                    + ("" if rule in s.rules else " (not in use, not judged)")
                    for rule, d in s.delta_by_rule.items())
                    + f"; all points together {_f(s.delta_all_points, signed=True)}")
            if s.offpolicy:
                lines.extend(format_offpolicy(s.offpolicy, s.n))
        lines.append(f"decision: {'PROMOTE' if self.passed else 'REFUSE'}: {self.reason}")
        return "\n".join(lines)


def format_offpolicy(offpolicy: dict[str, dict[str, Estimate]], n: int) -> list[str]:
    """The printed off-policy lines: per policy, IPS, SNIPS and DR with standard errors,
    the DR cost and the effective sample size, or that the sample is too small to judge.
    """
    lines = [f"  off-policy on the recent logs at their own settings: mean quality per "
             f"request +- 1 standard error (too small to judge below ESS {MIN_ESS:.0f})"]
    # A fixed order: meta.json may come back with its keys sorted.
    for policy in sorted(offpolicy, key=lambda name: name != "champion"):
        estimates = offpolicy[policy]
        dr = estimates["dr"]
        verdict = (f"too small to judge (ESS {dr.ess:.1f} < {MIN_ESS:.0f})" if dr.too_small
                   else f"ESS {dr.ess:.1f} of {n}")
        lines.append(f"    {policy:<11} "
                     + ", ".join(estimates[name].format() for name in ("ips", "snips", "dr"))
                     + f"; DR cost ${dr.cost_usd:.6f} +- {dr.cost_se:.6f}; {verdict}")
    return lines


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


def quality_at_equal_cost(reference: Curve, candidate: Curve, n_grid: int = 101, *,
                          rule: str | None = None) -> tuple[float, float, float]:
    """(candidate - reference, reference mean, candidate mean) of hull quality at equal cost.

    The hulls are over every operating point of each curve (bars and lambdas),
    or over one rule's points with `rule` ("default", "utility"). Averaged over
    a linear cost grid from the dearer of the two cheapest points (below it one
    of them cannot go) to the dearest point of either curve.
    """
    ref_pts, cand_pts = reference.points(rule), candidate.points(rule)
    lo = max(ref_pts[:, 0].min(), cand_pts[:, 0].min())
    hi = max(ref_pts[:, 0].max(), cand_pts[:, 0].max())
    grid = np.linspace(lo, hi, n_grid) if hi > lo else np.array([lo])
    ref = hull_quality(ref_pts[:, 0], ref_pts[:, 1], grid)
    cand = hull_quality(cand_pts[:, 0], cand_pts[:, 1], grid)
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
                lambdas: Sequence[float] | None = None,
                conversations: Sequence[Any] | None = None,
                where: str = "eval table") -> Curve:
    """Realised mean cost and quality of `model`'s decisions at each bar and lambda.

    On a full table. Each policy may only choose models it knows that the table
    has an outcome for (per prompt), so a model missing from the table is never
    rewarded. `lambdas` defaults to `utility_lambdas` of the table's costs (the
    same for every model swept on it); `()` sweeps the default rule only.
    """
    ids, convs, quality, cost = _matrices(table, where)
    if lambdas is None:
        lambdas = utility_lambdas(cost.to_numpy(dtype=np.float64))
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
    return Curve.from_sweeps(
        sweep_bars(q_pred, c_pred, q_true, c_true, bars, calibration_of(model, q_pred, c_pred),
                   allowed=allowed),
        sweep_lambdas(q_pred, c_pred, q_true, c_true, lambdas, allowed=allowed))


def sweep_logged(model: Any, logged: pd.DataFrame, reward: Any, *,
                 bars: Sequence[float] = DEFAULT_BARS,
                 lambdas: Sequence[float] | None = None,
                 conversations: Sequence[Any] | None = None) -> Curve:
    """Doubly robust estimates of `model`'s mean cost and quality at each bar and lambda.

    On logs. `reward` is the model whose predictions serve as the DR reward
    model. `lambdas` defaults to `utility_lambdas` of the logged cost of each
    served model (the same for every model swept on these logs); `()` sweeps the
    default rule only.
    """
    if conversations is None:
        conversations = [parse_conversation(m, where=f"logged row {i}")
                         for i, m in enumerate(logged["messages"])]
    pred = model.predict(conversations)
    rpred = pred if reward is model else reward.predict(conversations)
    log = bandit_from_table(logged, list(pred.models), where="recent logs")
    rq, rc = reward_matrices(pred, rpred)
    if lambdas is None:
        # One row of per-model means: only the served model's cost is logged.
        served = logged.groupby("model")["cost_usd"].mean().to_numpy(dtype=np.float64)
        lambdas = utility_lambdas(served[np.newaxis, :])

    calibration = calibration_of(model, pred.quality, pred.cost_usd)

    def estimates(rule: str, settings: Sequence[float]) -> np.ndarray:
        out = np.empty((len(settings), 5))
        for i, (value, pick) in enumerate(decisions(pred.quality, pred.cost_usd, rule,
                                                    settings, calibration=calibration)):
            est = doubly_robust(log, pick, rq, rc)
            out[i] = (value, est.cost_usd, est.quality, est.quality_se, est.ess)
        return out

    return Curve.from_sweeps(estimates(RULE_KEYWORDS["default"], bars),
                             estimates(RULE_KEYWORDS["utility"], lambdas))


def rules_in_use(recent: pd.DataFrame | None) -> tuple[str, ...]:
    """The decision rules recent traffic used: always the default rule (the
    default), plus the utility rule when a logged request set `utility_lambda`.
    Without logs nothing is known, so both."""
    if recent is None or not len(recent):
        return RULES
    if "utility_lambda" in recent and recent["utility_lambda"].notna().any():
        return RULES
    return ("default",)


def _compare(name: str, n: int, champ: Curve, chall: Curve, tolerance: float,
             c_max: float | None, rules: Sequence[str]) -> SourceResult:
    swept = [r for r in RULES if len(champ.points(r)) and len(chall.points(r))]
    by_rule = {rule: quality_at_equal_cost(champ, chall, rule=rule) for rule in swept}
    judged = tuple(r for r in rules if r in by_rule) or ("default",)
    worst = min(judged, key=lambda r: by_rule[r][0])
    delta, q_ref, q_new = by_rule[worst]
    result = SourceResult(name=name, n=n, status="pass" if delta >= -tolerance else "fail",
                          delta_quality=delta, champion_quality=q_ref, challenger_quality=q_new,
                          rules=judged, champion_curve=champ, challenger_curve=chall)
    if len(swept) > 1:
        result.delta_by_rule = {rule: by_rule[rule][0] for rule in swept}
        result.delta_all_points = quality_at_equal_cost(champ, chall)[0]
    if c_max:
        result.champion_aiq = aiq(*champ.points().T, c_max)
        result.challenger_aiq = aiq(*chall.points().T, c_max)
    if result.status == "fail":
        result.note = f"{worst} rule worse by {-delta:.4f} > {tolerance:.3f}"
    return result


def run_gate(
    challenger: Any,
    champion: Any | None,
    *,
    recent: pd.DataFrame | None = None,
    eval_table: pd.DataFrame | None = None,
    tolerance: float = 0.01,
    bars: Sequence[float] = DEFAULT_BARS,
    lambdas: Sequence[float] | None = None,
    rules: Sequence[str] | None = None,
    min_logged_rows: int = 200,
    champion_id: str | None = None,
    challenger_id: str | None = None,
) -> GateReport:
    """Compare `challenger` with `champion` on the eval table and recent logs; decide.

    `recent` is held-out recent logged traffic (one row per served request with
    `messages`, `model`, `propensity`, `quality`, `cost_usd`); rows served by a
    fallback model should be left out by the caller (their propensity is not the
    served model's). `eval_table` is a canonical outcome table. `bars` and
    `lambdas` are the operating points swept (see `sweep_table`); `lambdas=()`
    sweeps the default rule alone. `rules` are the decision rules judged
    (default: `rules_in_use(recent)`).
    """
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    if rules is None:
        rules = rules_in_use(recent)
    unknown = [r for r in rules if r not in RULES]
    if unknown or not rules:
        raise ValueError(f"rules must be among {RULES}, got {tuple(rules)!r}")
    report = GateReport(passed=False, tolerance=tolerance, champion=champion_id,
                        challenger=challenger_id)
    if eval_table is not None and len(eval_table):
        chall_curve = sweep_table(challenger, eval_table, bars=bars, lambdas=lambdas)
        if champion is None:
            report.sources.append(SourceResult(
                "eval table", eval_table["prompt_id"].nunique(), "skipped",
                note="no champion", challenger_curve=chall_curve))
        else:
            champ_curve = sweep_table(champion, eval_table, bars=bars, lambdas=lambdas)
            single = eval_table.groupby("model")["cost_usd"].mean()
            report.sources.append(_compare("eval table", eval_table["prompt_id"].nunique(),
                                           champ_curve, chall_curve, tolerance,
                                           float(single.max()), rules))
    if recent is not None:
        n = len(recent)
        convs = [parse_conversation(m, where=f"logged row {i}")
                 for i, m in enumerate(recent["messages"])]
        # What each policy would have got on this traffic as it was asked for, by
        # three estimators; the champion's predictions are the one DR reward model.
        reward = champion if champion is not None else challenger
        offpolicy = {name: evaluate_policy(policy, recent, reward_model=reward,
                                           conversations=convs)
                     for name, policy in (("champion", champion), ("challenger", challenger))
                     if policy is not None and n}
        small = [name for name, est in offpolicy.items() if est["dr"].too_small]
        if champion is None:
            source = SourceResult("recent logs", n, "skipped", note="no champion")
        elif n < min_logged_rows:
            source = SourceResult("recent logs", n, "skipped",
                                  note=f"fewer than {min_logged_rows} rows")
        elif small:
            # The DR estimate would be the reward model's (the champion's) own opinion.
            source = SourceResult("recent logs", n, "skipped", note=(
                "too small to judge at the logged settings: effective sample size "
                + ", ".join(f"{offpolicy[name]['dr'].ess:.1f} ({name})" for name in small)
                + f" < {MIN_ESS:.0f}"))
        else:
            champ_curve = sweep_logged(champion, recent, champion, bars=bars,
                                       lambdas=lambdas, conversations=convs)
            chall_curve = sweep_logged(challenger, recent, champion, bars=bars,
                                       lambdas=lambdas, conversations=convs)
            source = _compare("recent logs", n, champ_curve, chall_curve, tolerance, None,
                              rules)
        source.offpolicy = offpolicy or None
        report.sources.append(source)
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
