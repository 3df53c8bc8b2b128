"""Metric kernels against ground truth and against a literal loop implementation."""
from __future__ import annotations

import math

import numpy as np
import pytest

from analysis import dynamics as dyn
from tests import literal_dynamics as lit


def fgn(hurst: float, n: int, channels: int, rng) -> np.ndarray:
    """Exact fractional Gaussian noise (Davies-Harte circulant embedding), [channels, n]."""
    k = np.arange(n + 1)
    gamma = 0.5 * (np.abs(k + 1) ** (2 * hurst) - 2 * k ** (2.0 * hurst) + np.abs(k - 1) ** (2 * hurst))
    circ = np.concatenate([gamma, gamma[-2:0:-1]])  # length 2n
    lam = np.fft.fft(circ).real
    assert lam.min() > -1e-9, "circulant embedding not non-negative definite"
    m = len(circ)
    w = rng.standard_normal((channels, m)) + 1j * rng.standard_normal((channels, m))
    return np.fft.fft(np.sqrt(np.clip(lam, 0, None) / m) * w, axis=1).real[:, :n]


@pytest.mark.parametrize("n_samples, n_classes, window", [(64, 3, 5), (257, 10, 5), (1000, 7, 15), (2048, 10, 1)])
def test_agrees_with_literal_implementation(n_samples, n_classes, window):
    rng = np.random.default_rng(n_samples)
    acts = rng.standard_normal((n_samples, 6)) * rng.uniform(0.1, 10, 6) + rng.standard_normal(6)
    labels = rng.integers(0, n_classes, n_samples)
    X = dyn.pseudo_time(acts, labels, smooth_window=window)
    np.testing.assert_allclose(X, lit.pseudo_time(acts, labels, window), rtol=0, atol=1e-12)
    alpha = dyn.dfa_exponents(X)
    for a, row in zip(alpha, X):
        assert abs(a - lit.dfa(row)) < 1e-9
    got = dyn.capture_metrics(acts, labels, smooth_window=window)
    want = lit.capture_metrics(acts, labels, smooth_window=window)
    for key in want:
        assert abs(got[key] - want[key]) < 1e-9, key


@pytest.mark.parametrize("n", [33, 63, 64, 100, 257, 1000, 4097])
def test_scales_follow_the_rule(n):
    assert list(dyn.dfa_scales(n)) == lit.scales(n)


@pytest.mark.parametrize("hurst", [0.3, 0.5, 0.7, 0.9])
def test_dfa_recovers_fgn_hurst(hurst):
    x = fgn(hurst, 4096, 128, np.random.default_rng(int(hurst * 10)))
    assert abs(np.nanmean(dyn.dfa_exponents(x)) - hurst) < 0.05


def test_white_noise_and_random_walk():
    rng = np.random.default_rng(1)
    noise = rng.standard_normal((128, 4096))
    assert abs(dyn.dfa_exponents(noise).mean() - 0.5) < 0.03
    assert abs(dyn.dfa_exponents(np.cumsum(noise, axis=1)).mean() - 1.5) < 0.05


def test_dfa_options():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 1024))
    dfa2 = dyn.dfa_exponents(x, order=2)
    over = dyn.dfa_exponents(x, overlap=True)
    assert abs(dfa2.mean() - 0.5) < 0.08 and abs(over.mean() - 0.5) < 0.08
    assert not np.allclose(dfa2, dyn.dfa_exponents(x))
    # overlapping windows of one series equal a literal loop over every window
    y = np.cumsum(x[0] - x[0].mean())
    s = 16
    rms = [np.sqrt(np.mean((y[i:i + s] - np.polyval(np.polyfit(np.arange(s), y[i:i + s], 1), np.arange(s))) ** 2))
           for i in range(len(y) - s + 1)]
    assert dyn._fluctuation(y[None], s, 1, True)[0] == pytest.approx(np.mean(rms), rel=1e-10)


