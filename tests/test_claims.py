"""The paper's claims as tests over seeds: each test, its null, its minimum seeds, its family and its dropped runs."""
from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from dynstudy.analysis.stats.claim_tests import (
    g_interval,
    hedges_g,
    max_count_needs,
    max_count_p_min,
    max_count_sf,
    sign_flip,
    welch,
)
from dynstudy.analysis.stats.claims import (
    COLUMNS,
    adjust_families,
    integration_claims,
    patience_stop,
    plateau_epoch,
    state_claims,
    trigger_claims,
)
from dynstudy.analysis.stats.claims_temporal import temporal_claims
from dynstudy.analysis.stats.verdicts import SATURATED, UNTESTED, insufficient


def run(i, dataset, h_eff, h_raw=0.7, noise=0.6, state="Transitional", trigger=None, status="finished", model="m",
        reason=None):
    return {"run_id": f"r{model}{dataset}{i}", "model": model, "dataset": dataset, "optimizer": "sgd",
            "status": status, "h_eff_mean": h_eff, "h_raw_mean": h_raw, "noise_h_raw_mean": noise, "state": state,
            "trigger_epoch": trigger, "reason": reason}


def test_hedges_g_known_value():
    x, y = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]
    assert hedges_g(x, y) == pytest.approx(-3.0 * (1 - 3 / (4 * 6 - 9)))


def test_welch_matches_scipy_and_its_intervals_cover():
    rng = np.random.default_rng(1)
    x, y = rng.normal(1.0, 1.0, 6), rng.normal(0.0, 2.0, 4)
    r = welch(x, y)
    ref = stats.ttest_ind(x, y, equal_var=False)
    assert r["t"] == pytest.approx(ref.statistic) and r["p"] == pytest.approx(ref.pvalue)
    assert r["diff_low"] < r["diff"] < r["diff_high"] and r["g_low"] < r["g"] < r["g_high"]
    # the Welch interval excludes 0 exactly when p < 0.05
    assert (r["diff_low"] > 0 or r["diff_high"] < 0) == (r["p"] < 0.05)
    # the noncentral-t interval of g covers the true g about 95% of the time at n = 3 per group
    hits = 0
    for _ in range(400):
        a, b = rng.normal(1.0, 1.0, 3), rng.normal(0.0, 1.0, 3)
        lo, hi = g_interval(hedges_g(a, b), 3, 3)
        hits += lo <= 1.0 * (1 - 3 / (4 * 4 - 1)) <= hi or lo <= 1.0 <= hi
    assert hits / 400 > 0.9


def test_integration_separates_only_when_it_does():
    rng = np.random.default_rng(0)
    far = [run(i, d, h + 0.01 * rng.standard_normal(), h_raw=0.7 + 0.01 * rng.standard_normal())
           for d, h in (("c10", 0.85), ("c100", 0.10)) for i in range(5)]
    raw, beyond = integration_claims(far)
    assert set(raw) == set(COLUMNS)
    assert raw["verdict"] == "supported" and raw["p_value"] < 1e-6 and raw["effect_size"] > 10
    assert raw["ci_low"] < raw["effect_size"] < raw["ci_high"] and raw["diff_low"] < raw["mean_diff"] < raw["diff_high"]
    assert raw["mean_diff"] == pytest.approx(0.75, abs=0.02)
    assert raw["family"] == raw["claim"] and raw["n_tests"] == 1 and raw["p_adjusted"] == raw["p_value"]
    assert (raw["n"], raw["n_runs"], raw["n_dropped"], raw["dropped"]) == (10, 10, 0, None)
    # H_raw - noise is the same in both datasets: the separation is preprocessing, not training
    assert beyond["claim"].endswith("beyond noise") and beyond["verdict"] == "not supported"
    same = [run(i, d, 0.5 + 0.01 * rng.standard_normal()) for d in ("c10", "c100") for i in range(5)]
    assert integration_claims(same)[0]["verdict"] == "not supported"
    assert integration_claims(same)[1]["verdict"] == UNTESTED  # H_raw - noise identical in every run


def test_integration_needs_three_seeds_per_dataset_and_counts_what_it_dropped():
    lonely = [run(0, "c10", 0.8), run(0, "c100", 0.2)]
    assert integration_claims(lonely)[0]["verdict"] == insufficient(3)
    two = [run(i, d, h + 0.01 * i) for d, h in (("c10", 0.8), ("c100", 0.2)) for i in range(2)]
    row = integration_claims(two)[0]
    assert row["verdict"] == insufficient(3) and row["p_value"] is None and row["p_adjusted"] is None
    assert row["n_tests"] == 0  # not a test of its family
    three = two + [run(2, "c10", 0.83, status="diverged"), run(2, "c100", 0.21, reason="capture 4 missing"),
                   run(3, "c100", None)]
    row = integration_claims(three)[0]
    assert row["verdict"] == insufficient(3) and (row["n_runs"], row["n_dropped"]) == (7, 3)
    assert row["dropped"] == ("1 incomplete (capture 4 missing); 1 no value of h_eff_mean; "
                              "1 not finished (diverged)")
    diverged = [run(i, "c10", 0.8 + 0.01 * i) for i in range(5)] + [run(i, "c100", 0.1, status="diverged")
                                                                    for i in range(5)]
    row = integration_claims(diverged)[0]
    assert row["verdict"] == UNTESTED and row["dropped"] == "5 not finished (diverged)"


