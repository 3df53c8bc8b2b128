"""How much each metric varies across the seeds of a cell.

Pure functions over arrays and rows; scipy only for Student's t distribution.

The interval across seeds is Student's t-interval of the mean: its coverage is
exact (95%) for normally distributed seed values at any n >= 2, and measured
for skewed ones (``docs/metrics.md``, "Statistics across seeds"). It is cut to
the metric's domain (:data:`METRIC_DOMAINS`), which never lowers its coverage
(the true mean lies in the domain), and the cut is recorded (``ci_clipped``).
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
from scipy import special

from dynstudy.analysis.kernels.dynamics import STATES

#: run_summary columns summarised across seeds, in report order.
SEED_METRICS = (
    "h_eff_mean", "h_raw_mean", "metastability_mean", "synchrony_mean", "psi_std",
    "r_hz_mz", "r_psi_acc", "trigger_epoch", "best_val_acc", "noise_h_raw_mean", "order_h_raw_mean", "init_h_raw",
    "temporal_h_raw", "temporal_h_eff", "temporal_metastability", "temporal_trigger_step",
    "effective_rank_final", "cka_init_final", "drift_settle_epoch",
)
#: The temporal protocol's run metrics: left out when no run has a temporal series.
TEMPORAL_METRICS = tuple(m for m in SEED_METRICS if m.startswith("temporal_"))
CELL_KEYS = ("model", "dataset", "optimizer")
#: A DFA exponent: the slope of log F(s) on log s, F(s) being the detrended fluctuation at scale s. F(s) grows
#: with s, or stays flat for a bounded, maximally anti-persistent profile (an alternating series gives 0.003, a
#: sine of 2.7 samples per period 0.00005, the first difference of white noise 0.02), so the exponent is >= 0 and
#: does not change sign: its CV is defined. It has no upper bound (a random walk gives 1.5, a drift more).
DFA_DOMAIN = (0.0, None)
#: Where each metric's values can lie (None: unbounded on that side). Intervals are cut to it, and a
#: coefficient of variation is given only for a metric whose lower bound is >= 0 (one that cannot change sign).
METRIC_DOMAINS = {
    "h_eff_mean": (0.0, 1.0),             # a Gaussian of H_raw scaled to peak 1
    "h_raw_mean": DFA_DOMAIN,
    "metastability_mean": (0.0, 0.5),     # std of a Kuramoto order parameter R(t) in [0, 1]
    "synchrony_mean": (0.0, 1.0),         # mean of R(t)
    "psi_std": (0.0, None),               # a standard deviation
    "r_hz_mz": (-1.0, 1.0),               # correlations: change sign, no CV
    "r_psi_acc": (-1.0, 1.0),
    "trigger_epoch": (1.0, None),         # epoch 0 is the untrained network
    "best_val_acc": (0.0, 1.0),           # a fraction
    "noise_h_raw_mean": DFA_DOMAIN,
    "order_h_raw_mean": DFA_DOMAIN,
    "init_h_raw": DFA_DOMAIN,
    "temporal_h_raw": DFA_DOMAIN,
    "temporal_h_eff": (0.0, 1.0),
    "temporal_metastability": (0.0, 0.5),
    "temporal_trigger_step": (0.0, None),  # an optimiser step
    "effective_rank_final": (1.0, None),   # exp of an entropy: 1 for rank one
    "cka_init_final": (-1.0, 1.0),         # debiased CKA: near 0 can fall below it, no CV
    "drift_settle_epoch": (1.0, None),
}
#: A coefficient of variation above this is flagged in the report (the seeds disagree more than they agree).
HIGH_CV = 0.5



def finite_or_none(v):
    """``v`` as a float, or None when it is missing, not a number or not finite."""
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def t_quantile(q, df):
    """Student's t quantile ``q`` with ``df`` degrees of freedom (vectorised; NaN where df < 1).

    >>> round(float(t_quantile(0.975, 2)), 3)
    4.303
    """
    df = np.asarray(df, dtype=float)
    return np.where(df >= 1, special.stdtrit(np.maximum(df, 1), q), np.nan)


def t_interval(mean, std, n, confidence: float = 0.95):
    """(low, high) of Student's t-interval of a mean from n values with sample std ``std`` (vectorised).

    NaN below 2 values. Exact coverage for normally distributed values.

    >>> [round(float(v), 3) for v in t_interval(1.0, 0.5, 4)]
    [0.204, 1.796]
    """
    n = np.asarray(n, dtype=float)
    half = t_quantile(0.5 + confidence / 2, n - 1) * np.asarray(std, dtype=float) / np.sqrt(np.maximum(n, 1))
    return np.asarray(mean, dtype=float) - half, np.asarray(mean, dtype=float) + half


def clip_to_domain(low, high, domain) -> tuple[float, float, bool]:
    """(low, high, clipped): the interval cut to ``domain`` (low, high; either None: unbounded), clipped if cut.

    A NaN bound stays NaN and is not a cut.

    >>> clip_to_domain(0.9, 1.1, (0.0, 1.0))
    (0.9, 1.0, True)
    >>> clip_to_domain(-0.2, 0.3, None)
    (-0.2, 0.3, False)
    """
    if domain is None:
        return low, high, False
    lo_edge, hi_edge = domain
    cut_low = lo_edge is not None and low < lo_edge   # False for NaN
    cut_high = hi_edge is not None and high > hi_edge
    return (lo_edge if cut_low else low), (hi_edge if cut_high else high), bool(cut_low or cut_high)


def can_change_sign(domain) -> bool:
    """True unless ``domain``'s lower bound is >= 0 (an unknown domain can change sign)."""
    return domain is None or domain[0] is None or domain[0] < 0


