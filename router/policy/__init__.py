"""The decision rule, as pure functions of predictions, the bar's calibration and
request limits.

Three ways to ask, exactly one per request:

* **quality bar** (the default): b in [0, 1] is the target *mean* quality over
  traffic like the training data. The artifact stores a `BarCalibration`, fitted
  on prompts the model never trained on: for each b the utility weight lambda(b)
  whose decisions reach mean quality b at the least mean cost there (predicted
  means, corrected by the model's measured mean error). Each request then takes
  argmax q - lambda(b) * c. So the rule stays on the efficient frontier: it
  never buys a negligible expected gain at a large price, and a bar no model
  clears on some kind of prompt does not send that prompt to the dearest model.
  A higher bar never gives lower mean quality or lower mean cost on the
  calibration prompts (the map is read off their Pareto frontier).
* **min_quality** (a hard per-request floor): the cheapest model whose expected
  quality meets the floor; if none does, the one with the highest expected
  quality (ties: cheaper). For callers who need a guarantee per request, and
  accept paying for it.
* **utility_lambda**: argmax q - lambda * c with an explicit lambda (quality per USD).

The constraints filter the candidates before the rule runs: `allowed` models;
`max_latency_ms`, which removes candidates expected to take longer (if it removes
all of them the fastest allowed model is chosen: the caller's screen waits least
there); then `max_cost_usd`, which removes candidates whose expected cost is
above it (if it removes all of them the cheapest remaining model is chosen,
because answering over budget is worse than answering with a weaker model).

`choose` works on whole matrices (evaluation sweeps millions of decisions);
`decide` is the per-request view with every candidate, built on `choose` so the
rule lives in one place.

Where the code lives: request limits and the latency filter in `_limits`, the
rule on matrices and the bar's calibration in `_rule`, the per-request decision
in `_decision`.
"""

from router.policy._decision import (
    Candidate,
    Decision,
    decide,
)
from router.policy._limits import (
    validate_bar,
    validate_lambda,
    validate_max_latency,
    within_latency,
)
from router.policy._rule import (
    NEGLIGIBLE_GAIN_RATE,
    BarCalibration,
    choose,
    lambda_grid,
    resolve_lambda,
)

__all__ = [
    "NEGLIGIBLE_GAIN_RATE",
    "BarCalibration",
    "Candidate",
    "Decision",
    "choose",
    "decide",
    "lambda_grid",
    "resolve_lambda",
    "validate_bar",
    "validate_lambda",
    "validate_max_latency",
    "within_latency",
]
