"""Seed agreement statistics: the seed-level interval of a mean over seed pairs covers the truth as often as it
says, and the agreement test against the shuffled-probe control says "beyond" on nulls at most ALPHA (simulation)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from dynstudy.analysis.stats.agreement import agreement_test, agreement_verdicts, pair_mean_interval
from dynstudy.analysis.stats.verdicts import ALPHA, BEYOND


def coverage(m: int, seed_sd: float, pair_sd: float, sims: int = 1000, truth: float = 0.7) -> float:
    """How often the 95% interval holds ``truth`` when pair (a, b) is truth + u_a + u_b + e_ab."""
    rng = np.random.default_rng([m, int(1000 * seed_sd), int(1000 * pair_sd)])
    hits = 0
    for _ in range(sims):
        u = rng.normal(0, seed_sd, m)
        pairs = {(a, b): truth + u[a] + u[b] + rng.normal(0, pair_sd) for a, b in itertools.combinations(range(m), 2)}
        r = pair_mean_interval(pairs)
        hits += r["ci_low"] <= truth <= r["ci_high"]
    return hits / sims


@pytest.mark.parametrize("m", [3, 5, 10])
def test_coverage_is_nominal_when_seeds_differ(m):
    assert 0.93 <= coverage(m, 0.05, 0.03) <= 0.975


def test_coverage_is_at_least_nominal_without_seed_effects():
    assert coverage(5, 0.0, 0.05) >= 0.93  # the jackknife is conservative here, never too narrow


def test_a_t_interval_over_pairs_would_be_too_narrow():
    """Why the jackknife: pairs share seeds, so treating the 45 pairs of 10 seeds as independent undercovers."""
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(500):
        u = rng.normal(0, 0.05, 10)
        v = np.array([0.7 + u[a] + u[b] + rng.normal(0, 0.03) for a, b in itertools.combinations(range(10), 2)])
        half = 2.015 * v.std(ddof=1) / np.sqrt(len(v))
        hits += abs(v.mean() - 0.7) <= half
    assert hits / 500 < 0.8


def test_two_seeds_have_a_mean_and_no_interval_and_gaps_are_left_out():
    r = pair_mean_interval({(0, 1): 0.5, (0, 2): None, (1, 2): float("nan")})
    assert r == {"mean": 0.5, "ci_low": None, "ci_high": None, "n_seeds": 2, "n_pairs": 1}
    assert pair_mean_interval({})["mean"] is None


def null_agreement(rng, m: int, effect: float = 0.0) -> tuple[dict, dict]:
    """CKA and shuffled-probe values of the pairs of ``m`` seeds that agree no more than the control (plus
    ``effect``): both are 0.3 + u_a + u_b + e_ab, the control with its own pair noise."""
    u = rng.normal(0, 0.05, m)
    pairs = list(itertools.combinations(range(m), 2))
    cka = {(a, b): 0.3 + effect + u[a] + u[b] + rng.normal(0, 0.03) for a, b in pairs}
    control = {(a, b): 0.3 + u[a] + u[b] + rng.normal(0, 0.03) for a, b in pairs}
    return cka, control


@pytest.mark.parametrize("m", [3, 5, 10])
def test_agreement_beyond_its_control_on_a_null_at_most_alpha(m):
    rng = np.random.default_rng(50 + m)
    reps = 1500
    hits = sum(agreement_verdicts([agreement_test(*null_agreement(rng, m))])[0]["verdict"] == BEYOND
               for _ in range(reps))
    assert hits / reps <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / reps), hits / reps


def test_agreement_test_has_power_and_a_report_of_many_stays_calibrated():
    rng = np.random.default_rng(7)
    assert np.mean([agreement_test(*null_agreement(rng, 5, effect=0.1))["p_value"] < ALPHA
                    for _ in range(200)]) > 0.9
    reps, hits = 400, 0
    for _ in range(reps):  # a report of 4 cells x 4 stages, nothing real: any "beyond" after BH
        rows = agreement_verdicts([agreement_test(*null_agreement(rng, 5)) for _ in range(16)])
        hits += any(r["verdict"] == BEYOND for r in rows)
    assert hits / reps <= ALPHA + 3 * np.sqrt(ALPHA * (1 - ALPHA) / reps), hits / reps


def test_two_seeds_are_insufficient_for_the_agreement_test():
    r = agreement_test({(0, 1): 0.9}, {(0, 1): 0.1})
    assert r["verdict"] == "insufficient seeds (needs 3)" and r["p_value"] is None
