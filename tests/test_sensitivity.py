"""Sensitivity: conclusions recomputed over the protocol's free parameters."""
from __future__ import annotations

import re

import numpy as np
import pyarrow as pa

from dynstudy.analysis.report.conclusions import sensitivity_section
from dynstudy.analysis.run.capture_plan import DEFAULT_PARAMS, channel_draws
from dynstudy.analysis.stats import sensitivity as sens
from dynstudy.analysis.stats.sensitivity import GRID, null_study, run_series, sensitivity, verdict_change
from dynstudy.store_contract.schemas import TABLES


def _table(windows: list[dict]) -> pa.Table:
    """``windows`` as window_sensitivity's columns (a row without a probe size has it null)."""
    schema = TABLES["window_sensitivity"]
    return pa.Table.from_pylist(windows, schema=pa.schema([schema.field(c) for c in sens.WINDOW_COLUMNS]))


def _straddling_runs(rng, settings):
    """Two datasets of 4 seeds whose H_raw straddle 0.7 (0.55 and 0.85), at each (window, probe size, shift).

    Returns (summaries, window rows, curves, params); a probe size of None leaves the column out.
    """
    epochs = np.arange(1, 9)
    summaries, windows, curves, params = [], [], {}, {}
    for dataset, centre in (("a", 0.55), ("b", 0.85)):
        for seed in range(4):
            run_id = f"{dataset}{seed}"
            summaries.append({"run_id": run_id, "model": "m", "dataset": dataset, "optimizer": "sgd", "seed": seed,
                              "status": "finished"})
            params[run_id] = dict(DEFAULT_PARAMS)
            curves[run_id] = (epochs, np.linspace(0.5, 0.9, 8), np.linspace(1, 0.2, 8))
            for window, probe, shift in settings:
                h = centre + shift + 0.01 * rng.standard_normal(8)
                for e, hr, m in zip(epochs, h, rng.uniform(0.01, 0.05, 8)):
                    row = {"run_id": run_id, "kind": "epoch", "epoch": int(e), "smooth_window": window,
                           "h_raw": hr, "metastability": m, "noise_h_raw": 0.6}
                    windows.append(row if probe is None else {**row, "probe_size": probe})
    return summaries, windows, curves, params


def test_a_conclusion_that_hinges_on_h_opt_flips():
    """Two datasets whose H_raw straddle 0.7 symmetrically have the same H_eff only when H_opt = 0.7."""
    summaries, windows, curves, params = _straddling_runs(np.random.default_rng(0),
                                                          [(w, None, 0.0) for w in GRID["smooth_window"]])
    rows = sensitivity(summaries, params, run_series(_table(windows)), curves)
    n_claims = len({(r["claim"], r["dataset"]) for r in rows})
    # no probe sizes stored: the probe_size settings have no runs and no rows
    assert len(rows) == sum(len(v) for k, v in GRID.items() if k != "probe_size") * n_claims
    integ = {r["value"]: r for r in rows
             if r["parameter"] == "h_opt" and r["claim"] == "integration separates datasets"}
    assert integ[0.7]["verdict"] == "not supported" and not integ[0.7]["flipped"]
    assert integ[0.5]["verdict"] == "supported" and integ[0.5]["flipped"]
    assert all(not r["flipped"] for r in rows if (r["parameter"], r["value"]) in
               {("h_opt", 0.7), ("sigma_h", 0.15), ("smooth_window", 5), ("w_h", 0.5), ("vol_threshold", 0.35)})
    assert {r["value"] for r in rows if r["parameter"] == "vol_threshold"} == {0.20, 0.35, 0.40}
    # the null study (dataset labels permuted) runs through the same grid: one count of real flips per setting
    nulls = {(r["parameter"], r["value"]): r["null_flips"] for r in rows}
    assert all(isinstance(v, int) and v >= 0 for v in nulls.values())
    assert len({(r["parameter"], r["value"], r["null_flips"]) for r in rows}) == len(nulls)


def test_vol_threshold_is_recomputed_from_the_stored_series():
    """Six seeds whose Psi settles to a volatility of 0.27 at epoch 8: the trigger fires (epoch 10, before the
    accuracy plateau at 14) at thresholds 0.35 and 0.40, never at 0.20, where the trigger claim becomes untested
    (a change, not a real flip)."""
    epochs = np.arange(1, 17)
    swing = np.r_[np.tile([0.3, 0.7], 3)[:5], 0.5 + 0.02 * np.tile([1, -1], 6)[:11]]  # H_raw
    summaries, windows, curves, params = [], [], {}, {}
    for seed in range(6):
        run_id = f"r{seed}"
        summaries.append({"run_id": run_id, "model": "m", "dataset": "a", "optimizer": "sgd", "seed": seed,
                          "status": "finished"})
        params[run_id] = dict(DEFAULT_PARAMS)
        curves[run_id] = (epochs, np.r_[np.linspace(0.3, 0.9, 14), 0.9, 0.9], np.linspace(1, 0.2, 16))
        rng = np.random.default_rng(seed)
        h = swing + 1e-4 * rng.standard_normal(16)
        m = np.r_[np.tile([0.01, 0.09], 3)[:5], 0.05 + 0.005 * np.tile([1, -1], 6)[:11]]
        for window in GRID["smooth_window"]:
            for e, hr, mm in zip(epochs, h, m):
                windows.append({"run_id": run_id, "kind": "epoch", "epoch": int(e), "smooth_window": window,
                                "h_raw": hr, "metastability": mm, "noise_h_raw": 0.6})
    rows = sensitivity(summaries, params, run_series(_table(windows)), curves)
    vol = [r for r in rows if r["parameter"] == "vol_threshold"]
    assert len(vol) == 3 * len({(r["claim"], r["dataset"], r["model"]) for r in rows})
    assert all(r["states_changed"] == 0 for r in vol)  # the state does not depend on the trigger
    trig = {r["value"]: r for r in vol if r["claim"] == "volatility trigger precedes accuracy plateau"}
    assert trig[0.35]["verdict"] == trig[0.40]["verdict"] == "supported"
    assert not trig[0.35]["flipped"] and not trig[0.40]["flipped"]
    # no trigger at 0.20: the test cannot be made, a change apart from a real flip
    assert trig[0.20]["verdict"] == "untested" and not trig[0.20]["flipped"] and trig[0.20]["changed"]
    assert trig[0.35]["p_adjusted"] == trig[0.35]["default_p_adjusted"] < 0.05
    assert not any(r["flipped"] for r in vol if r["claim"] != "volatility trigger precedes accuracy plateau")


