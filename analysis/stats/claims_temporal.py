"""The paper's three claims re-tested on the temporal protocol's metrics (:mod:`dynstudy.analysis.kernels.temporal`).

1. Integration separates datasets: Welch's t-test on the runs' temporal
   H_eff (whole run), Hedges' g, as :func:`dynstudy.analysis.stats.claims.integration_claims`.
2. The volatility trigger comes before the accuracy plateau, in optimiser
   steps: the trigger is the last step of the window at which the windows'
   Psi volatility fires; the plateau is the step at the end of the first
   epoch within ``points`` of the run's best val_acc; one-sided Wilcoxon
   signed-rank test on plateau - trigger.
3. The temporal state (the taxonomy over the windows) is stable across
   seeds, as :func:`dynstudy.analysis.stats.claims.state_claims`.

Each claim's name starts with "temporal: ", so the claims table holds both
protocols side by side. Only runs with a temporal series take part.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
from scipy import stats

from dynstudy.analysis.kernels.params import PLATEAU_POINTS
from dynstudy.analysis.stats.claims import (
    ALPHA,
    claim_row,
    finished_runs,
    integration_claims,
    plateau_epoch,
    state_claims,
)
from dynstudy.analysis.stats.variability import CELL_KEYS, finite_or_none

PREFIX = "temporal: "
TRIGGER_CLAIM = PREFIX + "volatility trigger precedes accuracy plateau (steps)"


def trigger_step_claims(summaries: list[dict], curves: dict, epoch_steps: dict,
                        points: float = PLATEAU_POINTS) -> list[dict]:
    """Claim 2 in steps, per cell.

    ``curves``: run_id -> (epochs, val_acc, val_loss) arrays; ``epoch_steps``:
    run_id -> {epoch: optimiser steps completed at its end}.
    """
    cells = defaultdict(list)
    for r in finished_runs(summaries):
        cells[tuple(r[k] for k in CELL_KEYS)].append(r)
    out = []
    for key, runs in sorted(cells.items()):
        lead = []
        for r in runs:
            trig = r.get("temporal_trigger_step")
            if trig is None or r["run_id"] not in curves:
                continue
            epochs, acc, _ = curves[r["run_id"]]
            plateau = plateau_epoch(epochs, acc, points)
            step = epoch_steps.get(r["run_id"], {}).get(plateau)
            if step is not None:
                lead.append(step - trig)
        cell, dataset = (key[0], key[2]), key[1]
        if not lead:
            out.append(claim_row(TRIGGER_CLAIM, cell, dataset, 0, None, None, "mean steps of lead", None, "untested",
                                 f"temporal trigger never fired in {len(runs)} runs"))
            continue
        lead_arr = np.array(lead, float)
        p = None
        if len(lead) >= 2 and np.any(lead_arr != 0):
            p = finite_or_none(stats.wilcoxon(lead_arr, alternative="greater", zero_method="zsplit").pvalue)
        verdict = "supported" if p is not None and p < ALPHA else ("not supported" if p is not None else "untested")
        detail = (f"trigger before plateau in {int((lead_arr > 0).sum())}/{len(lead)} runs with a trigger "
                  f"({len(runs)} runs); median lead {np.median(lead_arr):.0f} steps")
        out.append(claim_row(TRIGGER_CLAIM, cell, dataset, len(lead), finite_or_none(float(np.median(lead_arr))),
                             finite_or_none(float(lead_arr.mean())), "mean steps of lead", p, verdict, detail))
    return out


def temporal_claims(summaries: list[dict], curves: dict, epoch_steps: dict,
                    points: float = PLATEAU_POINTS) -> list[dict]:
    """The three claims on the temporal metrics of the runs that have them (none: an empty list)."""
    runs = [r for r in summaries if r.get("temporal_n_points")]
    if not runs:
        return []
    return (integration_claims(runs, tests=((PREFIX + "integration separates datasets", "temporal_h_eff"),))
            + trigger_step_claims(runs, curves, epoch_steps, points)
            + state_claims(runs, key="temporal_state", claim=PREFIX + "state stable across seeds"))
