"""Retrain on logged outcomes, gate the challenger, register it, promote it if it is not worse.

Logged traffic shows only the served model's outcome for each request, and the
serving policy chose that model *because* of the request, so the logged rows are
a biased sample of (request, model) pairs: cheap models are seen on easy
requests, strong models on hard ones. Each row is therefore weighted by the
inverse of the logged propensity (clipped, so a handful of rare exploration
rows cannot dominate), which makes the weighted sample look as if models had
been assigned at random. The exploration share of the serving policy (the
`ROUTER_EXPLORATION` setting of `router serve`) is what
keeps those propensities away from zero.

Rows used (and the others counted, so an operator sees why a log gave few rows):
requests with feedback (the latest feedback per request wins), a successful
upstream call, the conversation text (privacy-mode rows log no text and are
skipped: features need it), a propensity in (0, 1], not served from cache.
Each row keeps the request's logged latency (`latency_ms`, the whole request)
and time to first byte from the provider (as `ttft_ms`), the canonical table's
optional latency columns.

The most recent `holdout_frac` of the usable rows (by time) is held out for the
champion/challenger gate's off-policy comparison; the challenger is trained on
the older rows plus any base outcome tables.

A retrain's options are one `RetrainSettings`, validated when it is built, so
`router retrain`, its schedule and `router simulate` share the defaults and the
errors.
"""

from importlib import import_module
from typing import Any

from training.retrain._settings import DEFAULT_MAX_WEIGHT, RetrainSettings

# Everything else needs pandas, so it is loaded on first use: the CLI reads the
# settings' defaults for every `router` command's --help and start-up.
_LAZY = {
    "RowCounts": "_rows", "build_training_rows": "_rows", "canonical_rows": "_rows",
    "export_log_partitions": "_rows", "load_log": "_rows", "split_recent": "_rows",
    "FitFunction": "_run", "RetrainResult": "_run", "retrain": "_run",
}

__all__ = [
    "DEFAULT_MAX_WEIGHT",
    "FitFunction",
    "RetrainResult",
    "RetrainSettings",
    "RowCounts",
    "build_training_rows",
    "canonical_rows",
    "export_log_partitions",
    "load_log",
    "retrain",
    "split_recent",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
