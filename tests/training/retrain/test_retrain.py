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


def test_a_logged_requests_latencies_reach_the_training_rows(tmp_path: Path) -> None:
    from training.retrain import canonical_rows

    url = write_log(tmp_path / "latency.db", [
        RequestRecord("slow", ts=NOW.timestamp() - 60, conversation=_conv("a long essay"),
                      chosen_model="cheap", served_model="cheap", propensity=1.0,
                      input_tokens=4, output_tokens=900, cost_usd=0.01,
                      ttfb_ms=412.5, latency_ms=9100.0),
        RequestRecord("unmeasured", ts=NOW.timestamp() - 30, conversation=_conv("hi"),
                      chosen_model="cheap", served_model="cheap", propensity=1.0,
                      input_tokens=1, output_tokens=2, cost_usd=0.0001),
    ], [FeedbackRecord("slow", quality=0.8), FeedbackRecord("unmeasured", quality=1.0)])
    export = load_log(url)
    assert export.set_index("request_id").loc["slow", ["ttfb_ms", "latency_ms"]].tolist() == [
        412.5, 9100.0], "the log exports both latencies"
    rows, _ = build_training_rows(export)
    table = canonical_rows(rows, None).set_index("prompt_id")
    assert table.loc["slow", "latency_ms"] == 9100.0
    assert table.loc["slow", "ttft_ms"] == 412.5, "time to first byte is the table's ttft_ms"
    assert table.loc["unmeasured", ["latency_ms", "ttft_ms"]].isna().all()


@pytest.mark.parametrize(("options", "message"), [
    ({"holdout_frac": 1.0}, r"holdout_frac \(--holdout\) must be in \[0, 1\), got 1.0"),
    ({"tolerance": -0.1}, r"tolerance \(--min-tolerance\) must be >= 0, got -0.1"),
    ({"max_weight": float("nan")}, r"max_weight \(--max-weight\) must be positive, got nan"),
    ({"min_rows": 0}, r"min_rows \(--min-rows\) must be >= 1, got 0"),
    ({"seed": 1.5}, r"seed \(--seed\) must be an integer, got 1.5"),
    ({"since": timedelta(0)}, r"since \(--since\) must be a positive duration"),
])
def test_bad_retrain_settings_name_the_option(options: dict, message: str) -> None:
    from training.retrain import RetrainSettings

    with pytest.raises(ConfigError, match=message):
        RetrainSettings(base=("base.csv",), **options)


def test_retrain_settings_take_one_base_table_as_one_and_need_a_source() -> None:
    from training.retrain import RetrainSettings

    assert RetrainSettings(base="base.csv").base == ("base.csv",)
    with pytest.raises(ConfigError, match=r"nothing to train on: no outcome log \(--log\)"):
        RetrainSettings()


