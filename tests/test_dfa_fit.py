"""DFA fit diagnostics and the estimator's spread at the length used (dynstudy.analysis.kernels.dfa_fit), against
ground truth: known-H fGn, white noise through the literal implementation, planted crossovers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from dynstudy.analysis.kernels import dfa_fit as df
from dynstudy.analysis.kernels.dynamics import dfa_exponents, dfa_fluctuation
from tests import literal_dynamics as lit


def literal_fluctuation(x, scales):
    """F(s) of one series, written plainly: disjoint segments from the start, np.polyfit degree 1."""
    y = np.cumsum(np.asarray(x, float) - np.mean(x))
    out = []
    for s in scales:
        t = np.arange(s)
        rms = [math.sqrt(np.mean((y[k * s:(k + 1) * s] - np.polyval(np.polyfit(t, y[k * s:(k + 1) * s], 1), t)) ** 2))
               for k in range(len(y) // s)]
        out.append(np.mean(rms))
    return np.array(out)


@pytest.mark.parametrize("n", [64, 128, 257, 1000])
def test_fluctuation_function_agrees_with_literal_and_gives_the_exponent(n):
    x = np.random.default_rng(n).standard_normal((4, n))
    scales, F, why = dfa_fluctuation(x)
    assert scales.tolist() == lit.scales(n) and why.tolist() == [0, 0, 0, 0]
    for c in range(4):
        np.testing.assert_allclose(F[:, c], literal_fluctuation(x[c], scales), rtol=1e-10)
    np.testing.assert_allclose(df.loglog_fit(scales, F)["alpha"], dfa_exponents(x), rtol=0, atol=1e-12)


def test_a_constant_row_has_no_fluctuation_function_and_says_why():
    x = np.random.default_rng(0).standard_normal((3, 256))
    x[1] = 2.0
    x[2, 5] = np.nan
    _, F, why = dfa_fluctuation(x)
    assert why.tolist() == [0, 2, 1] and np.isnan(F[:, 1:]).all() and np.isfinite(F[:, 0]).all()
    fit = df.loglog_fit(*dfa_fluctuation(x)[:2])
    assert np.isnan(fit["alpha"][1:]).all() and np.isfinite(fit["r2"][0])


def test_loglog_fit_diagnostics_on_known_curves():
    s = np.array([16, 24, 32, 48, 64, 96, 128])
    straight = df.loglog_fit(s, 3 * s ** 0.6)
    assert straight["alpha"][0] == pytest.approx(0.6, abs=1e-12) and straight["r2"][0] == pytest.approx(1, abs=1e-12)
    assert straight["max_residual"][0] < 1e-12 and straight["n_scales"] == 7 and straight["span"] == pytest.approx(8)
    bent = df.loglog_fit(s, np.where(s <= 32, s ** 0.2, 32 ** 0.2 * (s / 32) ** 1.8))
    assert bent["r2"][0] < 0.95 and bent["max_residual"][0] > 0.1
    assert np.isnan(df.loglog_fit(s[:2], s[:2] ** 0.5)["r2"][0])  # two points always fit: no R^2


def test_crossover_fit_finds_an_exact_planted_breakpoint_through_noise():
    s = np.unique(np.logspace(np.log10(16), np.log10(2048), 16).astype(int))
    rng = np.random.default_rng(3)
    b = s[7]
    F = np.where(s <= b, (s / b) ** 0.3, (s / b) ** 1.2)[:, None] * np.exp(rng.normal(0, 0.01, (len(s), 20)))
    fit = df.crossover_fit(s, F)
    assert (fit["breakpoint"] == b).all()
    np.testing.assert_allclose(fit["alpha_small"], 0.3, atol=0.03)
    np.testing.assert_allclose(fit["alpha_large"], 1.2, atol=0.03)
    assert np.isnan(df.crossover_fit(s[:4], F[:4])["breakpoint"]).all()  # 4 scales allow no 3 + 3 split


def test_crossover_fit_finds_the_crossover_of_two_fgn_regimes():
    """x = fGn(H = 0.95) + c fGn(H = 0.2), with c chosen so that the two components' F(s) cross at s* = 58:
    below s* the anti-persistent part dominates, above it the persistent one."""
    rng = np.random.default_rng(1)
    n = 8192
    hi, lo = df.fractional_gaussian_noise(0.95, n, 50, rng), df.fractional_gaussian_noise(0.2, n, 50, rng)
    scales, f_hi, _ = dfa_fluctuation(hi, n_scales=16)
    f_lo = dfa_fluctuation(lo, n_scales=16)[1]
    i = int(np.flatnonzero(scales == 58)[0])
    c = math.exp(np.log(f_hi[i]).mean() - np.log(f_lo[i]).mean())
    fit = df.crossover_fit(*dfa_fluctuation(hi + c * lo, n_scales=16)[:2])
    assert 58 / 2.5 <= np.median(fit["breakpoint"]) <= 58 * 2.5
    assert np.median(fit["alpha_small"]) < 0.6 < 0.8 < np.median(fit["alpha_large"])


@pytest.mark.parametrize("hurst", [0.3, 0.5, 0.7, 0.9])
@pytest.mark.parametrize("n", [64, 256, 2048])
def test_fgn_hurst_is_recovered_within_the_simulated_spread(hurst, n):
    x = df.fractional_gaussian_noise(hurst, n, 400, np.random.default_rng(int(hurst * 10) + n))
    alpha = dfa_exponents(x)
    lo, hi = np.quantile(alpha, [0.025, 0.975])
    assert lo <= hurst <= hi
    assert abs(alpha.mean() - hurst) < 2 * alpha.std() / math.sqrt(len(alpha)) + 0.02  # bias under 0.02


def test_fgn_has_the_covariance_of_its_hurst_exponent():
    x = df.fractional_gaussian_noise(0.8, 1024, 2000, np.random.default_rng(5))
    lag1 = (x[:, :-1] * x[:, 1:]).mean()
    assert x.var() == pytest.approx(1, abs=0.02) and lag1 == pytest.approx(0.5 * (2 ** 1.6 - 2), abs=0.02)


def test_white_noise_null_mean_at_128_matches_a_literal_simulation():
    null = df.null_alpha(128, 4000, seed=1)
    rng = np.random.default_rng(2)
    literal = [lit.dfa(rng.standard_normal(128)) for _ in range(1000)]
    assert abs(null.mean() - np.mean(literal)) < 0.01


def test_null_comparison_has_its_stated_false_positive_rate():
    """A value drawn from the null itself is called extreme (p <= 0.05) 5% of the time with K = 19."""
    draws = df.null_alpha(128, 20 * 2000, seed=7).reshape(2000, 20)
    p = np.array([df.null_comparison(row[0], row[1:])["p"] for row in draws])
    assert 0.04 <= (p <= 0.05).mean() <= 0.06
    assert df.null_comparison(0.5, draws[0, 1:])["k"] == 19
    assert math.isnan(df.null_comparison(float("nan"), draws[0])["z"])


def test_bad_arguments_name_the_field():
    with pytest.raises(ValueError, match="hurst=1.2 is invalid"):
        df.fractional_gaussian_noise(1.2, 10, 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="k=0 is invalid"):
        df.null_alpha(128, 0)
    with pytest.raises(ValueError, match="F has 3 rows of scales but scales has 4"):
        df.loglog_fit([16, 32, 64, 128], np.ones((3, 2)))


def test_fluctuation_summary_aggregates_log_f_over_the_channels_that_have_it():
    s = np.array([16, 32, 64])
    F = np.array([[1.0, np.e, np.nan], [2.0, 2 * np.e, np.nan], [4.0, 4 * np.e, np.nan]])
    out = df.fluctuation_summary(s, F)
    assert out["n_channels"] == 2 and out["scale"].tolist() == [16, 32, 64]
    np.testing.assert_allclose(out["log_f_mean"], np.log([1, 2, 4]) + 0.5)
    np.testing.assert_allclose(out["log_f_sd"], np.sqrt(0.5))
