"""The cost/quality report behind `router report`: what the router spent, and what it saved.

Read from the outcome log (`router.outcome_log`, SQLite or PostgreSQL) over a
window, it answers the finance lead's question: requests, spend and mean
feedback quality per model and per day; the share of traffic per model, its
cost per request, error rate, tokens and P50/P99 latency and time to first
token (over the answers it gave); fallback, cache-hit and error rates; and the
spend had every request gone to

- the **most expensive model the router considered** for it, and
- the **single best model**: the one with the highest mean expected quality over
  all logged candidates (or the `baseline` the user names),

with the saving in USD and percent.

The estimate used for those counterfactuals, stated in every report: a request's
counterfactual cost is the router's own `expected_cost_usd` for that model,
logged with the decision (input tokens counted, output tokens predicted, catalog
prices). Requests that could not have been routed differently count at their
actual cost in both columns: cache hits (the cache would have answered them
whichever model was the default), failed requests (status >= 400), requests
without candidates (pass-through of a named model), and, for the best-model
column, requests whose candidates did not include that model (counted in
`requests_without_estimate`). Actual spend is the logged `cost_usd` (from the
provider's token counts). Quality is the mean of `/v1/feedback` scores, over the
requests that have any; `rated` says how many.

Three rates that never overlap in meaning: **cache hit** (answered from the cache,
no model called), **fallback** (a model answered, but not the one chosen
(`served_model` != `chosen_model`): the chosen one failed or its breaker was open;
a cache hit is never a fallback, whichever model its stored answer came from) and
**explored** (the router sent the request to a randomly drawn model on purpose,
`explored`, to learn from it). Each is a share of all chat requests. Days are UTC
calendar days.

Only chat completions are requests here. A decision from `POST /v1/route` alone
(endpoint "route") called no model and spent nothing, so it has no place in the
spend or the savings: counting its flagship counterfactual would claim a saving
on a call nobody made. Such decisions are counted apart, in `route_only`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from router.errors import ConfigError

__all__ = [
    "ESTIMATE_NOTE",
    "parse_since",
    "load_log",
    "build_report",
    "format_report",
    "format_usd",
    "optional",
    "timing_figures",
]

ESTIMATE_NOTE = (
    "counterfactual spend = the router's expected cost of that model for each request "
    "(logged at decision time: input tokens counted, output tokens predicted, catalog "
    "prices); cache hits, errors and requests without candidates count at their actual cost")


def parse_since(text: str, *, now: datetime | None = None) -> datetime:
    """`7d`, `36h`, `1h30m` (that long before `now`) or an ISO date/time (UTC if no zone)."""
    from training.scheduler import parse_duration

    now = now or datetime.now(UTC)
    try:
        return now - parse_duration(text, option="--since")
    except ConfigError:
        pass
    try:
        moment = datetime.fromisoformat(str(text).strip())
    except ValueError:
        raise ConfigError(f"--since: cannot read {text!r}",
                          hint="use a duration such as 7d, 36h, 1h30m, or a date such as "
                               "2025-01-31") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def load_log(url: str, *, since: datetime | None = None, until: datetime | None = None
             ) -> pd.DataFrame:
    """Requests of the outcome log at `url` with `since <= ts < until`, feedback joined."""
    from router.outcome_log import open_outcome_log

    return open_outcome_log(url).export_dataframe(since=since, until=until)


def _candidates(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        value = json.loads(value) if value else []
    return [c for c in (value or []) if isinstance(c, dict) and c.get("model")]


def _pct(saving: float, base: float) -> float | None:
    return 100.0 * saving / base if base > 0 else None


def _mean(values: pd.Series) -> float | None:
    values = values.dropna()
    return float(values.mean()) if len(values) else None


def _route_only(frame: pd.DataFrame) -> np.ndarray:
    """Rows that are `/v1/route` decisions alone (no model was called)."""
    if "endpoint" not in frame:
        return np.zeros(len(frame), dtype=bool)
    return (frame["endpoint"] == "route").to_numpy(dtype=bool)


def build_report(frame: pd.DataFrame, *, baseline: str | None = None,
                 since: datetime | None = None, until: datetime | None = None,
                 source: str = "") -> dict[str, Any]:
    """Every figure of the report from `load_log`'s frame; JSON-able (see module docstring)."""
    route_only = _route_only(frame)
    frame = frame[~route_only]
    n = len(frame)
    report: dict[str, Any] = {
        "source": source,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "estimate": ESTIMATE_NOTE,
        "requests": n,
        "route_only": {
            "decisions": int(route_only.sum()),
            "description": "POST /v1/route decisions: no model called, not in spend or "
                           "savings",
        },
    }
    if n == 0:
        report.update(spend_usd=0.0, mean_feedback_quality=None, rated=0, models=[], days=[],
                      counterfactuals={}, rates={})
        return report

    df = _prepared(frame)
    cands = [_candidates(v) for v in df["candidates"]]
    cache_hit = df["cache_hit"].astype(bool).to_numpy()
    routable = (~cache_hit) & (df["status_code"].to_numpy() < 400) & np.array(
        [bool(c) for c in cands])
    best, how = _best_model(cands, baseline)
    counterfactuals = _counterfactuals(df, cands, routable, best, how)
    fallback = (~df["cache_hit"].astype(bool) & df["served_model"].notna()
                & df["chosen_model"].notna() & (df["served_model"] != df["chosen_model"]))
    explored = (df["explored"].astype(bool) if "explored" in df
                else pd.Series(False, index=df.index))
    report.update(
        spend_usd=float(df["cost"].sum()),
        mean_feedback_quality=_mean(df["quality"]),
        rated=int(df["quality"].notna().sum()),
        counterfactuals=counterfactuals,
        models=_per_model(df),
        days=_per_day(df),
        rates={"fallback": float(fallback.mean()), "cache_hit": float(cache_hit.mean()),
               "explored": float(explored.mean()),
               "error": float((df["status_code"] >= 400).mean())},
    )
    return report


