"""Expected latency per (request, model): learned, stored, reloaded, absent, thin."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from router.catalog import Catalog, ModelSpec
from router.errors import ArtifactError
from router.predictor import (
    LATENCY_QUANTILE,
    MIN_LATENCY_ROWS,
    QualityModel,
)

CATALOG = Catalog({"fast": ModelSpec("fast", 0.1, 0.4, 16_000),
                   "slow": ModelSpec("slow", 0.2, 0.8, 16_000),
                   "big": ModelSpec("big", 5.0, 15.0, 128_000)})
# (ms to the first token, ms per output token)
TOPICS = ["the sea", "taxes", "python", "history", "birds"]
SPEED = {"fast": (200.0, 5.0), "slow": (900.0, 40.0), "big": (500.0, 20.0)}


def timed_table(n_prompts: int = 500, seed: int = 0, *, models: tuple[str, ...] = tuple(SPEED),
                timed: dict[str, int] | None = None) -> pd.DataFrame:
    """Long prompts ("essay") get long answers; latency = first token + tokens x per-token
    time, lognormal noise. `timed` caps how many rows of a model carry a latency."""
    rng = np.random.default_rng(seed)
    rows = []
    seen = dict.fromkeys(models, 0)
    for i in range(n_prompts):
        long = rng.random() < 0.5
        text = (f"{'write a long essay about' if long else 'one word answer about'} "
                f"{TOPICS[i % len(TOPICS)]}")
        messages = json.dumps([{"role": "user", "content": text}])
        for model in models:
            first, per_token = SPEED[model]
            tokens = float((400 if long else 20) + rng.integers(0, 10))
            ttft = first * np.exp(rng.normal(0, 0.1))
            latency = ttft + tokens * per_token * np.exp(rng.normal(0, 0.1))
            keep = timed is None or seen[model] < timed.get(model, n_prompts)
            seen[model] += 1
            rows.append({"prompt_id": f"p{i}", "messages": messages, "model": model,
                         "quality": float(rng.random() < 0.8), "input_tokens": 20.0,
                         "output_tokens": tokens, "cost_usd": np.nan, "weight": 1.0,
                         "latency_ms": latency if keep else np.nan,
                         "ttft_ms": ttft if keep else np.nan})
    return pd.DataFrame(rows)


PROMPTS = ["write a long essay about the sea", "one word answer about the sea"]


@pytest.fixture(scope="module")
def model() -> QualityModel:
    return QualityModel().fit(timed_table(), catalog=CATALOG, holdout_frac=0.2, seed=0)


def test_latency_follows_the_model_and_the_answer_length(model: QualityModel) -> None:
    pred = model.predict(PROMPTS)
    latency = dict(zip(pred.models, pred.latency_ms.T, strict=True))
    ttft = dict(zip(pred.models, pred.ttft_ms.T, strict=True))
    # Long answers take longer on every model; the slow model is slowest.
    assert all(latency[m][0] > 2 * latency[m][1] for m in SPEED)
    assert latency["slow"][0] > latency["big"][0] > latency["fast"][0]
    # A P95 of 400 tokens at 40 ms each after ~900 ms: above the median's 16.9 s.
    assert 16_000 < latency["slow"][0] < 22_000
    # Time to first token does not depend on the answer's length.
    assert ttft["slow"][0] == pytest.approx(ttft["slow"][1], rel=0.1)
    assert 800 < ttft["slow"][0] < 1300 and ttft["fast"][0] < 300
    assert model.metadata["latency_model"] == model.metadata["ttft_model"] == "booster"
    assert model.predicts_latency


def test_held_out_latency_error_is_measured(model: QualityModel) -> None:
    metrics = model.metadata["metrics"]
    assert metrics["latency_rows"] == 100 * len(SPEED)
    assert metrics["latency_log_mae"] < 0.15
    # The quantile is calibrated: about 39 held-out calls in 40 stay under it.
    assert LATENCY_QUANTILE == 0.975
    assert 0.92 <= metrics["latency_quantile_coverage"] <= 1.0
    assert 0.92 <= metrics["ttft_quantile_coverage"] <= 1.0


def test_one_conversation_equals_its_row_in_a_batch(model: QualityModel) -> None:
    batch = model.predict(PROMPTS)
    for i, prompt in enumerate(PROMPTS):
        one = model.predict([prompt])
        np.testing.assert_array_equal(one.latency_ms[0], batch.latency_ms[i])
        np.testing.assert_array_equal(one.ttft_ms[0], batch.ttft_ms[i])
    chosen = model.predict(PROMPTS, models=["big", "fast"])
    np.testing.assert_array_equal(chosen.latency_ms,
                                  batch.latency_ms[:, [batch.models.index("big"),
                                                       batch.models.index("fast")]])


def test_latency_is_stored_and_reloaded(model: QualityModel, tmp_path: Path) -> None:
    folder = model.save(tmp_path / "m")
    assert (folder / "latency.lgb").is_file() and (folder / "ttft.lgb").is_file()
    loaded = QualityModel.load(folder)
    before, after = model.predict(PROMPTS), loaded.predict(PROMPTS)
    np.testing.assert_array_equal(before.latency_ms, after.latency_ms)
    np.testing.assert_array_equal(before.ttft_ms, after.ttft_ms)
    assert loaded.metadata["latency_model"] == "booster"


def test_previous_format_loads_without_latency(model: QualityModel, tmp_path: Path) -> None:
    folder = model.save(tmp_path / "m")
    meta = json.loads((folder / "meta.json").read_text())
    # What format 3 wrote: no timing heads, no latency files.
    meta["format_version"] = 3
    del meta["timing_heads"]
    for name in ("latency.lgb", "ttft.lgb"):
        del meta["files"][name]
        (folder / name).unlink()
    (folder / "meta.json").write_text(json.dumps(meta))
    loaded = QualityModel.load(folder)
    pred = loaded.predict(PROMPTS)
    assert pred.latency_ms is None and pred.ttft_ms is None
    assert not loaded.predicts_latency
    np.testing.assert_array_equal(pred.quality, model.predict(PROMPTS).quality)


def test_a_head_that_does_not_fit_the_models_is_refused(model: QualityModel,
                                                       tmp_path: Path) -> None:
    folder = model.save(tmp_path / "m")
    meta = json.loads((folder / "meta.json").read_text())
    meta["timing_heads"]["latency.lgb"]["offset"] = [0.1]
    (folder / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="latency head has"):
        QualityModel.load(folder)


def test_a_missing_latency_booster_is_named(model: QualityModel, tmp_path: Path) -> None:
    folder = model.save(tmp_path / "m")
    (folder / "latency.lgb").unlink()
    with pytest.raises(ArtifactError, match=r"latency\.lgb: missing"):
        QualityModel.load(folder)


def test_no_latency_in_the_table_means_none() -> None:
    table = timed_table(200).drop(columns=["latency_ms", "ttft_ms"])
    fitted = QualityModel().fit(table, catalog=CATALOG)
    pred = fitted.predict(PROMPTS)
    assert pred.latency_ms is None and pred.ttft_ms is None
    assert fitted.metadata["latency_model"] == fitted.metadata["ttft_model"] == "none"
    assert not fitted.predicts_latency
    # An empty latency column is no latency either.
    empty = timed_table(200).assign(latency_ms=np.nan, ttft_ms=np.nan)
    assert QualityModel().fit(empty, catalog=CATALOG).predict(PROMPTS).latency_ms is None


def test_thin_models_get_their_own_p95_and_untimed_ones_the_slowest() -> None:
    thin = MIN_LATENCY_ROWS // 2
    table = timed_table(400, timed={"slow": thin, "big": 0})
    fitted = QualityModel().fit(table, catalog=CATALOG)
    pred = fitted.predict(PROMPTS)
    latency = dict(zip(pred.models, pred.latency_ms.T, strict=True))
    slow_rows = table[(table["model"] == "slow") & table["latency_ms"].notna()]
    expected = np.quantile(slow_rows["latency_ms"], LATENCY_QUANTILE)
    # Too few rows for the booster: the model's own P95, the same for every prompt.
    np.testing.assert_allclose(latency["slow"], expected)
    # Never timed: treated as slow as the slowest timed model, not as fast.
    np.testing.assert_allclose(latency["big"], max(expected, latency["fast"].max()))
    # The model with enough rows still gets per-prompt predictions.
    assert latency["fast"][0] > 2 * latency["fast"][1]
    assert fitted.metadata["latency_model"] == "booster"


def test_only_thin_models_fit_no_booster(tmp_path: Path) -> None:
    table = timed_table(300, timed=dict.fromkeys(SPEED, 30))
    fitted = QualityModel().fit(table, catalog=CATALOG)
    assert fitted.metadata["latency_model"] == "per_model"
    folder = fitted.save(tmp_path / "m")
    assert not (folder / "latency.lgb").exists()
    np.testing.assert_array_equal(QualityModel.load(folder).predict(PROMPTS).latency_ms,
                                  fitted.predict(PROMPTS).latency_ms)
