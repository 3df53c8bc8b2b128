"""How much each metric varies across the seeds of a cell.

Pure functions over arrays and rows; scipy only for the t quantile.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
from scipy import stats

from dynstudy.analysis.kernels.dynamics import STATES

#: run_summary columns summarised across seeds, in report order.
SEED_METRICS = (
    "h_eff_mean", "h_raw_mean", "metastability_mean", "synchrony_mean", "psi_std",
    "r_hz_mz", "r_psi_acc", "trigger_epoch", "best_val_acc", "noise_h_raw_mean", "order_h_raw_mean", "init_h_raw",
    "temporal_h_raw", "temporal_h_eff", "temporal_metastability", "temporal_trigger_step",
)
#: The temporal protocol's run metrics: left out when no run has a temporal series.
TEMPORAL_METRICS = tuple(m for m in SEED_METRICS if m.startswith("temporal_"))
CELL_KEYS = ("model", "dataset", "optimizer")
#: Where each metric's values can lie: intervals are bounded to it (None: unbounded).
METRIC_DOMAINS = {
    "h_eff_mean": (0.0, 1.0), "metastability_mean": (0.0, 0.5), "synchrony_mean": (0.0, 1.0),
    "psi_std": (0.0, None), "r_hz_mz": (-1.0, 1.0), "r_psi_acc": (-1.0, 1.0), "trigger_epoch": (1.0, None),
    "best_val_acc": (0.0, 1.0), "temporal_h_eff": (0.0, 1.0), "temporal_metastability": (0.0, 0.5),
    "temporal_trigger_step": (0.0, None),
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



def _bounded(lo: float, hi: float, domain) -> tuple[float, float]:
    if domain is None:
        return lo, hi
    low, high = domain
    lo = lo if low is None or math.isnan(lo) else max(lo, low)
    hi = hi if high is None or math.isnan(hi) else min(hi, high)
    return lo, hi


def seed_stats(values, confidence: float = 0.95, domain=None) -> dict:
    """n, mean, std (ddof 1), CV and a t-interval of the finite ``values``.

    Parameters
    ----------
    values : array-like of float; NaN and None are skipped.
    confidence : coverage of the interval.
    domain : (low, high) the metric's values lie in (either None: unbounded);
        both intervals are cut to it, so none leaves the metric's range.

    Returns
    -------
    dict with n, mean, std, cv, ci_low, ci_high (t-interval) and boot_low,
    boot_high (percentile bootstrap of the mean, 2000 resamples, fixed seed;
    NaN below 3 seeds). With n = 1 the std and intervals are NaN (one seed
    says nothing about spread); CV is NaN when the mean is 0.
    """
    x = np.array([np.nan if v is None else v for v in values], dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    nan = math.nan
    out = {"n": n, "mean": nan, "std": nan, "cv": nan, "ci_low": nan, "ci_high": nan, "boot_low": nan, "boot_high": nan}
    if n == 0:
        return out
    out["mean"] = mean = float(x.mean())
    if n == 1:
        return out
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    ci_low, ci_high = _bounded(mean - half, mean + half, domain)
    out.update(std=std, cv=std / abs(mean) if mean != 0 else nan, ci_low=ci_low, ci_high=ci_high)
    if n >= 3 and std > 0:
        boot = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=2000, method="percentile",
                               random_state=np.random.default_rng(0))
        ci = boot.confidence_interval
        boot_low, boot_high = _bounded(float(ci.low), float(ci.high), domain)
        out.update(boot_low=boot_low, boot_high=boot_high)
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
                        "boot_low": s["boot_low"], "boot_high": s["boot_high"],
                        "modal_state": modal, "state_agreement": agree})
    return out
