"""Dask training from Parquet partitions matches local training on held-out prompts.

Tolerance, stated: held-out log loss within 0.02 and AUC (over the 0/1 outcomes)
within 0.02 of the locally trained model (the two differ by the sample-fitted
text features, fixed vs early-stopped rounds, and data-parallel histogram
merging). Measured: log loss 0.2746 local vs 0.2774 Dask, AUC 0.8978 vs 0.8963.
From the CLI (`router train --dask`, 400 demo prompts, 40 held out by both):
see `test_cli_dask_training_matches_local_training`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from router.errors import DataError
from training.distributed import export_partitions, train_distributed

LOG_LOSS_TOLERANCE = 0.02
AUC_TOLERANCE = 0.02
FAST = {"num_threads": 1, "num_leaves": 15}


def _held_out_metrics(model, table: pd.DataFrame) -> dict[str, float]:
    from router.predictor import holdout_metrics
    from training.data import conversations

    ids, convs = conversations(table)
    pred = model.predict(convs)
    row = {pid: i for i, pid in enumerate(ids)}
    col = {m: j for j, m in enumerate(pred.models)}
    p = pred.quality[table["prompt_id"].map(row).to_numpy(),
                     table["model"].map(col).to_numpy()]
    y = table["quality"].to_numpy()
    metrics = holdout_metrics(y, p)
    # The demo mixes graded and 0/1 tasks: AUC over the 0/1 outcomes.
    binary = np.isin(y, (0.0, 1.0))
    metrics["auc"] = float(roc_auc_score(y[binary], p[binary]))
    return metrics


def test_export_keeps_prompts_whole_and_refuses_a_used_folder(tmp_path: Path) -> None:
    table = pd.DataFrame({"prompt_id": ["a", "b", "a", "c", "b"], "messages": ["x"] * 5,
                          "model": ["m1", "m1", "m2", "m1", "m2"], "quality": [1.0] * 5})
    paths = export_partitions(table, tmp_path / "parts", rows_per_partition=2)
    parts = [pd.read_parquet(p) for p in paths]
    assert [sorted(p["prompt_id"].unique()) for p in parts] == [["a"], ["b"], ["c"]]
    with pytest.raises(DataError, match="already has part-\\*.parquet files"):
        export_partitions(table, tmp_path / "parts")


def test_export_keeps_the_latency_columns_and_drops_bookkeeping(tmp_path: Path) -> None:
    table = pd.DataFrame({"prompt_id": ["a", "a"], "messages": ["x"] * 2, "model": ["m1", "m2"],
                          "quality": [1.0, 0.0], "latency_ms": [850.0, np.nan],
                          "ttft_ms": [120.0, np.nan], "fallback": [False, True]})
    [path] = export_partitions(table, tmp_path / "parts")
    part = pd.read_parquet(path)
    assert list(part.columns) == ["prompt_id", "messages", "model", "quality", "latency_ms",
                                  "ttft_ms"]
    assert part["latency_ms"].tolist()[0] == 850.0 and part["ttft_ms"].isna().tolist() == [
        False, True]


def test_no_partitions_is_a_clear_error(tmp_path: Path) -> None:
    from router.catalog import load_catalog

    with pytest.raises(DataError, match=r"no .parquet partitions found"):
        train_distributed(tmp_path, client=None, catalog=load_catalog())


@pytest.mark.slow
def test_two_worker_cluster_matches_local_training(tmp_path: Path) -> None:
    from dask.distributed import Client, LocalCluster

    from router.catalog import load_catalog
    from router.predictor import QualityModel
    from tests.training.gate.test_gate import demo_table

    catalog = load_catalog()
    table = demo_table(tmp_path, n_prompts=600, seed=5)
    ids = table["prompt_id"].unique()
    held = set(ids[:150])
    train, test = table[~table["prompt_id"].isin(held)], table[table["prompt_id"].isin(held)]
    export_partitions(train, tmp_path / "parts", rows_per_partition=900)

    local = QualityModel(num_boost_round=300, n_components=16, params=FAST).fit(
        train, catalog=catalog)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        remote = train_distributed(tmp_path / "parts", tmp_path / "artifact", client=client,
                                   catalog=catalog, sample_prompts=200, n_components=16,
                                   num_boost_round=local.metadata["best_iteration"],
                                   params=FAST)
    assert remote.metadata["partitions"] == 4 and remote.metadata["dask_workers"] == 2
    loaded = QualityModel.load(tmp_path / "artifact")  # the same artifact format
    local_m, remote_m = _held_out_metrics(local, test), _held_out_metrics(loaded, test)
    print(f"held-out local {local_m}\nheld-out dask  {remote_m}")
    assert abs(remote_m["log_loss"] - local_m["log_loss"]) < LOG_LOSS_TOLERANCE
    assert abs(remote_m["auc"] - local_m["auc"]) < AUC_TOLERANCE
    # And it routes: predictions are finite probabilities for every model.
    pred = loaded.predict(["What is 2 + 2?"])
    assert pred.models == local.models_ and np.all((pred.quality >= 0) & (pred.quality <= 1))


# -- from the command line -------------------------------------------------------------

@pytest.fixture(scope="module")
def cluster():
    """Two in-process workers: light enough for every test run."""
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                      dashboard_address=":0") as local:
        yield local


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory) -> Path:
    from tests.training.gate.test_gate import demo_table
    from training.data import write_outcomes

    folder = tmp_path_factory.mktemp("dask-cli")
    return write_outcomes(demo_table(folder, n_prompts=400, seed=7), folder / "demo.csv.gz")


def test_cli_dask_training_matches_local_training(cluster, demo_file: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from router.cli import main
    from router.predictor import QualityModel

    base = ["train", "--data", str(demo_file), "--holdout-frac", "0.1"]
    assert main([*base, "--out", str(tmp_path / "local")]) == 0
    assert main([*base, "--out", str(tmp_path / "dask"), "--dask",
                 cluster.scheduler_address]) == 0
    out = capsys.readouterr().out
    assert "trained on a Dask cluster: 2 worker(s), 4 Parquet partition(s)" in out
    local = QualityModel.load(tmp_path / "local").metadata
    remote = QualityModel.load(tmp_path / "dask").metadata
    assert remote["trained_with"] == "dask"
    # The same held-out prompts measure both, and calibrate both bars.
    assert remote["holdout_prompt_ids"] == local["holdout_prompt_ids"]
    assert len(local["holdout_prompt_ids"]) == 40
    assert remote["default_bar_source"] == local["default_bar_source"]
    assert remote["default_bar_source"].startswith("held-out prompts")
    lm, rm = local["metrics"], remote["metrics"]
    print(f"held-out local log loss {lm['log_loss']:.4f} Brier {lm['brier']:.4f} "
          f"ECE {lm['ece']:.4f} bar {local['default_bar']:.4f}\n"
          f"held-out dask  log loss {rm['log_loss']:.4f} Brier {rm['brier']:.4f} "
          f"ECE {rm['ece']:.4f} bar {remote['default_bar']:.4f}")
    assert set(rm) == set(lm)
    assert abs(rm["log_loss"] - lm["log_loss"]) < LOG_LOSS_TOLERANCE
    assert abs(rm["brier"] - lm["brier"]) < 0.01
    assert abs(remote["default_bar"] - local["default_bar"]) < 0.02
    assert remote["bar_calibration"]["n_prompts"] == local["bar_calibration"]["n_prompts"]


def test_cli_retrain_on_a_dask_cluster(cluster, demo_file: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    from router.cli import main
    from router.predictor import QualityModel
    from router.registry import Registry

    models = tmp_path / "models"
    assert main(["retrain", "--base", str(demo_file), "--registry", str(models), "--json",
                 "--dask", cluster.scheduler_address,
                 "--dask-partitions", str(tmp_path / "parts")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["promoted"] is True
    meta = QualityModel.load(Registry(models).current()).metadata
    assert meta["trained_with"] == "dask" and "log_loss" in meta["metrics"]
    assert list((tmp_path / "parts").iterdir()) == [], "the run's partitions are removed"


@pytest.mark.parametrize(("extra", "message"), [
    (["--dask", "nonsense"],
     "error: --dask must be 'local' or a scheduler address, got 'nonsense'"),
    (["--dask", "tcp://127.0.0.1:1"],
     "error: --dask: no Dask scheduler answers at tcp://127.0.0.1:1"),
    (["--dask-partitions", "/tmp/parts"], "error: --dask-partitions needs --dask"),
    (["--dask", "local", "--dask-workers", "0"], "error: --dask-workers must be >= 1, got 0"),
])
def test_cli_bad_dask_options_are_one_clear_error(
        extra: list[str], message: str, demo_file: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from router.cli import main

    monkeypatch.setattr("training.distributed.CONNECT_TIMEOUT", "0.5s")
    assert main(["train", "--data", str(demo_file), "--out", str(tmp_path / "m"),
                 *extra]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "m").exists()


def test_cli_refit_and_dask_are_refused_together(cluster, demo_file: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from router.cli import main

    assert main(["train", "--data", str(demo_file), "--out", str(tmp_path / "m"), "--refit",
                 "--dask", cluster.scheduler_address]) == 1
    assert "error: --refit cannot be combined with --dask" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_dask_local_starts_worker_processes_and_keeps_stdout_clean(
        demo_file: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    """`--dask local`: a LocalCluster of worker processes, stopped afterwards; what
    LightGBM prints in them goes to stderr, so `--json` prints JSON alone."""
    from router.cli import main

    assert main(["retrain", "--base", str(demo_file), "--registry", str(tmp_path / "models"),
                 "--json", "--dask", "local", "--dask-workers", "2"]) == 0
    out = capfd.readouterr().out
    summary = json.loads(out)
    assert summary["promoted"] is True and out.count("\n") == 1
