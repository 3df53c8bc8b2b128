"""The effect each claim's test detects with 80% power at 5 and 10 seeds (docs/metrics.md, "Power").

Usage: ``python bench/power.py`` (seeded; seconds on one core). Prints a Markdown table.

- Claim 1 (Welch t-test, two-sided, alpha 0.05, n seeds per dataset): the
  standardised difference d (Hedges' g estimates it) at which the test rejects
  80% of the time, from the noncentral t distribution (equal variances: the
  Welch test's degrees of freedom are then close to 2n - 2); alone, and as
  the smallest p of a Holm family of 4 tests (compared with alpha / 4).
- Claim 2 (sign-flip test of the mean lead, one-sided, alpha 0.05): leads
  drawn N(delta, 1), delta in units of the leads' SD; power by simulation
  through :func:`dynstudy.analysis.stats.claim_tests.sign_flip`.
- Claim 3 (largest state count against its permutation null): a study of 8
  cells x n seeds whose states are uniform over the 5 states, except the
  tested cell, whose seeds are in one state with probability q (else uniform
  over the other four); power by simulation of the exact test
  (:func:`dynstudy.analysis.stats.claim_tests.max_count_sf`).
"""
from __future__ import annotations

from collections import Counter

import numpy as np
from scipy import optimize, stats

from dynstudy.analysis.stats.claim_tests import max_count_p_min, max_count_sf, sign_flip
from dynstudy.analysis.stats.verdicts import ALPHA

POWER = 0.8
SEEDS = (5, 10)
REPS = 4000
SEED = 0


def welch_power(d: float, n: int, alpha: float = ALPHA) -> float:
    """Power of the two-sided t-test of two groups of ``n`` at standardised difference ``d``."""
    df = 2 * n - 2
    crit = stats.t.ppf(1 - alpha / 2, df)
    ncp = d * np.sqrt(n / 2)
    lower = stats.nct.cdf(-crit, df, ncp)  # negligible, and NaN in scipy's nct far in the tail
    return float(stats.nct.sf(crit, df, ncp) + np.nan_to_num(lower))


def welch_effect(n: int, alpha: float = ALPHA) -> float:
    """The d the t-test detects with :data:`POWER` at ``n`` per group."""
    return float(optimize.brentq(lambda d: welch_power(d, n, alpha) - POWER, 0.01, 4))


def sign_flip_power(delta: float, n: int, rng) -> float:
    """Share of ``REPS`` samples of n leads ~ N(delta, 1) whose sign-flip p is below ALPHA."""
    return float(np.mean([sign_flip(rng.normal(delta, 1.0, n))["p"] < ALPHA for _ in range(REPS)]))


def state_power(q: float, n: int, rng, cells: int = 8) -> float:
    """Share of ``REPS`` studies in which the agreeing cell's exact test gives p < ALPHA."""
    hits = 0
    for _ in range(REPS):
        others = rng.integers(0, 5, size=(cells - 1) * n)
        cell = np.where(rng.random(n) < q, 0, rng.integers(1, 5, size=n))
        counts = list(Counter(np.r_[others, cell].tolist()).values())
        top = max(Counter(cell.tolist()).values())
        hits += max_count_p_min(counts, n) < ALPHA and max_count_sf(counts, n, top) < ALPHA
    return hits / REPS


def crossing(power_at, grid) -> float:
    """The smallest grid value at which ``power_at`` reaches :data:`POWER`, interpolated linearly."""
    prev_x, prev_p = None, None
    for x in grid:
        p = power_at(x)
        if p >= POWER:
            if prev_x is None:
                return float(x)
            return float(prev_x + (POWER - prev_p) * (x - prev_x) / (p - prev_p))
        prev_x, prev_p = x, p
    return float("nan")


def main() -> None:
    print("| claim | test | effect detected with 80% power | 5 seeds | 10 seeds |")
    print("|---|---|---|---|---|")
    print("| 1 integration separates datasets | Welch t-test, two-sided | Hedges' g (d), one test | "
          + " | ".join(f"{welch_effect(n):.2f}" for n in SEEDS) + " |")
    print("| 1 (in a Holm family of 4) | the same, smallest p against alpha / 4 | Hedges' g (d) | "
          + " | ".join(f"{welch_effect(n, ALPHA / 4):.2f}" for n in SEEDS) + " |")
    rng = np.random.default_rng(SEED)
    lead = [crossing(lambda d: sign_flip_power(d, n, rng), np.arange(0.2, 2.61, 0.1)) for n in SEEDS]
    print("| 2 trigger precedes plateau | sign-flip test of the mean lead, one-sided | mean lead / SD of leads | "
          + " | ".join(f"{v:.2f}" for v in lead) + " |")
    agree = [crossing(lambda q: state_power(q, n, rng), np.arange(0.2, 1.001, 0.05)) for n in SEEDS]
    print("| 3 state stable across seeds | largest state count, permutation null | chance a seed is in the cell's "
          "state (null: 0.2) | " + " | ".join(f"{v:.2f}" for v in agree) + " |")


if __name__ == "__main__":
    main()
