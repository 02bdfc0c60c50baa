"""`router train`, `router predict` and `router route` end to end on a small table."""

from __future__ import annotations

import contextlib
import io
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from router.catalog import load_catalog
from router.cli import main
from router.predictor import QualityModel
from training.data import write_outcomes
from training.demo_data import generate_demo


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli")
    write_outcomes(generate_demo(200, 1, load_catalog()), root / "demo.csv")
    return root


@pytest.fixture(scope="module")
def artifact(workdir: Path) -> Path:
    code = main(["train", "--data", str(workdir / "demo.csv"), "--out",
                 str(workdir / "model"), "--holdout-frac", "0.2", "--seed", "1"])
    assert code == 0
    return workdir / "model"


def test_train_prints_a_summary(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--data", str(workdir / "demo.csv"), "--out",
                 str(workdir / "again"), "--holdout-frac", "0.25"])
    out = capsys.readouterr().out
    assert code == 0
    assert "trained on 1,600 rows: 200 prompts x 8 models" in out
    assert "50 held out" in out and "held out: log loss" in out and "ECE" in out
    assert "default bar" in out and f"to {workdir / 'again'}" in out
    # 150 training prompts: too few timed rows per model for a latency booster.
    assert ("latency: P97.5 from each model's own P97.5 (too few timed rows for a booster); "
            "time to first token: per_model; held out: ") in out
    assert (workdir / "again" / "meta.json").is_file()


def test_train_without_held_out_prompts_says_where_the_bar_was_measured(
        workdir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--data", str(workdir / "demo.csv"), "--out", str(tmp_path / "m"),
                 "--holdout-frac", "0"])
    out = capsys.readouterr().out
    assert code == 0, "it used to crash: KeyError 'log_loss'"
    assert "held out: nothing (--holdout-frac 0), no metrics" in out
    assert "best single model on validation prompts (as the bar's calibration" in out


def test_predict_writes_one_decision_per_prompt_and_bar(
        artifact: Path, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, scores_path = workdir / "routes.csv", workdir / "scores.csv"
    code = main(["predict", "--model", str(artifact), "--data", str(workdir / "demo.csv"),
                 "--bars", "0.5,0.9", "--out", str(out), "--scores", str(scores_path)])
    assert code == 0
    assert "wrote 400 decisions (200 prompts x 2 bars, 8 candidate models)" in \
        capsys.readouterr().out
    routes = pd.read_csv(out, dtype={"prompt_id": str})
    assert list(routes.columns) == ["prompt_id", "bar", "model", "expected_quality",
                                    "expected_cost_usd"]
    assert len(routes) == 400 and routes.groupby("prompt_id").size().eq(2).all()
    assert list(routes["bar"][:2]) == [0.5, 0.9]
    scores = pd.read_csv(scores_path, dtype={"prompt_id": str})
    assert list(scores.columns) == ["prompt_id", "model", "expected_quality",
                                    "expected_cost_usd"]
    assert len(scores) == 1600
    # Every decision is the default rule's: argmax quality - lambda(bar) * cost, with
    # lambda(bar) from the artifact's calibration (ties: the cheaper model).
    calibration = QualityModel.load(artifact).bar_calibration
    for (pid, bar), row in routes.set_index(["prompt_id", "bar"]).iterrows():
        cands = scores[scores["prompt_id"] == pid]
        utility = cands["expected_quality"] - calibration.lambda_for(bar) * cands[
            "expected_cost_usd"]
        best = cands[utility >= utility.max()]
        assert row["model"] == best.loc[best["expected_cost_usd"].idxmin(), "model"]
    # A higher bar never buys a cheaper answer on average.
    mean_cost = routes.groupby("bar")["expected_cost_usd"].mean()
    assert mean_cost[0.9] >= mean_cost[0.5] > 0


def test_predict_reads_a_prompts_only_table_and_other_prices(
        artifact: Path, workdir: Path) -> None:
    prompts = workdir / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt_id": f"q{i}", "prompt": text})
                                 for i, text in enumerate(["Say hi.", "Prove 1+1=2."])) + "\n")
    models = json.loads((artifact / "meta.json").read_text())["models"]
    prices = workdir / "prices.csv"
    prices.write_text("model,input_usd_per_mtok,output_usd_per_mtok\n"
                      + "".join(f"{m},100,100\n" for m in models))
    base, dear = workdir / "base.csv", workdir / "dear.csv"
    assert main(["predict", "--model", str(artifact), "--data", str(prompts), "--bars", "0",
                 "--out", str(base)]) == 0
    assert main(["predict", "--model", str(artifact), "--data", str(prompts), "--bars", "0",
                 "--out", str(dear), "--prices", str(prices)]) == 0
    a, b = pd.read_csv(base), pd.read_csv(dear)
    assert list(a["prompt_id"]) == ["q0", "q1"]
    assert (b["expected_cost_usd"] > a["expected_cost_usd"]).all()


