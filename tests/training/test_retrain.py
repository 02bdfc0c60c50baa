"""Retraining: training rows from a real outcome log, weighting, skips, the full retrain."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from router.errors import ConfigError, DataError
from router.outcome_log import FeedbackRecord, RequestRecord, open_outcome_log
from training.retrain import build_training_rows, load_log, split_recent

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


def _conv(text: str) -> str:
    return json.dumps([{"role": "user", "content": text}])


def write_log(path: Path, records: list[RequestRecord], feedback: list[FeedbackRecord]) -> str:
    async def go() -> None:
        store = open_outcome_log(path, flush_interval_s=0.01)
        await store.start()
        for r in records:
            store.log(r)
        await store.flush()
        for fb in feedback:
            assert await store.add_feedback(fb)
        await store.close()

    asyncio.run(go())
    return str(path)


@pytest.fixture()
def small_log(tmp_path: Path) -> str:
    t0 = NOW.timestamp()
    day = 86400.0
    records = [
        # used: exploited choice, propensity 0.9
        RequestRecord("r1", ts=t0 - 1 * day, conversation=_conv("add 2 and 2"),
                      chosen_model="cheap", served_model="cheap", propensity=0.9,
                      input_tokens=5, output_tokens=3, cost_usd=0.001),
        # used: explored choice, propensity 0.01 -> weight 100, clipped to 20
        RequestRecord("r2", ts=t0 - 2 * day, conversation=_conv("prove the theorem"),
                      chosen_model="strong", served_model="strong", propensity=0.01,
                      explored=True, input_tokens=6, output_tokens=300, cost_usd=0.02),
        # used, served by a fallback
        RequestRecord("r3", ts=t0 - 3 * day, conversation=_conv("summarise this"),
                      chosen_model="cheap", served_model="mid", propensity=0.5,
                      input_tokens=6, output_tokens=50, cost_usd=0.004),
        # privacy mode: no text
        RequestRecord("r4", ts=t0 - 1 * day, conversation=None, conversation_hash="abc",
                      chosen_model="cheap", served_model="cheap", propensity=0.9),
        # no feedback
        RequestRecord("r5", ts=t0 - 1 * day, conversation=_conv("hello"),
                      chosen_model="cheap", served_model="cheap", propensity=0.9),
        # upstream failed
        RequestRecord("r6", ts=t0 - 1 * day, conversation=_conv("x"), chosen_model="cheap",
                      served_model="cheap", propensity=0.9, status=502),
        # cache hit
        RequestRecord("r7", ts=t0 - 1 * day, conversation=_conv("add 2 and 2"),
                      chosen_model="cheap", served_model="cheap", propensity=0.9,
                      cache_hit=True),
        # outside a 7-day window
        RequestRecord("r8", ts=t0 - 30 * day, conversation=_conv("old"),
                      chosen_model="cheap", served_model="cheap", propensity=0.9),
    ]
    feedback = [FeedbackRecord(r.request_id, quality=1.0, ts=r.ts + 1)
                for r in records if r.request_id != "r5"]
    # A later thumbs-down on r1 replaces the first score.
    feedback.append(FeedbackRecord("r1", quality=0.0, source="thumbs", ts=t0 - day + 60))
    return write_log(tmp_path / "outcomes.db", records, feedback)


def test_rows_from_a_real_log_are_weighted_and_skips_are_counted(small_log: str) -> None:
    export = load_log(small_log, since=timedelta(days=7), now=NOW)
    rows, counts = build_training_rows(export, since=timedelta(days=7), now=NOW,
                                       max_weight=20.0)
    assert counts.to_dict() == {
        "requests": 7, "outside_window": 0, "no_feedback": 1, "failed": 1, "cache_hit": 1,
        "no_text": 1, "bad_propensity": 0, "used": 3, "fallback": 1, "clipped": 1}
    assert rows["prompt_id"].tolist() == ["r3", "r2", "r1"], "oldest first"
    by_id = rows.set_index("prompt_id")
    assert by_id.loc["r1", "quality"] == 0.0, "the latest feedback wins"
    assert by_id.loc["r1", "weight"] == pytest.approx(1 / 0.9)
    assert by_id.loc["r2", "weight"] == 20.0, "1/0.01 clipped at max_weight"
    assert by_id.loc["r3", "model"] == "mid" and bool(by_id.loc["r3", "fallback"])
    assert by_id.loc["r2", "cost_usd"] == 0.02 and by_id.loc["r2", "output_tokens"] == 300
    assert json.loads(by_id.loc["r2", "messages"]) == [
        {"role": "user", "content": "prove the theorem"}]
    assert counts.format().startswith("3 of 7 logged requests used (skipped: no feedback 1, "
                                      "failed 1, cache hit 1, no text 1)")


def test_the_window_drops_old_requests(small_log: str) -> None:
    export = load_log(small_log)
    _, counts = build_training_rows(export, since=timedelta(days=7), now=NOW)
    assert counts.requests == 8 and counts.outside_window == 1


def test_raw_feedback_rows_can_be_joined_instead(small_log: str) -> None:
    requests = load_log(small_log).drop(columns=["feedback_latest", "feedback_quality"])
    feedback = pd.DataFrame({"request_id": ["r1", "r1"], "ts": [1.0, 2.0],
                             "quality": [0.2, 0.7]})
    rows, counts = build_training_rows(requests, feedback)
    assert rows["quality"].tolist() == [0.7] and counts.no_feedback == 7


def test_split_recent_holds_out_the_newest_rows() -> None:
    rows = pd.DataFrame({"timestamp": range(10)})
    train, recent = split_recent(rows, 0.3)
    assert train["timestamp"].tolist() == list(range(7))
    assert recent["timestamp"].tolist() == [7, 8, 9]


def test_a_missing_log_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no outcome log at .*nope.db"):
        load_log(str(tmp_path / "nope.db"))


def test_export_without_ids_is_refused() -> None:
    with pytest.raises(DataError, match="outcome log export: missing column 'request_id'"):
        build_training_rows(pd.DataFrame({"ts": [time.time()]}))
