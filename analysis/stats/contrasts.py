"""Does a cell's signal beat its controls? Signal minus control per seed: a test, an effect with its interval.

For each run and metric (H_raw, metastability): the signal is the metric's
mean over the run's end-of-epoch captures; each control is the same mean over
that control's end-of-epoch values (``noise``, ``order``, ``channel_draw``),
and ``init`` is the untrained network (capture 0), so signal minus init says
what training changed. Per cell the per-seed differences d = signal - control
over the cell's finished, whole runs are summarised by their mean with
Student's t-interval, and Cohen's d_z = mean / std.

- A control that is a null (:data:`TESTED`: noise, init, channel re-draw) gets
  a two-sided one-sample t-test of mean(d) = 0, from :data:`MIN_SEEDS` seeds
  on (below: :func:`~dynstudy.analysis.stats.verdicts.insufficient`). All
  tests of one call (one report) form one Benjamini-Hochberg family; the
  verdict is :data:`~dynstudy.analysis.stats.verdicts.BEYOND` when the
  adjusted p is below :data:`~dynstudy.analysis.stats.verdicts.ALPHA`, else
  :data:`~dynstudy.analysis.stats.verdicts.WITHIN` (the seeds cannot tell the
  signal from the control: not evidence that they are equal).
- The order comparison (:data:`MEASURED`: label order minus random order) is
  not a null: on features with no structure it is -0.04 to -0.29 H_raw by
  construction (class centring of label-sorted blocks). It is a
  :data:`~dynstudy.analysis.stats.verdicts.MEASUREMENT`: the part of the
  metric that label ordering makes, with its share of the signal, its
  interval, no p-value and no verdict, outside the family.

Every row says how many of the cell's runs it used and why the others were
dropped. Pure functions over table rows.
"""
from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
from scipy import optimize, special, stats

from dynstudy.analysis.stats.variability import CELL_KEYS, finite_or_none, seed_stats
from dynstudy.analysis.stats.verdicts import (
    ALPHA,
    BEYOND,
    MEASUREMENT,
    UNTESTED,
    WITHIN,
    benjamini_hochberg,
    insufficient,
)

CONTROLS = ("noise", "order", "init", "channel_draw")
#: Controls that are nulls (signal minus control has mean 0 where the network adds nothing): tested.
TESTED = ("noise", "init", "channel_draw")
#: Comparisons that are not nulls: measured, never tested.
MEASURED = ("order",)
METRICS = ("h_raw", "metastability")
#: Seeds a test needs (fewer: "insufficient seeds (needs 3)", left out of the family).
MIN_SEEDS = 3
#: The kinds of row: a test with a verdict, or a measurement without one.
TEST, MEASURE = "test", "measurement"
#: The order of a row's columns.
COLUMNS = (*CELL_KEYS, "metric", "control", "kind", "n_runs", "n_seeds", "n_dropped", "dropped", "signal_mean",
           "mean_diff", "std", "ci_low", "ci_high", "d_z", "share", "p_value", "p_adjusted", "n_tests", "verdict",
           "detail")


def _mean(values) -> float | None:
    x = [f for v in values if (f := finite_or_none(v)) is not None]
    return math.fsum(x) / len(x) if x else None


def run_signals(capture_rows: list[dict], metric: str) -> dict[str, float]:
    """run_id -> the run's signal: the mean of ``metric`` over its end-of-epoch captures (runs without one absent)."""
    values = defaultdict(list)
    for r in capture_rows:
        if r.get("kind") == "epoch":
            values[r["run_id"]].append(r.get(metric))
    return {rid: m for rid, v in values.items() if (m := _mean(v)) is not None}


def run_differences(capture_rows: list[dict], control_rows: list[dict], metric: str) -> dict[str, dict]:
    """run_id -> {control: signal - control} of ``metric`` (controls a run lacks are absent)."""
    init, ctrl = {}, defaultdict(list)
    for r in capture_rows:
        if r.get("kind") == "init":
            init[r["run_id"]] = r.get(metric)
    for r in control_rows:
        if r.get("kind") == "epoch":
            ctrl[(r["run_id"], r["control"])].append(r.get(metric))
    out = {}
    for run_id, s in run_signals(capture_rows, metric).items():
        refs = {c: _mean(ctrl.get((run_id, c), [])) for c in CONTROLS if c != "init"}
        refs["init"] = _mean([init.get(run_id)])
        out[run_id] = {c: s - v for c, v in refs.items() if v is not None}
    return out


#: Geometry metrics contrasted (``geometry_metrics`` column -> its noise control's column), each stage's value
#: averaged over stages: the signal over the end-of-epoch captures, ``init`` the untrained network.
GEOMETRY_METRICS = {"effective_rank": "noise_effective_rank", "participation_ratio": "noise_participation_ratio"}


