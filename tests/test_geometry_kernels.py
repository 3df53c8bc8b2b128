"""Geometry kernels against ground truth: the HSIC U-statistic written out over every 4-tuple, CKA's invariances,
its centring on independent data, spectra built to order, and the pairwise matrix against single pairs."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from dynstudy.analysis.kernels import geometry as g


def hsic_u_statistic(X, Y) -> float:
    """Song et al. (2012), Theorem 2, literally: the mean over ordered distinct (i, j, q, r) of
    k_ij l_ij + k_ij l_qr - 2 k_ij l_iq, with the raw (uncentred) linear kernels."""
    K, L, n = X @ X.T, Y @ Y.T, len(X)
    total = sum(K[i, j] * L[i, j] + K[i, j] * L[q, r] - 2 * K[i, j] * L[i, q]
                for i, j, q, r in itertools.permutations(range(n), 4))
    return total / (n * (n - 1) * (n - 2) * (n - 3))


@pytest.mark.parametrize("n, dx, dy, seed", [(5, 2, 3, 0), (7, 3, 5, 1), (8, 6, 1, 2)])
def test_hsic_is_the_u_statistic_written_out(n, dx, dy, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, dx)) + 3.0  # uncentred: the estimator does not depend on the features' means
    Y = rng.normal(size=(n, dy)) - 1.0 + X[:, :1]
    expected = hsic_u_statistic(X, Y)
    assert g.hsic_unbiased(X, Y) == pytest.approx(expected, rel=1e-10, abs=1e-10)
    kx, ky = hsic_u_statistic(X, X), hsic_u_statistic(Y, Y)
    assert g.linear_cka(X, Y) == pytest.approx(expected / np.sqrt(kx * ky), rel=1e-10, abs=1e-10)


@pytest.mark.parametrize("scale", [1e-3, 1.0, 7.5])
def test_cka_is_one_under_rotation_scaling_and_shift(scale):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(128, 16)) @ rng.normal(size=(16, 16))
    Q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    assert g.linear_cka(X, scale * X @ Q + 4.0) == pytest.approx(1.0, abs=1e-12)


def test_cka_of_independent_gaussians_is_centred_on_zero_at_n_256():
    rng = np.random.default_rng(4)
    values = np.array([g.linear_cka(rng.normal(size=(256, 32)), rng.normal(size=(256, 32))) for _ in range(40)])
    assert np.all(np.abs(values) < 0.02)
    assert abs(values.mean()) < 0.005


def test_cka_falls_as_noise_is_added():
    rng = np.random.default_rng(5)
    X = rng.normal(size=(200, 24))
    values = [g.linear_cka(X, X + s * rng.normal(size=X.shape)) for s in (0.1, 0.5, 1.0, 3.0)]
    assert values == sorted(values, reverse=True) and values[0] > 0.95 and values[-1] < 0.2


def test_cka_matrix_is_every_pair():
    rng = np.random.default_rng(6)
    base = rng.normal(size=(64, 10))
    caps = [base + s * rng.normal(size=(64, 10)) for s in (0.2, 0.6, 1.2)] + [rng.normal(size=(64, 5))]
    M = g.cka_matrix(caps)
    for i, j in itertools.product(range(4), repeat=2):
        assert M[i, j] == pytest.approx(g.linear_cka(caps[i], caps[j]), abs=1e-12)
    assert np.allclose(M, M.T) and np.allclose(np.diag(M), 1.0)


def test_a_capture_without_variance_gives_nan_not_a_number_made_up():
    rng = np.random.default_rng(7)
    M = g.cka_matrix([np.ones((16, 4)), rng.normal(size=(16, 4))])
    assert np.isnan(M[0, 1]) and np.isnan(M[0, 0]) and M[1, 1] == pytest.approx(1.0)


def known_spectrum(n: int, singular_values, seed: int) -> np.ndarray:
    """A centred [n, d] matrix whose singular values are exactly ``singular_values``."""
    rng = np.random.default_rng(seed)
    d = len(singular_values)
    A = rng.normal(size=(n, d))
    U, _ = np.linalg.qr(A - A.mean(axis=0))  # columns orthonormal and orthogonal to 1
    V, _ = np.linalg.qr(rng.normal(size=(d, d)))
    return U @ np.diag(singular_values) @ V.T


def test_effective_rank_and_participation_ratio_of_a_known_spectrum():
    s = np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.0])
    X = known_spectrum(300, s, 8)
    lam = g.spectrum(X)
    assert lam == pytest.approx(s ** 2 / 300, abs=1e-12)
    p = s / s.sum() + 1e-12
    assert g.effective_rank(lam) == pytest.approx(np.exp(-np.sum(p * np.log(p))), rel=1e-6)  # 0 comes back as ~1e-16
    assert g.participation_ratio(lam) == pytest.approx((s ** 2).sum() ** 2 / (s ** 4).sum(), rel=1e-12)
    geo = g.stage_geometry(X)
    assert geo["width"] == 6 and geo["activation_variance"] == pytest.approx(X.var(axis=0).mean(), rel=1e-12)


def test_rank_measures_span_one_to_width():
    iso = known_spectrum(100, np.ones(8), 9)
    one = known_spectrum(100, [4.0, 0, 0, 0, 0, 0, 0, 0], 9)
    assert g.effective_rank(g.spectrum(iso)) == pytest.approx(8.0, rel=1e-6)
    assert g.participation_ratio(g.spectrum(iso)) == pytest.approx(8.0, rel=1e-9)
    assert g.effective_rank(g.spectrum(one)) == pytest.approx(1.0, rel=1e-6)
    assert g.participation_ratio(g.spectrum(one)) == pytest.approx(1.0, rel=1e-9)


def test_projection_keeps_inner_products_in_expectation_and_narrow_stages_whole():
    assert np.array_equal(g.random_projection(64, 128, 0), np.eye(64))
    P = np.mean([g.random_projection(40, 20, s) @ g.random_projection(40, 20, s).T for s in range(400)], axis=0)
    assert np.abs(P - np.eye(40)).max() < 0.1
    assert np.array_equal(g.random_projection(40, 20, 3), g.random_projection(40, 20, 3))


@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 4)), "at least 4 samples"),
    (np.full((8, 2), np.nan), "NaN or infinite"),
    (np.zeros(8), r"\[samples, channels\]"),
])
def test_bad_captures_are_named(bad, match):
    with pytest.raises(ValueError, match=match):
        g.features(bad)


def test_captures_of_different_probe_sets_are_refused():
    with pytest.raises(ValueError, match="same probe set"):
        g.linear_cka(np.ones((8, 2)) + np.arange(8)[:, None], np.ones((9, 2)) + np.arange(9)[:, None])


def test_wide_and_narrow_routes_agree():
    """Captures wider in total than the probe set go through Gram matrices: still the U-statistic."""
    rng = np.random.default_rng(10)
    base = rng.normal(size=(12, 5))
    caps = [base @ rng.normal(size=(5, 8)) + rng.normal(size=(12, 8)) for _ in range(3)]  # 24 > 12 channels
    M = g.cka_matrix(caps)
    assert M[0, 2] == pytest.approx(hsic_u_statistic(caps[0], caps[2]) / np.sqrt(
        hsic_u_statistic(caps[0], caps[0]) * hsic_u_statistic(caps[2], caps[2])), rel=1e-10)
