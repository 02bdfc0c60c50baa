"""What `router simulate` gives back: one result per round, the run's result, its table.

The fields and how to read them against each other (the gate judges on the same
held-out part the AIQ is measured on; served quality and cost are measured on
traffic it never saw) are explained in `training.simulate`. `router simulate
--json` prints `SimulationResult.to_json()`, the human table is `format_result`,
and `training.simulate_plot` draws `SimulationResult.to_dict()`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from training.simulate_latency import LatencyIncident

__all__ = ["RoundResult", "SimulationResult", "format_result"]


@dataclass
class RoundResult:
    """One round of traffic and the retrain after it.

    `model_version` served the round; `promoted` says whether the retrain at the
    end of the round replaced it (by `challenger`). `quality` and `cost_usd` are
    means over the served requests; `aiq` is `model_version`'s AIQ on the held-out
    part. `shares` is the served traffic per model; `mismatched` counts answers
    whose quality differed from the table's (should be 0).
    """

    round: int
    model_version: str
    promoted: bool
    requests: int
    quality: float
    cost_usd: float
    aiq: float
    challenger: str | None = None
    challenger_aiq: float | None = None
    gate_reason: str = ""
    explored: int = 0
    shares: dict[str, float] = field(default_factory=dict)
    mismatched: int = 0
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """Exactly the keys `router simulate --json` prints per round."""
        return {"round": self.round, "model_version": self.model_version,
                "promoted": self.promoted, "requests": self.requests,
                "quality": self.quality, "cost_usd": self.cost_usd, "aiq": self.aiq}


@dataclass
class SimulationResult:
    """Every round plus the reference points the rounds are read against."""

    rounds: list[RoundResult]
    full_data_aiq: float
    initial_aiq: float
    final_version: str
    final_aiq: float
    zero_router_aiq: float
    oracle_quality: float
    full_data_quality: float
    full_data_cost_usd: float
    n_eval_prompts: int
    n_pool_prompts: int
    n_initial_prompts: int
    models: list[str]
    workdir: str
    latency_incident: LatencyIncident | None = None

    def to_json(self) -> dict[str, Any]:
        """`{"rounds": [...], "full_data_aiq": x}`: what `router simulate --json` prints;
        plus `latency_incident` (without its timeline) after a latency incident."""
        out: dict[str, Any] = {"rounds": [r.summary() for r in self.rounds],
                               "full_data_aiq": self.full_data_aiq}
        if self.latency_incident is not None:
            incident = asdict(self.latency_incident)
            incident.pop("timeline")
            out["latency_incident"] = incident
        return out

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)



def format_result(result: SimulationResult) -> str:
    """The human table of `router simulate`."""
    lines = [f"{'round':>5}  {'served by':<24} {'requests':>8} {'quality':>8} "
             f"{'cost/req':>11} {'AIQ':>7}  retrain"] if result.rounds else []
    for r in result.rounds:
        retrain_note = f"promoted {r.challenger}" if r.promoted else "kept"
        lines.append(f"{r.round:>5}  {r.model_version:<24} {r.requests:>8} {r.quality:>8.4f} "
                     f"{'$' + format(r.cost_usd, '.6f'):>11} {r.aiq:>7.4f}  {retrain_note}")
    if result.latency_incident is not None:
        lines += [result.latency_incident.summary()]
    lines += [
        "",
        f"initial router ({result.n_initial_prompts} prompts): AIQ {result.initial_aiq:.4f}",
        f"after the last retrain ({result.final_version}): AIQ {result.final_aiq:.4f}",
        f"full-data router ({result.n_pool_prompts} prompts, every model's outcome): AIQ "
        f"{result.full_data_aiq:.4f}; on the held-out prompts at the traffic's bar: quality "
        f"{result.full_data_quality:.4f}, ${result.full_data_cost_usd:.6f}/request",
        f"Zero router (single models mixed): AIQ {result.zero_router_aiq:.4f}; oracle quality "
        f"{result.oracle_quality:.4f}",
        f"AIQ is measured on {result.n_eval_prompts} held-out prompts never sent as traffic; "
        "quality and cost are the served traffic's means (exploration included).",
        f"work folder: {result.workdir}",
    ]
    return "\n".join(lines)
