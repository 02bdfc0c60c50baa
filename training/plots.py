"""The cost/quality picture of an evaluation: router, its hull, and every baseline.

One figure answers "is the router worth it": the router's points and hull against
the Zero router (the hull through the single models, each labelled), the random
router, the kNN router and the oracle (and, under a latency limit, the default
rule's curve within it). x is the mean cost per request in USD (log
scale when costs span more than a factor 20, as they do between a 7B model and
GPT-4), y the mean realised quality.

matplotlib is imported inside `eval_figure`, which draws on an Agg canvas without
pyplot, so importing this module never touches a display or costs import time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training import metrics

__all__ = ["plot_report", "eval_figure", "eval_title", "usd_formatter"]

_LOG_X_RATIO = 20.0


def plot_report(report: Any, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write `eval_figure(report, title=title)` as a PNG to `path`; returns the path."""
    fig = eval_figure(report, title=title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def eval_title(model_version: str, data: Sequence[str | os.PathLike[str]]) -> str:
    """The title "router VERSION on FILE, FILE": what was evaluated on what.

    The version, not the artifact's folder: folders are mostly called "model".
    """
    names = [Path(d).name for d in data]
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"router {model_version} on {shown}" if shown else f"router {model_version}"


def eval_figure(report: Any, *, title: str | None = None) -> Any:
    """The evaluation figure, a matplotlib `Figure` on the Agg canvas.

    `report` is an `EvalReport` or its `to_dict()` (so a saved `--json` can be
    re-plotted); `title` (see `eval_title`) heads it, above the prompt and model counts.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data: Mapping[str, Any] = report if isinstance(report, Mapping) else report.to_dict()
    singles = data["single_models"]
    s_cost = np.array([s["cost_usd"] for s in singles])
    s_qual = np.array([s["quality"] for s in singles])
    r_cost = np.array([p["cost_usd"] for p in data["curve"]])
    r_qual = np.array([p["quality"] for p in data["curve"]])
    all_costs = np.concatenate([s_cost, r_cost, [data["oracle"]["cost_usd"]]])
    positive = all_costs[all_costs > 0]
    log_x = positive.size > 0 and positive.max() / positive.min() > _LOG_X_RATIO
    x_hi = float(all_costs.max()) * (1.15 if log_x else 1.04)

    fig = Figure(figsize=(9, 6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    _draw_baselines(ax, data, s_cost, s_qual, x_hi)
    _draw_router(ax, data, r_cost, r_qual, x_hi)
    if data.get("latency"):
        _draw_latency_limit(ax, data["latency"])
    _dress(ax, data, log_x, x_hi, len(singles), title)
    fig.tight_layout()
    return fig


def _draw_baselines(ax: Any, data: Mapping[str, Any], s_cost: np.ndarray, s_qual: np.ndarray,
                    x_hi: float) -> None:
    """The Zero router's hull through the labelled single models, random, kNN."""
    zero = metrics.convex_hull_upper(np.column_stack([s_cost, s_qual]))
    ax.plot(*_flat_to(zero, x_hi), color="0.45", lw=1.8, ls="--",
            label=f"Zero router hull (AIQ {data['zero_router_aiq']:.3f})")
    ax.scatter(s_cost, s_qual, color="0.25", s=28, zorder=4, label="single models")
    for single, c, q in zip(data["single_models"], s_cost, s_qual, strict=True):
        ax.annotate(_short(single["model"]), (c, q), textcoords="offset points",
                    xytext=(5, -10), fontsize=7.5, color="0.25")
    rand = data["random"]["curve"]
    ax.plot([p["cost_usd"] for p in rand], [p["quality"] for p in rand], color="tab:gray",
            lw=1.2, ls=":", label=f"random (AIQ {data['random']['aiq']:.3f})")
    if data.get("knn"):
        k_cost = [p["cost_usd"] for p in data["knn"]["curve"]]
        k_qual = [p["quality"] for p in data["knn"]["curve"]]
        ax.plot(k_cost, k_qual, color="tab:orange", lw=1.2, marker=".", ms=4, alpha=0.8,
                label=f"kNN router (AIQ {data['knn']['aiq']:.3f})")


def _draw_router(ax: Any, data: Mapping[str, Any], r_cost: np.ndarray, r_qual: np.ndarray,
                 x_hi: float) -> None:
    """The default rule's points, the explicit-lambda points, the router's hull, and the
    oracle (drawn last, on top)."""
    order = np.argsort(r_cost, kind="stable")
    ax.plot(r_cost[order], r_qual[order], color="tab:blue", lw=1.0, marker="o", ms=3.5,
            alpha=0.75, label="router, default rule (one point per bar)")
    if data.get("utility_curve"):
        u_cost = np.array([p["cost_usd"] for p in data["utility_curve"]])
        u_qual = np.array([p["quality"] for p in data["utility_curve"]])
        u_order = np.argsort(u_cost, kind="stable")
        ax.plot(u_cost[u_order], u_qual[u_order], color="tab:purple", lw=1.0, marker="x",
                ms=4, alpha=0.75, label="router, explicit lambda (one point per lambda)")
    hull = np.array([(h["cost_usd"], h["quality"]) for h in data["hull"]])
    ax.plot(*_flat_to(hull, x_hi), color="tab:blue", lw=2.4,
            label=f"router hull (AIQ {data['aiq']:.3f})")
    ax.scatter([data["oracle"]["cost_usd"]], [data["oracle"]["quality"]], marker="*",
               s=220, color="tab:green", edgecolor="k", zorder=5, label="oracle")


def _draw_latency_limit(ax: Any, section: Mapping[str, Any]) -> None:
    """The default rule under the latency limit, and its default point's share met."""
    cost = np.array([p["cost_usd"] for p in section["curve"]])
    quality = np.array([p["quality"] for p in section["curve"]])
    order = np.argsort(cost, kind="stable")
    point = section.get("default_point")
    met = f", {point['met_share']:.1%} met at the default bar" if point and point.get(
        "met_share") is not None else ""
    ax.plot(cost[order], quality[order], color="tab:red", lw=1.0, marker="s", ms=3,
            alpha=0.75, label=f"router under {section['max_latency_ms']:g} ms "
                              f"(AIQ {section['aiq']:.3f}{met})")


def _dress(ax: Any, data: Mapping[str, Any], log_x: bool, x_hi: float, n_models: int,
           title: str | None) -> None:
    """Axes, scale, labels, grid, title and legend."""
    if log_x:
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        # Dollar labels on minor ticks too: a decade is often the whole range.
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:.2g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(_minor_dollars))
        ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlim(right=x_hi)
    ax.set_xlabel("mean cost per request (USD)" + (", log scale" if log_x else ""))
    ax.set_ylabel("mean quality")
    ax.grid(True, which="major", alpha=0.3)
    subtitle = f"{data['n_prompts']} prompts, {n_models} models"
    ax.set_title(f"{title}\n{subtitle}" if title else f"Router vs baselines ({subtitle})",
                 fontsize=11)
    ax.legend(loc="lower right", fontsize=8.5, framealpha=0.9)


