"""Stopping rules compared on the same curves, their settings chosen without peeking.

Every rule of :mod:`dynstudy.analysis.kernels.stopping_rules` is replayed on every finished, whole run with every
setting of its grid (:data:`GRIDS`): the epoch it stops at, the epochs it saves against the full run, and the
validation accuracy given up (percentage points) against the run's best epoch and against its final epoch, the
model being the one at the stop epoch (no best weights restored). Table ``stopping``: one row per run, rule and
setting.

A setting is chosen for each rule the way a user would have to choose it before training: the setting that saves
the most epochs on average while giving up at most ``tolerance`` points against the best (:data:`TOLERANCE`), or,
where none meets it, the one that gives up least. ``held_out``: chosen on the other cells of the study and
evaluated on the held-out cell (leave one cell out; untested with a single cell). ``in_sample``: chosen on every
cell, the cell itself included, shown beside it for contrast. Table ``stopping_summary``: one row per cell, rule
and selection, with the seeds' mean and t-interval of each quantity.

The verdict (``held_out`` rows of every rule but the baseline, :data:`BASELINE`): does the rule save more epochs
than patience on validation loss, at no more than :data:`MARGIN` points of extra accuracy given up? Per cell,
paired over its runs (the same seeds under both rules): a one-sided sign-flip test that the epochs saved by the
rule minus those by the baseline have a mean above 0, and one that the accuracy given up by the rule minus the
baseline's has a mean below ``MARGIN`` (non-inferiority); the row's p is the larger of the two (an
intersection-union test, valid at the level without adjustment) and its verdict comes from the Holm-adjusted p
over the family of every rule and cell (:mod:`dynstudy.analysis.stats.verdicts`): "saves more" below
:data:`dynstudy.analysis.stats.verdicts.ALPHA`, else "not shown"; "insufficient seeds (needs 5)" where the
sign-flip tests cannot reach the level with the runs at hand (fewer than :data:`MIN_RUNS`), whatever they show.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict

import numpy as np

from dynstudy.analysis.kernels import stopping_rules as sr
from dynstudy.analysis.kernels.params import DEFAULTS, STOP_MARGIN, STOP_TOLERANCE
from dynstudy.analysis.stats.claim_tests import mean_interval, sign_flip
from dynstudy.analysis.stats.claims import drop_reason
from dynstudy.analysis.stats.verdicts import ALPHA, UNTESTED, holm, insufficient

#: Points of validation accuracy a chosen setting may give up against the run's best epoch, on average.
TOLERANCE = STOP_TOLERANCE
#: Points of extra accuracy given up (against the baseline) that still count as "equal" in the verdict.
MARGIN = STOP_MARGIN
#: The rule every other rule is compared with.
BASELINE = "patience_loss"
SAVES_MORE, NOT_SHOWN = "saves more", "not shown"
#: Paired runs a cell needs before the sign-flip tests can reach ALPHA (their smallest p is 2^-n).
MIN_RUNS = 5
#: Budgets as fractions of the study's longest run.
BUDGET_FRACTIONS = (0.25, 0.5, 0.75)
#: The settings tried for each rule (the budget's come from the study's epochs, :func:`grids`).
GRIDS = {
    "volatility": [{"threshold": t, "patience": p} for t in (0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.5)
                   for p in (2, 3, 5)],
    "patience_loss": [{"patience": p, "min_delta": d} for p in (3, 5, 10, 15, 20) for d in (0.0, 0.01)],
    "patience_acc": [{"patience": p, "min_delta": d} for p in (3, 5, 10, 15, 20) for d in (0.0, 0.005)],
    "plateau_loss": [{"std": s, "num_results": n, "grace_period": 4} for s in (0.001, 0.005, 0.01, 0.02, 0.05)
                     for n in (4, 8)],
}
CELL = ("model", "dataset", "optimizer")


def grids(max_epoch: int) -> dict[str, list[dict]]:
    """:data:`GRIDS` and the budget rule's settings for a study whose longest run has ``max_epoch`` epochs."""
    budgets = sorted({max(1, math.ceil(f * max_epoch)) for f in BUDGET_FRACTIONS})
    return {**GRIDS, "budget": [{"epochs": b} for b in budgets]}


