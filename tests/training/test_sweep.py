"""Operating points shared by `router eval` and the gate: the lambda grid and the sweeps."""

from __future__ import annotations

import numpy as np
import pytest

from router.policy import BarCalibration
from training.sweep import decisions, sweep_bars, sweep_floors, sweep_lambdas, utility_lambdas


def test_the_lambda_grid_spans_the_cost_scale_and_skips_models_without_outcomes() -> None:
    cost = np.array([[0.001, 0.02], [0.003, 0.02]])
    grid = utility_lambdas(cost, n=5)
    assert grid[0] == 0.0 and len(grid) == 6
    assert grid[1] == pytest.approx(1e-3 / 0.02) and grid[-1] == pytest.approx(10 / 0.002)
    # NaN = no outcome: a model's scale is its mean over the rows it has; a model with
    # none at all is left out (no warning, which the test suite would turn into an error).
    sparse = np.array([[0.001, np.nan, np.nan], [0.003, 0.02, np.nan], [np.nan, np.nan, np.nan]])
    assert utility_lambdas(sparse, n=5) == pytest.approx(grid)
    assert utility_lambdas(np.zeros((2, 2))) == [0.0]


def test_sweeps_route_on_predictions_and_score_realised_outcomes() -> None:
    pred_q = np.array([[0.5, 0.9], [0.8, 0.9]])
    pred_c = np.array([[1.0, 3.0], [1.0, 3.0]])
    quality = np.array([[0.4, 1.0], [np.nan, 0.7]])
    cost = np.array([[1.0, 3.0], [np.nan, 3.0]])
    allowed = np.isfinite(quality)
    floors = sweep_floors(pred_q, pred_c, quality, cost, [0.0, 0.85], allowed=allowed)
    assert floors.tolist() == [[0.0, 2.0, 0.55], [0.85, 3.0, 0.85]]
    lams = sweep_lambdas(pred_q, pred_c, quality, cost, [0.0, 1.0], allowed=allowed)
    assert lams.tolist() == [[0.0, 3.0, 0.85], [1.0, 2.0, 0.55]]
    # A bar is a target mean quality: lambda(bar) from the calibration, then the
    # utility rule, so each bar lands on one of the utility rule's points.
    calibration = BarCalibration(quality=(0.6, 0.9), cost_usd=(1.0, 3.0), lambdas=(1.0, 0.0))
    bars = sweep_bars(pred_q, pred_c, quality, cost, [0.5, 0.9, 1.0], calibration,
                      allowed=allowed)
    assert bars.tolist() == [[0.5, 2.0, 0.55], [0.9, 3.0, 0.85], [1.0, 3.0, 0.85]]
    with pytest.raises(ValueError, match="rule must be one of bar, min_quality, utility_lambda"):
        next(decisions(pred_q, pred_c, "budget", [1.0]))
