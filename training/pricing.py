"""Learn a model's effective prices from the costs its rows carry.

Real request logs record what each call cost (`cost_usd`) next to its token
counts. For a model the catalog does not price, `learn_prices` recovers the
effective price per million input and output tokens from those rows, so
`Catalog.with_prices` can turn it into a catalog entry: the quality model then
has the model's price descriptors and prices its predictions, and the artifact
stores the prices (`catalog.json`) for `router predict`, `router eval` and
`router route`.

How (`learn_price`):

* rows with a cost and both token counts: a non-negative least-squares fit of
  `cost_usd x 1e6 = input_tokens x input price + output_tokens x output price`
  (`scipy.optimize.nnls`). Exact when the costs were computed from two prices;
  with discounts or rounding it is the volume-weighted effective price;
* otherwise (no output tokens, fewer than two such rows, or token counts that
  cannot separate the two prices, e.g. output always proportional to input): one
  price on input, `sum(cost_usd) / sum(input_tokens)`, and an output price of 0.
  That prices every answer length the same, which is what the rows can tell.

Input tokens are what `training.data.load_outcomes` filled in: the file's
`input_tokens`, else the conversation's estimate (`router.catalog.estimate_tokens`),
the same estimate serving uses.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from router.catalog import Catalog
from router.errors import DataError

__all__ = ["LearnedPrice", "learn_price", "learn_prices"]

# Smallest singular-value ratio of the (column-scaled) token matrix for which the
# input and output prices are told apart; below it one input price is fitted.
_MIN_CONDITION = 1e-6


@dataclass(frozen=True)
class LearnedPrice:
    """A model's effective prices (USD per 1M tokens) and the rows they came from."""

    input_usd_per_mtok: float
    output_usd_per_mtok: float
    rows: int
    method: str  # "least squares" (input and output prices) or "input only"

    def as_price(self) -> tuple[float, float, None]:
        """The (input, output, context) triple `Catalog.with_prices` takes."""
        return self.input_usd_per_mtok, self.output_usd_per_mtok, None

    def to_dict(self) -> dict[str, Any]:
        return {"input_usd_per_mtok": self.input_usd_per_mtok,
                "output_usd_per_mtok": self.output_usd_per_mtok,
                "rows": self.rows, "method": self.method}


def learn_price(model: str, cost_usd: Any, input_tokens: Any,
                output_tokens: Any) -> LearnedPrice | None:
    """Effective prices of `model` from its rows (arrays of equal length); see the module.

    Rows without a cost are ignored; None when no row has one. A DataError when
    rows have costs but no tokens to divide them by.
    """
    cost = np.asarray(cost_usd, dtype=np.float64)
    tok_in = np.asarray(input_tokens, dtype=np.float64)
    tok_out = np.asarray(output_tokens, dtype=np.float64)
    known = np.isfinite(cost) & np.isfinite(tok_in)
    if not known.any():
        return None
    both = known & np.isfinite(tok_out)
    if both.sum() >= 2:
        a = np.column_stack([tok_in[both], tok_out[both]]) / 1e6
        scale = np.linalg.norm(a, axis=0)
        if (scale > 0).all():
            singular = np.linalg.svd(a / scale, compute_uv=False)
            if singular[-1] > _MIN_CONDITION * singular[0]:
                from scipy.optimize import nnls

                x, _ = nnls(a / scale, cost[both])
                p_in, p_out = x / scale
                return LearnedPrice(float(p_in), float(p_out), int(both.sum()),
                                    "least squares")
    total_in = float(tok_in[known].sum())
    total_cost = float(cost[known].sum())
    if total_in <= 0:
        if total_cost > 0:
            raise DataError(
                f"model {model!r}: cannot learn its price from {int(known.sum())} row(s) with a "
                "cost_usd but no input tokens",
                hint="add input_tokens and output_tokens, or give its price with --prices FILE")
        return LearnedPrice(0.0, 0.0, int(known.sum()), "input only")
    return LearnedPrice(total_cost / total_in * 1e6, 0.0, int(known.sum()), "input only")


def learn_prices(table: pd.DataFrame, catalog: Catalog,
                 models: Iterable[str] | None = None) -> dict[str, LearnedPrice]:
    """Learned prices of the models of `table` that `catalog` does not price.

    `table` has `model`, `cost_usd` (NaN where the file had none: learn from
    raw costs, not from costs already filled in), `input_tokens` and
    `output_tokens`. `models` limits which models are learned (default: every
    model not in the catalog). A model none of whose rows has a cost is absent
    from the result.
    """
    names = pd.unique(table["model"]) if models is None else list(models)
    groups = table.groupby("model", sort=False)
    learned = {}
    for name in names:
        if name in catalog:
            continue
        rows = groups.get_group(name)
        price = learn_price(str(name), rows["cost_usd"], rows["input_tokens"],
                            rows["output_tokens"])
        if price is not None:
            learned[str(name)] = price
    return learned
