"""The tests behind the paper's three claims: each a pure function of the values it tests, with its null.

- :func:`welch`: Welch's t-test of two groups (null: equal means), the mean
  difference with its Welch 95% interval and Hedges' g with a 95% interval
  from the noncentral t distribution.
- :func:`sign_flip`: the one-sided sign-flip permutation test of a mean
  (null: the values are symmetric about 0), exact over all 2^n flips up to
  :data:`EXACT_FLIPS` values, Monte Carlo with a fixed seed above.
- :func:`max_count_sf`: the exact distribution of the largest label count in
  a draw without replacement from a pool of labels (the permutation null of
  "the seeds of a cell agree on a state more than runs of the study do").

Every p-value here is the test's own (unadjusted); :mod:`dynstudy.analysis.stats.verdicts`
adjusts them within their family.

Examples
--------
>>> round(sign_flip([3, 2, 4, 2, 3])["p"], 5)  # all 5 leads positive: only the identity reaches the sum
0.03125
>>> round(max_count_sf([4, 4], 2, 2), 4)  # 2 of 8 runs (4 in each state) share a state: 3/7
0.4286
"""
from __future__ import annotations

import functools
import math
from fractions import Fraction

import numpy as np
from scipy import optimize, stats

#: Up to this many values :func:`sign_flip` enumerates every sign vector; above, Monte Carlo.
EXACT_FLIPS = 16
#: Monte Carlo sign vectors above :data:`EXACT_FLIPS` values, and their seed.
MC_FLIPS, MC_SEED = 20000, 0


