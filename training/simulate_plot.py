"""The figure of `router simulate --plot`: is the loop improving the router?

Three panels, one quantity each, so no axis can be read against the wrong line:
the served traffic's mean cost per request (bars, dollar ticks) and mean quality
per round, each beside the full-data router's figure on the held-out prompts; and
each round's serving model's AIQ on the held-out part, the model after the last
retrain, and the two references, the full-data router (the target) and the Zero
router (single models mixed at random, the floor).

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
    """The matplotlib `Figure`. `result` is a `SimulationResult` or its dict."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from training.plots import usd_formatter

    data: Mapping[str, Any] = result if isinstance(result, Mapping) else result.to_dict()
    rounds = data["rounds"]
    x = [r["round"] for r in rounds]
    fig = Figure(figsize=(15, 5.4), dpi=120)
    FigureCanvasAgg(fig)
    cost, quality, right = fig.subplots(1, 3)

    cost.bar(x, [r["cost_usd"] for r in rounds], color="#9ecae1", width=0.6,
             label="served traffic")
    if data.get("full_data_cost_usd") is not None:
        cost.axhline(data["full_data_cost_usd"], color="#1f77b4", ls="--", lw=1.2,
                     label="full-data router (held-out)")
    cost.yaxis.set_major_formatter(usd_formatter())
    cost.set_ylabel("mean cost per request (USD)")
    cost.set_title("served cost per round")

    quality.plot(x, [r["quality"] for r in rounds], color="#d62728", marker="o", lw=2,
                 label="served traffic")
    if data.get("full_data_quality") is not None:
        quality.axhline(data["full_data_quality"], color="#d62728", ls="--", lw=1.2,
                        label="full-data router (held-out)")
    quality.set_ylabel("mean recorded quality")
    quality.set_title("served quality per round")
    for ax in (cost, quality):
        ax.set_xlabel("round")
        ax.set_xticks(x)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8)

    aiqs = [r["aiq"] for r in rounds]
    promoted = [r["promoted"] for r in rounds]
    right.plot(x, aiqs, color="#1f77b4", marker="o", lw=2,
               label="serving model's AIQ (held-out)")
    if data.get("final_aiq") is not None and rounds:
        final_x = x[-1] + 1
        right.plot([x[-1], final_x], [aiqs[-1], data["final_aiq"]], color="#1f77b4",
                   ls=":", lw=1.5)
        right.scatter([final_x], [data["final_aiq"]], color="#1f77b4", marker="*", s=120,
                      zorder=5, label="after the last retrain")
    # A promotion at the end of round r shows on the model serving round r + 1.
    next_points = list(zip(x[1:] + [x[-1] + 1], aiqs[1:] + [data.get("final_aiq")],
                           strict=True)) if rounds else []
    for (xi, yi), was in zip(next_points, promoted, strict=True):
        if was and yi is not None:
            right.annotate("new model", (xi, yi), textcoords="offset points",
                           xytext=(0, 8), ha="center", fontsize=7, color="0.3")
    right.axhline(data["full_data_aiq"], color="#2ca02c", ls="--", lw=1.5,
                  label=f"full-data router ({data['full_data_aiq']:.3f})")
    if data.get("zero_router_aiq") is not None:
        right.axhline(data["zero_router_aiq"], color="0.5", ls=":", lw=1.2,
                      label=f"Zero router ({data['zero_router_aiq']:.3f})")
    # Headroom above the highest point, so a "new model" label there stays inside
    # the panel instead of running into its title.
    low, high = right.get_ylim()
    right.set_ylim(low, high + 0.15 * (high - low))
    right.set_xlabel("round")
    right.set_ylabel("AIQ on the held-out prompts")
    if data.get("final_aiq") is not None and x:
        right.set_xticks(x + [x[-1] + 1], [str(v) for v in x] + ["final"])
    else:
        right.set_xticks(x)
    right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8)
    right.set_title("router quality vs the full-data router")
    fig.suptitle("router simulate: the closed loop", fontsize=11)
    fig.tight_layout()
    return fig
