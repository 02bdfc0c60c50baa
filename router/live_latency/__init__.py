"""Live latency: how much slower than the artifact expects each model answers now.

`LiveLatency` turns the latencies the router observes on its own upstream calls
into a per-model slowdown factor (recent P90 over the model's own baseline P90,
never below 1); a decision multiplies the artifact's expected latencies by it
(`blend`), so a provider that slows down loses latency-limited traffic within
seconds, without a retrain. `SharedLiveLatency` shares the factors between
replicas through Redis, the way open circuit breakers are shared.
"""

from router.live_latency._sync import (
    SharedLiveLatency,
)
from router.live_latency._tracker import (
    LiveLatency,
    blend,
)

__all__ = [
    "LiveLatency",
    "SharedLiveLatency",
    "blend",
]