def geometry_signals(geometry_rows: list[dict], metric: str) -> tuple[dict, dict]:
    """(run_id -> signal, run_id -> {control: signal - control}) of a geometry ``metric``: its stages' mean over
    the end-of-epoch captures, against its noise control's mean over the same rows and the init capture's."""
    epoch, noise, init = defaultdict(list), defaultdict(list), defaultdict(list)
    for r in geometry_rows:
        if r.get("kind") == "epoch":
            epoch[r["run_id"]].append(r.get(metric))
            noise[r["run_id"]].append(r.get(GEOMETRY_METRICS[metric]))
        elif r.get("kind") == "init":
            init[r["run_id"]].append(r.get(metric))
    signals = {rid: m for rid, v in epoch.items() if (m := _mean(v)) is not None}
    diffs = {}
    for rid, sig in signals.items():
        refs = {"noise": _mean(noise[rid]), "init": _mean(init.get(rid, []))}
        diffs[rid] = {c: sig - v for c, v in refs.items() if v is not None}
    return signals, diffs


def one_sample_t(mean, std, n):
    """(t, two-sided p) of the one-sample t-test of mean 0 from a sample's mean, std (ddof 1) and size (vectorised).

    NaN where n < 2 or std is 0.

    >>> t, p = one_sample_t(1.0, 1.0, 4)
    >>> round(float(t), 3), round(float(p), 4)
    (2.0, 0.1393)
    """
    mean, std, n = (np.asarray(a, dtype=float) for a in (mean, std, n))
    ok = (n >= 2) & (std > 0)
    t = np.where(ok, mean / np.where(ok, std, 1.0) * np.sqrt(np.maximum(n, 1)), np.nan)
    p = np.where(ok, 2 * special.stdtr(np.maximum(n - 1, 1), -np.abs(t)), np.nan)
    return t, p


def detectable_effect(n: int, power: float = 0.8, alpha: float = ALPHA) -> float:
    """The d_z (mean / std of the differences) the two-sided one-sample t-test at ``alpha`` detects with ``power``.

    From the noncentral t distribution (df n - 1, noncentrality d_z sqrt(n)), for one test alone; within a
    Benjamini-Hochberg family the level is stricter, so the detectable d_z is larger.

    >>> round(detectable_effect(10), 2)
    1.0
    """
    df, crit = n - 1, float(stats.t.ppf(1 - alpha / 2, n - 1))

    def shortfall(d):
        nc = d * np.sqrt(n)
        lower = np.nan_to_num(stats.nct.cdf(-crit, df, nc))  # the far tail: NaN where it underflows
        return stats.nct.sf(crit, df, nc) + lower - power

    high = 1.0
    while shortfall(high) < 0:  # the smallest doubling with enough power brackets the root
        high *= 2
    return float(optimize.brentq(shortfall, 0.0, high))


def drop_reason(run: dict, signal: dict, values: dict, control: str) -> str | None:
    """Why ``run`` is not a seed of its cell's ``control`` contrast (None: it is one).

    Parameters
    ----------
    run : the run's summary row (status, reason: a gap in its files).
    signal : run_id -> the run's signal (:func:`run_signals`).
    values : run_id -> the run's finite signal - control.
    control : the control's name.
    """
    status = run.get("status")
    if status != "finished":
        return str(status or "no status")
    if run.get("reason"):
        return "incomplete (a gap)"
    rid = run["run_id"]
    if rid not in signal:
        return "no signal value"
    return None if rid in values else f"no {control} value"


def dropped_text(reasons) -> str:
    """The drop reasons counted, most frequent first: ``"2 diverged; 1 incomplete (a gap)"`` ('' for none)."""
    return "; ".join(f"{k} {why}" for why, k in Counter(r for r in reasons if r).most_common())


