"""Null calibration of the seed intervals and the contrast verdicts: simulated studies in which nothing is real.

Every simulated study goes through the functions the report uses (``cell_variability`` for the seed intervals,
``cell_contrasts`` for the verdicts), seeded, and each rate is compared with its nominal level plus three Monte
Carlo standard errors:

- every interval ``cell_variability`` reports covers the true mean of normal seed values at least 93% of the
  time at 3, 5 and 10 seeds (nominal 95%);
- one contrast alone says "beyond" for at most ALPHA + 3 MC SE of null cells at 3, 5 and 10 seeds, and it has
  the power :func:`detectable_effect` states (so a test that never rejects cannot pass);
- of null reports of 4 cells x 2 metrics x 3 tested controls (plus the order measurements), at most ALPHA + 3
  MC SE show any "beyond" after the Benjamini-Hochberg correction (under the global null the false-discovery
  rate it controls is the family-wise rate).

``python tests/test_calibration_contrasts.py`` prints the measured coverages (normal and lognormal seed values)
and false-positive rates with more repetitions: the numbers in docs/metrics.md.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from dynstudy.analysis.stats.contrasts import cell_contrasts, detectable_effect
from dynstudy.analysis.stats.variability import cell_variability
from dynstudy.analysis.stats.verdicts import ALPHA, BEYOND

SEED_COUNTS = (3, 5, 10)
#: Repetitions of each simulation in the fast suite.
COVERAGE_REPS, SINGLE_REPS, REPORT_REPS = 4000, 3000, 800
#: The smallest coverage a 95% interval may show on normal data.
MIN_COVERAGE = 0.93


def mc_bound(reps: int, level: float = ALPHA) -> float:
    """The nominal ``level`` plus three Monte Carlo standard errors of a rate measured over ``reps`` repetitions."""
    return level + 3 * math.sqrt(level * (1 - level) / reps)


def interval_coverage(draw, n: int, reps: int, true_mean: float, metric: str = "psi_std") -> dict[str, float]:
    """Share of ``reps`` simulated cells of ``n`` seeds whose interval covers ``true_mean``, per interval reported.

    ``draw(size)`` gives seed values; all cells go through one ``cell_variability`` call, one cell per
    repetition, on ``metric`` (its domain cuts the intervals). Every (``X_low``, ``X_high``) pair of columns
    the rows carry is an interval.
    """
    values = draw((reps, n))
    rows = [{"model": "m", "dataset": f"d{i:05d}", "optimizer": "o", "status": "finished", metric: float(v)}
            for i in range(reps) for v in values[i]]
    out = cell_variability(rows, metrics=(metric,))
    assert len(out) == reps and all(r["n_seeds"] == n for r in out)
    pairs = [k[:-4] for k in out[0] if k.endswith("_low") and f"{k[:-4]}_high" in out[0]]
    return {p: float(np.mean([r[f"{p}_low"] <= true_mean <= r[f"{p}_high"] for r in out])) for p in pairs}


def null_study(rng, n: int, cells: int = 1, controls=("noise",), metrics=("h_raw",), effect: float = 0.0):
    """(summaries, capture_rows, control_rows) of ``cells`` cells of ``n`` finished runs in which nothing is real.

    Each run's signal and each of its ``controls`` (``init``: capture 0) are independent draws of one normal
    distribution (sd 1), so signal - control has mean 0; ``effect`` adds that much to every signal.
    """
    summaries, caps, ctrls = [], [], []
    for c in range(cells):
        for s in range(n):
            rid = f"c{c}s{s}"
            summaries.append({"run_id": rid, "model": "m", "dataset": f"d{c}", "optimizer": "o", "status": "finished"})
            signal = {m: effect + rng.standard_normal() for m in metrics}
            caps.append({"run_id": rid, "kind": "epoch", "epoch": 1, **signal})
            if "init" in controls:
                caps.append({"run_id": rid, "kind": "init", "epoch": 0, **{m: rng.standard_normal() for m in metrics}})
            ctrls += [{"run_id": rid, "kind": "epoch", "epoch": 1, "control": k,
                       **{m: rng.standard_normal() for m in metrics}} for k in controls if k != "init"]
    return summaries, caps, ctrls


def single_beyond_rate(n: int, reps: int, seed: int, effect: float = 0.0) -> float:
    """Share of ``reps`` one-cell, one-control reports whose one contrast says "beyond"."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(reps):
        (row,) = cell_contrasts(*null_study(rng, n, effect=effect))
        hits += row["verdict"] == BEYOND
    return hits / reps


def report_any_beyond_rate(n: int, reps: int, seed: int) -> float:
    """Share of ``reps`` null reports (4 cells x 2 metrics x noise, init, channel re-draw, order) with any "beyond"."""
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(reps):
        rows = cell_contrasts(*null_study(rng, n, cells=4, controls=("noise", "order", "init", "channel_draw"),
                                          metrics=("h_raw", "metastability")))
        assert sum(r["p_value"] is not None for r in rows) == 24 and len(rows) == 32
        hits += any(r["verdict"] == BEYOND for r in rows)
    return hits / reps


