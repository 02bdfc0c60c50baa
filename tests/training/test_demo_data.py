import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from router.catalog import load_catalog
from router.cli import main
from training.data import load_outcomes, table_fingerprint
from training.demo_data import DIFFICULTIES, TASKS, generate_demo


@pytest.fixture(scope="module")
def demo() -> pd.DataFrame:
    return generate_demo(1500, seed=0, with_expected=True)


def grid(table: pd.DataFrame, column: str) -> pd.DataFrame:
    return table.pivot(index="prompt_id", columns="model", values=column)


def test_same_seed_same_table_other_seed_other_table():
    a, b = generate_demo(200, seed=3), generate_demo(200, seed=3)
    pd.testing.assert_frame_equal(a, b)
    c = generate_demo(200, seed=4)
    assert not a["quality"].equals(c["quality"])


def test_every_catalog_model_every_task_and_level(demo: pd.DataFrame):
    catalog = load_catalog()
    assert set(demo["model"]) == set(catalog.names)
    assert len(demo) == 1500 * len(catalog)
    assert set(demo["task"]) == set(TASKS)
    assert set(demo["difficulty"]) == set(DIFFICULTIES)
    assert demo["quality"].between(0, 1).all()
    # 0/1 correctness for math, graded scores for writing.
    assert set(demo.loc[demo["task"] == "math", "quality"]) == {0.0, 1.0}
    assert demo.loc[demo["task"] == "creative_writing", "quality"].nunique() > 20


def test_loads_as_a_valid_outcome_table_with_the_same_costs(demo: pd.DataFrame,
                                                           tmp_path: Path):
    path = tmp_path / "demo.parquet"
    demo.to_parquet(path)
    loaded = load_outcomes(path)
    assert len(loaded) == len(demo)
    np.testing.assert_allclose(loaded["cost_usd"], demo["cost_usd"])
    np.testing.assert_allclose(loaded["input_tokens"], demo["input_tokens"])
    chats = loaded.loc[loaded["messages"].str.contains('"role": "system"'), "messages"]
    assert 0.1 < chats.nunique() / loaded["prompt_id"].nunique() < 0.3
    assert [m["role"] for m in json.loads(chats.iloc[0])] == [
        "system", "user", "assistant", "user"]


def test_cost_is_tokens_times_catalog_prices(demo: pd.DataFrame):
    catalog = load_catalog()
    row = demo.iloc[11]
    spec = catalog[row["model"]]
    assert row["cost_usd"] == pytest.approx(
        spec.cost_usd(row["input_tokens"], row["output_tokens"]))


def test_harder_prompts_widen_the_gap_between_cheap_and_expensive(demo: pd.DataFrame):
    catalog = load_catalog()
    cheapest, priciest = catalog.by_price()[0], catalog.by_price()[-1]
    mean = demo.groupby(["task", "difficulty", "model"])["quality"].mean()
    for task in TASKS:
        gap = {d: mean[task, d, priciest] - mean[task, d, cheapest] for d in DIFFICULTIES}
        assert gap["easy"] < 0.15, (task, gap)
        assert min(gap["medium"], gap["hard"]) > gap["easy"] + 0.15, (task, gap)


def test_prompt_text_carries_difficulty(demo: pd.DataFrame):
    prompts = demo.drop_duplicates("prompt_id")
    length = prompts.groupby("difficulty")["prompt"].apply(lambda s: s.str.len().median())
    assert length["easy"] < length["medium"] < length["hard"]
    assert prompts["prompt"].str.contains("```").any()


def test_oracle_and_an_informed_router_save_most_of_the_best_models_cost(demo: pd.DataFrame):
    quality, cost, expected = (grid(demo, c).to_numpy() for c in
                               ("quality", "cost_usd", "expected_quality"))
    per_model_q, per_model_c = quality.mean(0), cost.mean(0)
    best = int(per_model_q.argmax())
    rows = np.arange(len(quality))
    # Oracle: per prompt, the cheapest model with the best quality.
    top = quality >= quality.max(1, keepdims=True) - 1e-12
    oracle = np.where(top, cost, np.inf).argmin(1)
    assert quality[rows, oracle].mean() > per_model_q[best]
    assert cost[rows, oracle].mean() < 0.3 * per_model_c[best]
    # A router that knows the true success probabilities (what a trained model
    # estimates) reaches the best single model's quality for under half its cost.
    reached = []
    for bar in np.linspace(0.5, 0.995, 60):
        ok = expected >= bar
        pick = np.where(ok, cost, np.inf).argmin(1)
        pick[~ok.any(1)] = expected[~ok.any(1)].argmax(1)
        if quality[rows, pick].mean() >= per_model_q[best]:
            reached.append(cost[rows, pick].mean() / per_model_c[best])
    assert reached and min(reached) < 0.5


