"""The quality model: learns a planted signal, is calibrated, and its artifact is safe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from router.catalog import Catalog, ModelSpec
from router.errors import ArtifactError, DataError, NotFittedError, PolicyError
from router.predictor import (
    ARTIFACT_FORMAT_VERSION,
    QualityModel,
    expected_calibration_error,
)

CATALOG = Catalog({"cheap": ModelSpec("cheap", 0.1, 0.4, 16_000),
                   "strong": ModelSpec("strong", 5.0, 15.0, 128_000)})
TOPICS = ["python code", "a poem", "history essay", "an equation", "french translation",
          "a summary"]


def planted_table(n_prompts: int = 600, seed: int = 0) -> pd.DataFrame:
    """Prompts with the word "hard" fail on the cheap model 80% of the time; the strong
    model succeeds 95% of the time everywhere. Output tokens: ~50 cheap, ~200 strong."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_prompts):
        hard = rng.random() < 0.4
        text = (f"{'hard ' if hard else ''}question {i} about {TOPICS[i % len(TOPICS)]}"
                f"{' with details' * int(rng.integers(0, 4))}")
        messages = json.dumps([{"role": "user", "content": text}])
        for model, p_success, tokens in (("cheap", 0.2 if hard else 0.9, 50),
                                         ("strong", 0.95, 200)):
            rows.append({"prompt_id": f"p{i}", "messages": messages, "model": model,
                         "quality": float(rng.random() < p_success), "input_tokens": 20.0,
                         "output_tokens": float(tokens + rng.integers(0, 10)),
                         "cost_usd": np.nan, "weight": 1.0})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def model() -> QualityModel:
    return QualityModel().fit(planted_table(), catalog=CATALOG, holdout_frac=0.2, seed=0)