@pytest.mark.parametrize("n", SEED_COUNTS)
def test_every_seed_interval_covers_the_mean_of_normal_data(n):
    rng = np.random.default_rng(n)
    cover = interval_coverage(lambda size: rng.normal(2.0, 0.5, size), n, COVERAGE_REPS, true_mean=2.0)
    assert cover and min(cover.values()) >= MIN_COVERAGE, cover


@pytest.mark.parametrize("n", SEED_COUNTS)
def test_one_contrast_on_a_null_says_beyond_at_most_alpha(n):
    rate = single_beyond_rate(n, SINGLE_REPS, seed=100 + n)
    assert rate <= mc_bound(SINGLE_REPS), rate


@pytest.mark.parametrize("n", (5, 10))
def test_one_contrast_has_the_power_it_states(n):
    """At the d_z detectable with 80% power (signal - control has sd sqrt(2) here), most cells say beyond."""
    reps = 400
    rate = single_beyond_rate(n, reps, seed=200 + n, effect=detectable_effect(n) * math.sqrt(2))
    assert rate >= 0.8 - 3 * math.sqrt(0.8 * 0.2 / reps), rate


@pytest.mark.parametrize("n", SEED_COUNTS)
def test_a_null_report_shows_any_beyond_at_most_alpha(n):
    rate = report_any_beyond_rate(n, REPORT_REPS, seed=300 + n)
    assert rate <= mc_bound(REPORT_REPS), rate


def null_geometry(rng, summaries: list[dict], stages: int = 2) -> list[dict]:
    """geometry_metrics rows of ``summaries``' runs in which nothing is real: every stage's effective rank and
    participation ratio, their noise controls and the init capture's are independent draws of one normal."""
    rows = []
    for s in summaries:
        for stage in range(stages):
            rows.append({"run_id": s["run_id"], "kind": "init", "epoch": 0, "stage": str(stage),
                         "effective_rank": rng.standard_normal(), "participation_ratio": rng.standard_normal()})
            rows.append({"run_id": s["run_id"], "kind": "epoch", "epoch": 1, "stage": str(stage),
                         **{k: rng.standard_normal() for k in ("effective_rank", "noise_effective_rank",
                                                               "participation_ratio", "noise_participation_ratio")}})
    return rows


@pytest.mark.parametrize("n", (3, 10))
def test_a_null_report_with_geometry_shows_any_beyond_at_most_alpha(n):
    """The geometry contrasts (2 metrics x noise and init per cell) join the family: still at most ALPHA."""
    rng = np.random.default_rng(400 + n)
    hits, reps = 0, REPORT_REPS // 2
    for _ in range(reps):
        summaries, caps, ctrls = null_study(rng, n, cells=4, controls=("noise", "init"))
        rows = cell_contrasts(summaries, caps, ctrls, null_geometry(rng, summaries))
        assert sum(r["p_value"] is not None for r in rows) == 4 * (2 + 4)
        hits += any(r["verdict"] == BEYOND for r in rows)
    assert hits / reps <= mc_bound(reps), hits / reps


def main(reps: int = 20000) -> None:
    """Print the coverages and false-positive rates with ``reps`` repetitions (docs/metrics.md's numbers)."""
    rng = np.random.default_rng(2024)
    draws = {"normal(0.7, 0.1)": (lambda size: rng.normal(0.7, 0.1, size), 0.7)}
    for sigma in (0.5, 1.0):
        mean = math.exp(sigma ** 2 / 2)
        draws[f"lognormal(0, {sigma:g})"] = (lambda size, s=sigma: rng.lognormal(0.0, s, size), mean)
    print(f"coverage of the 95% intervals of cell_variability ({reps} cells each)")
    for name, (draw, mean) in draws.items():
        for n in SEED_COUNTS:
            print(f"  {name:18s} n={n:2d}: {interval_coverage(draw, n, reps, mean)}")
    print(f"one contrast on a null, share 'beyond' ({reps // 4} cells each)")
    for n in SEED_COUNTS:
        print(f"  n={n:2d}: {single_beyond_rate(n, reps // 4, seed=n):.4f}")
    print(f"null reports of 24 tests with any 'beyond' after BH ({reps // 20} reports each)")
    for n in SEED_COUNTS:
        print(f"  n={n:2d}: {report_any_beyond_rate(n, reps // 20, seed=n):.4f}")
    print("d_z detected with 80% power, one test alone: "
          + ", ".join(f"n={n}: {detectable_effect(n):.2f}" for n in SEED_COUNTS))


if __name__ == "__main__":
    main()
