"""The routing service: one loaded quality model + catalog + policy + exploration.

A `RoutingService` is immutable. The app keeps exactly one on `app.state.service`
and hot reload replaces it with a single attribute assignment, so a request
that started with the old model finishes with it and the next one sees the
new one; no request ever sees half of each.

Exploration: with probability `exploration` (epsilon) a routed chat request is
sent to a model drawn uniformly from the allowed candidates instead of the
policy's choice. The logged propensity is the exact probability of the served
choice under that mixed policy, `(1 - eps) * 1[choice == policy] + eps / m`
(m = number of allowed candidates), which is what the off-policy estimators in
`training` divide by. `/v1/route` never explores: it answers "what would you
pick", and a random answer there would only confuse callers.

Decision cache: predicting costs far more than everything else a request does
(features plus two LightGBM calls, ~0.6 ms against ~0.1 ms for the rest), and
real traffic repeats itself (retries, templated prompts, the same question from
many users). So each service keeps an LRU of policy decisions keyed by the
conversation digest and the request's limits (`decision_cache_size` entries,
0 = off). It lives on the immutable service, so a hot-reloaded model starts with
an empty one and never answers with the old model's numbers. Exploration is drawn
after the lookup, per request, so cached decisions explore exactly as often.

Where the code lives: the service and its loading in `_service`, what a decision
returns in `_result`, the decision cache in `_cache`.
"""

from router.service._cache import (
    DEFAULT_DECISION_CACHE_SIZE,
    DecisionCache,
)
from router.service._result import (
    RouteResult,
)
from router.service._service import (
    FALLBACK_DEFAULT_BAR,
    QualityModelLike,
    RoutingService,
    load_service,
    model_version_of,
    parse_router_model,
)

__all__ = [
    "DEFAULT_DECISION_CACHE_SIZE",
    "FALLBACK_DEFAULT_BAR",
    "DecisionCache",
    "QualityModelLike",
    "RouteResult",
    "RoutingService",
    "load_service",
    "model_version_of",
    "parse_router_model",
]