def test_the_retrain_cli_reports_a_bad_setting(capsys: pytest.CaptureFixture[str]) -> None:
    from router.cli import main

    assert main(["retrain", "--base", "x.csv", "--holdout", "1.5"]) == 1
    err = capsys.readouterr().err
    assert "error: retrain setting holdout_frac (--holdout) must be in [0, 1), got 1.5" in err
    with pytest.raises(SystemExit):
        main(["retrain", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "(default 0.01)" in out and "(default 200)" in out, "defaults come from the settings"


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


# -- the full retrain: log -> challenger -> gate -> registry --------------------------

def simulated_log(path: Path, table: pd.DataFrame, *, default: str, explore: float,
                  seed: int = 0) -> str:
    """Traffic over `table`'s prompts from an epsilon-greedy logging policy, with feedback."""
    import numpy as np

    rng = np.random.default_rng(seed)
    models = sorted(table["model"].unique())
    by_key = table.set_index(["prompt_id", "model"])
    records, feedback = [], []
    t0 = NOW.timestamp() - 86400
    for i, pid in enumerate(table["prompt_id"].unique()):
        p = np.full(len(models), explore / len(models))
        p[models.index(default)] += 1 - explore
        j = int(rng.choice(len(models), p=p))
        row = by_key.loc[(pid, models[j])]
        rid = f"req-{i}"
        records.append(RequestRecord(
            rid, ts=t0 + i, conversation=row["messages"], chosen_model=models[j],
            served_model=models[j], propensity=float(p[j]), explored=j != models.index(default),
            input_tokens=int(row["input_tokens"]), output_tokens=int(row["output_tokens"]),
            cost_usd=float(row["cost_usd"]), quality_bar=0.7))
        feedback.append(FeedbackRecord(rid, quality=float(row["quality"]), ts=t0 + i + 0.5))
    return write_log(path, records, feedback)


@pytest.fixture(scope="module")
def loop_data(tmp_path_factory):
    from tests.training.gate.test_gate import demo_table

    folder = tmp_path_factory.mktemp("loop")
    table = demo_table(folder, n_prompts=450, seed=3)
    ids = table["prompt_id"].unique()
    base_ids, traffic_ids, eval_ids = set(ids[:150]), set(ids[150:350]), set(ids[350:])
    base_path = folder / "base.csv"
    from training.data import write_outcomes

    write_outcomes(table[table["prompt_id"].isin(base_ids)], base_path)
    log_url = simulated_log(folder / "outcomes.db", table[table["prompt_id"].isin(traffic_ids)],
                            default="deepseek-v4-flash", explore=0.5)
    return log_url, base_path, table[table["prompt_id"].isin(eval_ids)]


def test_retrain_promotes_a_first_model_then_refuses_a_shuffled_one(
        loop_data, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from router.catalog import load_catalog
    from router.predictor import QualityModel
    from router.registry import Registry
    from tests.training.gate.test_gate import fit_fast, shuffled_labels
    from training.retrain import RetrainSettings, retrain

    log_url, base_path, eval_table = loop_data
    registry = Registry(tmp_path / "models")
    printed: list[str] = []
    settings = RetrainSettings(log_url=log_url, since=timedelta(days=7), base=[base_path],
                               eval_data=eval_table, min_logged_rows=30)
    first = retrain(settings, registry=registry, now=NOW, catalog=load_catalog(),
                    fit=lambda t, c, s: fit_fast(t, seed=s), echo=printed.append)
    assert first.promoted and registry.current_version() == first.version_id
    assert first.counts.used == 200 and first.holdout_rows == 40
    assert first.train_rows == 160 + 150 * 8, "older logged rows + every base row"
    meta = registry.show(first.version_id)["meta"]
    assert meta["gate"]["passed"] is True
    assert meta["retrain"]["log_rows"]["used"] == 200
    assert printed[0] == "log: 200 of 200 logged requests used"
    assert "\ndecision: PROMOTE: no champion yet" in "\n".join(printed)
    QualityModel.load(registry.current())  # the registered artifact loads (checksums intact)

    printed.clear()
    second = retrain(settings, registry=registry, now=NOW, catalog=load_catalog(),
                     fit=lambda t, c, s: fit_fast(shuffled_labels(t), seed=s),
                     echo=printed.append)
    assert not second.promoted
    assert registry.current_version() == first.version_id, "the champion keeps serving"
    stored = registry.show(second.version_id)["meta"]["gate"]
    assert stored["passed"] is False and stored["champion"] == first.version_id
    assert [s["name"] for s in stored["sources"]] == ["eval table", "recent logs"]
    assert stored["sources"][0]["status"] == "fail"
    assert "\ndecision: REFUSE: worse than the champion" in "\n".join(printed)
    assert printed[-1] == (f"kept {first.version_id}; {second.version_id} registered "
                           "but not promoted")

    # The off-policy estimates of both policies on the held-out recent logs, stored
    # and printed back by `router models show --gate` as retrain printed them.
    offpolicy = stored["sources"][1]["offpolicy"]
    assert offpolicy["min_ess"] == 30
    for policy in ("champion", "challenger"):
        for name in ("ips", "snips", "dr"):
            est = offpolicy[policy][name]
            assert 0 <= est["quality"] <= 1 and est["quality_se"] >= 0 and est["n"] == 40
            assert est["too_small"] == (est["ess"] < 30)
    from router.cli import main

    capsys.readouterr()
    assert main(["models", "show", second.version_id, "--gate",
                 "--registry", str(registry.root)]) == 0
    report = next(text for text in printed if text.startswith("champion "))
    assert capsys.readouterr().out == report + "\n"
    assert "\n    challenger  IPS " in report and "SNIPS" in report and ", DR " in report


def test_retrain_with_nothing_to_learn_from_is_a_clear_error(tmp_path: Path) -> None:
    from router.registry import Registry
    from training.retrain import RetrainSettings, retrain

    url = write_log(tmp_path / "empty.db", [RequestRecord("r1", conversation=_conv("hi"),
                                                          served_model="cheap")], [])
    with pytest.raises(DataError, match=r"no usable training rows \(0 of 1 logged requests "
                                        r"used \(skipped: no feedback 1\)\)"):
        retrain(RetrainSettings(log_url=url), registry=Registry(tmp_path / "models"),
                echo=lambda _: None)
    assert not (tmp_path / "models" / "versions").exists(), "nothing registered"


def test_retrain_cli_validates_its_options(capsys: pytest.CaptureFixture[str]) -> None:
    from router.cli import main

    assert main(["retrain", "--base", "x.csv", "--every", "soon"]) == 1
    assert "error: --every: cannot read duration 'soon'" in capsys.readouterr().err
    assert main(["retrain", "--log", "x.db", "--cron", "0 3 * *"]) == 1
    assert "error: --cron: invalid expression '0 3 * *'" in capsys.readouterr().err
    assert main(["retrain"]) == 1
    assert "error: nothing to train on" in capsys.readouterr().err


def test_retrain_from_base_tables_alone_creates_the_first_version(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from router.cli import main
    from router.registry import Registry
    from tests.training.gate.test_gate import demo_table
    from training.data import write_outcomes

    base = write_outcomes(demo_table(tmp_path, n_prompts=120, seed=4), tmp_path / "base.csv.gz")
    models = tmp_path / "models"
    assert main(["retrain", "--base", str(base), "--registry", str(models), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["promoted"] is True and summary["current"] == summary["version_id"]
    assert summary["train_rows"] == 120 * 8 and summary["log"]["requests"] == 0
    assert Registry(models).current_version() == summary["version_id"]

    assert main(["retrain", "--base", str(tmp_path / "nope.csv"), "--registry",
                 str(models)]) == 1
    assert f"error: {tmp_path / 'nope.csv'}: file not found" in capsys.readouterr().err

    assert main(["models", "show", "--gate", "--registry", str(models)]) == 0
    assert capsys.readouterr().out.endswith(
        "decision: PROMOTE: no champion yet; the first model is promoted\n")


def test_models_show_gate_of_a_version_without_one_is_a_clear_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from router.cli import main
    from router.registry import Registry

    artifact = tmp_path / "artifact"
    artifact.mkdir()
    (artifact / "meta.json").write_text(json.dumps({"format_version": 1}))
    registry = Registry(tmp_path / "models")
    registry.add(artifact, version_id="v1")
    assert main(["models", "show", "v1", "--gate", "--registry", str(registry.root)]) == 1
    assert "error: version v1 has no gate report" in capsys.readouterr().err