def contrast_row(values, control: str, signals=()) -> dict:
    """The statistics of one cell's per-seed differences ``values`` against ``control``, before multiplicity.

    Parameters
    ----------
    values : per-seed signal - control (NaN and None skipped).
    control : the control's name; :data:`MEASURED` ones get a measurement, the others a test.
    signals : the same seeds' signals, for the share of the signal the difference is (measurements).

    Returns
    -------
    dict with kind, n_seeds, signal_mean, mean_diff, std, ci_low, ci_high (t-interval of the mean
    difference), d_z, share (measurements: mean_diff / signal_mean), p_value (tests with at least
    :data:`MIN_SEEDS` seeds and some spread; else None), verdict (tests: None until the family is
    adjusted, :func:`apply_family`; else insufficient / untested / measurement) and detail.

    Examples
    --------
    >>> r = contrast_row([0.1, 0.2, 0.3], "noise")
    >>> r["kind"], round(r["p_value"], 4), round(r["d_z"], 2)
    ('test', 0.0742, 2.0)
    >>> contrast_row([0.1, 0.2], "noise")["verdict"]
    'insufficient seeds (needs 3)'
    """
    s = seed_stats(values)
    n, std = s["n"], finite_or_none(s["std"])
    mean = finite_or_none(s["mean"])
    kind = MEASURE if control in MEASURED else TEST
    row = {"kind": kind, "n_seeds": n, "signal_mean": _mean(signals), "mean_diff": mean, "std": std,
           "ci_low": finite_or_none(s["ci_low"]), "ci_high": finite_or_none(s["ci_high"]),
           "d_z": mean / std if mean is not None and std else None, "share": None, "p_value": None,
           "p_adjusted": None, "n_tests": None, "verdict": None, "detail": ""}
    if kind == MEASURE:
        sig = row["signal_mean"]
        row["share"] = mean / sig if mean is not None and sig else None
        row["verdict"] = MEASUREMENT
        row["detail"] = "not a null: the part of the metric that label ordering makes"
    elif n == 0:
        row.update(verdict=UNTESTED, detail="no run with a value")
    elif n < MIN_SEEDS:
        row.update(verdict=insufficient(MIN_SEEDS), detail=f"{n} seed{'s' if n > 1 else ''} with a value")
    elif not std:
        row.update(verdict=UNTESTED, detail="no spread across seeds")
    else:
        row["p_value"] = float(one_sample_t(mean, std, n)[1])
    return row


def apply_family(rows: list[dict], alpha: float = ALPHA) -> list[dict]:
    """``rows`` with the tests that have a p-value adjusted as one Benjamini-Hochberg family, and their verdicts.

    Sets p_adjusted, n_tests (the family's size) and verdict (:data:`BEYOND` when p_adjusted < ``alpha``, else
    :data:`WITHIN`) on every row whose p_value is set; other rows are returned as they are.
    """
    family = [i for i, r in enumerate(rows) if r.get("p_value") is not None]
    adjusted = benjamini_hochberg([rows[i]["p_value"] for i in family])
    out = list(rows)
    for i, q in zip(family, adjusted):
        out[i] = {**rows[i], "p_adjusted": q, "n_tests": len(family), "verdict": BEYOND if q < alpha else WITHIN}
    return out


def cell_contrasts(summaries: list[dict], capture_rows: list[dict], control_rows: list[dict],
                   geometry_rows: list[dict] = ()) -> list[dict]:
    """One row per (cell, metric, control), all tests of the call adjusted as one Benjamini-Hochberg family.

    Parameters
    ----------
    summaries : one row per run: run_id, the cell keys, status (only "finished" runs are seeds) and reason
        (a gap in the run's files: the run is left out).
    capture_rows, control_rows : capture_metrics and controls rows (kind, run_id, control, the metrics).
    geometry_rows : geometry_metrics rows; each of :data:`GEOMETRY_METRICS` is contrasted with its noise
        control and the untrained network (:func:`geometry_signals`), in the same family.

    Returns
    -------
    list of dicts with the columns :data:`COLUMNS`, for every cell and every control some run of the
    report has a value of; each says how many of the cell's runs it used (n_seeds of n_runs) and why the
    others were dropped (``dropped``: not finished, incomplete, no value).
    """
    cells = defaultdict(list)
    for s in summaries:
        cells[tuple(s.get(k) for k in CELL_KEYS)].append(s)
    out = []
    sources = [(m, run_signals(capture_rows, m), run_differences(capture_rows, control_rows, m)) for m in METRICS]
    if geometry_rows:
        sources += [(m, *geometry_signals(list(geometry_rows), m)) for m in GEOMETRY_METRICS]
    for metric, signal, diffs in sources:
        by_control = {c: {r: v for r, d in diffs.items() if (v := finite_or_none(d.get(c))) is not None}
                      for c in CONTROLS}
        present = [c for c in CONTROLS if by_control[c]]
        for cell in sorted(cells, key=lambda c: tuple(str(k) for k in c)):
            runs = cells[cell]
            for control in present:
                values = by_control[control]
                reasons = [drop_reason(run, signal, values, control) for run in runs]
                used = [run["run_id"] for run, why in zip(runs, reasons) if why is None]
                row = contrast_row([values[r] for r in used], control, [signal[r] for r in used])
                out.append({**dict(zip(CELL_KEYS, cell)), "metric": metric, "control": control,
                            "n_runs": len(runs), "n_dropped": len(runs) - len(used),
                            "dropped": dropped_text(reasons), **row})
    return [{k: r[k] for k in COLUMNS} for r in apply_family(out)]
