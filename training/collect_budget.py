"""The cost cap of `router collect`: estimate each pair, reserve it, stop before the cap.

The cost cap
------------
`max_cost_usd` caps the total spend recorded in `--out` (earlier runs included,
judge calls included). Before each call the pair's cost is estimated (its input
tokens, the largest output seen from that model so far, or `max_tokens`, or
`DEFAULT_OUTPUT_TOKENS`, at catalog prices, plus the judge's estimate) and the
call is made only if spent + in-flight estimates + this estimate stays within
the cap; when it would not, the run waits for calls in flight and, if it still
would not fit, stops starting new calls and reports how many pairs remain.
Estimates can be low, so the cap can be overshot by at most the error of the
estimates of the calls in flight.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from router.catalog import Catalog
from training.collect_prompts import PromptItem
from training.graders import Grader

__all__ = ["DEFAULT_OUTPUT_TOKENS", "CostCap", "row_cost_usd"]

DEFAULT_OUTPUT_TOKENS = 256


def row_cost_usd(row: dict[str, Any]) -> float:
    """What one output row cost: the call plus the judge's call, if any."""
    return float(row.get("cost_usd") or 0) + float(row.get("judge_cost_usd") or 0)


class CostCap:
    """The run's spend: recorded (`spent_usd`), reserved for calls in flight, the cap.

    Without a cap (`max_cost_usd=None`) nothing is ever over it, but the spend is
    still counted for the report.
    """

    def __init__(self, *, catalog: Catalog, grader: Grader, max_cost_usd: float | None,
                 max_tokens: int | None, spent_usd: float = 0.0) -> None:
        self.catalog = catalog
        self.grader = grader
        self.max_cost_usd = max_cost_usd
        self.max_tokens = max_tokens
        self.spent_usd = spent_usd
        self.reserved_usd = 0.0
        self._max_out: dict[str, float] = {}

    @classmethod
    def resume(cls, rows: Iterable[dict[str, Any]], latest: Iterable[dict[str, Any]], *,
               catalog: Catalog, grader: Grader, max_cost_usd: float | None,
               max_tokens: int | None) -> CostCap:
        """The cap as an earlier run left it: every row's spend, each model's largest output.

        `rows` are all rows of the output file (each call was paid for, retried or
        not); `latest` the newest row per pair, whose output tokens seed the estimates.
        """
        cap = cls(catalog=catalog, grader=grader, max_cost_usd=max_cost_usd,
                  max_tokens=max_tokens, spent_usd=sum(row_cost_usd(r) for r in rows))
        for row in latest:
            cap.observe_output(str(row["model"]), row.get("output_tokens"))
        return cap

    def observe_output(self, model: str, output_tokens: Any) -> None:
        """Remember `model`'s largest answer so far: the next estimates use it."""
        if output_tokens is not None:
            self._max_out[model] = max(self._max_out.get(model, 0.0), float(output_tokens))

    def estimate(self, item: PromptItem, model: str) -> float:
        spec = self.catalog[model]
        out_tokens = self._max_out.get(model) or self.max_tokens or DEFAULT_OUTPUT_TOKENS
        return (spec.cost_usd(item.input_tokens, out_tokens)
                + self.grader.estimate_cost_usd(int(item.input_tokens + out_tokens)))

    def over_cap(self, cost: float) -> bool:
        """Would a call estimated at `cost` take spent + in flight past the cap?"""
        return self.max_cost_usd is not None and (
            self.spent_usd + self.reserved_usd + cost > self.max_cost_usd + 1e-12)

    def reserve(self, cost: float) -> None:
        self.reserved_usd += cost

    def release(self, cost: float) -> None:
        self.reserved_usd -= cost

    def spend(self, cost: float) -> None:
        self.spent_usd += cost