def outcome(curve: dict, stop: int | None) -> dict:
    """What stopping at ``stop`` (None: never) costs the run: stop_epoch, final_epoch, epochs_saved, acc_at_stop,
    given_up_best and given_up_final (percentage points)."""
    epochs, acc = np.asarray(curve["epochs"]), np.asarray(curve["val_acc"], float)
    final = int(epochs[-1])
    at = int(stop) if stop is not None else final
    here = acc[np.flatnonzero(epochs == at)[0]] if (epochs == at).any() else math.nan
    best = np.nanmax(acc) if np.isfinite(acc).any() else math.nan
    return {"stop_epoch": stop, "final_epoch": final, "epochs_saved": final - at,
            "acc_at_stop": _f(here), "given_up_best": _f(100 * (best - here)),
            "given_up_final": _f(100 * (acc[-1] - here))}


def _f(x) -> float | None:
    return float(x) if x is not None and np.isfinite(x) else None


def replay(summaries: list[dict], curves: dict[str, dict]) -> list[dict]:
    """The ``stopping`` rows: every rule and setting on every finished, whole run that has a curve."""
    runs = [r for r in summaries if drop_reason(r) is None and r["run_id"] in curves]
    if not runs:
        return []
    settings = grids(max(int(curves[r["run_id"]]["epochs"][-1]) for r in runs))
    rows = []
    for r in runs:
        curve = curves[r["run_id"]]
        vol = None
        if len(curve.get("cap_epochs", ())):
            vol = sr.volatility_by_prefix(curve["cap_epochs"], curve["h_eff"], curve["metastability"],
                                          curve["vol_window"], curve["w_h"])
        for rule, grid in settings.items():
            if rule == "volatility" and vol is None:
                continue
            for setting in grid:
                rows.append({**{k: r[k] for k in ("run_id", *CELL, "seed")}, "rule": rule,
                             "setting": json.dumps(setting, sort_keys=True),
                             **outcome(curve, sr.stop_at(rule, setting, curve, vol))})
    return rows


def choose(rows: list[dict], tolerance: float = TOLERANCE) -> tuple[str | None, bool]:
    """(setting, met): among ``rows`` (one rule's, of the cells it is chosen on), the setting that saves the most
    epochs on average with at most ``tolerance`` points given up against the best on average (ties: the smaller
    loss, then the setting's text); where none meets it, the one giving up least (``met`` False)."""
    by = defaultdict(list)
    for r in rows:
        by[r["setting"]].append(r)
    stats = []
    for setting, rs in by.items():
        given = [r["given_up_best"] for r in rs if r["given_up_best"] is not None]
        stats.append((float(np.mean([r["epochs_saved"] for r in rs])), float(np.mean(given)) if given else math.inf,
                      setting))
    if not stats:
        return None, False
    ok = [s for s in stats if s[1] <= tolerance]
    if ok:
        return min(ok, key=lambda s: (-s[0], s[1], s[2]))[2], True
    return min(stats, key=lambda s: (s[1], -s[0], s[2]))[2], False


def _interval(values) -> tuple[float | None, float | None, float | None]:
    x = [v for v in values if v is not None]
    if not x:
        return None, None, None
    low, high = mean_interval(x)
    return float(np.mean(x)), _f(low), _f(high)


