"""The gate's decision: which rules traffic uses, each source judged, the verdict."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from router.conversation import parse_conversation
from training.gate._curves import DEFAULT_BARS, quality_at_equal_cost, sweep_logged, sweep_table
from training.gate._report import Curve, GateReport, SourceResult
from training.metrics import aiq
from training.offpolicy import MIN_ESS, Estimate, evaluate_policy

__all__ = ["RULES", "rules_in_use", "run_gate"]

# The rules the gate judges. The hard floor is not among them: the outcome log does
# not record it, so no traffic can be shown to use it.
RULES: tuple[str, ...] = ("default", "utility")


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


def _checked_rules(tolerance: float, rules: Sequence[str] | None,
                   recent: pd.DataFrame | None) -> Sequence[str]:
    if tolerance < 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance!r}")
    if rules is None:
        rules = rules_in_use(recent)
    unknown = [r for r in rules if r not in RULES]
    if unknown or not rules:
        raise ValueError(f"rules must be among {RULES}, got {tuple(rules)!r}")
    return rules


def _judge_eval_table(challenger: Any, champion: Any | None, eval_table: pd.DataFrame, *,
                      tolerance: float, bars: Sequence[float], lambdas: Sequence[float] | None,
                      rules: Sequence[str]) -> SourceResult:
    """Both policies' realised curves on the full table, compared at equal cost."""
    n = eval_table["prompt_id"].nunique()
    chall_curve = sweep_table(challenger, eval_table, bars=bars, lambdas=lambdas)
    if champion is None:
        return SourceResult("eval table", n, "skipped", note="no champion",
                            challenger_curve=chall_curve)
    champ_curve = sweep_table(champion, eval_table, bars=bars, lambdas=lambdas)
    single = eval_table.groupby("model")["cost_usd"].mean()
    return _compare("eval table", n, champ_curve, chall_curve, tolerance,
                    float(single.max()), rules)


def _offpolicy_at_logged_settings(challenger: Any, champion: Any | None, recent: pd.DataFrame,
                                  convs: list[Any]) -> dict[str, dict[str, Estimate]]:
    """What each policy would have got on this traffic as it was asked for, by three
    estimators; the champion's predictions are the one DR reward model."""
    reward = champion if champion is not None else challenger
    return {name: evaluate_policy(policy, recent, reward_model=reward, conversations=convs)
            for name, policy in (("champion", champion), ("challenger", challenger))
            if policy is not None and len(recent)}


def _judge_recent_logs(challenger: Any, champion: Any | None, recent: pd.DataFrame, *,
                       tolerance: float, bars: Sequence[float], lambdas: Sequence[float] | None,
                       rules: Sequence[str], min_logged_rows: int) -> SourceResult:
    """Both policies' DR curves on held-out logs, unless the logs are too few to judge."""
    n = len(recent)
    convs = [parse_conversation(m, where=f"logged row {i}")
             for i, m in enumerate(recent["messages"])]
    offpolicy = _offpolicy_at_logged_settings(challenger, champion, recent, convs)
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
        champ_curve = sweep_logged(champion, recent, champion, bars=bars, lambdas=lambdas,
                                   conversations=convs)
        chall_curve = sweep_logged(challenger, recent, champion, bars=bars, lambdas=lambdas,
                                   conversations=convs)
        source = _compare("recent logs", n, champ_curve, chall_curve, tolerance, None, rules)
    source.offpolicy = offpolicy or None
    return source


def _verdict(sources: list[SourceResult], has_champion: bool) -> tuple[bool, str]:
    """Promote when no source that had enough data failed (and some had, or no champion)."""
    decided = [s for s in sources if s.status != "skipped"]
    failed = [s.name for s in decided if s.status == "fail"]
    if not has_champion:
        return True, "no champion yet; the first model is promoted"
    if failed:
        return False, f"worse than the champion at equal cost on {', '.join(failed)}"
    if not decided:
        return False, ("no evidence: no eval table and too few recent logged rows; "
                       "the champion stays")
    return True, ("not worse than the champion at equal cost on "
                  + ", ".join(s.name for s in decided))


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
    rules = _checked_rules(tolerance, rules, recent)
    report = GateReport(passed=False, tolerance=tolerance, champion=champion_id,
                        challenger=challenger_id)
    sweep = {"tolerance": tolerance, "bars": bars, "lambdas": lambdas, "rules": rules}
    if eval_table is not None and len(eval_table):
        report.sources.append(_judge_eval_table(challenger, champion, eval_table, **sweep))
    if recent is not None:
        report.sources.append(_judge_recent_logs(challenger, champion, recent, **sweep,
                                                 min_logged_rows=min_logged_rows))
    report.passed, report.reason = _verdict(report.sources, champion is not None)
    return report
