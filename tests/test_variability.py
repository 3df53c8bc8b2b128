"""Cross-seed statistics against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from dynstudy.analysis.stats.variability import cell_variability, seed_stats, state_agreement


def test_seed_stats_matches_t_interval():
    x = [0.61, 0.70, 0.66, 0.58, 0.73]
    s = seed_stats(x + [math.nan, None], domain=(0.0, 1.0))
    assert s["n"] == 5
    assert s["mean"] == pytest.approx(np.mean(x))
    assert s["std"] == pytest.approx(np.std(x, ddof=1))
    lo, hi = stats.t.interval(0.95, 4, loc=np.mean(x), scale=stats.sem(x))
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((lo, hi)) and s["ci_clipped"] is False
    assert s["cv"] == pytest.approx(np.std(x, ddof=1) / np.mean(x))
    # the t-interval is the only interval: no bootstrap of 3-10 values (it covers the mean 75-89% of the time)
    assert set(s) == {"n", "mean", "std", "cv", "ci_low", "ci_high", "ci_clipped"}
    two = seed_stats(x[:2])
    assert (two["ci_low"], two["ci_high"]) == pytest.approx(stats.t.interval(0.95, 1, loc=np.mean(x[:2]),
                                                                              scale=stats.sem(x[:2])))


def test_cv_only_for_metrics_that_cannot_change_sign():
    from dynstudy.analysis.stats.variability import METRIC_DOMAINS, SEED_METRICS

    assert set(METRIC_DOMAINS) == set(SEED_METRICS)  # every metric says where its values lie
    x = [0.2, 0.4, 0.3]
    assert seed_stats(x, domain=METRIC_DOMAINS["h_raw_mean"])["cv"] == pytest.approx(np.std(x, ddof=1) / 0.3)
    for domain in (None, (None, None), METRIC_DOMAINS["r_hz_mz"]):
        assert math.isnan(seed_stats(x, domain=domain)["cv"])
    rows = [{"model": "m", "dataset": "d", "optimizer": "o", "status": "finished", "r_hz_mz": v, "psi_std": v}
            for v in x]
    cv = {r["metric"]: r["cv"] for r in cell_variability(rows, metrics=("r_hz_mz", "psi_std"))}
    assert math.isnan(cv["r_hz_mz"]) and cv["psi_std"] == pytest.approx(np.std(x, ddof=1) / 0.3)


def test_seed_stats_degenerate():
    one = seed_stats([0.5])
    assert one["n"] == 1 and one["mean"] == 0.5 and math.isnan(one["std"]) and math.isnan(one["ci_low"])
    none = seed_stats([math.nan])
    assert none["n"] == 0 and math.isnan(none["mean"])


def test_state_agreement():
    assert state_agreement(["A", "B", "A", None]) == ("A", pytest.approx(2 / 3))
    state, share = state_agreement([None])
    assert state is None and math.isnan(share)


def test_cell_variability_counts_only_finished_runs():
    rows = [{"model": "m", "dataset": "d", "optimizer": "sgd", "status": "finished", "state": "Transitional",
             "h_eff_mean": v} for v in (0.8, 0.9)]
    rows.append({"model": "m", "dataset": "d", "optimizer": "sgd", "status": "diverged", "state": None,
                 "h_eff_mean": 0.0})
    out = cell_variability(rows, metrics=("h_eff_mean",))
    assert len(out) == 1
    assert out[0]["n_seeds"] == 2 and out[0]["mean"] == pytest.approx(0.85)
    assert out[0]["modal_state"] == "Transitional" and out[0]["state_agreement"] == 1.0


def test_modal_state_ties_follow_the_taxonomy_order_whatever_the_input_order():
    """Two seeds in each of two states: the state listed first in STATES wins, in any order and any process."""
    import itertools

    from dynstudy.analysis.kernels.dynamics import STATES
    from dynstudy.analysis.stats.claims import state_claims

    a, b = STATES[3], STATES[0]  # b comes first in the taxonomy's order
    for order in set(itertools.permutations([a, a, b, b])):
        assert state_agreement(list(order)) == (b, 0.5)
        rows = [{"model": "m", "dataset": "d", "optimizer": "o", "status": "finished", "state": s} for s in order]
        assert f"2/4 in {b}, 2/4 in {a} (tie);" in state_claims(rows)[0]["detail"]  # a tie, in that order
    assert state_agreement(["zeta", "alpha"]) == ("alpha", 0.5)  # labels outside the taxonomy: alphabetical


def test_modal_state_is_the_same_under_every_string_hash_seed():
    import subprocess
    import sys
    from pathlib import Path

    from dynstudy.analysis.kernels.dynamics import STATES

    code = ("from dynstudy.analysis.stats.claims import state_claims; from dynstudy.analysis.kernels.dynamics "
            "import STATES; "
            "rows = [{'model': 'm', 'dataset': 'd', 'optimizer': 'o', 'status': 'finished', 'state': s} "
            "for s in (STATES[4], STATES[2], STATES[4], STATES[2])]; print(state_claims(rows)[0]['detail'])")
    root = Path(__file__).resolve().parent.parent
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True,
                           env={"PYTHONHASHSEED": str(seed), "PATH": "/usr/bin:/bin"}).stdout for seed in range(6)}
    assert len(outs) == 1 and f"2/4 in {STATES[2]}, 2/4 in {STATES[4]} (tie)" in outs.pop()


def test_intervals_stay_in_the_metric_range_and_say_so():
    """Two seeds of an H_eff near 1: the t-interval would pass 1.0; it is cut there, and the cut is recorded."""
    two = seed_stats([0.95, 0.99], domain=(0.0, 1.0))
    assert two["ci_high"] == 1.0 and two["ci_low"] < 0.95 and two["ci_clipped"] is True
    inside = seed_stats([0.5, 0.52, 0.51], domain=(0.0, 1.0))
    assert 0.0 < inside["ci_low"] < inside["ci_high"] < 1.0 and inside["ci_clipped"] is False
    unbounded = seed_stats([0.95, 0.99])
    assert unbounded["ci_high"] > 1.0 and unbounded["ci_clipped"] is False
    rows = [{"model": "m", "dataset": "d", "optimizer": "o", "status": "finished", "h_eff_mean": v}
            for v in (0.95, 0.99)]
    (row,) = cell_variability(rows, metrics=("h_eff_mean",))
    assert row["ci_high"] == 1.0 and row["ci_clipped"] is True


def test_cell_rows_count_the_runs_beside_the_seeds_with_a_value():
    rows = [{"model": "m", "dataset": "d", "optimizer": "o", "status": "finished", "state": "x", "trigger_epoch": t}
            for t in (11, None)]
    (row,) = cell_variability(rows, metrics=("trigger_epoch",))
    assert (row["n_seeds"], row["n_runs"]) == (1, 2)