@pytest.fixture(scope="module")
def saved(model: QualityModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return model.save(tmp_path_factory.mktemp("artifact") / "model")


def test_learns_that_hard_prompts_fail_on_the_cheap_model(model: QualityModel) -> None:
    pred = model.predict(["hard question 9001 about python code with details",
                          "question 9002 about python code with details"])
    assert pred.models == ("cheap", "strong")
    hard, easy = pred.quality
    assert hard[0] < 0.4 < 0.75 < easy[0]
    assert hard[1] > 0.85 and easy[1] > 0.85


def test_held_out_metrics_show_a_calibrated_model(model: QualityModel) -> None:
    metrics = model.metadata["metrics"]
    assert model.metadata["n_holdout_prompts"] == 120
    assert metrics["rows"] == 240
    assert metrics["ece"] < 0.08
    assert metrics["auc"] > 0.75
    assert 0 < metrics["brier"] < 0.2 and metrics["log_loss"] < 0.5
    assert metrics["output_tokens_mae"] < 15
    assert len(model.metadata["holdout_prompt_ids"]) == 120
    # Routing the held-out prompts at the default bar matches the strong model cheaper.
    assert 0.0 <= model.default_bar <= 1.0
    assert metrics["best_single_model"] == "strong"


def test_cost_is_input_plus_predicted_output_tokens_at_catalog_prices(
        model: QualityModel) -> None:
    pred = model.predict(["question 5 about a poem"])
    assert 40 < pred.output_tokens[0, 0] < 65 and 185 < pred.output_tokens[0, 1] < 215
    tokens_in = pred.input_tokens[0]
    expected = (tokens_in * np.array([0.1, 5.0]) + pred.output_tokens[0] * [0.4, 15.0]) / 1e6
    assert np.allclose(pred.cost_usd[0], expected)


def test_models_argument_selects_and_orders_columns(model: QualityModel) -> None:
    both = model.predict(["question 1 about a poem"])
    strong = model.predict(["question 1 about a poem"], models=["strong"])
    assert strong.models == ("strong",)
    assert strong.quality[0, 0] == both.quality[0, 1]
    with pytest.raises(PolicyError, match="unknown model.*gpt-9") as info:
        model.predict(["hi"], models=["gpt-9"])
    assert "cheap, strong" in (info.value.hint or "")


def test_with_prices_changes_cost_not_quality(model: QualityModel) -> None:
    repriced = model.with_prices({"cheap": (1.0, 4.0, None), "strong": (5.0, 15.0, None)})
    a, b = model.predict(["question 2"]), repriced.predict(["question 2"])
    assert np.array_equal(a.quality, b.quality)
    assert b.cost_usd[0, 0] > 5 * a.cost_usd[0, 0]


def test_save_load_round_trip_gives_identical_predictions(model: QualityModel,
                                                          saved: Path) -> None:
    assert sorted(p.name for p in saved.iterdir()) == [
        "catalog.json", "features.joblib", "linear.npz", "meta.json", "output_tokens.lgb",
        "quality.lgb"]
    loaded = QualityModel.load(saved)
    prompts = ["hard question 1 about a poem", "question 2 about an equation", "hello"]
    a, b = model.predict(prompts), loaded.predict(prompts)
    assert np.array_equal(a.quality, b.quality)
    assert np.array_equal(a.cost_usd, b.cost_usd)
    meta = json.loads((saved / "meta.json").read_text())
    assert meta["format_version"] == ARTIFACT_FORMAT_VERSION
    assert set(meta["files"]) == {"catalog.json", "features.joblib", "quality.lgb",
                                  "output_tokens.lgb", "linear.npz"}
    assert meta["linear_weight"] == 0.5
    assert loaded.version == meta["version_id"]
    assert loaded.catalog_["strong"].input_usd_per_mtok == 5
    assert not [p for p in saved.parent.iterdir() if p.name.startswith(".")]  # no temp left


def _copy(saved: Path, tmp_path: Path) -> Path:
    import shutil

    target = tmp_path / "copy"
    shutil.copytree(saved, target)
    return target


def test_corrupt_file_is_named(saved: Path, tmp_path: Path) -> None:
    art = _copy(saved, tmp_path)
    with (art / "quality.lgb").open("a") as handle:
        handle.write("tampered\n")
    with pytest.raises(ArtifactError, match=r"quality\.lgb: corrupt \(sha256") as info:
        QualityModel.load(art)
    assert "router train" in (info.value.hint or "")


def test_missing_file_is_named(saved: Path, tmp_path: Path) -> None:
    art = _copy(saved, tmp_path)
    (art / "features.joblib").unlink()
    with pytest.raises(ArtifactError, match=r"features\.joblib: missing"):
        QualityModel.load(art)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("format_version", 99,
     f"artifact format version 99, this router reads version {ARTIFACT_FORMAT_VERSION}"),
    # Version 1 artifacts (booster only, before the linear head) are refused, not
    # silently served without the head.
    ("format_version", 1,
     f"artifact format version 1, this router reads version {ARTIFACT_FORMAT_VERSION}"),
    ("feature_schema_version", 0, "feature schema version 0"),
])
def test_incompatible_versions_are_refused(saved: Path, tmp_path: Path, key: str,
                                           value: int, message: str) -> None:
    art = _copy(saved, tmp_path)
    meta = json.loads((art / "meta.json").read_text())
    meta[key] = value
    (art / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match=message):
        QualityModel.load(art)


