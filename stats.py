"""
stats.py: the statistics behind the report's verdicts, in numpy and the standard library (no torch).

The paper (Greenblatt et al. 2024) plots sample-efficiency curves (correctness without the password after SFT on k
demonstrations) as means over 3 seeds with their standard errors, and states ratios read off those curves: "models
locked from scratch require 2-4x the amount of data to unlock to the same extent as models locked via SFT", "models
locked using more SFT data are harder to unlock". This module gives such a ratio a point estimate and an interval:

  1. The independent unit is a lock: one seed that made the lock (and its pretraining, where it has its own), was
     elicited, and has its own locked correctness (no password) and ceiling (with the password). A unit is a
     `Curve(ks, ys, locked, ceiling)` (or a dict with those keys).
  2. The target of a unit is `gap_fraction_target(locked, ceiling, frac)`: the correctness that recovers `frac` of
     its gap. `k_to_reach(ks, ys, target)` is where a curve first reaches a target, interpolated linearly in log k
     between the two grid points around it (report.py's convention); never reached on the grid: math.inf.
  3. `bootstrap_k` resamples units with replacement (B = 2000, a seeded numpy Generator) and computes the statistic
     for each resample: by default k_to_reach of the resample's mean curve at the resample's mean target (the
     paper reads its claims off mean curves; see bootstrap_k for why, and for the other choice).
  4. `bootstrap_ratio` does so for two groups, each resampled on its own, and takes k_a / k_b per resample.
  5. The interval is the percentile interval (Efron & Tibshirani 1993, ch. 13) of the resampled values. A k that is
     never reached is censored: it lies in (k_max, inf). Its lower bound (k_max) enters the lower percentile and its
     upper bound (inf) the upper one, so the interval is conservative and may be open: (lo, inf). The share of
     resamples that never reach the target is returned with it.
  6. `decide(claim, value, interval)` states the verdict rule as data: reproduced when the whole interval lies
     inside the claimed range, not reproduced when it is disjoint from it, inconclusive when it overlaps an end.

Also: `mean_of_domains_se` (the paper's SE of an average over K domains, s = (1/K) sqrt(sum s_i^2)), `welch_t`
(Welch's t, the Welch-Satterthwaite df and a two-sided p-value from a Student t CDF computed here through the
regularized incomplete beta function), `bootstrap_mean`.

Caveat: a percentile bootstrap over n units is only as good as n. With 3 units there are 10 distinct resamples,
each single-unit resample has probability 1/27, so a 95% interval is roughly the range of the single-unit values;
it cannot cover the variance that the 3 units did not show. Fine-tuning locks of one pretraining size share their
pretrained model, so their seeds do not cover pretraining variance either.

Usage (report.py):
  from stats import Curve, Claim, bootstrap_ratio, decide
  r = bootstrap_ratio(scratch_units, ft_units, frac=0.9, seed=0)
  d = decide(Claim("scratch needs 2-4x the demonstrations", 2, 4), r["point"], r["interval"])
"""
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

# -----------------------------------------------------------------------------
# Curves and the k that reaches a target


@dataclass(frozen=True)
class Curve:
    """One independent unit: correctness ys after SFT on ks demonstrations, the unit's locked correctness (no
    password, before SFT) and its ceiling (with the password)."""
    ks: tuple
    ys: tuple
    locked: float
    ceiling: float


def as_curve(c):
    """A Curve from a Curve or a dict with keys ks, ys, locked, ceiling; points sorted by k."""
    if isinstance(c, dict):
        c = Curve(c["ks"], c["ys"], c["locked"], c["ceiling"])
    pts = sorted(zip((float(k) for k in c.ks), (float(y) for y in c.ys)))
    if not pts or len(pts) != len(c.ks) or len(c.ks) != len(c.ys) or pts[0][0] <= 0:
        raise ValueError(f"a curve needs as many ks as ys, at least one point, and ks > 0: {c}")
    return Curve(tuple(k for k, _ in pts), tuple(y for _, y in pts), float(c.locked), float(c.ceiling))


def k_to_reach(ks, ys, target):
    """The smallest k at which the curve reaches `target` (y >= target): the first grid point that does, interpolated
    linearly in log k against the point before it; the first grid point itself if it already does; math.inf if no
    point does (never reached on this grid: the true k is above max(ks)). A curve that crosses, dips and crosses
    again counts its first crossing."""
    pts = sorted(zip((float(k) for k in ks), (float(y) for y in ys)))
    for i, (k, y) in enumerate(pts):
        if y >= target:
            if i == 0:
                return k
            k0, y0 = pts[i - 1]  # y0 < target <= y
            frac = (target - y0) / (y - y0)
            return math.exp(math.log(k0) + frac * (math.log(k) - math.log(k0)))
    return math.inf


