"""The controls are nulls, and the order comparison is not: structureless features through the production path.

Features with no structure (i.i.d. Gaussian "activations": 4 stages x 64 stored channels, 32 used per stage, so
128 metric channels and room for the channel re-draws) with i.i.d. class labels go through
:func:`dynstudy.analysis.run.capture_family.capture_rows`, the per-capture code ``dynstudy analyze`` runs: the
same sort by label, class centring, smoothing, DFA and Kuramoto order as every capture, and the same noise,
order and channel-draw controls. A second independent structureless draw with the same labels, analysed as the
run's capture 0, stands for the untrained network (the init control).

At each of the paper's settings (probe size P, classes, smoothing window) the signal-minus-control difference
of H_raw and of metastability must have expectation 0 for noise, init and channel_draw: over seeded
replicates, |mean| < 4 Monte Carlo standard errors, with the SE small enough (:data:`MAX_SE`) that a bias
of 4 SE (0.01 H_raw, 0.004 M) would fail the test. Label order minus random order (the order comparison) is
not 0 on such features: class centring of label-sorted blocks makes the series anti-persistent at the block
length; its measured size is asserted (:data:`ORDER_H_RAW`, SPEC: -0.04 at P 2048 / 10 classes / window 5,
-0.29 at P 4096 / 100 classes / window 5).

``python -m tests.test_null_controls`` prints every measured difference with its SE (docs/metrics.md quotes it).
"""
from __future__ import annotations

import sys
from functools import lru_cache

import numpy as np
import pytest

from dynstudy.analysis.kernels.params import DEFAULTS
from dynstudy.analysis.run.capture_family import capture_rows
from dynstudy.analysis.run.capture_read import Capture

#: (probe size P, classes, smoothing window) of the paper's settings: ResNet-18 on CIFAR-10; the others on
#: CIFAR-100 and CIFAR-10, with window 5 or 15 (DenseNet and VGG).
SETTINGS = ((2048, 10, 5), (4096, 100, 5), (4096, 100, 15), (4096, 10, 15))
STAGES, STORED, USED = 4, 64, 32
#: Seeded replicates per setting (a P 2048 capture and its variants cost about half a P 4096 one).
REPLICATES = {2048: 32, 4096: 20}
#: Controls whose difference from the signal has expectation 0 on structureless features.
NULLS = ("noise", "init", "channel_draw")
METRICS = ("h_raw", "metastability")
#: The largest Monte Carlo SE of a null difference the test accepts: 4 SE stays below 0.01 H_raw, 0.004 M.
MAX_SE = {"h_raw": 0.0025, "metastability": 0.001}
#: Label order minus random order, H_raw, on structureless features at each setting (measured, not a null).
ORDER_H_RAW = {(2048, 10, 5): -0.044, (4096, 100, 5): -0.288, (4096, 100, 15): -0.311, (4096, 10, 15): -0.033}
ORDER_TOLERANCE = 0.01


def structureless_capture(rng, labels: np.ndarray, capture: int) -> Capture:
    """A capture of i.i.d. N(0, 1) pooled activations: ``STAGES`` x ``STORED`` channels in (stage, rank) order."""
    kind = "init" if capture == 0 else "epoch"
    stages = np.repeat(np.array([f"layer{i + 1}" for i in range(STAGES)]), STORED)
    ranks = np.tile(np.arange(STORED), STAGES)
    return Capture(capture, kind, capture, 0, rng.standard_normal((len(labels), STAGES * STORED)), labels, stages,
                   ranks)


@lru_cache(maxsize=None)
def differences(setting: tuple[int, int, int], replicates: int) -> dict:
    """(control, metric) -> signal minus control over ``replicates`` seeded structureless runs of ``setting``."""
    p, classes, window = setting
    # null_k 0: each replicate's labels give its captures a new shape, whose K-capture null (not what this tests)
    # would be simulated again for every replicate
    params = {**DEFAULTS.as_dict(), "smooth_window": window, "null_k": 0}
    out = {(c, m): [] for c in (*NULLS, "order") for m in METRICS}
    for r in range(replicates):
        rng = np.random.default_rng([p, classes, window, r])
        labels = rng.integers(0, classes, p)
        run_id = f"null-{p}-{classes}-{window}-{r}"
        init, _, _ = capture_rows(structureless_capture(rng, labels, 0), run_id, params, USED, {})
        signal, controls, _ = capture_rows(structureless_capture(rng, labels, 1), run_id, params, USED, {})
        against = {c["control"]: c for c in controls} | {"init": init}
        assert signal["n_valid"] == STAGES * USED and set(against) == {*NULLS, "order"}
        for (control, metric), diffs in out.items():
            diffs.append(signal[metric] - against[control][metric])
    return {key: np.array(v) for key, v in out.items()}


def mean_se(d: np.ndarray) -> tuple[float, float]:
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "P{}-{}cls-w{}".format(*s))
def test_noise_init_and_channel_draw_are_nulls(setting):
    d = differences(setting, REPLICATES[setting[0]])
    for control in NULLS:
        for metric in METRICS:
            mean, se = mean_se(d[(control, metric)])
            assert 0 < se < MAX_SE[metric], (control, metric, se)
            assert abs(mean) < 4 * se, f"{control} {metric}: signal - control = {mean:+.5f}, SE {se:.5f}"


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "P{}-{}cls-w{}".format(*s))
def test_the_order_comparison_is_not_a_null(setting):
    mean, se = mean_se(differences(setting, REPLICATES[setting[0]])[("order", "h_raw")])
    assert mean < -4 * se, (mean, se)
    assert mean == pytest.approx(ORDER_H_RAW[setting], abs=ORDER_TOLERANCE)


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else None
    print("P     classes window  control       H_raw: mean (SE)      metastability: mean (SE)   replicates")
    for s in SETTINGS:
        reps = n or REPLICATES[s[0]]
        d = differences(s, reps)
        for control in (*NULLS, "order"):
            cols = "  ".join("{:+.4f} ({:.4f})       ".format(*mean_se(d[(control, m)])) for m in METRICS)
            print(f"{s[0]:<5} {s[1]:<7} {s[2]:<6}  {control:<12}  {cols}   {reps}")
