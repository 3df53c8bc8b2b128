"""Signal against controls per cell: differences per seed, a one-sample t-test, one BH family, measurements."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from dynstudy.analysis.stats.contrasts import (
    MIN_SEEDS,
    cell_contrasts,
    detectable_effect,
    one_sample_t,
    run_differences,
)
from dynstudy.analysis.stats.verdicts import (
    ALPHA,
    BEYOND,
    MEASUREMENT,
    UNTESTED,
    WITHIN,
    benjamini_hochberg,
    insufficient,
)


def _rows(run_id, signal, noise, init, epochs=4, order=None):
    caps = [{"run_id": run_id, "kind": "init", "epoch": 0, "h_raw": init, "metastability": 0.1}]
    caps += [{"run_id": run_id, "kind": "epoch", "epoch": e, "h_raw": signal, "metastability": 0.1}
             for e in range(1, epochs + 1)]
    ctrls = [{"run_id": run_id, "kind": "epoch", "epoch": e, "control": "noise", "h_raw": noise, "metastability": 0.1}
             for e in range(1, epochs + 1) if noise is not None]
    ctrls += [{"run_id": run_id, "kind": "epoch", "epoch": e, "control": "order", "h_raw": order,
               "metastability": 0.1} for e in range(1, epochs + 1) if order is not None]
    ctrls.append({"run_id": run_id, "kind": "init", "epoch": 0, "control": "noise", "h_raw": 99.0, "metastability": 0})
    return caps, ctrls


def _summary(run_id, dataset, status="finished", **extra):
    return {"run_id": run_id, "model": "m", "dataset": dataset, "optimizer": "o", "status": status, **extra}


def test_run_differences_use_end_of_epoch_values_and_capture_0_for_init():
    caps, ctrls = _rows("r", signal=0.7, noise=0.6, init=0.65)
    assert run_differences(caps, ctrls, "h_raw") == {"r": {"noise": pytest.approx(0.1), "init": pytest.approx(0.05)}}


@pytest.fixture(scope="module")
def study():
    rng = np.random.default_rng(0)
    summaries, caps, ctrls, diffs = [], [], [], {}
    cells = {"clear": (0.70, 0.60), "none": (0.60, 0.60), "few": (0.70, 0.60)}
    for dataset, (sig, noise) in cells.items():
        for seed in range(2 if dataset == "few" else 5):
            run_id = f"{dataset}{seed}"
            summaries.append(_summary(run_id, dataset))
            jitter = (-0.02, -0.01, 0.0, 0.01, 0.02)[seed] + 0.001 * rng.standard_normal()
            c, k = _rows(run_id, sig + jitter, noise, sig + jitter + 0.001 * rng.standard_normal(),
                         order=sig + 0.05 + 0.01 * seed)
            caps += c
            ctrls += k
            diffs.setdefault(dataset, []).append(sig + jitter - noise)
    summaries.append(_summary("gap", "clear", reason="capture file(s) 2 missing"))  # a gap: dropped
    summaries.append(_summary("div", "clear", status="diverged"))
    c, k = _rows("gap", 5.0, 0.0, 0.0)
    caps += c
    ctrls += k
    c, _ = _rows("nonoise", 0.7, None, 0.7)  # finished and whole, but without a noise control
    summaries.append(_summary("nonoise", "clear"))
    caps += c
    rows = {(r["dataset"], r["metric"], r["control"]): r for r in cell_contrasts(summaries, caps, ctrls)}
    return rows, diffs


def test_verdicts_from_a_one_sample_t_test_adjusted_as_one_family(study):
    rows, diffs = study
    clear = rows[("clear", "h_raw", "noise")]
    assert clear["verdict"] == BEYOND and clear["n_seeds"] == 5 and clear["kind"] == "test"
    want = stats.ttest_1samp(diffs["clear"], 0.0)
    assert clear["p_value"] == pytest.approx(want.pvalue)
    ci = want.confidence_interval(0.95)
    assert (clear["ci_low"], clear["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert clear["mean_diff"] == pytest.approx(np.mean(diffs["clear"]))
    assert clear["d_z"] == pytest.approx(np.mean(diffs["clear"]) / np.std(diffs["clear"], ddof=1))
    assert rows[("none", "h_raw", "noise")]["verdict"] == WITHIN
    assert rows[("few", "h_raw", "noise")]["verdict"] == insufficient(MIN_SEEDS)
    assert rows[("few", "h_raw", "noise")]["p_value"] is None
    still = rows[("clear", "metastability", "noise")]  # identical values: no spread, nothing to test
    assert still["verdict"] == UNTESTED and still["detail"] == "no spread across seeds"
    # one family: every row with a p-value, all metrics and cells, adjusted together by Benjamini-Hochberg
    family = [r for r in rows.values() if r["p_value"] is not None]
    assert {r["n_tests"] for r in family} == {len(family)} and len(family) == 4  # noise and init, clear and none
    adjusted = benjamini_hochberg([r["p_value"] for r in family])
    assert [r["p_adjusted"] for r in family] == pytest.approx(adjusted)
    assert all(r["verdict"] == (BEYOND if r["p_adjusted"] < ALPHA else WITHIN) for r in family)
    assert all(r["n_tests"] is None and r["p_adjusted"] is None for r in rows.values() if r["p_value"] is None)


def test_the_order_comparison_is_a_measurement_not_a_test(study):
    rows, _ = study
    order = rows[("clear", "h_raw", "order")]
    assert order["kind"] == "measurement" and order["verdict"] == MEASUREMENT
    assert order["p_value"] is None and order["p_adjusted"] is None and order["n_tests"] is None
    assert order["mean_diff"] == pytest.approx(-0.07, abs=0.002)  # signal minus order: -0.05 - 0.01 * seed
    assert order["share"] == pytest.approx(order["mean_diff"] / order["signal_mean"])
    assert order["ci_low"] < order["mean_diff"] < order["ci_high"]


def test_rows_say_which_runs_they_dropped_and_why(study):
    rows, _ = study
    clear = rows[("clear", "h_raw", "noise")]
    assert (clear["n_runs"], clear["n_seeds"], clear["n_dropped"]) == (8, 5, 3)
    assert set(clear["dropped"].split("; ")) == {"1 incomplete (a gap)", "1 diverged", "1 no noise value"}
    init = rows[("clear", "h_raw", "init")]  # the run without a noise control has an init value
    assert (init["n_seeds"], init["n_dropped"]) == (6, 2)
    none = rows[("none", "h_raw", "noise")]
    assert none["n_dropped"] == 0 and none["dropped"] == ""


def test_no_finished_run_is_untested_not_within():
    summaries = [_summary(f"r{i}", "d", status="diverged") for i in range(3)] + [_summary("ok", "e")]
    caps, ctrls = [], []
    for rid in ("r0", "ok"):
        c, k = _rows(rid, 0.7, 0.6, 0.5)
        caps += c
        ctrls += k
    rows = {(r["dataset"], r["control"]): r for r in cell_contrasts(summaries, caps, ctrls) if r["metric"] == "h_raw"}
    assert rows[("d", "noise")]["verdict"] == UNTESTED and rows[("d", "noise")]["dropped"] == "3 diverged"
    assert rows[("e", "noise")]["verdict"] == insufficient(MIN_SEEDS)


def test_detectable_effect_has_the_power_it_claims():
    """At the d_z detectable_effect gives for 5 and 10 seeds, simulated tests reject 80% of the time."""
    rng = np.random.default_rng(1)
    for n in (5, 10):
        d = detectable_effect(n)
        x = rng.standard_normal((20000, n)) + d
        _, p = one_sample_t(x.mean(axis=1), x.std(axis=1, ddof=1), n)
        assert np.mean(p < ALPHA) == pytest.approx(0.8, abs=0.01)
    assert detectable_effect(5) == pytest.approx(1.68, abs=0.01)
    assert detectable_effect(10) == pytest.approx(1.0, abs=0.01)
