"""Routing metrics on hand-made curves whose answers are worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import (
    aiq,
    apgr,
    convex_hull_upper,
    cost_at_quality,
    cpt,
    mix_curve,
    oracle,
    oracle_two_model_curve,
    pgr,
    quality_at_cost,
    two_model_curve,
    zero_router_aiq,
)

# -- hull -------------------------------------------------------------------------


def test_hull_drops_dominated_and_below_chord_points() -> None:
    points = [(1.0, 0.5), (2.0, 0.6), (3.0, 0.9), (4.0, 0.8), (0.5, 0.2), (3.0, 0.7)]
    hull = convex_hull_upper(points)
    # (2, .6) lies below the chord (1, .5)-(3, .9); (4, .8) and (3, .7) are dominated.
    np.testing.assert_allclose(hull, [(0.5, 0.2), (1.0, 0.5), (3.0, 0.9)])


def test_hull_starts_at_best_of_the_cheapest_points() -> None:
    hull = convex_hull_upper([(1.0, 0.3), (1.0, 0.6), (2.0, 0.5)])
    np.testing.assert_allclose(hull, [(1.0, 0.6)])


def test_hull_rejects_a_bad_shape() -> None:
    with pytest.raises(ValueError, match=r"\(k, 2\) array"):
        convex_hull_upper([1.0, 2.0, 3.0])


# -- AIQ --------------------------------------------------------------------------


def test_aiq_two_point_hull_by_hand() -> None:
    # Trapezoid from (1, .5) to (3, .9): 2 * .7 = 1.4; flat .9 from 3 to 4: .9. / 4.
    assert aiq([1.0, 3.0], [0.5, 0.9], c_max=4.0) == pytest.approx((1.4 + 0.9) / 4)


def test_aiq_ignores_a_dominated_point() -> None:
    assert aiq([1.0, 3.0, 2.5], [0.5, 0.9, 0.4], c_max=4.0) == pytest.approx(2.3 / 4)


def test_aiq_counts_nothing_left_of_the_cheapest_point() -> None:
    # One point at (2, .6), c_max 4: area .6 * 2 over 4, not .6.
    assert aiq([2.0], [0.6], c_max=4.0) == pytest.approx(0.3)


def test_aiq_cuts_the_hull_at_c_max() -> None:
    # Hull (0, 0)-(2, 1) cut at 1: area .5 * 1 * .5 = .25, over 1.
    assert aiq([0.0, 2.0], [0.0, 1.0], c_max=1.0) == pytest.approx(0.25)


def test_aiq_is_zero_when_the_curve_starts_beyond_c_max() -> None:
    assert aiq([5.0], [0.9], c_max=4.0) == 0.0


def test_aiq_default_c_max_is_the_dearest_point() -> None:
    assert aiq([1.0, 3.0], [0.5, 0.9]) == pytest.approx(1.4 / 3)


def test_aiq_refuses_zero_c_max() -> None:
    with pytest.raises(ValueError, match="c_max must be positive"):
        aiq([0.0], [0.5], c_max=0.0)


def test_router_beats_zero_router_when_it_lies_above_the_single_model_chord() -> None:
    singles_c, singles_q = [1.0, 3.0], [0.5, 0.9]
    zero = zero_router_aiq(singles_c, singles_q)
    router = aiq([1.0, 1.5, 3.0], [0.5, 0.85, 0.9], c_max=3.0)
    # Zero: chord area 1.4 / 3. Router: .5*(.5+.85)/2 + 1.5*(.85+.9)/2 = .3375 + 1.3125.
    assert zero == pytest.approx(1.4 / 3)
    assert router == pytest.approx(1.65 / 3)


# -- oracle -----------------------------------------------------------------------


def test_oracle_picks_cheapest_among_best() -> None:
    quality = [[1.0, 1.0, 0.0], [0.0, 0.5, 0.5], [0.2, 0.1, 0.0]]
    cost = [[3.0, 1.0, 0.5], [1.0, 4.0, 2.0], [9.0, 1.0, 1.0]]
    result = oracle(quality, cost)
    assert result.choice.tolist() == [1, 2, 0]
    assert result.cost_usd == pytest.approx((1.0 + 2.0 + 9.0) / 3)
    assert result.quality == pytest.approx((1.0 + 0.5 + 0.2) / 3)


# -- cost at quality / quality at cost ---------------------------------------------


def test_cost_at_quality_interpolates_on_the_hull() -> None:
    curve = [(1.0, 0.5), (3.0, 0.9), (2.0, 0.55)]
    # On the segment (1, .5)-(3, .9), quality .7 is reached at cost 2.
    assert cost_at_quality(curve, 0.7) == pytest.approx(2.0)
    assert cost_at_quality(curve, 0.7, reference_cost=4.0) == pytest.approx(0.5)
    assert cost_at_quality(curve, 0.4) == pytest.approx(1.0)


def test_cost_at_quality_is_none_when_never_reached() -> None:
    assert cost_at_quality([(1.0, 0.5), (3.0, 0.9)], 0.95) is None


def test_quality_at_cost_flat_past_the_end_and_none_before_the_start() -> None:
    curve = [(1.0, 0.5), (3.0, 0.9)]
    assert quality_at_cost(curve, 2.0) == pytest.approx(0.7)
    assert quality_at_cost(curve, 10.0) == pytest.approx(0.9)
    assert quality_at_cost(curve, 0.5) is None


def test_mix_curve_is_the_straight_line() -> None:
    np.testing.assert_allclose(mix_curve(1.0, 0.5, 3.0, 0.9, n_points=3),
                               [(1.0, 0.5), (2.0, 0.7), (3.0, 0.9)])


# -- two models ---------------------------------------------------------------------


def test_pgr_scalar_and_array() -> None:
    assert pgr(0.7, 0.6, 0.8) == pytest.approx(0.5)
    np.testing.assert_allclose(pgr(np.array([0.6, 0.8]), 0.6, 0.8), [0.0, 1.0])
    with pytest.raises(ValueError, match="same quality"):
        pgr(0.5, 0.7, 0.7)


def test_random_router_has_apgr_one_half_and_cpt_equal_to_x() -> None:
    shares = np.linspace(0, 1, 11)
    quality = 0.6 + shares * 0.2
    assert apgr(shares, quality, 0.6, 0.8) == pytest.approx(0.5)
    assert cpt(shares, quality, 0.6, 0.8, 0.5) == pytest.approx(0.5)
    assert cpt(shares, quality, 0.6, 0.8, 0.8) == pytest.approx(0.8)


def test_apgr_of_a_step_curve() -> None:
    # PGR jumps to 1 at 20% strong calls: area .2 * .5 + .8 * 1 = .9.
    assert apgr([0.0, 0.2, 1.0], [0.6, 0.8, 0.8], 0.6, 0.8) == pytest.approx(0.9)


def test_cpt_interpolates_the_first_crossing_and_is_none_if_never() -> None:
    shares, quality = [0.0, 0.4, 1.0], [0.6, 0.7, 0.75]
    # PGR .5 at 40% exactly; PGR .6 between (.4, .5) and (1, .75): .4 + .6 * (.1/.25).
    assert cpt(shares, quality, 0.6, 0.8, 0.5) == pytest.approx(0.4)
    assert cpt(shares, quality, 0.6, 0.8, 0.6) == pytest.approx(0.64)
    assert cpt(shares, quality, 0.6, 0.8, 0.8) is None


def test_two_model_curve_spans_all_to_none_strong_and_perfect_score_is_oracle() -> None:
    qw = np.array([1, 1, 0, 0, 1, 0, 1, 1, 0, 1], dtype=float)
    qs = np.array([1, 0, 1, 1, 1, 0, 1, 1, 1, 1], dtype=float)
    score = qs - qw  # a perfect router's score
    shares, quals = two_model_curve(score, qw, qs, n_bins=10)
    assert shares[0] == 0.0 and shares[-1] == 1.0
    assert quals[0] == pytest.approx(qw.mean()) and quals[-1] == pytest.approx(qs.mean())
    # 3 prompts gain from the strong model (indices 2, 3, 8): oracle CPT(50%) is 1/2 of the
    # gap in strong calls, (.8 - .6) * .5 = 10%, and the perfect score reaches it too.
    oshares, oquals = oracle_two_model_curve(qw, qs)
    np.testing.assert_allclose(oshares, [0.0, 0.1, 0.2, 0.3, 1.0])
    np.testing.assert_allclose(oquals, [0.6, 0.7, 0.8, 0.9, 0.9])
    assert cpt(oshares, oquals, qw.mean(), qs.mean(), 0.5) == pytest.approx(0.1)
    assert cpt(shares, quals, qw.mean(), qs.mean(), 0.5) <= 0.3
