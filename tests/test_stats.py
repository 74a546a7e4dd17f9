"""stats.py against hand-worked curves, closed forms of the Student t distribution, and the normal approximation of
the bootstrap interval of a mean."""
import math

import numpy as np
import pytest

import stats as S


def unit(ks, ys, locked=0.0, ceiling=1.0):
    return S.Curve(tuple(ks), tuple(ys), locked, ceiling)


# -----------------------------------------------------------------------------
# k_to_reach and the gap target


def test_k_to_reach_interpolates_in_log_k():
    ks, ys = (4, 16, 64), (0.2, 0.4, 0.8)
    assert S.k_to_reach(ks, ys, 0.6) == pytest.approx(32.0)            # half way from 16 to 64 in log k
    assert S.k_to_reach(ks, ys, 0.3) == pytest.approx(8.0)             # half way from 4 to 16
    assert S.k_to_reach(ks, ys, 0.25) == pytest.approx(4 * 2 ** 0.5)   # a quarter: 4 * 4^(1/4), not 4 + 12/4 = 7
    assert S.k_to_reach(ks, ys, 0.8) == pytest.approx(64.0)            # reached exactly at a grid point
    assert S.k_to_reach((64, 4, 16), (0.8, 0.2, 0.4), 0.6) == pytest.approx(32.0)  # order of the points is free


def test_k_to_reach_first_point_never_and_first_crossing():
    ks = (4, 16, 64, 256)
    assert S.k_to_reach(ks, (0.5, 0.6, 0.7, 0.8), 0.3) == 4.0          # already there at the first point
    assert S.k_to_reach(ks, (0.5, 0.6, 0.7, 0.8), 0.5) == 4.0
    assert S.k_to_reach(ks, (0.5, 0.6, 0.7, 0.8), 0.81) == math.inf    # never reached on the grid
    # non-monotone: the first crossing counts, 80% of the way from 4 to 16 in log k
    assert S.k_to_reach(ks, (0.2, 0.7, 0.5, 0.9), 0.6) == pytest.approx(4 * 4 ** 0.8)


def test_gap_fraction_target():
    assert S.gap_fraction_target(0.2, 1.0, 0.9) == pytest.approx(0.92)
    assert S.gap_fraction_target(0.3, 0.8, 0.5) == pytest.approx(0.55)
    assert S.gap_fraction_target(0.3, 0.8, 0.0) == pytest.approx(0.3)


# -----------------------------------------------------------------------------
# Bootstrap


def test_bootstrap_mean_is_seeded_and_matches_the_normal_interval():
    xs = np.random.default_rng(1).normal(3.0, 2.0, 1000)
    r = S.bootstrap_mean(xs, seed=7)
    assert r == S.bootstrap_mean(xs, seed=7)
    assert r["interval"] != S.bootstrap_mean(xs, seed=8)["interval"]
    se = xs.std(ddof=1) / math.sqrt(xs.size)
    assert r["point"] == pytest.approx(xs.mean())
    # Monte Carlo error of a 2.5% quantile from B = 2000 resamples is about 0.06 SE
    assert r["interval"][0] == pytest.approx(xs.mean() - 1.96 * se, abs=0.25 * se)
    assert r["interval"][1] == pytest.approx(xs.mean() + 1.96 * se, abs=0.25 * se)


