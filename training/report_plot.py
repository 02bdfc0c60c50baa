"""The picture of `router report`: daily spend against the counterfactuals, and
feedback quality over time (`training.report.build_report`'s figures).

matplotlib is imported inside `spend_figure`, which draws on an Agg canvas
without pyplot, so importing this module never touches a display.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from router.errors import ConfigError
from training.report import format_usd, optional

__all__ = ["plot_report", "spend_figure"]


def _plain(text: str) -> str:
    """Dollar signs shown as such, not read as matplotlib math delimiters."""
    return text.replace("$", r"\$")


def plot_report(report: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write `spend_figure(report)` as a PNG to `path`; returns the path."""
    fig = spend_figure(report)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def spend_figure(report: dict[str, Any]) -> Any:
    """Daily spend against the two counterfactuals, and feedback quality over time.

    A matplotlib `Figure` on the Agg canvas (no pyplot, no display, no global state).
    Only what is drawn gets a legend entry: a day without feedback has no quality
    point, and a log without any feedback says so instead of showing an empty line.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    days = report.get("days") or []
    if not days:
        raise ConfigError("nothing to plot: no requests in this window",
                          hint="widen --since or check --log")
    x = [datetime.strptime(d["day"], "%Y-%m-%d") for d in days]
    fig = Figure(figsize=(10, 7.5))
    FigureCanvasAgg(fig)
    ax_cost, ax_q = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
    _draw_spend(ax_cost, report, x)
    _draw_quality(ax_q, days, x)
    _day_ticks(ax_q, x)
    fig.tight_layout()
    return fig


def _draw_spend(ax_cost: Any, report: dict[str, Any], x: list[datetime]) -> None:
    """Daily spend against the two counterfactuals, the savings in the title."""
    days = report["days"]
    best = report["counterfactuals"]["best_model"]
    top = report["counterfactuals"]["most_expensive"]
    ax_cost.plot(x, [d["most_expensive_usd"] for d in days], "s--", color="#d62728",
                 label=_plain(f"if most expensive considered ({format_usd(top['spend_usd'])})"))
    if best["model"]:
        ax_cost.plot(x, [d["best_model_usd"] for d in days], "^:", color="#ff7f0e",
                     label=_plain(f"if all to {best['model']} ({format_usd(best['spend_usd'])})"))
    ax_cost.plot(x, [d["spend_usd"] for d in days], "o-", color="#1f77b4", linewidth=2.5,
                 label=_plain(f"router, actual ({format_usd(report['spend_usd'])})"))
    ax_cost.set_ylabel("spend per day (USD)")
    peak = max(max(d["most_expensive_usd"], d["best_model_usd"], d["spend_usd"]) for d in days)
    ax_cost.set_ylim(0, peak * 1.3 if peak > 0 else 1)  # headroom for the legend
    ax_cost.grid(alpha=0.3)
    ax_cost.legend(loc="upper center", fontsize=9, ncol=3, frameon=False)
    saving = [f"saved {format_usd(top['saving_usd'])} ({optional(top['saving_pct'], '.1f')}%) vs "
              "most expensive"]
    if best["model"]:
        saving.append(f"{format_usd(best['saving_usd'])} ({optional(best['saving_pct'], '.1f')}%) "
                      f"vs {best['model']}")
    ax_cost.set_title(_plain(f"Router spend, {report['requests']:,} requests: "
                             + "; ".join(saving)), fontsize=11)


def _draw_quality(ax_q: Any, days: list[dict[str, Any]], x: list[datetime]) -> None:
    """Feedback quality per model and overall; says so when there is none."""
    drawn = 0
    models = sorted({m for d in days for m in d["quality_by_model"]})
    for model in models:
        ys = [d["quality_by_model"].get(model) for d in days]
        if any(y is not None for y in ys):
            ax_q.plot(x, [np.nan if y is None else y for y in ys], ".-", alpha=0.6,
                      linewidth=1, label=model)
            drawn += 1
    overall = [d["mean_feedback_quality"] for d in days]
    if any(y is not None for y in overall):
        ax_q.plot(x, [np.nan if y is None else y for y in overall], "o-", color="black",
                  linewidth=2.5, label="all requests")
        drawn += 1
    ax_q.set_ylabel("mean feedback quality")
    ax_q.set_ylim(-0.02, 1.25)  # headroom for the legend above the 0-1 scale
    ax_q.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax_q.grid(alpha=0.3)
    if drawn:
        ax_q.legend(loc="upper center", fontsize=8, ncol=min(5, drawn), frameon=False)
    else:
        ax_q.text(0.5, 0.5, "no feedback in this window (POST /v1/feedback)",
                  transform=ax_q.transAxes, ha="center", va="center", color="0.4")
    ax_q.set_xlabel("day (UTC)")


def _day_ticks(ax_q: Any, x: list[datetime]) -> None:
    import matplotlib.dates as mdates

    if x[-1] - x[0] <= timedelta(days=14):
        # One tick per logged day: AutoDateLocator would put hour ticks on a short
        # span, all labelled with the same day.
        ax_q.set_xticks(x)
        ax_q.xaxis.set_major_formatter(mdates.DateFormatter("%b %d"))
    else:  # days or weeks apart; a year or more: months, which "%b %d" would repeat
        ax_q.xaxis.set_major_locator(mdates.AutoDateLocator(maxticks=8))
        ax_q.xaxis.set_major_formatter(mdates.DateFormatter(
            "%b %Y" if x[-1] - x[0] > timedelta(days=300) else "%b %d"))
    ax_q.set_xlim(x[0] - timedelta(hours=12), x[-1] + timedelta(hours=12))
