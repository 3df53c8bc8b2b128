"""The paper's three claims, tested over seeds, each with an effect size and a p-value.

1. Integration separates datasets (CIFAR-10 from CIFAR-100) for each
   architecture: Welch's t-test on the runs' mean H_eff between two datasets,
   Hedges' g; and the same on H_raw minus its noise control ("beyond noise"),
   since the class count and probe size alone move H_raw.
2. The Psi-volatility trigger comes before the accuracy plateau (the first
   epoch within ``plateau_points`` of the run's best val_acc): one-sided
   Wilcoxon signed-rank test on plateau - trigger over the cell's runs, with
   epochs saved and accuracy given up, next to patience-based stopping
   simulated on the same validation-loss curve.
3. The taxonomy state is stable across seeds: the share of seeds in the modal
   state, with a binomial p-value against seeds that pick among the five
   states at random.

Pure functions over plain rows; scipy for the tests.
"""
from __future__ import annotations

import math
from collections import defaultdict
from itertools import combinations

import numpy as np
from scipy import stats

from dynstudy.analysis.kernels.dynamics import STATES
from dynstudy.analysis.kernels.params import PLATEAU_POINTS
from dynstudy.analysis.stats.variability import CELL_KEYS, finite_or_none, state_agreement

ALPHA = 0.05
STATE_AGREEMENT = 0.8


def hedges_g(x, y) -> float:
    """Standardised mean difference (x - y) with the small-sample correction."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    nx, ny = len(x), len(y)
    if nx < 2 or ny < 2:
        return math.nan
    pooled = math.sqrt(((nx - 1) * x.var(ddof=1) + (ny - 1) * y.var(ddof=1)) / (nx + ny - 2))
    if pooled == 0:
        return math.nan
    return (x.mean() - y.mean()) / pooled * (1 - 3 / (4 * (nx + ny) - 9))


def plateau_epoch(epochs, val_acc, points: float = PLATEAU_POINTS):
    """First epoch whose val_acc (0..1) is within ``points`` percentage points of the run's best."""
    acc = np.asarray(val_acc, float)
    if not np.isfinite(acc).any():
        return None
    hit = np.flatnonzero(acc >= np.nanmax(acc) - points / 100)
    return int(np.asarray(epochs)[hit[0]])


def patience_stop(epochs, val_loss, patience: int = 10):
    """Epoch at which patience-based early stopping on val_loss would stop, or None."""
    best, bad = math.inf, 0
    for e, loss in zip(epochs, val_loss):
        if loss < best:
            best, bad = loss, 0
        else:
            bad += 1
            if bad >= patience:
                return int(e)
    return None


def finished_runs(rows):
    """The rows of runs that finished."""
    return [r for r in rows if r.get("status") == "finished"]


def _vals(rows, key):
    return [r[key] for r in rows if r.get(key) is not None and math.isfinite(r[key])]


def claim_row(claim, cell, dataset, n, statistic, effect, effect_name, p, verdict, detail):
    """One row of the ``claims`` table."""
    return {"claim": claim, "model": cell[0], "optimizer": cell[1], "dataset": dataset, "n": n,
            "statistic": statistic, "effect_size": effect, "effect_name": effect_name, "p_value": p,
            "verdict": verdict, "detail": detail}


#: Claim 1's tests: (claim, run_summary column or "beyond_noise" for H_raw minus its noise control).
INTEGRATION_TESTS = (("integration separates datasets", "h_eff_mean"),
                     ("integration separates datasets beyond noise", "beyond_noise"))


def integration_claims(summaries: list[dict], tests=INTEGRATION_TESTS) -> list[dict]:
    """Claim 1 for every (model, optimizer), every pair of its datasets and every test of ``tests``."""
    by = defaultdict(lambda: defaultdict(list))
    for r in finished_runs(summaries):
        by[(r["model"], r["optimizer"])][r["dataset"]].append(r)
    out = []
    for cell, datasets in sorted(by.items()):
        for a, b in combinations(sorted(datasets), 2):
            for claim, key in tests:
                rows_a, rows_b = datasets[a], datasets[b]
                if key == "beyond_noise":
                    x = [r["h_raw_mean"] - r["noise_h_raw_mean"] for r in rows_a if _both(r)]
                    y = [r["h_raw_mean"] - r["noise_h_raw_mean"] for r in rows_b if _both(r)]
                else:
                    x, y = _vals(rows_a, key), _vals(rows_b, key)
                if len(x) < 2 or len(y) < 2:
                    out.append(claim_row(claim, cell, f"{a} vs {b}", len(x) + len(y), None, None, "hedges_g", None,
                                         "untested", "needs 2 finished seeds per dataset"))
                    continue
                if np.ptp(x) == 0 and np.ptp(y) == 0:
                    out.append(claim_row(claim, cell, f"{a} vs {b}", len(x) + len(y), None, None, "hedges_g", None,
                                         "untested", "no spread across seeds: a t-test is undefined"))
                    continue
                t, p = stats.ttest_ind(x, y, equal_var=False)
                g = hedges_g(x, y)
                verdict = "supported" if np.isfinite(p) and p < ALPHA else "not supported"
                detail = f"mean {np.mean(x):.3f} ({a}) vs {np.mean(y):.3f} ({b}); Welch t-test"
                stat, effect, p = finite_or_none(t), finite_or_none(g), finite_or_none(p)
                out.append(claim_row(claim, cell, f"{a} vs {b}", len(x) + len(y), stat, effect, "hedges_g", p,
                                     verdict, detail))
    return out