def summary(rows: list[dict], tolerance: float = TOLERANCE, margin: float = MARGIN) -> list[dict]:
    """The ``stopping_summary`` rows of the ``stopping`` rows (see the module docstring), with verdicts."""
    cells = sorted({tuple(r[k] for k in CELL) for r in rows})
    by_rule = defaultdict(list)
    for r in rows:
        by_rule[r["rule"]].append(r)
    out, chosen = [], {}
    for rule, rrows in sorted(by_rule.items()):
        in_sample, met_all = choose(rrows, tolerance)
        for cell in cells:
            here = [r for r in rrows if tuple(r[k] for k in CELL) == cell]
            others = [r for r in rrows if tuple(r[k] for k in CELL) != cell]
            held, met = choose(others, tolerance) if others else (None, False)
            for selection, setting, ok in (("held_out", held, met), ("in_sample", in_sample, met_all)):
                picked = [r for r in here if r["setting"] == setting]
                chosen[(rule, cell, selection)] = {r["run_id"]: r for r in picked}
                saved, given, final = (_interval([r[k] for r in picked])
                                       for k in ("epochs_saved", "given_up_best", "given_up_final"))
                out.append({**dict(zip(CELL, cell)), "rule": rule, "selection": selection, "setting": setting,
                            "tolerance": tolerance, "met_tolerance": ok if setting is not None else None,
                            "n_runs": len(picked), "n_fired": sum(r["stop_epoch"] is not None for r in picked),
                            "epochs_saved_mean": saved[0], "epochs_saved_low": saved[1], "epochs_saved_high": saved[2],
                            "given_up_mean": given[0], "given_up_low": given[1], "given_up_high": given[2],
                            "given_up_final_mean": final[0], "margin": margin, "p": None, "p_adjusted": None,
                            "verdict": None, "detail": None})
    return _verdicts(out, chosen, margin)


def _verdicts(out: list[dict], chosen: dict, margin: float) -> list[dict]:
    """Fill p, p_adjusted, verdict and detail of the held-out rows (Holm over every rule and cell)."""
    family = []
    for row in out:
        cell = tuple(row[k] for k in CELL)
        if row["selection"] != "held_out":
            row["detail"] = "chosen on every cell, this one included: for contrast, no verdict"
            continue
        if row["rule"] == BASELINE:
            row["verdict"], row["detail"] = "baseline", "the rule the others are compared with"
            continue
        base = chosen.get((BASELINE, cell, "held_out"), {})
        mine = chosen[(row["rule"], cell, "held_out")]
        pairs = [(mine[k], base[k]) for k in sorted(mine.keys() & base.keys())
                 if mine[k]["given_up_best"] is not None and base[k]["given_up_best"] is not None]
        if row["setting"] is None or not pairs:
            row["verdict"], row["detail"] = UNTESTED, ("a single cell: no other cell to choose a setting on"
                                                       if row["setting"] is None else "no run with both rules")
            continue
        d_saved = [a["epochs_saved"] - b["epochs_saved"] for a, b in pairs]
        d_given = [a["given_up_best"] - b["given_up_best"] for a, b in pairs]
        saves, equal = sign_flip(d_saved), sign_flip([margin - d for d in d_given])
        row["detail"] = (f"{len(pairs)} paired runs: {np.mean(d_saved):+.2f} epochs saved, "
                         f"{np.mean(d_given):+.2f} points given up against {BASELINE}")
        if len(pairs) < MIN_RUNS:
            row["verdict"] = insufficient(MIN_RUNS)
            continue
        row["p"] = max(saves["p"], equal["p"])
        family.append(row)
    for row, q in zip(family, holm([r["p"] for r in family])):
        row["p_adjusted"] = q
        row["verdict"] = SAVES_MORE if q < ALPHA else NOT_SHOWN
    return out


def run_curves(train: dict[str, dict], captures: dict[str, dict], params: dict[str, dict]) -> dict[str, dict]:
    """run_id -> the curves :func:`replay` reads, for each run of ``train``.

    Parameters
    ----------
    train : run_id -> {"epoch", "val_loss", "val_acc"} -> array, in epoch order (NaN or None where missing).
    captures : run_id -> {"epoch", "h_eff", "metastability"} -> array of the end-of-epoch captures, in epoch order.
    params : run_id -> the run's analysis settings (its vol_window and w_h).
    """
    out = {}
    for run_id, t in train.items():
        c, p = captures.get(run_id, {}), params.get(run_id, {})
        # np.asarray(..., float) reads None as NaN
        out[run_id] = {"epochs": np.asarray(t["epoch"], np.int64), "val_loss": np.asarray(t["val_loss"], float),
                       "val_acc": np.asarray(t["val_acc"], float),
                       "cap_epochs": np.asarray(c.get("epoch", ()), np.int64),
                       "h_eff": np.asarray(c.get("h_eff", ()), float),
                       "metastability": np.asarray(c.get("metastability", ()), float),
                       "vol_window": p.get("vol_window", DEFAULTS.vol_window), "w_h": p.get("w_h", DEFAULTS.w_h)}
    return out
