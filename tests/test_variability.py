"""Cross-seed statistics against hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from analysis.variability import cell_variability, seed_stats, state_agreement


def test_seed_stats_matches_t_interval():
    x = [0.61, 0.70, 0.66, 0.58, 0.73]
    s = seed_stats(x + [math.nan, None])
    assert s["n"] == 5
    assert s["mean"] == pytest.approx(np.mean(x))
    assert s["std"] == pytest.approx(np.std(x, ddof=1))
    lo, hi = stats.t.interval(0.95, 4, loc=np.mean(x), scale=stats.sem(x))
    assert (s["ci_low"], s["ci_high"]) == pytest.approx((lo, hi))
    assert s["cv"] == pytest.approx(np.std(x, ddof=1) / np.mean(x))
    # the bootstrap interval of the mean lies within the data's range, around the mean, and is reproducible
    assert min(x) <= s["boot_low"] < s["mean"] < s["boot_high"] <= max(x)
    assert seed_stats(x)["boot_low"] == s["boot_low"]
    assert math.isnan(seed_stats(x[:2])["boot_low"])


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
    rows.append({"model": "m", "dataset": "d", "optimizer": "sgd", "status": "diverged", "state": None, "h_eff_mean": 0.0})
    out = cell_variability(rows, metrics=("h_eff_mean",))
    assert len(out) == 1
    assert out[0]["n_seeds"] == 2 and out[0]["mean"] == pytest.approx(0.85)
    assert out[0]["modal_state"] == "Transitional" and out[0]["state_agreement"] == 1.0
