"""The paper's three claims, tested over seeds: each row a test with its null, effect, interval and family.

1. Integration separates datasets (CIFAR-10 from CIFAR-100) for each
   (model, optimizer) and pair of its datasets: Welch's t-test on the runs'
   mean H_eff (null: equal means), the mean difference with its Welch 95%
   interval and Hedges' g with its noncentral-t 95% interval
   (:func:`dynstudy.analysis.stats.claim_tests.welch`); and the same on H_raw
   minus its noise control ("beyond noise"), since the class count and probe
   size alone move H_raw. At least :data:`MIN_SEEDS_PER_DATASET` finished
   seeds per dataset, else "insufficient seeds (needs 3)". Where most of the
   runs' H_raw lie beyond H_opt +/- 3 sigma_H (each run's own settings) H_eff
   is a Gaussian's tail: the verdict is "H_eff saturated" and the same test on
   H_raw is its own row (claim name + :data:`ON_H_RAW`).
2. The Psi-volatility trigger comes before the accuracy plateau (the first
   epoch within ``plateau_points`` of the run's best val_acc): the one-sided
   sign-flip permutation test on the mean of plateau - trigger (null: leads
   symmetric about 0; :func:`dynstudy.analysis.stats.claim_tests.sign_flip`),
   the mean lead with its t-interval; at least :data:`MIN_LEADS` runs with a
   trigger (fewer cannot reach p < 0.05: the smallest p of n leads is 2^-n),
   with epochs saved and accuracy given up next to patience-based stopping
   simulated on the same validation-loss curve.
3. The taxonomy state is stable across seeds: the cell's largest state count
   against its permutation null, the state labels shuffled across the study's
   finished runs with the study-wide counts kept
   (:func:`dynstudy.analysis.stats.claim_tests.max_count_sf`, exact); where no
   agreement of the cell's seeds could reach p < 0.05 under the study's counts,
   "insufficient seeds (needs N)".

Only finished, whole runs are tested; every row says how many of the involved
runs it dropped and why (``n_runs``, ``n_dropped``, ``dropped``). Each claim
(claim text; the H_raw fallback and the temporal claims are claims of their own)
is one Holm family across the study's cells and pairs
(:func:`adjust_families`): the verdict is "supported" when the Holm-adjusted p
is below :data:`dynstudy.analysis.stats.verdicts.ALPHA`. Tests with
insufficient seeds, untested or saturated are not in the family.

Pure functions over plain rows; scipy for the tests.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict
from itertools import combinations

import numpy as np

from dynstudy.analysis.kernels.dynamics import SATURATION_SIGMAS, STATES, h_eff_saturated
from dynstudy.analysis.kernels.params import DEFAULTS, PLATEAU_POINTS
from dynstudy.analysis.stats.claim_tests import (
    EXACT_FLIPS,
    MC_FLIPS,
    MC_SEED,
    max_count_needs,
    max_count_p_min,
    max_count_sf,
    mean_interval,
    sign_flip,
    welch,
)
from dynstudy.analysis.stats.variability import CELL_KEYS, finite_or_none
from dynstudy.analysis.stats.verdicts import (
    ALPHA,
    NOT_SUPPORTED,
    SATURATED,
    SUPPORTED,
    UNTESTED,
    holm,
    insufficient,
)

CLAIM_INTEGRATION = "integration separates datasets"
CLAIM_BEYOND_NOISE = "integration separates datasets beyond noise"
CLAIM_TRIGGER = "volatility trigger precedes accuracy plateau"
CLAIM_STATE = "state stable across seeds"
#: The claim name of the H_raw test that stands in for a saturated H_eff test: the H_eff claim's name + this.
ON_H_RAW = " (on H_raw)"
#: Welch's test is run from this many finished seeds per dataset (below: "insufficient seeds (needs 3)").
MIN_SEEDS_PER_DATASET = 3
#: The sign-flip test of the trigger's lead needs this many runs with a trigger (2^-5 < 0.05 <= 2^-4).
MIN_LEADS = 5
#: The H_raw column behind each H_eff column (the saturation check and the fallback test).
RAW_OF = {"h_eff_mean": "h_raw_mean", "temporal_h_eff": "temporal_h_raw"}

TEST_WELCH = "Welch t-test (two-sided); Hedges' g, noncentral-t interval"
TEST_STATE = "largest state count; exact permutation null over the study's runs (one-sided)"
#: Every claims row's columns, in order (``plateau_points`` is added by ``dynstudy analyze``).
COLUMNS = ("claim", "model", "optimizer", "dataset", "n", "statistic", "effect_size", "effect_name", "ci_low",
           "ci_high", "mean_diff", "diff_low", "diff_high", "test", "p_value", "p_adjusted", "family", "n_tests",
           "verdict", "n_runs", "n_dropped", "dropped", "detail")


def sign_flip_name(n: int) -> str:
    """The trigger test's name for ``n`` leads: exact up to :data:`EXACT_FLIPS`, else Monte Carlo."""
    how = "exact" if n <= EXACT_FLIPS else f"Monte Carlo, {MC_FLIPS} flips, seed {MC_SEED}"
    return f"sign-flip permutation test on the mean lead (one-sided, {how}); t-interval"