def test_channel_draws_pick_k_per_stage_from_what_is_stored():
    stages = np.array(["s1"] * 32 + ["s2"] * 48)
    draws = channel_draws(stages, 8, 5, [1, 2])
    assert len(draws) == 5
    for cols in draws:
        assert (stages[cols] == "s1").sum() == 8 and (stages[cols] == "s2").sum() == 8 and len(set(cols)) == 16
    assert any(not np.array_equal(draws[0], d) for d in draws[1:])
    assert all(np.array_equal(a, b) for a, b in zip(draws, channel_draws(stages, 8, 5, [1, 2])))


def test_probe_size_uses_the_first_p_samples_where_the_probe_has_them():
    """Runs with a 512-sample probe: rows at P = 256 and 512 (the runs' own), none at 1024 and above."""
    # at 256 samples both datasets sit far above 0.7
    settings = [(5, 512, 0.0), (1, 512, 0.0), (15, 512, 0.0), (5, 256, 0.3)]
    summaries, windows, curves, params = _straddling_runs(np.random.default_rng(1), settings)
    rows = [r for r in sensitivity(summaries, params, run_series(_table(windows)), curves)
            if r["parameter"] == "probe_size"]
    assert {r["value"] for r in rows} == {256.0, 512.0}
    assert all(r["n_runs"] == 8 for r in rows)
    assert not any(r["flipped"] for r in rows if r["value"] == 512.0)  # the runs' own probe
    integ = {r["value"]: r["verdict"] for r in rows if r["claim"] == "integration separates datasets"}
    assert integ == {512.0: "not supported", 256.0: "supported"}
    html = sensitivity_section(rows)  # the report's "what flips" names the probe size and what flipped at it
    assert "the probe size (the first P samples" in html
    assert re.search(r"<tr><td>probe_size</td><td>256</td><td>\d / 6</td><td>\d+</td><td>\d+</td><td>\d / 8</td>"
                     r"<td>integration separates datasets \(m, a vs b\): not supported \(p adj [0-9.]+\) → supported "
                     r"\(p adj [0-9.e-]+\)(<br>|</td>)", html)
    assert "<tr><td>probe_size</td><td>512</td><td>0 / " in html
    assert re.search(r"a null study of this shape shows \d+ flips", html)


def test_the_report_says_what_flips_with_the_volatility_threshold():
    rows = [{"parameter": "vol_threshold", "value": v, "claim": "volatility trigger precedes accuracy plateau",
             "model": "m", "optimizer": "sgd", "dataset": "a", "verdict": verdict, "p_adjusted": p,
             "default_verdict": "supported", "default_p_adjusted": 0.01, "flipped": verdict == "not supported",
             "changed": verdict == "untested", "null_flips": nulls, "states_changed": 0, "n_runs": 6}
            for v, verdict, p, nulls in ((0.20, "untested", None, 0), (0.35, "supported", 0.01, 0),
                                         (0.40, "not supported", 0.2, 1))]
    html = sensitivity_section(rows)
    # a test that cannot be made is a change apart from a real flip, and names no flip
    assert "<tr><td>vol_threshold</td><td>0.2</td><td>0 / 1</td><td>1</td><td>0</td><td>0 / 6</td><td>none</td>" \
           "</tr>" in html
    assert "<tr><td>vol_threshold</td><td>0.4</td><td>1 / 1</td><td>0</td><td>1</td><td>0 / 6</td><td>volatility " \
           "trigger precedes accuracy plateau (m, a): supported (p adj 0.01) → not supported (p adj 0.2)</td></tr>" \
           in html
    assert html.count("<tr><td>vol_threshold</td>") == 3 and "0.40 and 0.20 are the thresholds" in html
    assert "This study shows 1 real flips over the grid; a null study of this shape shows 1 flips." in html


def test_verdict_changes_and_the_null_study():
    assert verdict_change("supported", "not supported") == verdict_change("not supported", "supported") == "flip"
    assert verdict_change("supported", "insufficient seeds (needs 3)") == "other"
    assert verdict_change("H_eff saturated", "not supported") == "other"
    rows = [{"run_id": f"r{i}", "model": "m", "optimizer": "o", "dataset": "ab"[i % 2], "status": "finished"}
            for i in range(10)] + [{"run_id": "x", "model": "m", "optimizer": "o", "dataset": "a",
                                    "status": "diverged"}]
    null = null_study(rows, seed=3)
    assert null == null_study(rows, seed=3)  # seeded
    assert sorted(r["dataset"] for r in null[:10]) == sorted(r["dataset"] for r in rows[:10])
    assert [r["dataset"] for r in null[:10]] != [r["dataset"] for r in rows[:10]]
    assert null[10]["dataset"] == "a"  # a run the claims do not use keeps its label
