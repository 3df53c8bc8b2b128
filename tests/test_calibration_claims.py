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


def integration_rates(n: int) -> dict:
    """Null rates of claim 1: one-pair studies (the test's own verdict), and four-pair studies (each family)."""
    rng = np.random.default_rng(100 + n)
    reps = 1000
    single = sum(supported(integration_claims(integration_study(rng, n, 1),
                                              tests=(("integration separates datasets", "h_eff_mean"),)),
                           "integration separates datasets")[0] for _ in range(reps))
    rng = np.random.default_rng(200 + n)
    studies = 600
    any_heff = any_noise = 0
    for _ in range(studies):
        rows = integration_claims(integration_study(rng, n, 4))
        any_heff += any(supported(rows, "integration separates datasets"))
        any_noise += any(supported(rows, "integration separates datasets beyond noise"))
    return {"single": (single, reps), "any_h_eff": (any_heff, studies), "any_beyond_noise": (any_noise, studies)}


def trigger_rates(n: int) -> dict:
    """Null rates of claim 2: one-cell studies, and six-cell studies (the family)."""
    rng = np.random.default_rng(300 + n)
    reps = 1000
    claim = "volatility trigger precedes accuracy plateau"
    single = sum(supported(trigger_claims(*trigger_study(rng, n, 1)), claim)[0] for _ in range(reps))
    family = sum(any(supported(trigger_claims(*trigger_study(rng, n, 6)), claim)) for _ in range(reps))
    return {"single": (single, reps), "any": (family, reps)}


def state_rates(n: int) -> dict:
    """Null rates of claim 3 over six-cell studies: each cell's raw p < ALPHA, its verdict, and the family."""
    rng = np.random.default_rng(400 + n)
    reps, cells = 3000, 6
    rejected = verdicts = family = 0
    for _ in range(reps):
        rows = state_claims(state_study(rng, n, cells))
        rejected += sum(r["p_value"] is not None and r["p_value"] < ALPHA for r in rows)
        said = supported(rows, "state stable across seeds")
        verdicts += sum(said)
        family += any(said)
    return {"raw": (rejected, reps * cells), "single": (verdicts, reps * cells), "any": (family, reps)}


def within_limit(rates: dict) -> dict:
    """The rates of ``rates`` that exceed ALPHA plus three MC standard errors (empty: all within)."""
    return {k: f"{hits}/{reps}" for k, (hits, reps) in rates.items() if hits / reps > limit(reps)}


@pytest.mark.parametrize("n", SEEDS)
def test_integration_false_positive_and_family_wise_rate(n):
    """One test, and four (model) pairs per study: at most ALPHA of null studies say "supported" in either family."""
    assert within_limit(integration_rates(n)) == {}


@pytest.mark.parametrize("n", SEEDS)
def test_trigger_false_positive_and_family_wise_rate(n):
    assert within_limit(trigger_rates(n)) == {}


@pytest.mark.parametrize("n", SEEDS)
def test_state_false_positive_and_family_wise_rate(n):
    """Six cells whose seeds draw states at the study's frequencies: each cell's test, its verdict and the family."""
    assert within_limit(state_rates(n)) == {}


if __name__ == "__main__":  # python -m tests.test_calibration_claims: the measured rates
    for n in SEEDS:
        for name, rates in (("integration", integration_rates(n)), ("trigger", trigger_rates(n)),
                            ("state", state_rates(n))):
            print(f"n = {n:2d} {name:11s} " + ", ".join(f"{k} {h / r:.3f} ({h}/{r}, limit {limit(r):.3f})"
                                                         for k, (h, r) in rates.items()), flush=True)