def test_not_an_artifact(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="model folder not found"):
        QualityModel.load(tmp_path / "nope")
    with pytest.raises(ArtifactError, match="meta.json: missing"):
        QualityModel.load(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt, not valid JSON"):
        QualityModel.load(tmp_path)


def test_save_refuses_to_replace_a_folder_that_is_not_an_artifact(
        model: QualityModel, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(ArtifactError, match="not a model artifact; refusing"):
        model.save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_save_replaces_an_older_artifact(model: QualityModel, saved: Path,
                                         tmp_path: Path) -> None:
    art = _copy(saved, tmp_path)
    (art / "quality.lgb").write_text("old")
    model.save(art)
    assert QualityModel.load(art).models_ == ("cheap", "strong")


def test_unfitted_model_says_to_fit_or_load() -> None:
    with pytest.raises(NotFittedError, match="not fitted") as info:
        QualityModel().predict(["hi"])
    assert "QualityModel.load" in (info.value.hint or "")


def test_bad_tables_are_refused_with_the_row() -> None:
    table = planted_table(20)
    table.loc[3, "quality"] = 1.5
    with pytest.raises(DataError, match="row 4: quality 1.5 is not in"):
        QualityModel().fit(table, catalog=CATALOG)
    with pytest.raises(DataError, match="missing column.*quality"):
        QualityModel().fit(table.drop(columns="quality"), catalog=CATALOG)


def test_unpriced_model_is_named() -> None:
    table = planted_table(20)
    table.loc[table["model"] == "cheap", "model"] = "mystery"
    with pytest.raises(Exception, match="mystery"):
        QualityModel().fit(table, catalog=CATALOG)


def test_graded_labels_and_no_output_tokens_use_medians_or_cost() -> None:
    table = planted_table(80)
    table["quality"] = np.where(table["quality"] > 0, 0.8, 0.3)
    table["output_tokens"] = np.nan
    table["cost_usd"] = table["input_tokens"] * np.where(table["model"] == "cheap", 0.1, 5) / 1e6
    fitted = QualityModel().fit(table, catalog=CATALOG)
    pred = fitted.predict(["question 3 about a poem"])
    assert ((pred.quality > 0.25) & (pred.quality < 0.85)).all()
    # Priced on input only in the table, so no output tokens are predicted either.
    assert np.allclose(pred.output_tokens, 0.0)


def test_ece_of_a_perfectly_calibrated_predictor_is_zero() -> None:
    y = np.array([0, 1, 0, 1, 1, 1, 0, 0])
    assert expected_calibration_error(y, np.full(8, 0.5)) == 0.0
    assert expected_calibration_error(np.ones(4), np.zeros(4)) == 1.0


def test_linear_head_is_blended_half_and_half_by_default(model: QualityModel) -> None:
    prompts = ["hard question 9001 about python code", "question 9002 about a poem"]
    blend = model.predict(prompts).quality
    booster_only = _with_weight(model, 0.0).predict(prompts).quality
    linear_only = _with_weight(model, 1.0).predict(prompts).quality
    assert np.allclose(blend, 0.5 * booster_only + 0.5 * linear_only)
    # The linear head alone also learned the planted word.
    assert linear_only[0, 0] < 0.5 < linear_only[1, 0]


def _with_weight(model: QualityModel, weight: float) -> QualityModel:
    clone = object.__new__(QualityModel)
    clone.__dict__.update(model.__dict__)
    clone.linear_weight = weight
    return clone


def test_linear_weight_zero_fits_and_saves_no_head(tmp_path: Path) -> None:
    fitted = QualityModel(linear_weight=0.0).fit(planted_table(200), catalog=CATALOG)
    assert fitted.linear_coef_ is None
    art = fitted.save(tmp_path / "m")
    assert not (art / "linear.npz").exists()
    loaded = QualityModel.load(art)
    assert loaded.linear_weight == 0.0
    prompts = ["hard question 1 about a poem", "question 2"]
    assert np.array_equal(loaded.predict(prompts).quality, fitted.predict(prompts).quality)


def test_linear_head_round_trips_and_a_corrupt_head_is_named(
        model: QualityModel, saved: Path, tmp_path: Path) -> None:
    loaded = QualityModel.load(saved)
    assert loaded.linear_coef_.dtype == np.float32
    assert loaded.linear_coef_.shape == (len(model.features_.buckets_), 2)
    assert np.array_equal(loaded.linear_coef_, model.linear_coef_)
    art = _copy(saved, tmp_path)
    (art / "linear.npz").unlink()
    with pytest.raises(ArtifactError, match=r"linear\.npz: missing"):
        QualityModel.load(art)


def test_graded_labels_train_the_linear_head_on_soft_labels() -> None:
    table = planted_table(200)
    # Graded: the cheap model scores 0.1 on "hard" prompts, 0.9 elsewhere.
    hard = table["messages"].str.contains("hard")
    table["quality"] = np.where(table["model"] == "cheap", np.where(hard, 0.1, 0.9), 0.7)
    fitted = QualityModel(linear_weight=1.0).fit(table, catalog=CATALOG)
    pred = fitted.predict(["hard question 1 about a poem", "question 2 about a poem"])
    assert pred.quality[0, 0] < 0.35 and pred.quality[1, 0] > 0.65
    # A model with one constant graded score: a constant prediction near it.
    assert abs(pred.quality[0, 1] - 0.7) < 0.05 and abs(pred.quality[1, 1] - 0.7) < 0.05


# ------------------------------------------------- the one-conversation hot path
SERVING_PROMPTS = [
    "hard question 9001 about python code with details",
    "question 2 about a poem",
    "",
    "zzz qqq words never seen in training",
    [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hard an equation"}],
    "question 5 about a summary with details with details",
]


def _reference(model: QualityModel, prompts: list, models: list[str] | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """quality, output tokens, cost as the documented formulas give them, through
    LightGBM's public `Booster.predict` (what `predict` computed before its fast path)."""
    from router.conversation import parse_conversation
    from router.predictor import design_rows

    convs = [parse_conversation(p) for p in prompts]
    names = list(models or model.models_)
    codes = np.array([model.models_.index(m) for m in names])
    n, m = len(convs), len(codes)
    prompt_x, tfidf = model.features_.transform_with_tfidf(convs)
    x = design_rows(prompt_x, np.repeat(np.arange(n), m), np.tile(codes, n), model.descriptors_)
    booster = model.quality_.predict(x, num_threads=1).reshape(n, m)
    w = model.linear_weight if model.linear_coef_ is not None else 0.0
    logits = np.array([[model.linear_intercept_[c] + (vals @ model.linear_coef_[pos, c]
                                                      if len(pos) else 0.0)
                        for c in codes] for pos, vals in tfidf]) if w else 0.0
    quality = np.clip((1 - w) * booster + w / (1 + np.exp(-logits)), 0, 1)
    medians = [model.output_medians_[name] for name in names]
    tokens = np.tile([model.default_output_tokens if v is None else v for v in medians], (n, 1))
    learned = np.tile([v is not None for v in medians], n)
    if model.output_tokens_ is not None and learned.any():
        tokens.ravel()[learned] = np.maximum(
            np.expm1(model.output_tokens_.predict(x[learned], num_threads=1)), 0)
    price_in = np.array([model.catalog_[name].input_usd_per_mtok for name in names])
    price_out = np.array([model.catalog_[name].output_usd_per_mtok for name in names])
    input_tokens = np.array([c.input_tokens for c in convs], dtype=np.float64)
    return quality, tokens, (input_tokens[:, None] * price_in + tokens * price_out) / 1e6


@pytest.mark.parametrize("models", [None, ["strong"], ["strong", "cheap"]])
def test_one_conversation_equals_the_batch_and_the_reference(
        model: QualityModel, models: list[str] | None) -> None:
    batch = model.predict(SERVING_PROMPTS, models=models)
    quality, tokens, cost = _reference(model, SERVING_PROMPTS, models)
    assert batch.models == tuple(models or ("cheap", "strong"))
    np.testing.assert_allclose(batch.quality, quality, rtol=0, atol=1e-6)
    np.testing.assert_allclose(batch.output_tokens, tokens, rtol=1e-6)
    np.testing.assert_allclose(batch.cost_usd, cost, rtol=1e-6)
    for i, prompt in enumerate(SERVING_PROMPTS):
        one = model.predict([prompt], models=models)
        np.testing.assert_allclose(one.quality[0], batch.quality[i], rtol=0, atol=1e-6)
        np.testing.assert_allclose(one.output_tokens[0], batch.output_tokens[i], rtol=1e-6)
        np.testing.assert_allclose(one.cost_usd[0], batch.cost_usd[i], rtol=1e-6)


def test_models_never_seen_answering_keep_the_default_length(model: QualityModel) -> None:
    clone = _with_weight(model, model.linear_weight)
    clone.output_medians_ = {**model.output_medians_, "strong": None}
    pred = clone.predict(SERVING_PROMPTS)
    assert (pred.output_tokens[:, 1] == clone.default_output_tokens).all()
    np.testing.assert_allclose(pred.output_tokens, _reference(clone, SERVING_PROMPTS)[1],
                               rtol=1e-6)
    # The original's cached plan is untouched by the clone's.
    assert (model.predict(SERVING_PROMPTS).output_tokens[:, 1] < 250).all()


def test_prices_and_weights_changed_after_a_prediction_are_used(model: QualityModel) -> None:
    before = model.predict(["question 1"])
    dearer = model.with_prices({"cheap": (1.0, 4.0, 16_000), "strong": (5.0, 15.0, 128_000)})
    after = dearer.predict(["question 1"])
    assert after.cost_usd[0, 0] > 5 * before.cost_usd[0, 0]
    assert np.array_equal(after.quality, before.quality)
    booster_only = _with_weight(model, 0.0).predict(SERVING_PROMPTS).quality
    np.testing.assert_allclose(booster_only, _reference(_with_weight(model, 0.0),
                                                        SERVING_PROMPTS)[0], atol=1e-6)


def test_concurrent_predictions_from_threads_match_serial_ones(model: QualityModel) -> None:
    from concurrent.futures import ThreadPoolExecutor

    serial = [model.predict([p]).quality for p in SERVING_PROMPTS] * 20
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda p: model.predict([p]).quality, SERVING_PROMPTS * 20))
    assert all(np.array_equal(a, b) for a, b in zip(serial, parallel, strict=True))


def test_a_model_that_has_predicted_pickles_and_predicts_the_same(model: QualityModel) -> None:
    import pickle

    before = model.predict(SERVING_PROMPTS)
    copy = pickle.loads(pickle.dumps(model))
    assert "_serving_plan" not in copy.__dict__
    assert np.array_equal(copy.predict(SERVING_PROMPTS).quality, before.quality)


def test_the_bar_is_calibrated_on_held_out_prompts_stored_and_reloaded(
        model: QualityModel, saved: Path) -> None:
    calibration = model.bar_calibration
    assert calibration.source == "held-out prompts" and calibration.n_prompts == 120
    # The default bar: the best single model's mean quality on those prompts.
    assert model.default_bar == pytest.approx(model.metadata["metrics"]["best_single_quality"],
                                              abs=1e-4)
    assert QualityModel.load(saved).bar_calibration == calibration
    # A higher bar never buys lower mean quality or lower mean cost on those prompts.
    q = [calibration.expected_at(b)[0] for b in np.linspace(0, 1, 51)]
    c = [calibration.expected_at(b)[1] for b in np.linspace(0, 1, 51)]
    assert np.all(np.diff(q) >= 0) and np.all(np.diff(c) >= 0)
    # Without held-out prompts the validation prompts calibrate it.
    plain = QualityModel(linear_weight=0.0).fit(planted_table(200), catalog=CATALOG, seed=0)
    assert plain.bar_calibration.source == "validation prompts"


def test_refit_folds_the_held_out_prompts_in_and_keeps_what_they_measured(
        model: QualityModel) -> None:
    unseen, refit = model, QualityModel(refit=True).fit(planted_table(), catalog=CATALOG,
                                                        holdout_frac=0.2, seed=0)
    meta, kept = refit.metadata, unseen.metadata
    assert meta["refit_on_all_prompts"] and "refit_on_all_prompts" not in kept
    # Served: trained on every prompt. Measured: by the fit that never saw 120 of them.
    assert meta["n_train_prompts"] + meta["n_valid_prompts"] == meta["n_prompts"] == 600
    assert kept["n_train_prompts"] + kept["n_valid_prompts"] == 480
    for key in ("metrics", "default_bar", "bar_calibration", "holdout_prompt_ids"):
        assert meta[key] == kept[key], key
    assert not np.allclose(refit.predict(SERVING_PROMPTS).quality,
                           unseen.predict(SERVING_PROMPTS).quality)


def test_lightgbm_is_a_version_the_fast_predictor_was_checked_against(
        model: QualityModel) -> None:
    # FastBooster calls LightGBM's private C API (`_LIB`, `_safe_call`,
    # LGBM_BoosterPredictForMat): a release outside the pinned range must fail here,
    # not in production.
    from importlib.metadata import requires, version

    from packaging.requirements import Requirement

    from router.predictor import FastBooster

    [pin] = [Requirement(r) for r in requires("cost-aware-router")
             if Requirement(r).name == "lightgbm"]
    assert pin.specifier.contains(version("lightgbm")), (version("lightgbm"), str(pin))
    assert not list(pin.specifier.filter(["99.0"])), "the pin needs an upper bound"
    x = np.random.default_rng(0).random((7, model.quality_.num_feature()), dtype=np.float32)
    fast = FastBooster(model.quality_).predict(x, 1)
    assert np.array_equal(fast, model.quality_.predict(x, num_threads=1))