def test_bootstrap_k_point_is_the_mean_curve_and_identical_units_give_no_spread():
    a = unit((4, 16, 64), (0.2, 0.4, 0.8), locked=0.1, ceiling=0.9)
    b = unit((4, 16, 64), (0.4, 0.6, 1.0), locked=0.3, ceiling=1.1)
    r = S.bootstrap_k([a, b], frac=0.5, seed=0)
    # mean curve (0.3, 0.5, 0.9), mean target 0.2 + 0.5 * 0.8 = 0.6: a quarter of the way from 16 to 64 in log k
    assert r["point"] == pytest.approx(16 * 4 ** 0.25)
    assert r["never_share"] == 0.0 and r["n_units"] == 2 and r["target"] == pytest.approx(0.6)
    # b is a shifted up by 0.2, curve and target alike: every resample's mean curve reaches its target at that k
    assert r["interval"] == (pytest.approx(r["point"]), pytest.approx(r["point"]))
    c = unit((4, 16, 64), (0.1, 0.7, 0.9), locked=0.1, ceiling=0.9)   # reaches 0.5 between 4 and 16
    spread = S.bootstrap_k([a, c], frac=0.5, seed=0)["interval"]
    assert spread == (pytest.approx(S.k_to_reach(c.ks, c.ys, 0.5)), pytest.approx(S.k_to_reach(a.ks, a.ys, 0.5)))
    assert S.bootstrap_k([a, b], frac=0.5, seed=0) == r                                   # seeded
    assert S.bootstrap_k([dict(ks=a.ks, ys=a.ys, locked=0.1, ceiling=0.9), b], frac=0.5, seed=0) == r  # dicts


def test_bootstrap_k_is_scale_equivariant_in_k():
    rng = np.random.default_rng(0)
    units = [unit((4, 16, 64, 256), np.sort(rng.uniform(0.1, 1.0, 4)), locked=0.1) for _ in range(5)]
    shifted = [unit([4 * k for k in u.ks], u.ys, locked=0.1) for u in units]
    for stat in S.STATISTICS:
        r, r4 = S.bootstrap_k(units, 0.6, seed=2, statistic=stat), S.bootstrap_k(shifted, 0.6, seed=2, statistic=stat)
        assert r4["point"] == pytest.approx(4 * r["point"])
        assert np.allclose(r4["interval"], np.multiply(4, r["interval"]))
        assert r["interval"][0] < r["interval"][1]  # 5 different units: some spread


def test_bootstrap_k_never_reached_share_and_open_interval():
    ks = (4, 16, 64)
    good = unit(ks, (0.2, 0.6, 1.0), locked=0.2, ceiling=1.0)    # recovers the whole gap by 64
    flat = unit(ks, (0.2, 0.2, 0.2), locked=0.2, ceiling=1.0)    # never moves
    r = S.bootstrap_k([good, flat], frac=0.9, B=4000, seed=0)
    # only the resample (good, good) reaches 90% of the gap: probability 1/4
    assert r["never_share"] == pytest.approx(0.75, abs=0.03)
    assert r["point"] == math.inf and r["point_bounds"] == (64.0, math.inf)
    assert r["interval"] == (pytest.approx(S.k_to_reach(ks, good.ys, 0.92)), math.inf)
    # per-unit statistic: a resample with the flat unit is censored, bounded below through k_max = 64
    g = S.bootstrap_k([good, flat], frac=0.9, B=4000, seed=0, statistic="unit_geomean")
    assert g["never_share"] == pytest.approx(0.75, abs=0.03) and g["interval"][1] == math.inf
    assert g["point_bounds"][0] == pytest.approx(math.sqrt(S.k_to_reach(ks, good.ys, 0.92) * 64))


def test_bootstrap_k_unit_geomean_point():
    a = unit((4, 16, 64), (0.0, 1.0, 1.0))    # reaches 0.5 at 8
    b = unit((4, 16, 64), (0.0, 0.0, 1.0))    # reaches 0.5 at 32
    assert S.bootstrap_k([a, b], 0.5, statistic="unit_geomean")["point"] == pytest.approx(16.0)
    assert S.bootstrap_k([a, b], 0.5)["point"] == pytest.approx(16.0)  # mean curve (0, .5, 1) reaches .5 at 16


def test_bad_curves_are_refused():
    with pytest.raises(ValueError):
        S.bootstrap_k([unit((4, 16), (0.1, 0.2)), unit((4, 32), (0.1, 0.2))], 0.5)  # two grids, mean curve
    with pytest.raises(ValueError):
        S.bootstrap_k([unit((4, 16), (0.1,))], 0.5)
    with pytest.raises(ValueError):
        S.bootstrap_k([unit((4, 16), (0.1, 0.2))], 0.5, statistic="median")


