"""Records and stores the outcome-log tests share (fixtures are in conftest.py)."""

from __future__ import annotations

import os
from pathlib import Path

from router.outcome_log import OutcomeLog, RequestRecord

__all__ = ["POSTGRES_URL", "REPO_ROOT", "full_record", "row_count"]

POSTGRES_URL = os.environ.get("ROUTER_TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")
REPO_ROOT = Path(__file__).resolve().parents[3]


def full_record(request_id: str = "req-1", ts: float = 1_700_000_000.25) -> RequestRecord:
    """A record with every field set to a non-default value."""
    return RequestRecord(
        request_id=request_id, ts=ts, client_key_id="k_3f2a", conversation_hash="ab" * 32,
        conversation='[{"role":"user","content":"Héllo, wörld"}]', feature_schema_version=3,
        model_version="v20250101-030000-1a2b3c", quality_bar=0.8, utility_lambda=12.5,
        candidates=[{"model": "small", "expected_quality": 0.71, "expected_cost_usd": 0.0001},
                    {"model": "large", "expected_quality": 0.93, "expected_cost_usd": 0.004}],
        chosen_model="large", served_model="small", propensity=0.9, explored=True,
        fallback_path=[{"model": "large", "status": 503, "error": "overloaded"},
                       {"model": "small", "status": 200, "error": None}],
        cache_hit=True, input_tokens=120, output_tokens=45, cost_usd=0.00123, ttfb_ms=210.5,
        latency_ms=980.25, status=200, error="upstream 503 on large", endpoint="route",
        stream=True)


def row_count(log: OutcomeLog) -> int:
    return len(log.export_dataframe(joined=False))
