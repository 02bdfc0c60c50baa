"""The figure of `router simulate --plot`: is the loop improving the router?

Three panels, one quantity each, so no axis can be read against the wrong line:
the served traffic's mean cost per request (bars, dollar ticks) and mean quality
per round, each beside the full-data router's figure on the held-out prompts; and
each round's serving model's AIQ on the held-out part, the model after the last
retrain, and the two references, the full-data router (the target) and the Zero
router (single models mixed at random, the floor).

After `router simulate --latency-incident` the figure is the incident instead: the
slowed model's share of recent requests over seconds of traffic, the slowdown and
the point where it lost its latency-limited traffic.

matplotlib is imported inside `simulation_figure`, which draws on an Agg canvas
without pyplot, so importing this module touches no display and costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["plot_simulation", "simulation_figure"]


def plot_simulation(result: Any, path: str | os.PathLike[str]) -> Path:
    """Write `simulation_figure(result)` as a PNG to `path` and return it."""
    fig = simulation_figure(result)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def simulation_figure(result: Any) -> Any:
    """The matplotlib `Figure`. `result` is a `SimulationResult` or its dict; after a
    latency incident (and no rounds) the incident's figure instead."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data: Mapping[str, Any] = result if isinstance(result, Mapping) else result.to_dict()
    if data.get("latency_incident") and not data["rounds"]:
        fig = Figure(figsize=(9, 5.4), dpi=120)
        FigureCanvasAgg(fig)
        _incident_panel(fig.subplots(1, 1), data["latency_incident"])
        fig.tight_layout()
        return fig
    fig = Figure(figsize=(15, 5.4), dpi=120)
    FigureCanvasAgg(fig)
    cost, quality, right = fig.subplots(1, 3)
    x = [r["round"] for r in data["rounds"]]
    _cost_panel(cost, data, x)
    _quality_panel(quality, data, x)
    for ax in (cost, quality):
        ax.set_xlabel("round")
        ax.set_xticks(x)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8)
    _aiq_panel(right, data, x)
    fig.suptitle("router simulate: the closed loop", fontsize=11)
    fig.tight_layout()
    return fig


def _cost_panel(ax: Any, data: Mapping[str, Any], x: list[int]) -> None:
    from training.plots import usd_formatter

    ax.bar(x, [r["cost_usd"] for r in data["rounds"]], color="#9ecae1", width=0.6,
           label="served traffic")
    if data.get("full_data_cost_usd") is not None:
        ax.axhline(data["full_data_cost_usd"], color="#1f77b4", ls="--", lw=1.2,
                   label="full-data router (held-out)")
    ax.yaxis.set_major_formatter(usd_formatter())
    ax.set_ylabel("mean cost per request (USD)")
    ax.set_title("served cost per round")


def _quality_panel(ax: Any, data: Mapping[str, Any], x: list[int]) -> None:
    ax.plot(x, [r["quality"] for r in data["rounds"]], color="#d62728", marker="o", lw=2,
            label="served traffic")
    if data.get("full_data_quality") is not None:
        ax.axhline(data["full_data_quality"], color="#d62728", ls="--", lw=1.2,
                   label="full-data router (held-out)")
    ax.set_ylabel("mean recorded quality")
    ax.set_title("served quality per round")


def _aiq_panel(ax: Any, data: Mapping[str, Any], x: list[int]) -> None:
    rounds = data["rounds"]
    aiqs = [r["aiq"] for r in rounds]
    ax.plot(x, aiqs, color="#1f77b4", marker="o", lw=2, label="serving model's AIQ (held-out)")
    if data.get("final_aiq") is not None and rounds:
        final_x = x[-1] + 1
        ax.plot([x[-1], final_x], [aiqs[-1], data["final_aiq"]], color="#1f77b4", ls=":",
                lw=1.5)
        ax.scatter([final_x], [data["final_aiq"]], color="#1f77b4", marker="*", s=120,
                   zorder=5, label="after the last retrain")
    # A promotion at the end of round r shows on the model serving round r + 1.
    next_points = list(zip(x[1:] + [x[-1] + 1], aiqs[1:] + [data.get("final_aiq")],
                           strict=True)) if rounds else []
    for (xi, yi), was in zip(next_points, [r["promoted"] for r in rounds], strict=True):
        if was and yi is not None:
            ax.annotate("new model", (xi, yi), textcoords="offset points", xytext=(0, 8),
                        ha="center", fontsize=7, color="0.3")
    ax.axhline(data["full_data_aiq"], color="#2ca02c", ls="--", lw=1.5,
               label=f"full-data router ({data['full_data_aiq']:.3f})")
    if data.get("zero_router_aiq") is not None:
        ax.axhline(data["zero_router_aiq"], color="0.5", ls=":", lw=1.2,
                   label=f"Zero router ({data['zero_router_aiq']:.3f})")
    # Headroom above the highest point, so a "new model" label there stays inside
    # the panel instead of running into its title.
    low, high = ax.get_ylim()
    ax.set_ylim(low, high + 0.15 * (high - low))
    ax.set_xlabel("round")
    ax.set_ylabel("AIQ on the held-out prompts")
    if data.get("final_aiq") is not None and x:
        ax.set_xticks(x + [x[-1] + 1], [str(v) for v in x] + ["final"])
    else:
        ax.set_xticks(x)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8)
    ax.set_title("router quality vs the full-data router")


def _incident_panel(ax: Any, incident: Mapping[str, Any]) -> None:
    """The slowed model's share of the last `window` requests over seconds of traffic,
    with the slowdown at 0 and the point where it lost its traffic."""
    model, window = incident["model"], incident["window"]
    timeline = incident["timeline"]
    seconds = [t["seconds"] for t in timeline]
    hits = [t["model"] == model for t in timeline]
    shares = [sum(hits[max(0, i + 1 - window):i + 1]) / min(window, i + 1)
              for i in range(len(hits))]
    ax.plot(seconds, shares, color="#1f77b4", lw=1.8,
            label=f"{model}'s share of the last {window} requests")
    ax.axvline(0.0, color="#d62728", ls="--", lw=1.2,
               label=f"{model} made {incident['slowdown']:g}x slower")
    if incident.get("seconds_to_drop") is not None:
        ax.axvline(incident["seconds_to_drop"], color="#2ca02c", ls=":", lw=1.5,
                   label=f"traffic lost after {incident['seconds_to_drop']:.1f} s "
                         f"({incident['requests_to_drop']} requests)")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("seconds of traffic since the slowdown")
    ax.set_ylabel("share of requests")
    ax.set_title(f"latency incident under max_latency_ms={incident['max_latency_ms']:g}, "
                 "no retrain")
    ax.legend(loc="upper right", fontsize=8)