def _prepared(frame: pd.DataFrame) -> pd.DataFrame:
    """The chat requests with the columns every figure reads: model (served, else
    chosen), cost, quality, day, numeric status."""
    df = frame.copy()
    df["model"] = df["served_model"].fillna(df["chosen_model"]).fillna("(none)")
    df["cost"] = pd.to_numeric(df["cost_usd"], errors="coerce").fillna(0.0)
    df["quality"] = pd.to_numeric(df["feedback_quality"], errors="coerce")
    df["day"] = pd.to_datetime(df["ts"], unit="s", utc=True).dt.strftime("%Y-%m-%d")
    df["status_code"] = pd.to_numeric(df["status"], errors="coerce").fillna(0)
    return df


def _best_model(cands: list[list[dict[str, Any]]], baseline: str | None
                ) -> tuple[str | None, str]:
    """(the best single model, how it was chosen): `baseline`, else the highest mean
    expected quality over the logged candidates."""
    expected_q: dict[str, list[float]] = {}
    for request in cands:
        for c in request:
            q = c.get("expected_quality")
            if q is not None and not (isinstance(q, float) and math.isnan(q)):
                expected_q.setdefault(str(c["model"]), []).append(float(q))
    mean_q = {m: float(np.mean(v)) for m, v in expected_q.items()}
    if baseline is not None:
        if baseline not in mean_q:
            known = ", ".join(sorted(mean_q)) or "none"
            raise ConfigError(f"--baseline {baseline!r} was never a candidate in this window",
                              hint=f"models the router considered: {known}")
        return baseline, "named with --baseline"
    if mean_q:
        best = min(mean_q, key=lambda m: (-mean_q[m], m))
        return best, f"highest mean expected quality among candidates, {mean_q[best]:.3f}"
    return None, "no candidates logged"