def usd_formatter() -> Any:
    """Tick labels in plain dollars ("$0.0012"), as many decimals as the tick step needs.

    matplotlib's default switches small costs to an offset ("1e-3" above the axis),
    which readers miss; a dollar figure on every tick cannot be misread.
    """
    from matplotlib.ticker import Formatter

    class _Usd(Formatter):
        decimals = 2

        def set_locs(self, locs: Sequence[float]) -> None:
            steps = np.diff(np.sort(np.asarray(locs, dtype=float)))
            steps = steps[steps > 0]
            step = float(steps.min()) if steps.size else float(np.max(np.abs(locs), initial=1))
            # The fewest decimals (2 to 10) that write the step exactly: 0.00025 needs 5.
            self.decimals = next((d for d in range(2, 11)
                                  if abs(step * 10**d - round(step * 10**d)) < 1e-6), 10)

        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"${x:.{self.decimals}f}"

    return _Usd()


def _flat_to(hull: np.ndarray, x_end: float) -> tuple[np.ndarray, np.ndarray]:
    """The hull as AIQ integrates it: linear in cost between vertices, flat to `x_end`.

    Segments are densified so that on a log axis they show their true (curved) shape
    instead of a straight line between vertices, which would overstate the hull.
    """
    x, y = hull[:, 0], hull[:, 1]
    if x_end > x[-1]:
        x, y = np.append(x, x_end), np.append(y, y[-1])
    if len(x) < 2:
        return x, y
    dense = np.concatenate([np.linspace(a, b, 40, endpoint=False)
                            for a, b in zip(x[:-1], x[1:], strict=True)] + [x[-1:]])
    return dense, np.interp(dense, x, y)


def _minor_dollars(value: float, _: Any) -> str:
    """Label the 2x and 5x minor ticks of a decade only, so labels never overlap."""
    mantissa = round(value / 10 ** np.floor(np.log10(value)), 6) if value > 0 else 0
    return f"${value:.2g}" if mantissa in (2.0, 5.0) else ""


def _short(name: str) -> str:
    """`mistralai/Mixtral-8x7B-Instruct-v0.1` -> `Mixtral-8x7B-Instruct-v0.1`."""
    return name.rsplit("/", 1)[-1]