def test_kuramoto_ground_truth():
    t = np.linspace(0, 40 * np.pi, 4000)
    same = np.tile(np.sin(t), (16, 1)) * np.arange(1, 17)[:, None]  # one phase, different amplitudes
    m, s = dyn.kuramoto(same)
    assert s == pytest.approx(1.0, abs=1e-6) and m == pytest.approx(0.0, abs=1e-6)
    rng = np.random.default_rng(3)
    C = 64
    m, s = dyn.kuramoto(rng.standard_normal((C, 4000)))
    assert abs(s - 1 / np.sqrt(C)) < 0.25 / np.sqrt(C)  # E[R] = sqrt(pi / 4C) ~ 0.89 / sqrt(C)
    X = np.tile(np.sin(t), (8, 1))
    X[0, 5] = np.nan
    assert all(math.isnan(v) for v in dyn.kuramoto(X))


PUBLISHED = [  # model, data, mean H_eff, r(Hz, Mz), state (Tien et al., table)
    ("ResNet-18", "C10", .830, .777, "Transitional"),
    ("ResNet-34", "C10", .852, .514, "Transitional"),
    ("ResNet-152", "C10", .931, .600, "Metastable High-Integration"),
    ("DenseNet-121", "C10", .880, -.371, "Stable Convergent"),
    ("MobileNetV2", "C10", .951, .095, "Metastable High-Integration"),
    ("ViT", "C10", .980, .036, "Metastable High-Integration"),
    ("ResNet-50", "C100", .057, .864, "Rigidly Synchronised"),
    ("ResNet-101", "C100", .070, .885, "Rigidly Synchronised"),
    ("VGG-16", "C100", .303, .274, "Partial Integration"),
]


@pytest.mark.parametrize("model, data, h, r, state", PUBLISHED)
def test_taxonomy_reproduces_published_rows(model, data, h, r, state):
    assert dyn.taxonomy_state(h, r) == state


def test_taxonomy_thresholds_are_configurable():
    strict = dyn.TaxonomyThresholds(h_metastable=0.99)
    assert dyn.taxonomy_state(0.951, 0.095, strict) == "Partial Integration"
    with pytest.raises(ValueError, match="finite"):
        dyn.taxonomy_state(float("nan"), 0.5)


def test_psi_std_identity():
    rng = np.random.default_rng(4)
    h, m = rng.uniform(0, 1, 40), rng.uniform(0, 0.1, 40)
    out = dyn.run_metrics(h, m)
    assert out["psi_std"] == pytest.approx(math.sqrt(0.5 * (1 + out["r_hz_mz"])), rel=1e-12)
    assert out["psi_mean"] == pytest.approx(0.0, abs=1e-12)


def test_missing_values_stay_missing():
    h = np.array([0.5, np.nan, 0.7, 0.9, 0.6, np.nan, 0.8])
    m = np.array([0.02, 0.03, 0.05, 0.04, 0.01, 0.02, 0.03])
    out = dyn.run_metrics(h, m, val_acc=np.linspace(0.1, 0.7, 7))
    ok = np.isfinite(h)
    np.testing.assert_allclose(out["hz"][ok], (h[ok] - h[ok].mean()) / h[ok].std(ddof=1))
    np.testing.assert_allclose(out["mz"], (m - m.mean()) / m.std(ddof=1))  # M uses all 7 epochs
    assert np.isnan(out["psi"][~ok]).all() and np.isfinite(out["psi"][ok]).all()
    assert out["r_hz_mz"] == pytest.approx(np.corrcoef(out["hz"][ok], out["mz"][ok])[0, 1])
    assert out["h_eff_mean"] == pytest.approx(h[ok].mean())
    # volatility is missing wherever its 3-epoch window touches a missing Psi
    assert np.isnan(out["volatility"][[0, 1, 2, 3, 5, 6]]).all() and np.isfinite(out["volatility"][4])


