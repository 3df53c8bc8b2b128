"""How much seeds agree: the mean of a pairwise similarity over every pair of seeds, with a seed-level interval.

Pairs of seeds are not independent (each seed is in m - 1 pairs), so a t-interval over the pairs would be far
too narrow. The interval here is the jackknife over seeds: leave each seed out, take the mean over the pairs
left, and use the spread of those m means (Tukey's variance estimate, Student t with m - 1 degrees of freedom).
It needs 3 seeds or more; with 2 there is one pair and no interval.

Examples
--------
>>> pairs = {(0, 1): 0.9, (0, 2): 0.8, (1, 2): 0.85}
>>> s = pair_mean_interval(pairs)
>>> round(s["mean"], 6), s["n_seeds"], s["ci_low"] < 0.85 < s["ci_high"]
(0.85, 3, True)
"""
from __future__ import annotations

import math

import numpy as np

from dynstudy.analysis.stats.variability import t_quantile

#: The fewest seeds with a seed-level interval.
MIN_SEEDS = 3


def pair_mean_interval(pairs: dict, level: float = 0.95) -> dict:
    """Mean of ``pairs`` ({(seed_a, seed_b): value}, each unordered pair once; NaN or None values left out) and
    its jackknife-over-seeds interval.

    Returns
    -------
    dict: ``mean``, ``ci_low``, ``ci_high`` (None below :data:`MIN_SEEDS` seeds), ``n_seeds``, ``n_pairs``.
    """
    kept = {k: float(v) for k, v in pairs.items() if v is not None and math.isfinite(float(v))}
    seeds = sorted({s for pair in kept for s in pair})
    out = {"mean": None, "ci_low": None, "ci_high": None, "n_seeds": len(seeds), "n_pairs": len(kept)}
    if not kept:
        return out
    out["mean"] = float(np.mean(list(kept.values())))
    if len(seeds) < MIN_SEEDS:
        return out
    loo = []
    for s in seeds:
        rest = [v for pair, v in kept.items() if s not in pair]
        if not rest:
            return out
        loo.append(np.mean(rest))
    m = len(seeds)
    se = math.sqrt((m - 1) / m * float(np.sum((np.array(loo) - np.mean(loo)) ** 2)))
    half = float(t_quantile(0.5 + level / 2, m - 1)) * se
    out.update(ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    return out
