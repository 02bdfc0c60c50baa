"""Champion/challenger gate: a retrained model reaches traffic only if it is not worse.

Two kinds of evidence, each turned into a cost/quality curve per policy by
sweeping two decision rules of `router.policy.choose` (the rule the server
runs): the default rule at each quality bar (`DEFAULT_BARS`; each policy's own
bar calibration turns a bar into its lambda, so a bar is compared with what
that bar buys from each model) and the utility rule, argmax q - lambda * c, at
each explicit lambda (`training.sweep.utility_lambdas`,
the grid `router eval` uses, scaled to the source's costs and so the same for
both policies). A deployment may run any of these operating points, so a
policy is judged on all of them, as `router eval`'s AIQ is:

* **eval table**: a fixed outcome table with every model's outcome per prompt
  (full information), so each decision's realised quality and cost are known.
* **recent logs**: held-out recent logged traffic, where only the served model's
  outcome is known; each point is a doubly robust off-policy estimate
  (`training.offpolicy`), with one shared reward model (the champion's
  predictions) so the two policies are judged by the same yardstick. Beside
  the curves, each policy's IPS, SNIPS and DR estimates at the settings the
  traffic asked for (its bars and lambdas), with standard errors and the
  effective sample size (`offpolicy`). When either policy's ESS there is below
  `training.offpolicy.MIN_ESS` (30), the source is not judged ("too small to
  judge"): the DR estimate would be little more than the reward model's, that
  is the champion's, own opinion.

For each source the comparison is the challenger's **quality at equal cost**,
per decision rule: each rule's operating points are closed under mixing and
"spending more is allowed" (the non-decreasing upper convex hull, as AIQ does),
and the challenger's hull minus the champion's hull is averaged over the costs
both can reach. A challenger must not be worse by more than the tolerance on
any rule the traffic uses (`rules`): serving runs one rule per request, so a
gain on one rule never pays for a loss on the other. Which rules are in use is
read off the recent logs (`rules_in_use`: the default rule, plus the utility
rule when some logged request asked for it); without logs both are judged. The
difference over all operating points together is reported too, with the AIQ of
each policy, as information. The challenger is promoted only when it passes
every source that had enough data. No champion yet: promoted (there is nothing
to protect), with the evidence still recorded.

The report is printed by `router retrain` and stored in the version's meta.json
under `"gate"` (both curves, every operating point labelled by its bar or
lambda, DR points with their standard error and ESS) so `router models show`
explains every promotion and refusal; `router models show --gate` prints it as
`router retrain` did (`GateReport.from_dict`).
"""

from training.gate._curves import (
    DEFAULT_BARS,
    hull_quality,
    quality_at_equal_cost,
    sweep_logged,
    sweep_table,
)
from training.gate._decide import RULES, rules_in_use, run_gate
from training.gate._report import Curve, GateReport, SourceResult, format_offpolicy

__all__ = [
    "DEFAULT_BARS",
    "Curve",
    "SourceResult",
    "GateReport",
    "hull_quality",
    "quality_at_equal_cost",
    "sweep_table",
    "sweep_logged",
    "run_gate",
    "rules_in_use",
    "format_offpolicy",
    "RULES",
]