def test_predict_names_a_model_the_artifact_does_not_know(
        artifact: Path, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = pd.read_csv(workdir / "demo.csv").head(16)
    table.loc[0, "model"] = "gpt-9"
    bad = workdir / "bad.csv"
    table.to_csv(bad, index=False)
    code = main(["predict", "--model", str(artifact), "--data", str(bad), "--bars", "0.5",
                 "--out", str(workdir / "never.csv")])
    err = capsys.readouterr().err
    assert code == 1
    assert "gpt-9 are not in the artifact" in err and "hint:" in err
    assert not (workdir / "never.csv").exists()


def test_predict_refuses_a_bad_bar(artifact: Path, workdir: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["predict", "--model", str(artifact), "--data", str(workdir / "demo.csv"),
                 "--bars", "0.5,1.5", "--out", str(workdir / "x.csv")])
    assert code == 1
    assert "'1.5' is not a quality bar in [0, 1]" in capsys.readouterr().err


def test_route_prints_the_http_decision_shape(artifact: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["route", "Prove that sqrt(2) is irrational.", "--model", str(artifact),
                 "--bar", "0.8"])
    assert code == 0
    decision = json.loads(capsys.readouterr().out)
    assert set(decision) == {"request_id", "model", "quality_bar", "expected_quality",
                             "expected_cost_usd", "candidates", "model_version"}
    assert decision["quality_bar"] == 0.8
    meta = json.loads((artifact / "meta.json").read_text())
    assert decision["model_version"] == meta["version_id"]
    cands = decision["candidates"]
    assert [c["model"] for c in cands] == meta["models"]
    # The default rule: argmax quality - lambda(0.8) * cost.
    lam = QualityModel.load(artifact).bar_calibration.lambda_for(0.8)
    best = max(cands, key=lambda c: (c["expected_quality"] - lam * c["expected_cost_usd"],
                                     -c["expected_cost_usd"]))
    assert decision["model"] == best["model"]
    # A hard floor instead: the cheapest model predicted to reach it, else the best.
    assert main(["route", "Prove that sqrt(2) is irrational.", "--model", str(artifact),
                 "--min-quality", "0.8"]) == 0
    floor = json.loads(capsys.readouterr().out)
    meeting = [c for c in cands if c["expected_quality"] >= 0.8]
    expected = (min(meeting, key=lambda c: c["expected_cost_usd"]) if meeting
                else max(cands, key=lambda c: c["expected_quality"]))
    assert floor["model"] == expected["model"] and floor["min_quality"] == 0.8


def test_route_in_utility_mode_maximises_quality_minus_lambda_cost(
        artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["route", "Prove that sqrt(2) is irrational.", "--model", str(artifact),
                 "--utility-lambda", "500"])
    assert code == 0
    decision = json.loads(capsys.readouterr().out)
    assert (decision["quality_bar"], decision["utility_lambda"]) == (None, 500.0)
    utility = {c["model"]: c["expected_quality"] - 500 * c["expected_cost_usd"]
               for c in decision["candidates"]}
    assert decision["model"] == max(utility, key=utility.get)
    assert main(["route", "hi", "--model", str(artifact), "--utility-lambda", "-1"]) == 1
    assert "utility_lambda must be a finite number >= 0" in capsys.readouterr().err


def test_route_uses_the_default_bar_and_limits(artifact: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    meta = json.loads((artifact / "meta.json").read_text())
    two = meta["models"][-2:]
    code = main(["route", json.dumps([{"role": "user", "content": "hi"}]), "--model",
                 str(artifact), "--models", ",".join(two)])
    assert code == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["quality_bar"] == meta["default_bar"]
    assert [c["model"] for c in decision["candidates"]] == two
    assert np.isfinite(decision["expected_cost_usd"])


def test_route_names_unknown_models_and_missing_artifacts(
        artifact: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["route", "hi", "--model", str(artifact), "--models", "gpt-9"]) == 1
    assert "unknown model(s) in models: gpt-9" in capsys.readouterr().err
    assert main(["route", "hi", "--model", str(tmp_path / "none")]) == 1
    assert "model folder not found" in capsys.readouterr().err


# ------------------------------------------------- prices learned from cost_usd

# A model the catalog does not know, with logged costs at these prices (USD per 1M).
HOUSE_IN, HOUSE_OUT = 0.9, 3.6


@pytest.fixture(scope="module")
def logged(workdir: Path) -> Path:
    """The demo table plus 'house-llm' answering every prompt, with costs but no price."""
    demo = pd.read_csv(workdir / "demo.csv")
    house = demo[demo["model"] == "qwen3-32b"].copy()
    rng = np.random.default_rng(7)
    house["model"] = "house-llm"
    house["input_tokens"] = rng.integers(50, 4000, len(house))  # e.g. long system prompts
    house["output_tokens"] = rng.integers(10, 900, len(house))
    house["cost_usd"] = (house["input_tokens"] * HOUSE_IN + house["output_tokens"] * HOUSE_OUT
                         ) / 1e6 * rng.uniform(0.97, 1.03, len(house))
    house.iloc[:5, house.columns.get_loc("cost_usd")] = np.nan  # a few rows without a cost
    path = workdir / "logged.csv"
    write_outcomes(pd.concat([demo, house], ignore_index=True), path)
    return path


@pytest.fixture(scope="module")
def learned_artifact(workdir: Path, logged: Path) -> tuple[Path, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["train", "--data", str(logged), "--out", str(workdir / "learned"),
                     "--holdout-frac", "0.2", "--seed", "1"])
    assert code == 0
    return workdir / "learned", out.getvalue()


def test_train_learns_the_price_of_a_model_missing_from_the_catalog(
        learned_artifact: tuple[Path, str]) -> None:
    artifact, summary = learned_artifact
    assert "9 models" in summary
    # Learned from the 195 rows with a cost; the 5 without are priced with it.
    line = re.search(r"prices learned from cost_usd: house-llm \$([\d.]+) in, \$([\d.]+) out "
                     r"per 1M tokens \(195 rows, least squares\)", summary)
    assert line is not None, summary
    assert (float(line[1]), float(line[2])) == pytest.approx((HOUSE_IN, HOUSE_OUT), rel=0.03)
    meta = json.loads((artifact / "meta.json").read_text())
    assert set(meta["learned_prices"]) == {"house-llm"}
    learned = meta["learned_prices"]["house-llm"]
    assert learned["input_usd_per_mtok"] == pytest.approx(HOUSE_IN, rel=0.03)
    assert learned["output_usd_per_mtok"] == pytest.approx(HOUSE_OUT, rel=0.03)
    model = QualityModel.load(artifact)
    spec = model.catalog_["house-llm"]
    assert (spec.input_usd_per_mtok, spec.output_usd_per_mtok) == (
        learned["input_usd_per_mtok"], learned["output_usd_per_mtok"])
    # Catalog models keep their catalog prices.
    assert model.catalog_["gpt-4o"] == load_catalog()["gpt-4o"]
    # Predicted costs of the model follow the learned prices.
    pred = model.predict(["Prove that sqrt(2) is irrational.", "Say hi."])
    col = pred.models.index("house-llm")
    assert pred.cost_usd[:, col] == pytest.approx(
        (pred.input_tokens * spec.input_usd_per_mtok
         + pred.output_tokens[:, col] * spec.output_usd_per_mtok) / 1e6)


def test_predict_and_route_use_the_learned_prices(
        learned_artifact: tuple[Path, str], logged: Path, workdir: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    artifact, _ = learned_artifact
    scores = workdir / "learned_scores.csv"
    assert main(["predict", "--model", str(artifact), "--data", str(logged), "--bars", "0.5",
                 "--out", str(workdir / "learned_routes.csv"), "--scores", str(scores)]) == 0
    assert "9 candidate models" in capsys.readouterr().out
    house = pd.read_csv(scores).query("model == 'house-llm'")
    assert len(house) == 200 and (house["expected_cost_usd"] > 0).all()
    assert main(["route", "Say hi.", "--model", str(artifact), "--bar", "0"]) == 0
    decision = json.loads(capsys.readouterr().out)
    house_cand = [c for c in decision["candidates"] if c["model"] == "house-llm"]
    assert len(house_cand) == 1 and house_cand[0]["expected_cost_usd"] > 0


def test_train_names_a_model_with_neither_price_nor_cost(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = pd.read_csv(workdir / "demo.csv").head(16).drop(columns="cost_usd")
    table.loc[3, "model"] = "mystery-7b"
    bad = workdir / "no_price.csv"
    table.to_csv(bad, index=False)
    code = main(["train", "--data", str(bad), "--out", str(workdir / "never")])
    err = capsys.readouterr().err
    assert code == 1
    assert (f"{bad}, row 4: model 'mystery-7b' has no price: it is not in the catalog and "
            "none of its rows has a cost_usd") in err
    assert "add a cost_usd column" in err
    assert not (workdir / "never").exists()