def gap_fraction_target(locked, ceiling, frac):
    """The correctness that recovers `frac` of the gap between the locked correctness and the ceiling."""
    return locked + frac * (ceiling - locked)


# -----------------------------------------------------------------------------
# Bootstrap


def _interval(lower, upper, level):
    """Percentile interval: the (1-level)/2 quantile of the lower bounds and the (1+level)/2 quantile of the upper
    bounds (equal where nothing is censored). Quantiles are order statistics (numpy's inverted_cdf), so infinite
    bounds are never interpolated."""
    a = (1 - level) / 2
    lo = float(np.quantile(np.asarray(lower, dtype=float), a, method="inverted_cdf"))
    hi = float(np.quantile(np.asarray(upper, dtype=float), 1 - a, method="inverted_cdf"))
    return lo, hi


def bootstrap_mean(xs, B=2000, level=0.95, seed=0):
    """Mean of xs and its percentile bootstrap interval (B resamples of the values, with replacement)."""
    xs = np.asarray(xs, dtype=float)
    if xs.size == 0:
        raise ValueError("bootstrap_mean of no values")
    means = xs[np.random.default_rng(seed).integers(0, xs.size, (B, xs.size))].mean(axis=1)
    return dict(point=float(xs.mean()), interval=_interval(means, means, level), B=B, level=level, n=int(xs.size))


STATISTICS = ("mean_curve", "unit_geomean")


def _units(curves, statistic):
    units = [as_curve(c) for c in curves]
    if not units:
        raise ValueError("no curves")
    if statistic not in STATISTICS:
        raise ValueError(f"statistic={statistic!r}: use one of {', '.join(STATISTICS)}")
    if statistic == "mean_curve" and any(u.ks != units[0].ks for u in units):
        raise ValueError("statistic='mean_curve' needs every curve on the same grid of ks")
    return units


def _k_of_resamples(units, frac, statistic, idx):
    """For each row of idx (a resample: indices of units), the statistic's (lower bound, upper bound) of k; the two
    are equal unless the target is never reached on the grid (then k_max or a lower bound from it, and inf)."""
    if statistic == "mean_curve":
        ks = units[0].ks
        Y = np.array([u.ys for u in units])  # (n_units, K)
        T = np.array([gap_fraction_target(u.locked, u.ceiling, frac) for u in units])
        curves, targets = Y[idx].mean(axis=1), T[idx].mean(axis=1)  # (B, K), (B,): each resample's mean curve
        k = np.array([k_to_reach(ks, c, t) for c, t in zip(curves, targets)])
        return np.where(np.isinf(k), ks[-1], k), k
    # unit_geomean: each unit's own k at its own target, then the geometric mean over the resample
    k = np.array([k_to_reach(u.ks, u.ys, gap_fraction_target(u.locked, u.ceiling, frac)) for u in units])
    k_lo = np.where(np.isinf(k), [u.ks[-1] for u in units], k)
    return np.exp(np.log(k_lo)[idx].mean(axis=1)), np.exp(np.log(k)[idx].mean(axis=1))


def bootstrap_k(curves, frac=0.9, B=2000, level=0.95, seed=0, statistic="mean_curve"):
    """The k at which the curves recover `frac` of their gap, with a percentile bootstrap interval over units.

    curves: one per independent unit (Curve or dict). statistic:
      "mean_curve" (default): k_to_reach of the mean curve (over the units, at each k) at the mean target. This is
        what the paper's figures show and what report.py's table computed, so the point estimate is unchanged; it
        is defined when the average recovers the gap even if one unit does not; and averaging before reading off a
        crossing damps the noise of a single curve's crossing. Needs every unit on the same grid.
      "unit_geomean": the geometric mean over units of each unit's own k (log k is the scale of the interpolation
        and of ratio claims). One unit that never reaches its target makes the resample's k censored.
    Returns a dict: point (the statistic on all units; math.inf if never reached), point_bounds ((k_max, inf) when
    censored, else (point, point)), interval (lo, hi) at `level`, hi = inf when more than (1-level)/2 of the
    resamples never reach the target (an open interval: "above lo"), never_share (share of resamples that never
    reach it), k_max, target (mean target of all units), n_units, B, level, statistic, frac."""
    units = _units(curves, statistic)
    n = len(units)
    idx = np.random.default_rng(seed).integers(0, n, (B, n))
    lo, hi = _k_of_resamples(units, frac, statistic, idx)
    p_lo, p_hi = _k_of_resamples(units, frac, statistic, np.arange(n)[None, :])
    return dict(point=float(p_hi[0]), point_bounds=(float(p_lo[0]), float(p_hi[0])),
                interval=_interval(lo, hi, level), never_share=float(np.isinf(hi).mean()),
                k_max=max(u.ks[-1] for u in units),
                target=float(np.mean([gap_fraction_target(u.locked, u.ceiling, frac) for u in units])),
                n_units=n, B=B, level=level, statistic=statistic, frac=frac)