def _counterfactuals(df: pd.DataFrame, cands: list[list[dict[str, Any]]],
                     routable: np.ndarray, best: str | None, how: str) -> dict[str, Any]:
    """The two counterfactual spends; adds their per-request costs to `df` (cf_max,
    cf_best) for the daily table."""
    actual = df["cost"].to_numpy()
    cf_max = actual.copy()
    cf_best = actual.copy()
    missing_best = 0
    for i, request in enumerate(cands):
        if not routable[i]:
            continue
        costs = {str(c["model"]): float(c.get("expected_cost_usd") or 0.0) for c in request}
        cf_max[i] = max(costs.values())
        if best in costs:
            cf_best[i] = costs[best]
        else:
            missing_best += 1
    df["cf_max"] = cf_max
    df["cf_best"] = cf_best
    spend = float(actual.sum())
    return {
        "most_expensive": {
            "description": "every request to the most expensive model the router considered",
            "spend_usd": float(cf_max.sum()),
            "saving_usd": float(cf_max.sum()) - spend,
            "saving_pct": _pct(float(cf_max.sum()) - spend, float(cf_max.sum())),
        },
        "best_model": {
            "description": f"every request to {best}" if best else "no candidates logged",
            "model": best, "chosen_by": how,
            "spend_usd": float(cf_best.sum()),
            "saving_usd": float(cf_best.sum()) - spend,
            "saving_pct": _pct(float(cf_best.sum()) - spend, float(cf_best.sum())),
            "requests_without_estimate": missing_best,
        },
    }


def timing_figures(latency_ms: pd.Series, ttft_ms: pd.Series) -> dict[str, float | None]:
    """P50 and P99 of whole-answer latency and time to first token (ms; None without
    a value): the per-model timing columns of `router report` and `router collect`."""
    out: dict[str, float | None] = {}
    for name, series in (("latency", latency_ms), ("ttft", ttft_ms)):
        values = pd.to_numeric(series, errors="coerce").dropna().to_numpy(dtype="float64")
        for q in (50, 99):
            out[f"p{q}_{name}_ms"] = float(np.percentile(values, q)) if len(values) else None
    return out