def test_bootstrap_ratio_of_identical_groups_and_of_a_shifted_group():
    rng = np.random.default_rng(4)
    units = [unit((4, 16, 64, 256), np.sort(rng.uniform(0.1, 1.0, 4)), locked=0.1) for _ in range(4)]
    r = S.bootstrap_ratio(units, units, 0.6, seed=1)
    assert r["point"] == 1.0 and r["interval"][0] < 1.0 < r["interval"][1]
    assert S.bootstrap_ratio(units, units, 0.6, seed=1) == r
    # group a needs 4x the demonstrations of the same curves: the ratio's distribution is 4 x that of the above
    shifted = [unit([4 * k for k in u.ks], u.ys, locked=0.1) for u in units]
    r4 = S.bootstrap_ratio(shifted, units, 0.6, seed=1)
    assert r4["point"] == pytest.approx(4.0) and np.allclose(r4["interval"], np.multiply(4, r["interval"]))
    assert r4["k_a"] == pytest.approx(4 * r4["k_b"])


def test_bootstrap_ratio_censoring():
    ks = (4, 16, 64)
    good = unit(ks, (0.2, 0.6, 1.0), locked=0.2)
    flat = unit(ks, (0.2, 0.2, 0.2), locked=0.2)
    k_good = S.k_to_reach(ks, good.ys, 0.92)
    r = S.bootstrap_ratio([flat], [good], 0.9, seed=0)           # a never reaches: ratio > 64 / k_good
    assert r["point"] == math.inf and r["never_share_a"] == 1.0 and r["never_share_b"] == 0.0
    assert r["interval"] == (pytest.approx(64 / k_good), math.inf)
    r = S.bootstrap_ratio([good], [flat], 0.9, seed=0)           # b never reaches: ratio < k_good / 64
    assert r["point"] == 0.0 and r["interval"] == (0.0, pytest.approx(k_good / 64))
    r = S.bootstrap_ratio([flat], [flat], 0.9, seed=0)           # neither: nothing known
    assert math.isnan(r["point"]) and r["interval"] == (0.0, math.inf)


# -----------------------------------------------------------------------------
# Standard errors, Welch's t and the Student t distribution


def test_mean_of_domains_se():
    assert S.mean_of_domains_se([0.03, 0.04]) == pytest.approx(0.025)     # sqrt(9e-4 + 16e-4) / 2
    assert S.mean_of_domains_se([0.02] * 4) == pytest.approx(0.01)       # sqrt(4 * 4e-4) / 4
    assert S.mean_of_domains_se([0.05]) == pytest.approx(0.05)


def test_welch_t_against_hand_computed_values():
    w = S.welch_t([1, 2, 3, 4], [2, 4, 6, 8, 10])
    # means 2.5 and 6; variances of the means (5/3)/4 = 5/12 and 10/5 = 2
    assert w.t == pytest.approx(-3.5 / math.sqrt(5 / 12 + 2))
    assert w.df == pytest.approx((29 / 12) ** 2 / ((5 / 12) ** 2 / 3 + 2 ** 2 / 4))  # = 2523/457
    assert w.p == pytest.approx(t_p_by_integration(w.t, w.df), abs=1e-6)
    assert S.welch_t([1, 2, 3], [3, 2, 1]) == (0.0, pytest.approx(4.0), 1.0)
    assert S.welch_t([1, 1], [2, 2]) == (-math.inf, pytest.approx(math.nan, nan_ok=True), 0.0)
    with pytest.raises(ValueError):
        S.welch_t([1], [1, 2])


def t_p_by_integration(t, df, n=200001):
    """Two-sided p-value by integrating the Student t density from 0 to |t| (Simpson's rule): an independent
    reference."""
    x = np.linspace(0.0, abs(t), n)
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    f = c * (1 + x * x / df) ** (-(df + 1) / 2)
    h = x[1] - x[0]
    integral = h / 3 * (f[0] + f[-1] + 4 * f[1:-1:2].sum() + 2 * f[2:-1:2].sum())
    return 1 - 2 * integral