def hedges_g(x, y) -> float:
    """Standardised mean difference (x - y) over the pooled SD, with the small-sample correction J.

    NaN with fewer than 2 values in a group or no spread.

    >>> round(hedges_g([1.0, 2.0, 3.0], [4.0, 5.0, 6.0]), 4)
    -2.4
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    nx, ny = len(x), len(y)
    if nx < 2 or ny < 2:
        return math.nan
    pooled = math.sqrt(((nx - 1) * x.var(ddof=1) + (ny - 1) * y.var(ddof=1)) / (nx + ny - 2))
    if pooled == 0:
        return math.nan
    return float((x.mean() - y.mean()) / pooled * small_sample_j(nx + ny - 2))


def small_sample_j(df: int) -> float:
    """Hedges' correction J = 1 - 3 / (4 df - 1) of Cohen's d with ``df`` = n_x + n_y - 2 degrees of freedom."""
    return 1 - 3 / (4 * df - 1)


def g_interval(g: float, nx: int, ny: int, confidence: float = 0.95) -> tuple[float, float]:
    """Interval of Hedges' g by inverting the noncentral t distribution of the pooled t statistic.

    With d = g / J, t = d sqrt(nx ny / (nx + ny)) follows a noncentral t with
    nx + ny - 2 degrees of freedom and noncentrality delta sqrt(nx ny / (nx + ny));
    the interval's ends are the noncentralities at which the observed t is the
    upper and lower (1 - confidence) / 2 quantile, scaled back to g (Steiger and
    Fouladi). Where the root cannot be bracketed (|t| in the hundreds) the normal
    approximation SE(g) = sqrt((nx + ny) / (nx ny) + g^2 / (2 (nx + ny))) is used.

    >>> [round(v, 2) for v in g_interval(1.0, 10, 10)]
    [0.09, 1.89]
    """
    df = nx + ny - 2
    j = small_sample_j(df)
    scale = math.sqrt(nx * ny / (nx + ny))
    t = g / j * scale
    tail = (1 - confidence) / 2

    def root(target):
        f = lambda ncp: stats.nct.cdf(t, df, ncp) - target  # noqa: E731 (decreasing in ncp)
        width = 2.0 + abs(t)
        lo, hi = t - width, t + width
        for _ in range(8):
            if f(lo) > 0 > f(hi):
                return optimize.brentq(f, lo, hi, xtol=1e-10)
            lo, hi, width = lo - width, hi + width, 2 * width
        raise ValueError("no bracket")

    try:
        lo, hi = root(1 - tail), root(tail)
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("not finite")
        return lo / scale * j, hi / scale * j
    except (ValueError, RuntimeError):
        se = math.sqrt((nx + ny) / (nx * ny) + g * g / (2 * (nx + ny)))
        z = stats.norm.ppf(1 - tail)
        return g - z * se, g + z * se


def welch(x, y, confidence: float = 0.95) -> dict:
    """Welch's two-sided t-test of mean(x) = mean(y), with the effect and its intervals.

    Returns
    -------
    dict: t, df (Welch-Satterthwaite), p; diff = mean(x) - mean(y) with its Welch
    interval (diff_low, diff_high); g (Hedges) with its noncentral-t interval
    (g_low, g_high; NaN where a group has no spread). Requires 2 values per
    group and some spread across all values.

    >>> r = welch([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    >>> round(r["p"], 4), r["diff"], [round(v, 3) for v in (r["diff_low"], r["diff_high"])]
    (0.0213, -3.0, [-5.267, -0.733])
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    nx, ny = len(x), len(y)
    vx, vy = x.var(ddof=1) / nx, y.var(ddof=1) / ny
    se = math.sqrt(vx + vy)
    diff = float(x.mean() - y.mean())
    df = (vx + vy) ** 2 / (vx ** 2 / (nx - 1) + vy ** 2 / (ny - 1))
    t = diff / se
    p = float(2 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    g = hedges_g(x, y)
    g_low, g_high = g_interval(g, nx, ny, confidence) if math.isfinite(g) else (math.nan, math.nan)
    return {"t": float(t), "df": float(df), "p": p, "diff": diff, "diff_low": diff - half, "diff_high": diff + half,
            "g": float(g), "g_low": float(g_low), "g_high": float(g_high)}


@functools.lru_cache(maxsize=4)
def _random_signs(n_mc: int, n: int, seed: int) -> np.ndarray:
    """``n_mc`` random sign vectors of length ``n`` drawn with ``seed`` (int8, read-only): every test of ``n``
    values draws the same ones, so they are drawn once (drawing costs 30 times the test's product)."""
    signs = np.random.default_rng(seed).choice(np.array([-1, 1], dtype=np.int8), size=(n_mc, n))
    signs.flags.writeable = False
    return signs


def sign_flip(values, exact_max: int = EXACT_FLIPS, n_mc: int = MC_FLIPS, seed: int = MC_SEED) -> dict:
    """One-sided sign-flip permutation test that the mean of ``values`` is above 0.

    Null: the values are symmetric about 0, so each sign is equally likely
    either way. The statistic is the sum (equivalently the mean); p is the share
    of the 2^n sign vectors whose flipped sum reaches the observed one (exact,
    n <= ``exact_max``), or (1 + hits) / (1 + ``n_mc``) over random sign vectors
    drawn with ``seed``. ``p_min`` is the smallest p these values' layout can give
    (every non-zero value positive): 2^-(non-zero values).

    >>> r = sign_flip([1, -1, 2, 3])  # sum 5: reached by no flip, or by flipping either 1
    >>> r["p"], r["p_min"]
    (0.1875, 0.0625)
    """
    x = np.asarray(values, float)
    n = len(x)
    obs = float(x.sum())
    tol = 1e-9 * max(1.0, float(np.abs(x).sum()))
    nonzero = int(np.count_nonzero(x))
    p_min = 2.0 ** -nonzero
    if n == 0:
        return {"p": 1.0, "p_min": 1.0, "exact": True, "n": 0}
    a = np.abs(x)
    if n <= exact_max:
        bits = (np.arange(2 ** n)[:, None] >> np.arange(n)) & 1
        sums = (1 - 2 * bits) @ a
        return {"p": float(np.mean(sums >= obs - tol)), "p_min": p_min, "exact": True, "n": n}
    hits = int(np.count_nonzero(_random_signs(n_mc, n, seed) @ a >= obs - tol))
    return {"p": (1 + hits) / (1 + n_mc), "p_min": p_min, "exact": False, "n": n}


def _ways_all_below(counts, n: int, cap: int) -> int:
    """Number of n-subsets of the pool (``counts`` labels of each kind) with at most ``cap`` of each kind."""
    poly = [1] + [0] * n  # coefficients of t^0..t^n
    for c in counts:
        terms = [math.comb(c, k) for k in range(min(c, cap, n) + 1)]
        new = [0] * (n + 1)
        for i, coef in enumerate(poly):
            if coef:
                for k, w in enumerate(terms):
                    if i + k > n:
                        break
                    new[i + k] += coef * w
        poly = new
    return poly[n]


def max_count_sf(counts, n: int, m: int) -> float:
    """P(largest label count >= ``m``) for ``n`` labels drawn without replacement from a pool of ``counts``.

    The exact null of a cell's agreement when state labels are permuted across
    the study's runs (study-wide counts kept): every composition (x_1..x_K) of
    the n labels has probability prod C(c_k, x_k) / C(N, n) (multivariate
    hypergeometric). The compositions with every x_k < m are summed exactly
    (integer arithmetic, as the coefficient of t^n in prod_k sum_{x < m} C(c_k, x) t^x).

    >>> max_count_sf([5], 3, 3)  # one state in the whole pool
    1.0
    >>> float(round(max_count_sf([2, 2, 2, 2, 2], 2, 2), 4))  # two of 10 runs, 2 of each of 5 states
    0.1111
    """
    counts = [int(c) for c in counts if c > 0]
    total = sum(counts)
    if m <= 0 or n == 0:
        return 1.0 if m <= 0 else 0.0
    if n > total:
        raise ValueError(f"cannot draw {n} labels from a pool of {total}")
    below = _ways_all_below(counts, n, m - 1)
    return float(1 - Fraction(below, math.comb(total, n)))


def max_count_p_min(counts, n: int) -> float:
    """The smallest p :func:`max_count_sf` can give a draw of ``n``: every label the same, as far as the pool allows.

    Up to the pool's largest count that is sum_k C(c_k, n) / C(N, n).

    >>> round(max_count_p_min([2, 2, 2, 2, 2], 2), 4)
    0.1111
    """
    counts = [int(c) for c in counts if c > 0]
    if n == 0 or not counts:
        return 1.0
    if n > max(counts):
        return max_count_sf(counts, n, max(counts))
    return float(Fraction(sum(math.comb(c, n) for c in counts), math.comb(sum(counts), n)))


def max_count_needs(counts, alpha: float) -> int | None:
    """The smallest number of runs whose agreement can reach p < ``alpha`` under the pool's counts; None if none can.

    Looked for up to the pool's largest count (every run of the draw in one state).

    >>> max_count_needs([10, 10, 10, 10, 10], 0.05), max_count_needs([12], 0.05)
    (3, None)
    """
    counts = [int(c) for c in counts if c > 0]
    for n in range(1, max(counts, default=0) + 1):
        if max_count_p_min(counts, n) < alpha:
            return n
    return None


def mean_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """The t-interval of the mean of ``values`` (NaN with fewer than 2 or no spread).

    >>> [round(v, 3) for v in mean_interval([1.0, 2.0, 3.0])]
    [-0.484, 4.484]
    """
    x = np.asarray(values, float)
    if len(x) < 2 or np.ptp(x) == 0:
        return math.nan, math.nan
    half = float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1)) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)
