"""What the gate decided and every number behind it: curves, per-source verdicts, the report.

`GateReport.to_dict` is what a version's meta.json stores; `GateReport.from_dict`
reads it back so `router models show --gate` prints it as `router retrain` did.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from training.offpolicy import MIN_ESS, Estimate

__all__ = ["Curve", "GateReport", "SourceResult", "format_offpolicy"]


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