def _per_model(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Requests, share, spend, cost per request, feedback, error rate, and, over the
    answers a model gave (no cache hit, no error), tokens and timing."""
    n = len(df)
    models = []
    for model, part in df.groupby("model", sort=False):
        answered = part[~part["cache_hit"].astype(bool) & (part["status_code"] < 400)]
        models.append({
            "model": model, "requests": int(len(part)), "share": len(part) / n,
            "spend_usd": float(part["cost"].sum()),
            "cost_per_request_usd": float(part["cost"].mean()),
            "mean_feedback_quality": _mean(part["quality"]),
            "rated": int(part["quality"].notna().sum()),
            "error_rate": float((part["status_code"] >= 400).mean()),
            "mean_input_tokens": _mean(pd.to_numeric(answered.get("input_tokens"),
                                                     errors="coerce")),
            "mean_output_tokens": _mean(pd.to_numeric(answered.get("output_tokens"),
                                                      errors="coerce")),
            # The log's ttfb_ms: for a stream the first token; for an answer sent
            # whole, its first byte (about the whole latency).
            **timing_figures(answered.get("latency_ms", pd.Series(dtype="float64")),
                             answered.get("ttfb_ms", pd.Series(dtype="float64"))),
        })
    models.sort(key=lambda r: (-r["requests"], r["model"]))
    return models


def _per_day(df: pd.DataFrame) -> list[dict[str, Any]]:
    days = []
    for day, part in df.groupby("day", sort=True):
        days.append({
            "day": day, "requests": int(len(part)), "spend_usd": float(part["cost"].sum()),
            "most_expensive_usd": float(part["cf_max"].sum()),
            "best_model_usd": float(part["cf_best"].sum()),
            "mean_feedback_quality": _mean(part["quality"]),
            "rated": int(part["quality"].notna().sum()),
            "quality_by_model": {str(m): _mean(p["quality"])
                                 for m, p in part.groupby("model", sort=True)},
        })
    return days


def format_usd(value: float) -> str:
    """Dollars as the report prints them: 4 decimals under $1, else cents."""
    return f"${value:,.4f}" if abs(value) < 1 else f"${value:,.2f}"


def optional(value: float | None, spec: str) -> str:
    """`value` formatted with `spec`, or "-" when there is none."""
    return "-" if value is None else format(value, spec)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = [list(header), *map(list, rows)]
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                      for i, (c, w) in enumerate(zip(r, widths, strict=True))) for r in lines]


def format_report(report: dict[str, Any]) -> str:
    """The report as text: headline, savings, rates, then per-model and per-day tables."""
    window = f"since {report['since']}" if report["since"] else "all time"
    out = [f"outcome log {report['source']}, {window}: {report['requests']:,} requests"]
    decisions = report.get("route_only", {}).get("decisions", 0)
    if decisions:
        out.append(f"route-only decisions: {decisions:,} (POST /v1/route, no model called; "
                   "not in spend or savings)")
    if not report["requests"]:
        out.append("no requests in this window; widen --since or check --log")
        return "\n".join(out)
    q = report["mean_feedback_quality"]
    out.append(f"spend {format_usd(report['spend_usd'])}, mean feedback quality "
               f"{optional(q, '.3f')} ({report['rated']:,} rated)")
    out.append("")
    out.append("had every request gone to")
    top, best = report["counterfactuals"]["most_expensive"], report["counterfactuals"][
        "best_model"]
    out.append(f"  the most expensive model considered: {format_usd(top['spend_usd'])}; saving "
               f"{format_usd(top['saving_usd'])} ({optional(top['saving_pct'], '.1f')}%)")
    if best["model"]:
        extra = (f"; {best['requests_without_estimate']} requests without an estimate for it "
                 "count at actual cost" if best["requests_without_estimate"] else "")
        out.append(f"  the best single model, {best['model']} ({best['chosen_by']}): "
                   f"{format_usd(best['spend_usd'])}; saving {format_usd(best['saving_usd'])} "
                   f"({optional(best['saving_pct'], '.1f')}%){extra}")
    out.append(f"  estimate: {report['estimate']}")
    rates = report["rates"]
    out.append("")
    out.append(f"rates: cache hit {100 * rates['cache_hit']:.1f}%, fallback "
               f"{100 * rates['fallback']:.1f}%, explored {100 * rates['explored']:.1f}%, "
               f"error {100 * rates['error']:.1f}%")
    out.append("")
    out.extend(_table(
        ("model", "requests", "share", "spend", "cost/req", "quality", "rated", "errors",
         "tok in", "tok out", "p50 ms", "p99 ms", "ttft p50", "ttft p99"),
        [(m["model"], f"{m['requests']:,}", f"{100 * m['share']:.1f}%", format_usd(m["spend_usd"]),
          f"${m['cost_per_request_usd']:.6f}", optional(m["mean_feedback_quality"], ".3f"),
          f"{m['rated']:,}", f"{100 * m['error_rate']:.1f}%",
          optional(m["mean_input_tokens"], ",.0f"), optional(m["mean_output_tokens"], ",.0f"),
          *(optional(m[k], ",.0f") for k in ("p50_latency_ms", "p99_latency_ms", "p50_ttft_ms",
                                         "p99_ttft_ms")))
         for m in report["models"]]))
    out.append("")
    best_name = f"if {best['model']}" if best["model"] else "if best"
    out.extend(_table(
        ("day (UTC)", "requests", "spend", "if most expensive", best_name, "quality"),
        [(d["day"], f"{d['requests']:,}", format_usd(d["spend_usd"]),
          format_usd(d["most_expensive_usd"]), format_usd(d["best_model_usd"]),
          optional(d["mean_feedback_quality"], ".3f"))
         for d in report["days"]]))
    return "\n".join(out)