def test_a_saturated_h_eff_falls_back_to_h_raw():
    """H_raw 1.5-1.6: 5 sigma_H above H_opt, so H_eff ~ 1e-6; the H_eff test is not a measurement."""
    rng = np.random.default_rng(2)
    runs = [run(i, d, float(np.exp(-(h - 0.7) ** 2 / (2 * 0.15 ** 2))), h_raw=h)
            for d, c in (("c10", 1.5), ("c100", 1.6)) for i, h in enumerate(c + 0.01 * rng.standard_normal(4))]
    rows = integration_claims(runs, tests=(("integration separates datasets", "h_eff_mean"),))
    assert [r["claim"] for r in rows] == ["integration separates datasets", "integration separates datasets (on H_raw)"]
    heff, hraw = rows
    assert heff["verdict"] == SATURATED and heff["p_adjusted"] is None and "8/8 runs" in heff["detail"]
    assert hraw["verdict"] == "supported" and hraw["mean_diff"] == pytest.approx(-0.1, abs=0.02)
    # at each run's own H_opt (1.55) nothing is saturated: one row, on H_eff
    params = {r["run_id"]: {"h_opt": 1.55, "sigma_h": 0.15} for r in runs}
    rows = integration_claims(runs, tests=(("integration separates datasets", "h_eff_mean"),), params=params)
    assert [r["verdict"] for r in rows] in (["supported"], ["not supported"])


def test_plateau_and_patience():
    epochs = np.arange(1, 9)
    acc = np.array([0.5, 0.7, 0.8, 0.896, 0.9, 0.899, 0.88, 0.9])
    assert plateau_epoch(epochs, acc, points=0.5) == 4  # 0.896 >= 0.9 - 0.005
    loss = np.array([1.0, 0.8, 0.7, 0.71, 0.72, 0.73, 0.69, 0.75])
    assert patience_stop(epochs, loss, patience=3) == 6
    assert patience_stop(epochs, loss, patience=10) is None


def test_sign_flip_is_exact():
    leads = [3, -1, 2, 2, 5, -2]
    sums = [sum(s * abs(v) for s, v in zip(signs, leads)) for signs in itertools.product((-1, 1), repeat=6)]
    assert sign_flip(leads)["p"] == pytest.approx(np.mean(np.array(sums) >= sum(leads)))
    assert sign_flip([1] * 4)["p"] == 1 / 16 and sign_flip([1] * 5)["p"] == 1 / 32
    big = sign_flip(np.arange(1, 21))  # Monte Carlo above 16 values, seeded
    assert not big["exact"] and big["p"] == sign_flip(np.arange(1, 21))["p"] and big["p"] < 0.001


def test_trigger_claim_counts_lead_and_costs():
    epochs = np.arange(1, 11)
    acc = np.minimum(0.9, 0.5 + 0.05 * epochs)  # plateau at epoch 8
    loss = 1.0 / epochs
    runs = [run(i, "c10", 0.8, trigger=t) for i, t in enumerate([5, 6, 4, 6, 5])]
    curves = {r["run_id"]: (epochs, acc, loss) for r in runs}
    (row,) = trigger_claims(runs, curves)
    assert row["n"] == 5 and row["effect_size"] == pytest.approx(np.mean([3, 2, 4, 2, 3]))
    assert row["verdict"] == "supported" and row["p_value"] == 1 / 32 and "exact" in row["test"]
    assert row["ci_low"] < row["effect_size"] < row["ci_high"]
    assert "5/5 runs" in row["detail"] and "epochs saved" in row["detail"]
    (row,) = trigger_claims(runs[:4], curves)  # 4 leads: the smallest p is 1/16
    assert row["verdict"] == insufficient(5) and row["p_value"] is None
    late = [run(i, "c10", 0.8, trigger=10) for i in range(5)]
    (row,) = trigger_claims(late, {r["run_id"]: (epochs, acc, loss) for r in late})
    assert row["verdict"] == "not supported" and row["effect_size"] == -2
    never = [run(0, "c10", 0.8)]
    assert trigger_claims(never, {"rmc100": (epochs, acc, loss)})[0]["verdict"] == UNTESTED
    mixed = runs + [run(9, "c10", 0.8), run(8, "c10", 0.8, trigger=5, status="failed"), run(7, "c10", 0.8, trigger=5)]
    curves = {r["run_id"]: (epochs, acc, loss) for r in mixed if r["run_id"] != "rmc107"}
    (row,) = trigger_claims(mixed, curves)
    assert (row["n"], row["n_runs"], row["n_dropped"]) == (5, 8, 3)
    assert row["dropped"] == "1 no accuracy curve; 1 no trigger; 1 not finished (failed)"
    zeros = [run(i, "c10", 0.8, trigger=t) for i, t in enumerate([8, 8, 5, 6, 4, 6])]  # two leads of 0
    (row,) = trigger_claims(zeros, {r["run_id"]: (epochs, acc, loss) for r in zeros})
    assert row["verdict"] == insufficient(7) and "2 zero leads" in row["detail"]