def test_student_t_p_values():
    # table values: t_{0.975} for df = 10, 1, 2, 30
    assert S.t_two_sided_p(2.228, 10) == pytest.approx(0.05, abs=2e-4)
    assert S.t_two_sided_p(12.706, 1) == pytest.approx(0.05, abs=2e-5)
    assert S.t_two_sided_p(4.303, 2) == pytest.approx(0.05, abs=2e-5)
    assert S.t_two_sided_p(2.042, 30) == pytest.approx(0.05, abs=2e-4)
    for t in (0.1, 0.7, 1.5, 3.0, 20.0, -2.0):
        assert S.t_two_sided_p(t, 1) == pytest.approx(1 - 2 / math.pi * math.atan(abs(t)), rel=1e-10)  # Cauchy
        assert S.t_two_sided_p(t, 2) == pytest.approx(1 - abs(t) / math.sqrt(2 + t * t), rel=1e-10)
        assert S.t_two_sided_p(t, 1e6) == pytest.approx(math.erfc(abs(t) / math.sqrt(2)), rel=1e-4, abs=1e-12)
    for t, df in ((0.5, 3.3), (2.5, 7.7), (1.0, 0.6)):
        assert S.t_two_sided_p(t, df) == pytest.approx(t_p_by_integration(t, df), abs=1e-7)
    assert S.t_two_sided_p(0.0, 5) == 1.0 and S.t_two_sided_p(math.inf, 5) == 0.0


def test_betainc_symmetry_and_closed_forms():
    for a, b, x in ((2.0, 3.0, 0.3), (0.5, 0.5, 0.9), (7.0, 1.5, 0.95)):
        assert S.betainc(a, b, x) == pytest.approx(1 - S.betainc(b, a, 1 - x), rel=1e-12)
    assert S.betainc(1.0, 1.0, 0.37) == pytest.approx(0.37)                    # uniform
    assert S.betainc(2.0, 1.0, 0.6) == pytest.approx(0.36)                      # x^a for b = 1
    assert S.betainc(1.0, 3.0, 0.2) == pytest.approx(1 - 0.8 ** 3)              # 1 - (1-x)^b for a = 1


# -----------------------------------------------------------------------------
# Verdicts


def test_decide_three_cases_and_open_ends():
    claim = S.Claim("scratch locks need 2-4x the demonstrations", 2, 4)
    assert S.decide(claim, 3.0, (2.2, 3.5))["verdict"] == "reproduced"
    assert S.decide(claim, 1.2, (1.0, 1.6))["verdict"] == "not reproduced"
    assert S.decide(claim, 5.0, (4.5, math.inf))["verdict"] == "not reproduced"
    d = S.decide(claim, 3.0, (1.5, 3.5))
    assert d["verdict"] == "inconclusive" and d["value"] == 3.0 and d["interval"] == (1.5, 3.5)
    assert "[2, 4]" in d["rule"] and "inside" in d["rule"]
    assert S.decide(claim, 3.0, (2.5, math.inf))["verdict"] == "inconclusive"
    assert S.decide(claim, 3.0, (1.0, 6.0))["verdict"] == "inconclusive"          # contains the range
    assert S.decide(claim, math.nan, (0.0, math.nan))["verdict"] == "inconclusive"
    harder = S.Claim("more locking data is harder to unlock", 1, include_low=False)
    assert S.decide(harder, 2.0, (1.0, 3.0))["verdict"] == "inconclusive"          # 1 is not "harder"
    assert S.decide(harder, 2.0, (1.1, math.inf))["verdict"] == "reproduced"
    assert S.decide(harder, 0.8, (0.5, 1.0))["verdict"] == "not reproduced"
    assert S.decide(S.Claim("x", 1), 2.0, (1.0, 3.0))["verdict"] == "reproduced"   # closed end