def plateau_epoch(epochs, val_acc, points: float = PLATEAU_POINTS):
    """First epoch whose val_acc (0..1) is within ``points`` percentage points of the run's best.

    >>> plateau_epoch([1, 2, 3], [0.5, 0.898, 0.9])
    2
    """
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
    """The rows of runs that finished and are whole (no gap: ``reason`` empty)."""
    return [r for r in rows if drop_reason(r) is None]


def drop_reason(row) -> str | None:
    """Why a run takes no part in any claim (not finished; incomplete, with its gap), or None when it does.

    >>> drop_reason({"status": "diverged"}), drop_reason({"status": "finished", "reason": "capture 3 missing"})
    ('not finished (diverged)', 'incomplete (capture 3 missing)')
    """
    if row.get("status") != "finished":
        return f"not finished ({row.get('status') or 'unknown'})"
    if row.get("reason"):
        return f"incomplete ({row['reason']})"
    return None


def dropped_text(reasons) -> str | None:
    """"2 not finished (diverged); 1 no trigger": each reason with its count, most frequent first; None for none.

    >>> dropped_text(["no trigger", "not finished (failed)", "no trigger"])
    '2 no trigger; 1 not finished (failed)'
    """
    counts = Counter(reasons)
    if not counts:
        return None
    return "; ".join(f"{n} {why}" for why, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def claim_row(claim, cell, dataset, n, statistic, effect, effect_name, p, verdict, detail, **extra) -> dict:
    """One row of the ``claims`` table; ``extra``: any other column of :data:`COLUMNS` (the rest None)."""
    row = dict.fromkeys(COLUMNS)
    row.update({"claim": claim, "model": cell[0], "optimizer": cell[1], "dataset": dataset, "n": n,
                "statistic": finite_or_none(statistic), "effect_size": finite_or_none(effect),
                "effect_name": effect_name, "p_value": finite_or_none(p), "verdict": verdict, "detail": detail})
    unknown = set(extra) - set(COLUMNS)
    if unknown:
        raise ValueError(f"not claims columns: {sorted(unknown)}")
    row.update({k: finite_or_none(v) if k in ("ci_low", "ci_high", "mean_diff", "diff_low", "diff_high") else v
                for k, v in extra.items()})
    return row


def adjust_families(rows: list[dict]) -> list[dict]:
    """Holm within each claim (one family per claim text) across its cells; verdicts from the adjusted p.

    A row is a test of its family when its verdict is supported or not supported
    and it has a p-value; its ``p_adjusted`` is Holm's and its verdict "supported"
    when that is below :data:`ALPHA`. Every row of the family gets ``family`` (the
    claim) and ``n_tests`` (the family's size); rows that are not tests
    (insufficient seeds, untested, saturated) keep their verdict and no
    ``p_adjusted``. Idempotent.

    >>> rows = [{"claim": "c", "p_value": p, "verdict": NOT_SUPPORTED} for p in (0.01, 0.06)]
    >>> [(r["p_adjusted"], r["verdict"], r["n_tests"]) for r in adjust_families(rows)]
    [(0.02, 'supported', 2), (0.06, 'not supported', 2)]
    """
    out = [dict(r) for r in rows]
    families = defaultdict(list)
    for i, r in enumerate(out):
        families[r["claim"]].append(i)
    for claim, idx in families.items():
        tests = [i for i in idx
                 if out[i]["verdict"] in (SUPPORTED, NOT_SUPPORTED) and out[i].get("p_value") is not None]
        for i in idx:
            out[i].update(family=claim, n_tests=len(tests), p_adjusted=None)
        for i, q in zip(tests, holm([out[i]["p_value"] for i in tests])):
            out[i].update(p_adjusted=q, verdict=SUPPORTED if q < ALPHA else NOT_SUPPORTED)
    return out


def _value(row, key):
    if key == "beyond_noise":
        a, b = finite_or_none(row.get("h_raw_mean")), finite_or_none(row.get("noise_h_raw_mean"))
        return None if a is None or b is None else a - b
    return finite_or_none(row.get(key))


def run_setting(params, run_id, name):
    """A run's analysis setting ``name`` from ``params`` (run_id -> mapping), else the default."""
    found = (params or {}).get(run_id) or {}
    value = found.get(name) if isinstance(found, dict) else getattr(found, name, None)
    return getattr(DEFAULTS, name) if value is None else value


def saturated_count(rows, raw_key: str, params) -> tuple[int, int]:
    """(runs whose ``raw_key`` lies beyond H_opt +/- 3 sigma_H of their own settings, runs with a value).

    >>> saturated_count([{"run_id": "a", "h_raw_mean": 1.5}, {"run_id": "b", "h_raw_mean": 0.7}], "h_raw_mean", {})
    (1, 2)
    """
    beyond = counted = 0
    for r in rows:
        v = finite_or_none(r.get(raw_key))
        if v is None:
            continue
        counted += 1
        h_opt, sigma = run_setting(params, r["run_id"], "h_opt"), run_setting(params, r["run_id"], "sigma_h")
        beyond += bool(h_eff_saturated(v, h_opt, sigma))
    return beyond, counted


#: Claim 1's tests: (claim, run_summary column or "beyond_noise" for H_raw minus its noise control).
INTEGRATION_TESTS = ((CLAIM_INTEGRATION, "h_eff_mean"), (CLAIM_BEYOND_NOISE, "beyond_noise"))


def integration_claims(summaries: list[dict], tests=INTEGRATION_TESTS, params=None) -> list[dict]:
    """Claim 1 for every (model, optimizer), every pair of its datasets and every test of ``tests``; Holm-adjusted.

    ``summaries``: run_summary rows of every run (those not finished or
    incomplete are counted as dropped); ``params``: run_id -> the run's
    analysis settings (h_opt, sigma_h; missing: the defaults), for the saturation check.
    """
    by = defaultdict(lambda: defaultdict(list))
    for r in summaries:
        by[(r["model"], r["optimizer"])][r["dataset"]].append(r)
    out = []
    for cell, datasets in sorted(by.items()):
        for a, b in combinations(sorted(datasets), 2):
            for claim, key in tests:
                out += integration_test(claim, key, cell, (a, datasets[a]), (b, datasets[b]), params)
    return adjust_families(out)


def _split(rows, key):
    """(values, drop reasons) of ``key`` over ``rows``."""
    values, reasons = [], []
    for r in rows:
        why = drop_reason(r)
        v = _value(r, key) if why is None else None
        if why is None and v is None:
            why = f"no value of {key}"
        if why:
            reasons.append(why)
        else:
            values.append(v)
    return values, reasons


def integration_test(claim, key, cell, group_a, group_b, params) -> list[dict]:
    """The rows of one claim-1 test: ``group_*`` = (dataset, its run_summary rows); see :func:`integration_claims`.

    One row, or two where H_eff is saturated (the saturated H_eff row and the H_raw test).
    """
    (a, rows_a), (b, rows_b) = group_a, group_b
    x, why_a = _split(rows_a, key)
    y, why_b = _split(rows_b, key)
    reasons = why_a + why_b
    label = f"{a} vs {b}"
    means = "; ".join(f"mean {np.mean(v):.4g} ({d}, {len(v)} seeds)" if v else f"no seeds ({d})"
                      for d, v in ((a, x), (b, y)))
    common = {"n_runs": len(rows_a) + len(rows_b), "n_dropped": len(reasons), "dropped": dropped_text(reasons),
              "test": TEST_WELCH}
    spread = len(x) >= 2 and len(y) >= 2 and not (np.ptp(x) == 0 and np.ptp(y) == 0)
    raw_key = RAW_OF.get(key)
    if raw_key is not None:
        used = [r for r in rows_a + rows_b if drop_reason(r) is None and _value(r, key) is not None]
        beyond, counted = saturated_count(used, raw_key, params)
        if counted and beyond > counted / 2:
            res = welch(x, y) if spread else {}
            detail = (f"{beyond}/{counted} runs have {raw_key} beyond H_opt ± {SATURATION_SIGMAS:g} sigma_H (each "
                      f"run's own settings): H_eff there is a Gaussian's tail, not a measurement; tested on H_raw in "
                      f"'{claim}{ON_H_RAW}'; {means}")
            row = claim_row(claim, cell, label, len(x) + len(y), res.get("t"), res.get("g"), "hedges_g", res.get("p"),
                            SATURATED, detail, **common)
            return [row] + integration_test(claim + ON_H_RAW, raw_key, cell, group_a, group_b, params)
    n = len(x) + len(y)
    if not x or not y:
        return [claim_row(claim, cell, label, n, None, None, "hedges_g", None, UNTESTED,
                          f"no finished run with a value of {key} in {a if not x else b}; {means}", **common)]
    if min(len(x), len(y)) < MIN_SEEDS_PER_DATASET:
        return [claim_row(claim, cell, label, n, None, None, "hedges_g", None, insufficient(MIN_SEEDS_PER_DATASET),
                          f"Welch's test needs {MIN_SEEDS_PER_DATASET} finished seeds per dataset; {means}", **common)]
    if not spread:
        return [claim_row(claim, cell, label, n, None, None, "hedges_g", None, UNTESTED,
                          f"no spread across seeds: a t-test is undefined; {means}", **common)]
    res = welch(x, y)
    detail = (f"{means}; difference {res['diff']:.4g} [{res['diff_low']:.4g}, {res['diff_high']:.4g}] (Welch 95%, "
              f"df {res['df']:.1f})")
    return [claim_row(claim, cell, label, n, res["t"], res["g"], "hedges_g", res["p"], NOT_SUPPORTED, detail,
                      ci_low=res["g_low"], ci_high=res["g_high"], mean_diff=res["diff"], diff_low=res["diff_low"],
                      diff_high=res["diff_high"], **common)]


def lead_row(claim, cell, dataset, leads, reasons, n_runs, unit: str, detail: str) -> dict:
    """Claim 2's row (epochs or steps): the sign-flip test of the mean ``leads`` (plateau - trigger).

    No lead: untested; fewer than :data:`MIN_LEADS` (or too many zero leads to
    reach :data:`ALPHA`): insufficient seeds; else a test (verdict from its family).
    """
    common = {"n_runs": n_runs, "n_dropped": len(reasons), "dropped": dropped_text(reasons),
              "test": sign_flip_name(len(leads))}
    name = f"mean {unit} of lead"
    if not leads:
        usable = n_runs - sum(1 for why in reasons if why != "no trigger")  # runs that could have fired
        return claim_row(claim, cell, dataset, 0, None, None, name, None, UNTESTED,
                         f"the trigger fired in none of the {usable} usable runs; {detail}", **common)
    arr = np.asarray(leads, float)
    lo, hi = mean_interval(arr)
    before = int((arr > 0).sum())
    text = (f"trigger before plateau in {before}/{len(arr)} runs with a trigger; median lead "
            f"{np.median(arr):.4g} {unit}; {detail}")
    stats_ = {"ci_low": lo, "ci_high": hi}
    zeros = len(arr) - int(np.count_nonzero(arr))
    if len(arr) < MIN_LEADS:
        return claim_row(claim, cell, dataset, len(arr), arr.mean(), arr.mean(), name, None, insufficient(MIN_LEADS),
                         f"the sign-flip test needs {MIN_LEADS} runs with a trigger; {text}", **stats_, **common)
    res = sign_flip(arr)
    if res["p_min"] >= ALPHA:
        return claim_row(claim, cell, dataset, len(arr), arr.mean(), arr.mean(), name, res["p"],
                         insufficient(zeros + MIN_LEADS),
                         f"{zeros} zero leads: the smallest p of these leads is {res['p_min']:.3g}; {text}",
                         **stats_, **common)
    return claim_row(claim, cell, dataset, len(arr), arr.mean(), arr.mean(), name, res["p"], NOT_SUPPORTED, text,
                     **stats_, **common)


def by_cell(summaries: list[dict]) -> dict:
    """(model, dataset, optimizer) -> its run_summary rows, in sorted order."""
    cells = defaultdict(list)
    for r in summaries:
        cells[tuple(r[k] for k in CELL_KEYS)].append(r)
    return dict(sorted(cells.items()))


def trigger_claims(summaries: list[dict], curves: dict, points: float = PLATEAU_POINTS,
                   patience: int = 10) -> list[dict]:
    """Claim 2 per cell, Holm-adjusted across cells. ``curves``: run_id -> (epochs, val_acc, val_loss) arrays."""
    out = []
    for key, runs in by_cell(summaries).items():
        lead, saved, given, p_saved, p_given, reasons = [], [], [], [], [], []
        for r in runs:
            why = drop_reason(r)
            curve = curves.get(r["run_id"]) if why is None else None
            plateau = plateau_epoch(curve[0], curve[1], points) if curve is not None and len(curve[0]) else None
            trig = r.get("trigger_epoch")
            if why is None and plateau is None:
                why = "no accuracy curve"
            elif why is None and trig is None:
                why = "no trigger"
            elif why is None and int(trig) not in list(curve[0]):
                why = "trigger epoch not in the accuracy curve"
            if curve is not None and plateau is not None:
                epochs, acc, loss = curve
                stop = patience_stop(epochs, loss, patience)
                if stop is not None:
                    p_saved.append(epochs[-1] - stop)
                    p_given.append(100 * (np.nanmax(acc) - np.nanmax(acc[:list(epochs).index(stop) + 1])))
            if why:
                reasons.append(why)
                continue
            epochs, acc, _ = curve
            lead.append(plateau - int(trig))
            saved.append(epochs[-1] - int(trig))
            given.append(100 * (np.nanmax(acc) - acc[list(epochs).index(int(trig))]))
        usable = len(runs) - len([w for w in reasons if w.startswith(("not finished", "incomplete"))])
        base = (f"patience {patience}: fired in {len(p_saved)}/{usable} runs"
                + (f", {np.mean(p_saved):.1f} epochs saved, {np.mean(p_given):.2f} points given up" if p_saved else ""))
        if saved:
            base = (f"volatility rule: {np.mean(saved):.1f} epochs saved, {np.mean(given):.2f} points given up; "
                    + base)
        out.append(lead_row(CLAIM_TRIGGER, (key[0], key[2]), key[1], lead, reasons, len(runs), "epochs", base))
    return adjust_families(out)


def agreement_text(states) -> str:
    """The cell's modal state(s): "3/4 in A", or every state tied at the top, "2/4 in A, 2/4 in B (tie)".

    Tied states are listed in the taxonomy's order
    (:data:`dynstudy.analysis.kernels.dynamics.STATES`; unknown labels after, alphabetically).

    >>> agreement_text(["Transitional", "Stable Convergent", "Transitional", "Stable Convergent"])
    '2/4 in Stable Convergent, 2/4 in Transitional (tie)'
    """
    counts = Counter(states)
    if not counts:
        return "no states"
    top = max(counts.values())
    rank = {s: i for i, s in enumerate(STATES)}
    modal = sorted((s for s, c in counts.items() if c == top), key=lambda s: (rank.get(s, len(STATES)), s))
    text = ", ".join(f"{top}/{len(states)} in {s}" for s in modal)
    return text + (" (tie)" if len(modal) > 1 else "")


def state_claims(summaries: list[dict], key: str = "state", claim: str = CLAIM_STATE) -> list[dict]:
    """Claim 3 per cell (state column ``key``), Holm-adjusted across cells; see the module docstring.

    The null pools the states of every finished, whole run of ``summaries``.
    """
    pool = Counter(r[key] for r in summaries if drop_reason(r) is None and r.get(key))
    counts = sorted(pool.values(), reverse=True)
    rank = {s: i for i, s in enumerate(STATES)}
    study = ", ".join(f"{s} {pool[s]}" for s in sorted(pool, key=lambda s: (-pool[s], rank.get(s, len(STATES)), s)))
    out = []
    for cell_key, runs in by_cell(summaries).items():
        states, reasons = [], []
        for r in runs:
            why = drop_reason(r) or (None if r.get(key) else f"no {key}")
            if why:
                reasons.append(why)
            else:
                states.append(r[key])
        n = len(states)
        common = {"n_runs": len(runs), "n_dropped": len(reasons), "dropped": dropped_text(reasons),
                  "test": TEST_STATE}
        cell, dataset = (cell_key[0], cell_key[2]), cell_key[1]
        top = max(Counter(states).values(), default=0)
        detail = f"{agreement_text(states)}; the study's finished runs: {study or 'none'}"
        args = (claim, cell, dataset, n, float(top) if n else None, top / n if n else None, "share in modal state")
        if n == 0:
            out.append(claim_row(*args, None, UNTESTED, f"no finished run with a {key}", **common))
        elif len(pool) < 2:
            out.append(claim_row(*args, None, UNTESTED, f"every finished run of the study is in one state: shuffling "
                                 f"states across runs cannot tell agreement from the study's make-up; {detail}",
                                 **common))
        elif max_count_p_min(counts, n) >= ALPHA:
            needs = max_count_needs(counts, ALPHA)
            verdict = insufficient(needs) if needs else UNTESTED
            why = (f"{n} seeds cannot reach p < {ALPHA:g} under the study's state counts even all in one state"
                   + ("" if needs else "; no number of seeds can"))
            out.append(claim_row(*args, None, verdict, f"{why}; {detail}", **common))
        else:
            p = max_count_sf(counts, n, top)
            out.append(claim_row(*args, p, NOT_SUPPORTED, detail, **common))
    return adjust_families(out)


def all_claims(summaries: list[dict], curves: dict, points: float = PLATEAU_POINTS, params=None) -> list[dict]:
    """The three claims over ``summaries`` (every run's run_summary row); ``params``: run_id -> its settings."""
    return (integration_claims(summaries, params=params) + trigger_claims(summaries, curves, points)
            + state_claims(summaries))