def _ratio_bounds(a_lo, a_hi, b_lo, b_hi):
    """Bounds of k_a / k_b from bounds of each: a censored k_a gives (k_max_a / k_b, inf), a censored k_b gives
    (0, k_a / k_max_b), both censored (0, inf)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.where(np.isinf(b_hi), 0.0, a_lo / b_hi)
        hi = np.where(np.isinf(a_hi), np.inf, a_hi / b_lo)
    return lo, hi


def bootstrap_ratio(curves_a, curves_b, frac=0.9, B=2000, level=0.95, seed=0, statistic="mean_curve"):
    """k_a / k_b (how many times the demonstrations group a needs to recover `frac` of its gap, against group b),
    with a percentile bootstrap interval: each resample draws group a's units and group b's units independently,
    with replacement, from one seeded Generator. For "scratch locks need 2-4x": a = scratch, b = fine-tuning lock;
    for "more locking data is harder to unlock": a = more data, b = less.

    Censoring (a target never reached on the grid) gives bounds as in _ratio_bounds; the lower percentile is taken
    over the lower bounds and the upper one over the upper bounds, so the interval is conservative and can be
    (lo, inf) or (0, hi). Returns a dict: point (inf if only a never reaches, 0 if only b, nan if neither),
    point_bounds, interval, never_share_a, never_share_b, k_a and k_b (their bootstrap_k point estimates), n_a,
    n_b, B, level, statistic, frac."""
    ua, ub = _units(curves_a, statistic), _units(curves_b, statistic)
    rng = np.random.default_rng(seed)
    idx_a, idx_b = rng.integers(0, len(ua), (B, len(ua))), rng.integers(0, len(ub), (B, len(ub)))
    a_lo, a_hi = _k_of_resamples(ua, frac, statistic, idx_a)
    b_lo, b_hi = _k_of_resamples(ub, frac, statistic, idx_b)
    pa_lo, pa_hi = _k_of_resamples(ua, frac, statistic, np.arange(len(ua))[None, :])
    pb_lo, pb_hi = _k_of_resamples(ub, frac, statistic, np.arange(len(ub))[None, :])
    r_lo, r_hi = _ratio_bounds(a_lo, a_hi, b_lo, b_hi)
    p_lo, p_hi = _ratio_bounds(pa_lo, pa_hi, pb_lo, pb_hi)
    point = math.nan if math.isinf(pa_hi[0]) and math.isinf(pb_hi[0]) else float(pa_hi[0] / pb_hi[0])
    return dict(point=point, point_bounds=(float(p_lo[0]), float(p_hi[0])), interval=_interval(r_lo, r_hi, level),
                never_share_a=float(np.isinf(a_hi).mean()), never_share_b=float(np.isinf(b_hi).mean()),
                k_a=float(pa_hi[0]), k_b=float(pb_hi[0]), n_a=len(ua), n_b=len(ub), B=B, level=level,
                statistic=statistic, frac=frac)


# -----------------------------------------------------------------------------
# Standard errors and Welch's t


def mean_of_domains_se(ses):
    """Standard error of an average of K independent per-domain means with standard errors ses (the paper's
    s = (1/K) sqrt(sum s_i^2))."""
    ses = [float(s) for s in ses]
    return math.sqrt(sum(s * s for s in ses)) / len(ses)


def betainc(a, b, x):
    """The regularized incomplete beta function I_x(a, b), by its continued fraction (Abramowitz & Stegun 26.5.8)
    evaluated with the modified Lentz method; for x > (a+1)/(a+b+2) through I_x(a, b) = 1 - I_{1-x}(b, a), where
    the fraction converges fast."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"betainc: x={x} outside [0, 1]")
    if x == 0.0 or x == 1.0:
        return x
    if x > (a + 1) / (a + b + 2):
        return 1.0 - betainc(b, a, 1.0 - x)
    front = math.exp(a * math.log(x) + b * math.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))) / a
    # 1 / (1 + d1 / (1 + d2 / (1 + ...))) with d_{2m} = m(b-m)x / ((a+2m-1)(a+2m)),
    # d_{2m+1} = -(a+m)(a+b+m)x / ((a+2m)(a+2m+1)); Lentz: f_j = f_{j-1} C_j D_j, stop when C_j D_j = 1
    tiny, eps = 1e-300, 1e-15
    f, C, D = tiny, tiny, 0.0
    for j in range(1, 2001):
        if j == 1:
            num = 1.0
        else:
            i = j - 1  # the index of d_i
            m = i // 2
            num = (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)) if i % 2 == 0 else
                   -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)))
        D = 1.0 + num * D
        D = 1.0 / (D if abs(D) > tiny else tiny)
        C = 1.0 + num / C
        C = C if abs(C) > tiny else tiny
        f *= C * D
        if abs(C * D - 1.0) < eps:
            return front * f
    raise ArithmeticError(f"betainc({a}, {b}, {x}) did not converge")