def brute_max_count(pool: list[str], n: int, m: int) -> float:
    """P(largest count >= m) over every n-subset of the pool: the permutation null, enumerated."""
    hits = total = 0
    for idx in itertools.combinations(range(len(pool)), n):
        total += 1
        hits += max(Counter(pool[i] for i in idx).values()) >= m
    return hits / total


def test_max_count_null_is_the_permutation_distribution():
    pool = list("AAAAABBBCCD")
    counts = list(Counter(pool).values())
    for n in (2, 3, 4):
        for m in range(1, n + 1):
            assert max_count_sf(counts, n, m) == pytest.approx(brute_max_count(pool, n, m), abs=1e-12)
    assert max_count_p_min(counts, 3) == pytest.approx(brute_max_count(pool, 3, 3))
    # uniform over 5 states (4 runs each): two seeds agreeing is p 0.16, not the binomial's 0.04
    assert max_count_sf([4] * 5, 2, 2) == pytest.approx(3 / 19)
    assert max_count_needs([4] * 5, 0.05) == 3 and max_count_needs([20], 0.05) is None


def test_state_claim_against_the_study_s_own_states():
    states = ["Stable Convergent", "Transitional", "Partial Integration", "Rigidly Synchronised",
              "Metastable High-Integration"]
    others = [run(i, f"d{j}", 0.8, state=states[(i + j) % 5], model="o") for j in range(4) for i in range(5)]
    agree = [run(i, "c10", 0.8) for i in range(5)]
    mixed = [run(i, "c100", 0.8, state=s) for i, s in enumerate(["Transitional", "Partial Integration"] * 2)]
    rows = {(r["model"], r["dataset"]): r for r in state_claims(others + agree + mixed)}
    a, b = rows[("m", "c10")], rows[("m", "c100")]
    assert a["effect_size"] == 1 and a["statistic"] == 5 and a["verdict"] == "supported"
    pool = [r["state"] for r in others + agree + mixed]
    assert a["p_value"] == pytest.approx(max_count_sf(list(Counter(pool).values()), 5, 5))
    assert a["n_tests"] == 6 and a["p_adjusted"] <= 6 * a["p_value"]
    assert b["effect_size"] == 0.5 and b["verdict"] == "not supported"
    assert b["detail"].startswith("2/4 in Transitional, 2/4 in Partial Integration (tie)")
    # a study whose runs are mostly in one state: 5 seeds in it say little
    skewed = [run(i, "c10", 0.8) for i in range(5)] + [run(i, "c100", 0.8, state=s) for i, s in
                                                        enumerate(["Transitional"] * 3 + ["Partial Integration"] * 2)]
    rows = {r["dataset"]: r for r in state_claims(skewed)}
    assert rows["c10"]["verdict"] == insufficient(8) and rows["c10"]["p_adjusted"] is None
    one_state = [run(i, d, 0.8) for d in ("c10", "c100") for i in range(4)]
    assert {r["verdict"] for r in state_claims(one_state)} == {UNTESTED}


def test_holm_within_each_claim_across_cells():
    rows = [{"claim": "a", "p_value": 0.03, "verdict": "not supported"},
            {"claim": "a", "p_value": 0.04, "verdict": "not supported"},
            {"claim": "a", "p_value": None, "verdict": insufficient(3)},
            {"claim": "b", "p_value": 0.03, "verdict": "not supported"}]
    out = adjust_families(rows)
    assert [r["verdict"] for r in out] == ["not supported", "not supported", insufficient(3), "supported"]
    assert [r["p_adjusted"] for r in out] == pytest.approx([0.06, 0.06, None, 0.03])
    assert [r["n_tests"] for r in out] == [2, 2, 2, 1]
    assert adjust_families(out) == out


def test_temporal_claims_fall_back_to_h_raw_and_count_drops():
    rng = np.random.default_rng(4)
    runs = []
    for d, h in (("c10", 1.4), ("c100", 1.6)):
        for i in range(4):
            hr = h + 0.02 * rng.standard_normal()
            runs.append({**run(i, d, 0.8), "temporal_n_points": 200, "temporal_h_raw": hr,
                         "temporal_h_eff": math.exp(-(hr - 0.7) ** 2 / (2 * 0.15 ** 2)),
                         "temporal_state": "Transitional", "temporal_trigger_step": None})
    runs.append({**run(9, "c10", 0.8, status="diverged")})
    rows = {r["claim"]: r for r in temporal_claims(runs, {}, {})}
    assert rows["temporal: integration separates datasets"]["verdict"] == SATURATED
    fallback = rows["temporal: integration separates datasets (on H_raw)"]
    assert fallback["verdict"] == "supported" and fallback["dropped"] == "1 not finished (diverged)"
    trig = [r for r in temporal_claims(runs, {}, {}) if "trigger" in r["claim"]]
    assert all(r["verdict"] == UNTESTED for r in trig)