def test_volatility_and_trigger():
    psi = np.array([1.0, -1.0, 0.5, 0.1, 0.0, 0.05, 0.1, 0.0, 2.0])
    vol = dyn.psi_volatility(psi, 3)
    assert np.isnan(vol[:2]).all()
    assert vol[2] == pytest.approx(np.std(psi[:3], ddof=1))
    # below 0.35 at indices 4, 5, 6 (epochs 5, 6, 7) -> fires at epoch 7
    assert dyn.convergence_trigger(vol, 0.35, 3) == 7
    assert dyn.convergence_trigger(vol, 0.35, 3, epochs=np.arange(10, 19)) == 16
    broken = vol.copy()
    broken[5] = np.nan
    assert dyn.convergence_trigger(broken, 0.35, 3) is None


def test_edge_cases_never_make_up_numbers():
    rng = np.random.default_rng(5)
    alpha, why = dyn.dfa_exponents(rng.standard_normal((2, 20)), return_reasons=True)
    assert np.isnan(alpha).all() and "too short" in why[0]
    x = rng.standard_normal((3, 512))
    x[0] = 4.2
    x[1, 7] = np.inf
    alpha, why = dyn.dfa_exponents(x, return_reasons=True)
    assert np.isnan(alpha[:2]).all() and np.isfinite(alpha[2])
    assert why[:2] == ["constant channel", "non-finite values"] and why[2] is None
    dead = np.zeros((1, 512))
    dead[0, 100] = 1.0  # one spike: every other segment of the profile is exactly linear
    alpha, why = dyn.dfa_exponents(dead, return_reasons=True)
    assert np.isnan(alpha[0]) and "zero fluctuation" in why[0]
    short = dyn.capture_metrics(rng.standard_normal((20, 8)), np.zeros(20, int))
    assert math.isnan(short["h_raw"]) and math.isnan(short["h_eff"]) and "too short" in short["reason"]
    one = dyn.capture_metrics(rng.standard_normal((256, 1)), rng.integers(0, 4, 256))
    assert np.isfinite(one["h_raw"]) and one["synchrony"] == pytest.approx(1.0)
    single = dyn.run_metrics([0.8], [0.05])
    assert np.isnan(single["psi"]).all() and math.isnan(single["r_hz_mz"]) and single["state"] is None
    two = dyn.run_metrics([0.8, 0.9], [0.05, 0.04])
    assert math.isnan(two["r_hz_mz"]) and two["state"] is None and two["trigger_epoch"] is None
    with pytest.raises(ValueError, match="one label per sample"):
        dyn.pseudo_time(np.zeros((10, 2)), np.zeros(9))
    with pytest.raises(ValueError, match="order='sideways'"):
        dyn.pseudo_time(np.zeros((10, 2)), np.zeros(10), order="sideways")
    with pytest.raises(ValueError, match="same, non-zero length"):
        dyn.run_metrics([0.1, 0.2], [0.1])


def test_order_control_permutes_time_only():
    rng = np.random.default_rng(6)
    acts, labels = rng.standard_normal((300, 4)), rng.integers(0, 5, 300)
    a = dyn.pseudo_time(acts, labels, 1, order="label")
    b = dyn.pseudo_time(acts, labels, 1, order="random", seed=3)
    np.testing.assert_allclose(np.sort(a, axis=1), np.sort(b, axis=1))  # same values, other order
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(b, dyn.pseudo_time(acts, labels, 1, order="random", seed=3))


@pytest.mark.parametrize("p, k, window, expected", [(4096, 100, 5, 0.30), (4096, 100, 15, 0.47),
                                                    (4096, 10, 15, 0.75), (2048, 10, 5, 0.57)])
def test_noise_control_matches_spec(p, k, window, expected):
    """I.i.d. Gaussian features, no network: the preprocessing alone sets H_raw (SPEC)."""
    rng = np.random.default_rng(7)
    labels = np.repeat(np.arange(k), -(-p // k))[:p]
    got = dyn.capture_metrics(rng.standard_normal((p, 128)), labels, smooth_window=window)["h_raw"]
    assert abs(got - expected) < 0.02
