"""Does a cell's signal beat its controls? Signal minus control per seed, with an interval and a verdict.

For each run and metric (H_raw, metastability): the signal is the metric's
mean over the run's end-of-epoch captures; each control is the same mean over
that control's end-of-epoch values (``noise``, ``order``, ``channel_draw``),
and ``init`` is the untrained network (capture 0), so signal minus init says
what training changed. Per cell the per-seed differences get a mean and a 95%
percentile-bootstrap interval (:func:`dynstudy.analysis.stats.variability.seed_stats`) and a
verdict: *beyond* the control when the interval excludes 0, *within* it when
it does not, *untested* with fewer than 3 seeds (no interval is honest then).
Pure functions over table rows.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

from dynstudy.analysis.stats.variability import CELL_KEYS, seed_stats

CONTROLS = ("noise", "order", "init", "channel_draw")
METRICS = ("h_raw", "metastability")
MIN_SEEDS = 3


def _mean(values) -> float | None:
    x = np.array([v for v in values if v is not None], dtype=float)
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else None


def run_differences(capture_rows: list[dict], control_rows: list[dict], metric: str) -> dict[str, dict]:
    """run_id -> {control: signal - control} of ``metric`` (controls a run lacks are absent)."""
    signal, init, ctrl = defaultdict(list), {}, defaultdict(list)
    for r in capture_rows:
        if r.get("kind") == "epoch":
            signal[r["run_id"]].append(r.get(metric))
        elif r.get("kind") == "init":
            init[r["run_id"]] = r.get(metric)
    for r in control_rows:
        if r.get("kind") == "epoch":
            ctrl[(r["run_id"], r["control"])].append(r.get(metric))
    out = {}
    for run_id, values in signal.items():
        s = _mean(values)
        if s is None:
            continue
        refs = {c: _mean(ctrl.get((run_id, c), [])) for c in CONTROLS if c != "init"}
        refs["init"] = _mean([init.get(run_id)])
        out[run_id] = {c: s - v for c, v in refs.items() if v is not None}
    return out


def verdict(stats: dict) -> str:
    """'beyond' / 'within' the control, or 'untested' below :data:`MIN_SEEDS` seeds or without an interval."""
    if stats["n"] < MIN_SEEDS or not np.isfinite(stats["boot_low"]):
        return "untested"
    return "beyond" if stats["boot_low"] > 0 or stats["boot_high"] < 0 else "within"


def cell_contrasts(summaries: list[dict], capture_rows: list[dict], control_rows: list[dict]) -> list[dict]:
    """One row per (cell, metric, control) over the cell's finished, whole runs."""
    cells = defaultdict(list)
    for s in summaries:
        if s.get("status") == "finished" and not s.get("reason"):
            cells[tuple(s[k] for k in CELL_KEYS)].append(s["run_id"])
    out = []
    for metric in METRICS:
        diffs = run_differences(capture_rows, control_rows, metric)
        for cell in sorted(cells):
            for control in CONTROLS:
                values = [diffs[r][control] for r in cells[cell] if control in diffs.get(r, {})]
                if not values:
                    continue
                st = seed_stats(values)
                out.append({**dict(zip(CELL_KEYS, cell)), "metric": metric, "control": control, "n_seeds": st["n"],
                            "mean": st["mean"], "boot_low": st["boot_low"], "boot_high": st["boot_high"],
                            "verdict": verdict(st)})
    return out