def t_two_sided_p(t, df):
    """P(|T| >= |t|) for Student's t with df degrees of freedom (df > 0, not necessarily whole):
    I_{df/(df+t^2)}(df/2, 1/2)."""
    if math.isnan(t) or math.isnan(df):
        return math.nan
    if math.isinf(t):
        return 0.0
    return betainc(df / 2, 0.5, df / (df + t * t))


class Welch(NamedTuple):
    t: float
    df: float
    p: float  # two-sided


def welch_t(a, b):
    """Welch's t test of mean(a) = mean(b) with unequal variances: t = (mean_a - mean_b) / sqrt(v_a/n_a + v_b/n_b)
    (sample variances), Welch-Satterthwaite df = (v_a/n_a + v_b/n_b)^2 / ((v_a/n_a)^2/(n_a-1) + (v_b/n_b)^2/(n_b-1)),
    and the two-sided p-value. Both samples without spread: t = +-inf, p = 0 if the means differ; t = 0, p = 1 if
    not (df is then nan)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.size < 2 or b.size < 2:
        raise ValueError("welch_t needs at least 2 values in each sample")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    diff = float(a.mean() - b.mean())
    if va + vb == 0:
        return Welch(0.0, math.nan, 1.0) if diff == 0 else Welch(math.copysign(math.inf, diff), math.nan, 0.0)
    t = diff / math.sqrt(va + vb)
    df = float((va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1)))
    return Welch(t, df, t_two_sided_p(t, df))


# -----------------------------------------------------------------------------
# Verdicts as data


@dataclass(frozen=True)
class Claim:
    """A claimed range for a statistic: low..high, each end included unless said otherwise. Claim("scratch needs
    2-4x", 2, 4) is [2, 4]; Claim("more data is harder", 1, include_low=False) is (1, inf]."""
    text: str
    low: float = -math.inf
    high: float = math.inf
    include_low: bool = True
    include_high: bool = True

    def contains(self, x):
        return ((self.low < x or (self.include_low and x == self.low)) and
                (x < self.high or (self.include_high and x == self.high)))

    def range_text(self):
        return f"{'[' if self.include_low else '('}{self.low:g}, {self.high:g}{']' if self.include_high else ')'}"


def decide(claim, value, interval, level=0.95):
    """Verdict on a claim from a statistic's interval (lo, hi): "reproduced" if both ends lie in the claimed range
    (the whole interval is inside it), "not reproduced" if the interval and the range do not meet, "inconclusive" if
    they overlap without one containing the other (or an end is nan). `value` (the point estimate) is reported, not
    used: the interval decides. Returns {"verdict", "rule", "claim", "value", "interval"}."""
    lo, hi = float(interval[0]), float(interval[1])
    rule = (f"{claim.text}: reproduced if the {level:.0%} interval lies inside {claim.range_text()}, not reproduced "
            f"if it is disjoint from it, inconclusive if it overlaps an end")
    if math.isnan(lo) or math.isnan(hi):
        verdict = "inconclusive"
    elif claim.contains(lo) and claim.contains(hi):
        verdict = "reproduced"
    elif hi < claim.low or lo > claim.high or (hi == claim.low and not claim.include_low) or \
            (lo == claim.high and not claim.include_high):
        verdict = "not reproduced"
    else:
        verdict = "inconclusive"
    return dict(verdict=verdict, rule=rule, claim=claim.text, value=value, interval=(lo, hi))
