"""The figure of `router simulate --plot`: is the loop improving the router?

Left: the served traffic's mean cost per request (bars) and mean quality (line, right
axis) per round. Right: each round's serving model's AIQ on the held-out part, the
model after the last retrain, and the two references, the full-data router (the
target) and the Zero router (single models mixed at random, the floor).

matplotlib is imported and switched to Agg inside the function, so importing this
module touches no display and costs nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["plot_simulation"]


def plot_simulation(result: Any, path: str | os.PathLike[str]) -> Path:
    """Write the PNG to `path` and return it. `result` is a `SimulationResult` or its dict."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    data: Mapping[str, Any] = result if isinstance(result, Mapping) else result.to_dict()
    rounds = data["rounds"]
    x = [r["round"] for r in rounds]
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.6), dpi=120)
    try:
        left.bar(x, [r["cost_usd"] for r in rounds], color="#9ecae1", width=0.6,
                 label="mean cost per request")
        left.set_xlabel("round")
        left.set_ylabel("served cost per request (USD)")
        left.set_xticks(x)
        left.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        twin = left.twinx()
        twin.plot(x, [r["quality"] for r in rounds], color="#d62728", marker="o", lw=2,
                  label="mean quality")
        twin.set_ylabel("served quality (mean recorded quality)", color="#d62728")
        if data.get("full_data_cost_usd") is not None:
            left.axhline(data["full_data_cost_usd"], color="#1f77b4", ls="--", lw=1.2,
                         label="full-data router's cost (held-out)")
            twin.axhline(data["full_data_quality"], color="#d62728", ls="--", lw=1.2,
                         label="full-data router's quality (held-out)")
        handles = left.get_legend_handles_labels()
        more = twin.get_legend_handles_labels()
        left.legend(handles[0] + more[0], handles[1] + more[1], loc="upper center",
                    bbox_to_anchor=(0.5, -0.14), ncol=2, fontsize=8)
        left.set_title("served traffic per round")

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
                               strict=True))
        for (xi, yi), was in zip(next_points, promoted, strict=True):
            if was and yi is not None:
                right.annotate("new model", (xi, yi), textcoords="offset points",
                               xytext=(0, 8), ha="center", fontsize=7, color="0.3")
        right.axhline(data["full_data_aiq"], color="#2ca02c", ls="--", lw=1.5,
                      label=f"full-data router ({data['full_data_aiq']:.3f})")
        if data.get("zero_router_aiq") is not None:
            right.axhline(data["zero_router_aiq"], color="0.5", ls=":", lw=1.2,
                          label=f"Zero router ({data['zero_router_aiq']:.3f})")
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
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out
