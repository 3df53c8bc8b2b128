"""The paper's three claims re-tested on the temporal protocol's metrics (:mod:`dynstudy.analysis.kernels.temporal`).

1. Integration separates datasets: Welch's t-test on the runs' temporal
   H_eff (whole run), with the mean difference, Hedges' g and their intervals,
   as :func:`dynstudy.analysis.stats.claims.integration_claims`; where most
   runs' temporal H_raw lie beyond H_opt +/- 3 sigma_H the H_eff row says
   "H_eff saturated" and the same test on temporal H_raw is its own row.
2. The volatility trigger comes before the accuracy plateau, in optimiser
   steps: the trigger is the last step of the window at which the windows'
   Psi volatility fires; the plateau is the step at the end of the first
   epoch within ``points`` of the run's best val_acc; the one-sided sign-flip
   permutation test on the mean of plateau - trigger, as
   :func:`dynstudy.analysis.stats.claims.lead_row`.
3. The temporal state (the taxonomy over the windows) is stable across
   seeds, as :func:`dynstudy.analysis.stats.claims.state_claims` (its null
   pools the temporal states of the study's runs).

Each claim's name starts with "temporal: ", so the claims table holds both
protocols side by side and each temporal claim is a Holm family of its own.
Only cells with a temporal series take part (every run of such a cell counts,
a run without one as dropped).
"""
from __future__ import annotations

from dynstudy.analysis.kernels.params import PLATEAU_POINTS
from dynstudy.analysis.stats.claims import (
    CLAIM_INTEGRATION,
    CLAIM_STATE,
    CLAIM_TRIGGER,
    adjust_families,
    by_cell,
    drop_reason,
    integration_claims,
    lead_row,
    plateau_epoch,
    state_claims,
)

PREFIX = "temporal: "
INTEGRATION_CLAIM = PREFIX + CLAIM_INTEGRATION
TRIGGER_CLAIM = PREFIX + CLAIM_TRIGGER + " (steps)"
STATE_CLAIM = PREFIX + CLAIM_STATE


def trigger_step_claims(summaries: list[dict], curves: dict, epoch_steps: dict,
                        points: float = PLATEAU_POINTS) -> list[dict]:
    """Claim 2 in steps, per cell, Holm-adjusted across cells.

    ``curves``: run_id -> (epochs, val_acc, val_loss) arrays; ``epoch_steps``:
    run_id -> {epoch: optimiser steps completed at its end}.
    """
    out = []
    for key, runs in by_cell(summaries).items():
        lead, reasons = [], []
        for r in runs:
            why = drop_reason(r)
            trig = r.get("temporal_trigger_step")
            curve = curves.get(r["run_id"]) if why is None else None
            plateau = plateau_epoch(curve[0], curve[1], points) if curve is not None and len(curve[0]) else None
            step = epoch_steps.get(r["run_id"], {}).get(plateau)
            if why is None and plateau is None:
                why = "no accuracy curve"
            elif why is None and trig is None:
                why = "no trigger"
            elif why is None and step is None:
                why = "no step count at the plateau epoch"
            if why:
                reasons.append(why)
            else:
                lead.append(step - trig)
        out.append(lead_row(TRIGGER_CLAIM, (key[0], key[2]), key[1], lead, reasons, len(runs), "steps",
                            f"{len(runs)} runs"))
    return adjust_families(out)


def temporal_claims(summaries: list[dict], curves: dict, epoch_steps: dict,
                    points: float = PLATEAU_POINTS, params=None) -> list[dict]:
    """The three claims on the temporal metrics, over the cells that have a temporal series (none: an empty list).

    ``params``: run_id -> the run's analysis settings (h_opt, sigma_h), for the saturation check.
    """
    cells = {k for k, runs in by_cell(summaries).items() if any(r.get("temporal_n_points") for r in runs)}
    runs = [r for k, rows in by_cell(summaries).items() if k in cells for r in rows]
    if not runs:
        return []
    return (integration_claims(runs, tests=((INTEGRATION_CLAIM, "temporal_h_eff"),), params=params)
            + trigger_step_claims(runs, curves, epoch_steps, points)
            + state_claims(runs, key="temporal_state", claim=STATE_CLAIM))
