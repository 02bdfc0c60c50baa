"""`training.train.train`: fits, evaluates on held-out prompts, saves a self-describing artifact."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from router.catalog import load_catalog
from router.predictor import QualityModel
from training.data import load_outcomes, table_fingerprint, write_outcomes
from training.demo_data import generate_demo
from training.train import train


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    path = write_outcomes(generate_demo(300, 0, load_catalog()),
                          tmp_path_factory.mktemp("demo") / "demo.csv")
    return load_outcomes(path, catalog=load_catalog())


@pytest.fixture(scope="module")
def trained(demo: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory
            ) -> tuple[QualityModel, Path]:
    out = tmp_path_factory.mktemp("train") / "model"
    return train(demo, out, catalog=load_catalog(), holdout_frac=0.2, seed=3,
                 progress=False), out


def test_metadata_describes_the_version(demo: pd.DataFrame,
                                        trained: tuple[QualityModel, Path]) -> None:
    model, out = trained
    meta = json.loads((out / "meta.json").read_text())
    assert re.fullmatch(r"v\d{8}-\d{6}-[0-9a-f]{8}", meta["version_id"])
    assert meta["training_data_hash"] == table_fingerprint(demo)
    assert meta["training_rows"] == len(demo) == meta["n_rows"]
    assert meta["models"] == list(model.models_)
    assert set(meta["models"]) == set(demo["model"])
    assert set(meta["library_versions"]) == {"python", "numpy", "pandas", "scikit-learn",
                                             "lightgbm"}
    assert meta["n_holdout_prompts"] == 60 and len(meta["holdout_prompt_ids"]) == 60
    metrics = meta["metrics"]
    for key in ("log_loss", "brier", "ece", "output_tokens_mae"):
        assert np.isfinite(metrics[key])
    assert metrics["ece"] < 0.1
    assert 0.0 <= meta["default_bar"] <= 1.0 and meta["default_bar_source"]


def test_saved_artifact_predicts_like_the_returned_model(
        demo: pd.DataFrame, trained: tuple[QualityModel, Path]) -> None:
    model, out = trained
    prompts = [json.loads(m) for m in demo["messages"].unique()[:5]]
    a, b = model.predict(prompts), QualityModel.load(out).predict(prompts)
    assert np.array_equal(a.quality, b.quality) and np.array_equal(a.cost_usd, b.cost_usd)
    assert a.quality.shape == (5, len(model.models_))


def test_same_data_and_seed_give_the_same_model(demo: pd.DataFrame, tmp_path: Path,
                                                trained: tuple[QualityModel, Path]) -> None:
    model, _ = trained
    again = train(demo, tmp_path / "again", catalog=load_catalog(), holdout_frac=0.2, seed=3,
                  progress=False)
    assert again.metadata["version_id"][-8:] == model.metadata["version_id"][-8:]
    prompts = ["Summarise this paragraph.", "Prove Fermat's little theorem."]
    assert np.array_equal(again.predict(prompts).quality, model.predict(prompts).quality)
