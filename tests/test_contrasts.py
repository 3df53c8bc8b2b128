"""Signal against controls per cell: differences per seed, a bootstrap interval, and the verdict."""
from __future__ import annotations

import numpy as np
import pytest

from dynstudy.analysis.stats.contrasts import cell_contrasts, run_differences


def _rows(run_id, signal, noise, init, epochs=4):
    caps = [{"run_id": run_id, "kind": "init", "epoch": 0, "h_raw": init, "metastability": 0.1}]
    caps += [{"run_id": run_id, "kind": "epoch", "epoch": e, "h_raw": signal, "metastability": 0.1}
             for e in range(1, epochs + 1)]
    ctrls = [{"run_id": run_id, "kind": "epoch", "epoch": e, "control": "noise", "h_raw": noise, "metastability": 0.1}
             for e in range(1, epochs + 1)]
    ctrls.append({"run_id": run_id, "kind": "init", "epoch": 0, "control": "noise", "h_raw": 99.0, "metastability": 0})
    return caps, ctrls


def test_run_differences_use_end_of_epoch_values_and_capture_0_for_init():
    caps, ctrls = _rows("r", signal=0.7, noise=0.6, init=0.65)
    assert run_differences(caps, ctrls, "h_raw") == {"r": {"noise": pytest.approx(0.1), "init": pytest.approx(0.05)}}


def test_verdicts_beyond_within_untested():
    rng = np.random.default_rng(0)
    summaries, caps, ctrls = [], [], []
    cells = {"clear": (0.70, 0.60), "none": (0.60, 0.60), "few": (0.70, 0.60)}
    for dataset, (sig, noise) in cells.items():
        for seed in range(2 if dataset == "few" else 5):
            run_id = f"{dataset}{seed}"
            summaries.append({"run_id": run_id, "model": "m", "dataset": dataset, "optimizer": "o",
                              "status": "finished"})
            jitter = (-0.02, -0.01, 0.0, 0.01, 0.02)[seed]  # symmetric: "none" differs by 0 on average
            c, k = _rows(run_id, sig + jitter, noise, sig + jitter + 0.001 * rng.standard_normal())
            caps += c
            ctrls += k
    summaries.append({"run_id": "gap", "model": "m", "dataset": "clear", "optimizer": "o", "status": "finished",
                      "reason": "capture file(s) 2 missing"})  # kept out
    rows = {(r["dataset"], r["metric"], r["control"]): r for r in cell_contrasts(summaries, caps, ctrls)}
    clear = rows[("clear", "h_raw", "noise")]
    assert clear["verdict"] == "beyond" and clear["n_seeds"] == 5
    assert rows[("none", "h_raw", "noise")]["verdict"] == "within"
    assert rows[("few", "h_raw", "noise")]["verdict"] == "untested"
    assert rows[("clear", "metastability", "noise")]["verdict"] == "untested"  # identical values: no spread
    assert rows[("clear", "h_raw", "init")]["mean"] == pytest.approx(0.0, abs=0.02)