def test_cli_writes_file_and_one_line_summary(tmp_path: Path, capsys):
    out = tmp_path / "demo.csv.gz"
    assert main(["demo-data", "--out", str(out), "--prompts", "50", "--seed", "1"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wrote 400 rows (50 prompts x 8 models")
    loaded = load_outcomes(out)
    assert table_fingerprint(loaded) == table_fingerprint(
        load_outcomes(_write(generate_demo(50, seed=1), tmp_path / "again.jsonl")))


def test_cli_rejects_zero_prompts(tmp_path: Path, capsys):
    assert main(["demo-data", "--out", str(tmp_path / "d.csv"), "--prompts", "0"]) == 1
    assert "error: --prompts must be at least 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "d.csv").exists()


def _write(table: pd.DataFrame, path: Path) -> Path:
    from training.data import write_outcomes

    return write_outcomes(table, path)


def _implied_skills(table: pd.DataFrame) -> pd.Series:
    """Each model's skill per task relative to the first model, read back from
    expected = sigmoid(8 (skill - level)): on one prompt, the logit gap of two
    models is 8 x their skill gap, whatever the prompt's level."""
    logit = np.log(table["expected_quality"] / (1 - table["expected_quality"])) / 8.0
    wide = table.assign(logit=logit).pivot(index="prompt_id", columns="model", values="logit")
    gap = wide.sub(wide.iloc[:, 0], axis=0)
    task = table.groupby("prompt_id")["task"].first()
    return gap.groupby(task).mean().stack().round(6)


def test_other_seeds_are_fresh_prompts_from_the_same_models_and_worlds_differ():
    # A router trained on one seed is tested on another: the models must be the same.
    a, b = generate_demo(300, seed=0, with_expected=True), generate_demo(300, seed=1,
                                                                         with_expected=True)
    assert set(a["prompt_id"]).isdisjoint(b["prompt_id"])
    assert _implied_skills(a).equals(_implied_skills(b))
    drifted = generate_demo(300, seed=0, world=1, with_expected=True)
    assert not _implied_skills(a).equals(_implied_skills(drifted))


def test_latency_columns_leave_every_other_column_as_it_was():
    # The digest of a table drawn before latency existed (same seed and size): the
    # latency draws use their own stream, so the quickstart's figures do not move.
    table = generate_demo(60, 3)
    before = table.drop(columns=["latency_ms", "ttft_ms"])
    digest = hashlib.sha256(before.to_csv(index=False).encode()).hexdigest()
    assert digest == "df3563e820a42c9bbd7bac5f0164ec0e6fc9de18cdf9e369ae7db6c201300b6d"


def test_latency_is_per_model_heavy_tailed_and_one_cheap_model_is_slow(demo: pd.DataFrame):
    catalog = load_catalog()
    latency, ttft = grid(demo, "latency_ms"), grid(demo, "ttft_ms")
    assert (ttft.to_numpy() > 0).all() and (latency.to_numpy() >= ttft.to_numpy()).all()
    p50, p99 = latency.median(), latency.quantile(0.99)
    # A heavy tail: the slowest 1% take several times the median.
    assert (p99 / p50 > 4).all()
    by_price = catalog.by_price(list(latency.columns))
    cheapest, second, priciest = by_price[0], by_price[1], by_price[-1]
    assert p50[cheapest] == p50.min()
    assert p50[priciest] > 3 * p50[cheapest]
    # Cheap but slow: a latency limit changes what the cheap end of a router picks.
    assert p50[second] > p50[priciest]
    # Longer answers take longer on every model.
    tokens = grid(demo, "output_tokens")
    for model in latency.columns:
        assert np.corrcoef(tokens[model], np.log(latency[model]))[0, 1] > 0.5


def test_latency_survives_writing_and_loading(demo: pd.DataFrame, tmp_path: Path):
    loaded = load_outcomes(_write(demo, tmp_path / "demo.csv.gz"), catalog=load_catalog())
    merged = loaded.merge(demo, on=["prompt_id", "model"], suffixes=("", "_src"))
    np.testing.assert_array_equal(merged["latency_ms"], merged["latency_ms_src"])
    np.testing.assert_array_equal(merged["ttft_ms"], merged["ttft_ms_src"])
