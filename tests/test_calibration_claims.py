"""Null calibration of the claims' verdicts: simulated studies in which nothing is real, through the real functions.

Each test draws seeded null studies (every cell from the same distribution),
passes them to the public functions that write the ``claims`` table
(:func:`integration_claims`, :func:`trigger_claims`, :func:`state_claims`,
each Holm-adjusting its family) and counts what the report would say:

- a verdict's false-positive rate (share of null tests that say "supported")
  is at most ALPHA plus three Monte Carlo standard errors, at 3, 5 and 10 seeds
  per cell (in one-test studies, where the verdict is the test's own);
- within each family (a claim across the study's cells) the share of null
  studies with ANY "supported" after Holm is at most ALPHA plus three MC SE.

Claim 3's seeds draw their states at the study's own (skewed) frequencies.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from dynstudy.analysis.stats.claims import integration_claims, state_claims, trigger_claims
from dynstudy.analysis.stats.verdicts import ALPHA

SEEDS = (3, 5, 10)
STATES = ("Stable Convergent", "Rigidly Synchronised", "Metastable High-Integration", "Transitional",
          "Partial Integration")
#: A study's state frequencies: one state common, one rare, as in real studies.
STATE_FREQ = (0.40, 0.25, 0.15, 0.12, 0.08)
EPOCHS = np.arange(1, 41)
ACC = np.minimum(0.9, 0.5 + 0.02 * EPOCHS)  # plateau (within 0.5 points of the best) at epoch 20
LOSS = 1.0 / EPOCHS


def limit(reps: int) -> float:
    """ALPHA plus three Monte Carlo standard errors of a rate estimated from ``reps`` draws."""
    return ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / reps)


def summary(i, model, dataset, **values) -> dict:
    return {"run_id": f"{model}-{dataset}-{i}", "model": model, "dataset": dataset, "optimizer": "sgd",
            "status": "finished", "reason": None, **values}


def integration_study(rng, n: int, pairs: int) -> list[dict]:
    """``pairs`` (model) x 2 datasets x ``n`` seeds, every run's H_eff, H_raw and noise control from one law."""
    return [summary(i, f"m{p}", d, h_eff_mean=rng.normal(0.5, 0.1), h_raw_mean=rng.normal(0.7, 0.05),
                    noise_h_raw_mean=rng.normal(0.6, 0.05))
            for p in range(pairs) for d in ("a", "b") for i in range(n)]


def trigger_study(rng, n: int, cells: int) -> tuple[list[dict], dict]:
    """``cells`` x ``n`` runs whose trigger is the plateau epoch (20) minus a lead symmetric about 0."""
    leads = np.clip(np.rint(rng.normal(0, 3, (cells, n))), -15, 15).astype(int)
    runs = [summary(i, f"m{c}", "a", trigger_epoch=int(20 - leads[c, i])) for c in range(cells) for i in range(n)]
    return runs, {r["run_id"]: (EPOCHS, ACC, LOSS) for r in runs}


def state_study(rng, n: int, cells: int) -> list[dict]:
    """``cells`` x ``n`` runs whose states are drawn at :data:`STATE_FREQ`."""
    draws = rng.choice(len(STATES), size=(cells, n), p=STATE_FREQ)
    return [summary(i, f"m{c}", "a", state=STATES[draws[c, i]]) for c in range(cells) for i in range(n)]


def supported(rows, claim) -> list[bool]:
    return [r["verdict"] == "supported" for r in rows if r["claim"] == claim]


@pytest.mark.parametrize("n", SEEDS)
def test_integration_false_positive_rate(n):
    rng = np.random.default_rng(100 + n)
    reps = 1000
    hits = sum(supported(integration_claims(integration_study(rng, n, 1),
                                            tests=(("integration separates datasets", "h_eff_mean"),)),
                         "integration separates datasets")[0] for _ in range(reps))
    assert hits / reps <= limit(reps), f"{hits}/{reps} null tests supported at n = {n}"


@pytest.mark.parametrize("n", SEEDS)
def test_integration_family_wise_rate(n):
    """Four (model) pairs per study: at most ALPHA of null studies say "supported" anywhere in either family."""
    rng = np.random.default_rng(200 + n)
    reps = 600
    any_heff = any_noise = 0
    for _ in range(reps):
        rows = integration_claims(integration_study(rng, n, 4))
        any_heff += any(supported(rows, "integration separates datasets"))
        any_noise += any(supported(rows, "integration separates datasets beyond noise"))
    assert any_heff / reps <= limit(reps) and any_noise / reps <= limit(reps), (any_heff, any_noise, reps)


@pytest.mark.parametrize("n", SEEDS)
def test_trigger_false_positive_and_family_wise_rate(n):
    rng = np.random.default_rng(300 + n)
    reps = 1000
    single = sum(supported(trigger_claims(*trigger_study(rng, n, 1)), "volatility trigger precedes accuracy plateau")
                 [0] for _ in range(reps))
    family = sum(any(supported(trigger_claims(*trigger_study(rng, n, 6)), "volatility trigger precedes accuracy "
                                                                          "plateau")) for _ in range(reps))
    assert single / reps <= limit(reps), f"{single}/{reps} null cells supported at n = {n}"
    assert family / reps <= limit(reps), f"{family}/{reps} null studies with a supported cell at n = {n}"


@pytest.mark.parametrize("n", SEEDS)
def test_state_false_positive_and_family_wise_rate(n):
    """Six cells whose seeds draw states at the study's frequencies: each cell's test, its verdict and the family."""
    rng = np.random.default_rng(400 + n)
    reps, cells = 3000, 6
    rejected = verdicts = family = 0
    for _ in range(reps):
        rows = state_claims(state_study(rng, n, cells))
        rejected += sum(r["p_value"] is not None and r["p_value"] < ALPHA for r in rows)
        said = supported(rows, "state stable across seeds")
        verdicts += sum(said)
        family += any(said)
    tests = reps * cells
    assert rejected / tests <= limit(tests), f"raw p < {ALPHA}: {rejected}/{tests} null cells at n = {n}"
    assert verdicts / tests <= limit(tests), f"supported: {verdicts}/{tests} null cells at n = {n}"
    assert family / reps <= limit(reps), f"{family}/{reps} null studies with a supported cell at n = {n}"
