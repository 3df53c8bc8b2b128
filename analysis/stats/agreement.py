"""How much seeds agree: the mean of a pairwise similarity over every pair of seeds, with a seed-level interval.

Pairs of seeds are not independent (each seed is in m - 1 pairs), so a t-interval over the pairs would be far
too narrow. The interval here is the jackknife over seeds: leave each seed out, take the mean over the pairs
left, and use the spread of those m means (Tukey's variance estimate, Student t with m - 1 degrees of freedom).
It needs 3 seeds or more; with 2 there is one pair and no interval. The same jackknife tests whether seeds
agree beyond the shuffled-probe control (:func:`agreement_test`: the pairs' CKA minus the control's, mean 0 under
the null), the tests of a report adjusted as one Benjamini-Hochberg family (:func:`agreement_verdicts`).

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
from scipy import special

from dynstudy.analysis.stats.variability import t_quantile
from dynstudy.analysis.stats.verdicts import ALPHA, BEYOND, UNTESTED, WITHIN, benjamini_hochberg, insufficient

#: The fewest seeds with a seed-level interval.
MIN_SEEDS = 3


def _jackknife(kept: dict, level: float) -> dict:
    """Mean of ``kept`` ({pair: finite value}) with its jackknife-over-seeds SE, degrees of freedom and interval."""
    seeds = sorted({s for pair in kept for s in pair})
    out = {"mean": None, "se": None, "df": None, "ci_low": None, "ci_high": None, "n_seeds": len(seeds),
           "n_pairs": len(kept)}
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
    out.update(se=se, df=m - 1, ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    return out


def _finite_pairs(pairs: dict) -> dict:
    return {k: float(v) for k, v in pairs.items() if v is not None and math.isfinite(float(v))}


def pair_mean_interval(pairs: dict, level: float = 0.95) -> dict:
    """Mean of ``pairs`` ({(seed_a, seed_b): value}, each unordered pair once; NaN or None values left out) and
    its jackknife-over-seeds interval.

    Returns
    -------
    dict: ``mean``, ``ci_low``, ``ci_high`` (None below :data:`MIN_SEEDS` seeds), ``n_seeds``, ``n_pairs``.
    """
    out = _jackknife(_finite_pairs(pairs), level)
    return {k: out[k] for k in ("mean", "ci_low", "ci_high", "n_seeds", "n_pairs")}


def agreement_test(cka: dict, control: dict, level: float = 0.95) -> dict:
    """Do the seeds agree beyond the shuffled-probe control? The pairs' mean of CKA minus the control's, its
    jackknife interval, and the two-sided jackknife t-test of mean 0 (Student t, seeds - 1 degrees of freedom).

    Parameters
    ----------
    cka, control : {(seed_a, seed_b): value} of the same pairs (pairs missing either are left out).

    Returns
    -------
    dict: ``mean_diff``, ``ci_low``, ``ci_high``, ``n_seeds``, ``n_pairs``, ``p_value`` (None below
    :data:`MIN_SEEDS` seeds or without spread), ``verdict`` (None until :func:`agreement_verdicts`; else
    insufficient or untested) and ``detail``.

    Examples
    --------
    >>> cka = {(0, 1): 0.9, (0, 2): 0.8, (1, 2): 0.85, (0, 3): 0.88, (1, 3): 0.83, (2, 3): 0.86}
    >>> r = agreement_test(cka, dict.fromkeys(cka, 0.0))
    >>> r["n_seeds"], r["p_value"] < 0.01
    (4, True)
    """
    a, b = _finite_pairs(cka), _finite_pairs(control)
    diffs = {k: a[k] - b[k] for k in a if k in b}
    j = _jackknife(diffs, level)
    row = {"mean_diff": j["mean"], "ci_low": j["ci_low"], "ci_high": j["ci_high"], "n_seeds": j["n_seeds"],
           "n_pairs": j["n_pairs"], "p_value": None, "verdict": None, "detail": ""}
    if not diffs:
        row.update(verdict=UNTESTED, detail="no pair with both values")
    elif j["n_seeds"] < MIN_SEEDS:
        row.update(verdict=insufficient(MIN_SEEDS), detail=f"{j['n_seeds']} seeds")
    elif not j["se"]:
        row.update(verdict=UNTESTED, detail="no spread across seeds")
    else:
        row["p_value"] = float(2 * special.stdtr(j["df"], -abs(j["mean"]) / j["se"]))
    return row


def agreement_verdicts(rows: list[dict], alpha: float = ALPHA) -> list[dict]:
    """``rows`` (of :func:`agreement_test`) with the tests adjusted as one Benjamini-Hochberg family:
    ``p_adjusted``, ``n_tests`` and the verdict :data:`BEYOND` (p_adjusted < ``alpha``) or :data:`WITHIN`."""
    family = [i for i, r in enumerate(rows) if r.get("p_value") is not None]
    adjusted = benjamini_hochberg([rows[i]["p_value"] for i in family])
    out = [{**r, "p_adjusted": None, "n_tests": None} for r in rows]
    for i, q in zip(family, adjusted):
        out[i].update(p_adjusted=q, n_tests=len(family), verdict=BEYOND if q < alpha else WITHIN)
    return out