def _both(r) -> bool:
    return all(r.get(k) is not None and math.isfinite(r[k]) for k in ("h_raw_mean", "noise_h_raw_mean"))


def trigger_claims(summaries: list[dict], curves: dict, points: float = PLATEAU_POINTS,
                   patience: int = 10) -> list[dict]:
    """Claim 2 per cell. ``curves``: run_id -> (epochs, val_acc, val_loss) arrays."""
    cells = defaultdict(list)
    for r in finished_runs(summaries):
        cells[tuple(r[k] for k in CELL_KEYS)].append(r)
    out = []
    for key, runs in sorted(cells.items()):
        lead, saved, given, p_saved, p_given = [], [], [], [], []
        for r in runs:
            if r["run_id"] not in curves:
                continue
            epochs, acc, loss = curves[r["run_id"]]
            best = np.nanmax(acc)
            plateau = plateau_epoch(epochs, acc, points)
            trig = r.get("trigger_epoch")
            if trig is not None and plateau is not None:
                lead.append(plateau - trig)
                saved.append(epochs[-1] - trig)
                given.append(100 * (best - acc[list(epochs).index(trig)]))
            stop = patience_stop(epochs, loss, patience)
            if stop is not None:
                p_saved.append(epochs[-1] - stop)
                p_given.append(100 * (best - np.nanmax(acc[:list(epochs).index(stop) + 1])))
        cell = (key[0], key[2])
        dataset = key[1]
        base = (f"patience {patience}: fired in {len(p_saved)}/{len(runs)} runs"
                + (f", {np.mean(p_saved):.1f} epochs saved, {np.mean(p_given):.2f} points given up" if p_saved else ""))
        if not lead:
            out.append(claim_row("volatility trigger precedes accuracy plateau", cell, dataset, 0, None, None,
                                 "mean epochs of lead", None, "untested",
                                 f"trigger never fired in {len(runs)} runs; {base}"))
            continue
        lead_arr = np.array(lead, float)
        p = None
        if len(lead) >= 2 and np.any(lead_arr != 0):
            p = finite_or_none(stats.wilcoxon(lead_arr, alternative="greater", zero_method="zsplit").pvalue)
        before = int((lead_arr > 0).sum())
        verdict = "supported" if p is not None and p < ALPHA else ("not supported" if p is not None else "untested")
        detail = (f"trigger before plateau in {before}/{len(lead)} runs with a trigger ({len(runs)} runs); "
                  f"volatility rule: {np.mean(saved):.1f} epochs saved, {np.mean(given):.2f} points given up; {base}")
        out.append(claim_row("volatility trigger precedes accuracy plateau", cell, dataset, len(lead),
                             float(np.median(lead_arr)), float(lead_arr.mean()), "mean epochs of lead",
                             p, verdict, detail))
    return out


def state_claims(summaries: list[dict], agreement: float = STATE_AGREEMENT, key: str = "state",
                 claim: str = "state stable across seeds") -> list[dict]:
    """Claim 3 per cell: share of seeds in the modal state (column ``key``), binomial p against random states."""
    cells = defaultdict(list)
    for r in finished_runs(summaries):
        if r.get(key):
            cells[tuple(r[k] for k in CELL_KEYS)].append(r[key])
    out = []
    for cell, states in sorted(cells.items()):
        modal, _ = state_agreement(states)
        count, n = states.count(modal), len(states)
        p = finite_or_none(stats.binomtest(count, n, 1 / len(STATES), alternative="greater").pvalue) if n >= 2 else None
        share = count / n
        verdict = "untested" if n < 2 else ("supported" if share >= agreement else "not supported")
        out.append(claim_row(claim, (cell[0], cell[2]), cell[1], n, float(count), share,
                             "share in modal state", p, verdict, f"{count}/{n} seeds in {modal}"))
    return out


def all_claims(summaries: list[dict], curves: dict, points: float = PLATEAU_POINTS) -> list[dict]:
    return integration_claims(summaries) + trigger_claims(summaries, curves, points) + state_claims(summaries)
