"""The paper's claims as tests over seeds."""
from __future__ import annotations

import numpy as np
import pytest

from dynstudy.analysis.stats.claims import (
    hedges_g,
    integration_claims,
    patience_stop,
    plateau_epoch,
    state_claims,
    trigger_claims,
)


def run(i, dataset, h_eff, h_raw=0.7, noise=0.6, state="Transitional", trigger=None, status="finished"):
    return {"run_id": f"r{dataset}{i}", "model": "m", "dataset": dataset, "optimizer": "sgd", "status": status,
            "h_eff_mean": h_eff, "h_raw_mean": h_raw, "noise_h_raw_mean": noise, "state": state,
            "trigger_epoch": trigger}


def test_hedges_g_known_value():
    x, y = [1.0, 2.0, 3.0], [4.0, 5.0, 6.0]
    assert hedges_g(x, y) == pytest.approx(-3.0 * (1 - 3 / (4 * 6 - 9)))


def test_integration_separates_only_when_it_does():
    rng = np.random.default_rng(0)
    far = [run(i, d, h + 0.01 * rng.standard_normal(), h_raw=0.7 + 0.01 * rng.standard_normal())
           for d, h in (("c10", 0.85), ("c100", 0.10)) for i in range(5)]
    raw, beyond = integration_claims(far)
    assert raw["verdict"] == "supported" and raw["p_value"] < 1e-6 and raw["effect_size"] > 10
    # H_raw - noise is the same in both datasets: the separation is preprocessing, not training
    assert beyond["claim"].endswith("beyond noise") and beyond["verdict"] == "not supported"
    same = [run(i, d, 0.5 + 0.01 * rng.standard_normal()) for d in ("c10", "c100") for i in range(5)]
    assert integration_claims(same)[0]["verdict"] == "not supported"
    assert integration_claims(same)[1]["verdict"] == "untested"  # H_raw - noise identical in every run
    lonely = [run(0, "c10", 0.8), run(0, "c100", 0.2)]
    assert integration_claims(lonely)[0]["verdict"] == "untested"
    diverged = far[:5] + [run(i, "c100", 0.1, status="diverged") for i in range(5)]
    assert integration_claims(diverged) == []  # only one dataset has finished runs


def test_plateau_and_patience():
    epochs = np.arange(1, 9)
    acc = np.array([0.5, 0.7, 0.8, 0.896, 0.9, 0.899, 0.88, 0.9])
    assert plateau_epoch(epochs, acc, points=0.5) == 4  # 0.896 >= 0.9 - 0.005
    loss = np.array([1.0, 0.8, 0.7, 0.71, 0.72, 0.73, 0.69, 0.75])
    assert patience_stop(epochs, loss, patience=3) == 6
    assert patience_stop(epochs, loss, patience=10) is None


def test_trigger_claim_counts_lead_and_costs():
    epochs = np.arange(1, 11)
    acc = np.minimum(0.9, 0.5 + 0.05 * epochs)  # plateau at epoch 8
    loss = 1.0 / epochs
    runs = [run(i, "c10", 0.8, trigger=t) for i, t in enumerate([5, 6, 4, 6, 5])]
    curves = {r["run_id"]: (epochs, acc, loss) for r in runs}
    (row,) = trigger_claims(runs, curves)
    assert row["n"] == 5 and row["effect_size"] == pytest.approx(np.mean([3, 2, 4, 2, 3]))
    assert row["verdict"] == "supported" and row["p_value"] < 0.05
    assert "5/5 runs" in row["detail"] and "epochs saved" in row["detail"]
    late = [run(i, "c10", 0.8, trigger=10) for i in range(5)]
    (row,) = trigger_claims(late, {r["run_id"]: (epochs, acc, loss) for r in late})
    assert row["verdict"] == "not supported" and row["effect_size"] == -2
    never = [run(0, "c10", 0.8)]
    assert trigger_claims(never, {"rc100": (epochs, acc, loss)})[0]["verdict"] == "untested"


def test_state_claim():
    agree = [run(i, "c10", 0.8) for i in range(5)]
    states = ["Transitional", "Partial Integration"] * 2 + ["Transitional"]
    mixed = [run(i, "c100", 0.8, state=s) for i, s in enumerate(states)]
    a, b = sorted(state_claims(agree + mixed), key=lambda r: r["dataset"])
    assert a["dataset"] == "c10" and a["effect_size"] == 1 and a["verdict"] == "supported" and a["p_value"] < 0.001
    assert b["effect_size"] == pytest.approx(0.6) and b["verdict"] == "not supported"