def seed_stats(values, confidence: float = 0.95, domain=None) -> dict:
    """n, mean, std (ddof 1), CV and the t-interval of the mean of the finite ``values``.

    Parameters
    ----------
    values : array-like of float; NaN and None are skipped.
    confidence : coverage of the interval.
    domain : (low, high) the metric's values lie in (either None: unbounded);
        the interval is cut to it, so it never leaves the metric's range, and
        it decides whether a CV means anything.

    Returns
    -------
    dict with n, mean, std, cv, ci_low, ci_high (Student's t-interval of the
    mean, cut to ``domain``) and ci_clipped (True when a bound was cut).
    With n = 1 the std and interval are NaN (one seed says nothing about
    spread). CV = std / mean only where the domain's lower bound is >= 0 (a
    metric that cannot change sign) and the mean is not 0; NaN otherwise.

    Examples
    --------
    >>> s = seed_stats([0.95, 0.99], domain=(0.0, 1.0))
    >>> round(s["ci_low"], 3), s["ci_high"], s["ci_clipped"]
    (0.716, 1.0, True)
    >>> round(seed_stats([1.0, 2.0, 3.0], domain=(0.0, None))["cv"], 3)
    0.5
    >>> seed_stats([-1.0, 2.0, 3.0])["cv"]  # no domain: it can change sign, so no CV
    nan
    """
    x = np.array([np.nan if v is None else v for v in values], dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    nan = math.nan
    out = {"n": n, "mean": nan, "std": nan, "cv": nan, "ci_low": nan, "ci_high": nan, "ci_clipped": False}
    if n == 0:
        return out
    out["mean"] = mean = float(x.mean())
    if n == 1:
        return out
    std = float(x.std(ddof=1))
    lo, hi = t_interval(mean, std, n, confidence)
    ci_low, ci_high, clipped = clip_to_domain(float(lo), float(hi), domain)
    cv = std / abs(mean) if mean != 0 and not can_change_sign(domain) else nan
    out.update(std=std, cv=cv, ci_low=ci_low, ci_high=ci_high, ci_clipped=clipped)
    return out


def state_agreement(states) -> tuple:
    """(modal state, share of seeds in it) over the non-null ``states``.

    Tie rule, the same in every table and the report: among the states most
    seeds reach, the one listed first in the taxonomy's order
    (:data:`dynstudy.analysis.kernels.dynamics.STATES`; unknown labels after, alphabetically).
    """
    present = [s for s in states if s]
    if not present:
        return None, math.nan
    counts = Counter(present)
    rank = {s: i for i, s in enumerate(STATES)}
    state = min(counts, key=lambda s: (-counts[s], rank.get(s, len(STATES)), s))
    count = counts[state]
    return state, count / len(present)


def cell_variability(rows: list[dict], metrics=SEED_METRICS) -> list[dict]:
    """One row per (cell, metric) from run_summary rows.

    Only runs that finished count (diverged and failed runs are not seeds of
    a completed training); each row carries the cell's modal state and the
    share of its seeds that agree on it. The temporal metrics are left out
    when no run has a temporal series.
    """
    if not any(r.get("temporal_n_points") for r in rows):  # no run has the temporal protocol: no rows of it
        metrics = [m for m in metrics if m not in TEMPORAL_METRICS]
    cells = defaultdict(list)
    for row in rows:
        if row.get("status") == "finished":
            cells[tuple(row[k] for k in CELL_KEYS)].append(row)
    out = []
    for key in sorted(cells):
        runs = cells[key]
        modal, agree = state_agreement([r.get("state") for r in runs])
        for metric in metrics:
            s = seed_stats([r.get(metric) for r in runs], domain=METRIC_DOMAINS.get(metric))
            out.append({**dict(zip(CELL_KEYS, key)), "metric": metric, "n_seeds": s["n"], "n_runs": len(runs),
                        "mean": s["mean"],
                        "std": s["std"], "cv": s["cv"], "ci_low": s["ci_low"], "ci_high": s["ci_high"],
                        "ci_clipped": s["ci_clipped"],
                        "modal_state": modal, "state_agreement": agree})
    return out
