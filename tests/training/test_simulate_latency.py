"""`router simulate --latency-incident` (issue 12): a model made slow mid-run loses its
latency-limited traffic within a minute of traffic, without a retrain."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from router.catalog import load_catalog
from router.cli import main
from router.errors import ConfigError
from training.data import load_outcomes, write_outcomes
from training.demo_data import generate_demo
from training.simulate import Simulation, SimulationConfig, simulate
from training.simulate_latency import drop_point
from training.simulate_plot import simulation_figure

FAST = {"n_components": 16}


def test_drop_point_is_where_the_share_falls_to_a_quarter_and_stays() -> None:
    served = ["slow"] * 10 + ["other", "slow"] * 10 + ["other"] * 30
    seconds = [0.5 * (i + 1) for i in range(len(served))]
    # Share before 0.8: the last 10 requests must hold at most 2 of "slow".
    assert drop_point(served, seconds, "slow", 0.8, window=10) == (36, 18.0)
    # A dip that comes back does not count; the end is judged as it stands.
    assert drop_point(["other"] * 10 + ["slow"] * 10, list(range(20)), "slow", 0.8,
                      window=10) == (None, None)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    path = write_outcomes(generate_demo(240, seed=0, catalog=load_catalog()),
                          tmp_path_factory.mktemp("incident") / "demo.csv")
    return load_outcomes([path], catalog=load_catalog())


@pytest.mark.slow
def test_a_slowed_model_loses_its_latency_limited_traffic_within_a_minute(
        demo: pd.DataFrame, tmp_path: Path) -> None:
    config = SimulationConfig(latency_incident=True, incident_requests=150, eval_frac=0.3,
                              model_options=FAST)
    result = simulate(demo, catalog=load_catalog(), workdir=tmp_path / "run", config=config)
    incident = result.latency_incident
    assert result.rounds == []  # nothing retrained: the live latency did it
    assert incident is not None and incident.share_before > 0.3
    assert incident.requests_to_drop is not None and incident.seconds_to_drop < 60.0
    assert incident.share_after <= incident.share_before / 4
    assert incident.max_latency_ms == pytest.approx(float(demo["latency_ms"].median()))
    assert len(incident.timeline) == 300
    payload = result.to_json()
    assert payload["latency_incident"]["requests_to_drop"] == incident.requests_to_drop
    assert "timeline" not in payload["latency_incident"]
    fig = simulation_figure(result)
    (ax,) = fig.axes
    assert ax.get_title().startswith("latency incident under max_latency_ms=")
    assert [t.get_text() for t in ax.get_legend().get_texts()][2].startswith(
        "traffic lost after ")


def test_the_incident_needs_recorded_latencies_and_a_known_model(
        demo: pd.DataFrame, tmp_path: Path) -> None:
    untimed = demo.drop(columns=["latency_ms", "ttft_ms"])
    config = SimulationConfig(latency_incident=True)
    with pytest.raises(ConfigError, match="needs a table with a latency_ms column") as info:
        Simulation(untimed, catalog=load_catalog(), workdir=tmp_path / "a",
                   config=config).start()
    assert "router demo-data" in info.value.hint
    with pytest.raises(ConfigError, match="--latency-incident gpt-9: not a model"):
        Simulation(demo, catalog=load_catalog(), workdir=tmp_path / "b",
                   config=SimulationConfig(latency_incident=True, slow_model="gpt-9")).start()
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_cli_refuses_bad_incident_options_before_loading(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = str(tmp_path / "absent.csv")
    assert main(["simulate", "--data", missing, "--latency-incident", "--slowdown", "1"]) == 1
    assert "--slowdown must be a factor > 1, e.g. 5, got 1.0" in capsys.readouterr().err
    assert main(["simulate", "--data", missing, "--latency-incident",
                 "--incident-requests", "10"]) == 1
    assert "--incident-requests must be at least 40" in capsys.readouterr().err
    assert main(["simulate", "--data", missing, "--max-latency-ms", "0"]) == 1
    assert "--max-latency-ms must be a number of milliseconds > 0" in capsys.readouterr().err
    assert main(["simulate", "--data", missing, "--max-latency-ms", "2000"]) == 1
    assert ("--max-latency-ms must be given with --latency-incident only, got 2000.0"
            in capsys.readouterr().err)


def test_cli_refuses_a_latency_scale_above_one(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--data", str(tmp_path / "absent.csv"), "--latency-incident",
                 "--latency-scale", "2"]) == 1
    assert "--latency-scale must be a factor in (0, 1]" in capsys.readouterr().err
