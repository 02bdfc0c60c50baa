"""`router route --max-latency-ms` (issue 12): the limit on the command line, the
expected latency of every candidate, and the fastest model when none is within it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from router.catalog import load_catalog
from router.cli import main
from training.data import write_outcomes
from training.demo_data import generate_demo

PROMPT = "Prove that sqrt(2) is irrational."


@pytest.fixture(scope="module")
def timed_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("route_cli")
    table = generate_demo(150, 1, load_catalog())
    # Whole-answer latency per model: its own speed times the answer length, so the
    # models' expected latencies differ by a factor of up to ~10.
    speed = {m: 5.0 + 45.0 * i / 7 for i, m in enumerate(sorted(table["model"].unique()))}
    rng = np.random.default_rng(0)
    table["latency_ms"] = [speed[m] * max(t, 1.0) * rng.uniform(0.9, 1.1)
                           for m, t in zip(table["model"], table["output_tokens"], strict=True)]
    table["ttft_ms"] = table["latency_ms"] / 10
    write_outcomes(table, root / "timed.csv")
    assert main(["train", "--data", str(root / "timed.csv"), "--out", str(root / "model")]) == 0
    return root / "model"


def route(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    code = main(["route", PROMPT, *args])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


@pytest.mark.slow
def test_route_limits_latency_and_shows_it_per_candidate(
        timed_artifact: Path, capsys: pytest.CaptureFixture[str]) -> None:
    free = route(capsys, "--model", str(timed_artifact), "--utility-lambda", "0")
    latency = {c["model"]: c["expected_latency_ms"] for c in free["candidates"]}
    assert all(v is not None and v > 0 for v in latency.values())
    assert "max_latency_ms" not in free
    # A limit between the fastest and the free choice's latency: a faster model serves.
    limit = (min(latency.values()) + latency[free["model"]]) / 2
    limited = route(capsys, "--model", str(timed_artifact), "--utility-lambda", "0",
                    "--max-latency-ms", f"{limit}")
    assert latency[limited["model"]] <= limit < latency[free["model"]]
    assert limited["max_latency_ms"] == limit and limited["latency_limit_met"] is True
    # Below every model: the fastest, and the decision says why.
    fastest = min(latency, key=latency.get)
    none = route(capsys, "--model", str(timed_artifact), "--max-latency-ms", "0.001")
    assert none["model"] == fastest and none["latency_limit_met"] is False
    assert f"chose the fastest, {fastest}" in none["latency_reason"]


@pytest.mark.slow
def test_route_refuses_a_limit_the_artifact_cannot_apply(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    table = generate_demo(60, 2, load_catalog()).drop(columns=["latency_ms", "ttft_ms"],
                                                      errors="ignore")
    write_outcomes(table, tmp_path / "untimed.csv")
    assert main(["train", "--data", str(tmp_path / "untimed.csv"), "--out",
                 str(tmp_path / "m")]) == 0
    capsys.readouterr()
    assert main(["route", PROMPT, "--model", str(tmp_path / "m"), "--max-latency-ms",
                 "500"]) == 1
    err = capsys.readouterr().err
    assert "predicts no latency" in err and "hint:" in err
    assert main(["route", PROMPT, "--model", str(tmp_path / "m"), "--max-latency-ms",
                 "-3"]) == 1
    assert "max_latency_ms must be a finite number" in capsys.readouterr().err
