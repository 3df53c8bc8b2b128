"""Every metric against its own null: the DFA fit behind H_raw, the null distribution of a capture's shape,
IAAFT surrogates and the run-level call, each against ground truth or a simulation of its false-positive rate."""
from __future__ import annotations

import numpy as np
import pytest

from dynstudy.analysis.kernels import dfa_fit as df
from dynstudy.analysis.kernels import fast_kernels as fk
from dynstudy.analysis.kernels import temporal as tp
from dynstudy.analysis.kernels.dynamics import capture_metrics, dfa_exponents, dfa_fluctuation
from dynstudy.analysis.run import capture_null as cn
from dynstudy.analysis.run.capture_plan import DEFAULT_PARAMS, metric_kwargs

KW = metric_kwargs(DEFAULT_PARAMS)


@pytest.mark.parametrize("n", [128, 256, 2048])
def test_the_line_through_the_channel_mean_log_f_has_slope_h_raw(n):
    """H_raw (the mean of the channels' slopes) is the slope of their mean log F: the fit the diagnostics describe."""
    X = np.cumsum(np.random.default_rng(n).standard_normal((6, n)), axis=1) * np.arange(1, 7)[:, None]
    X[2] = 1.0  # a constant channel has no exponent and is left out of both
    scales, F, _ = dfa_fluctuation(X)
    d = df.fit_diagnostics(scales, np.log(F))
    line = df.loglog_fit(scales, np.exp(np.array(d["log_f_mean"])))
    assert line["alpha"][0] == pytest.approx(np.nanmean(dfa_exponents(X)), abs=1e-12)
    assert d["dfa_scales"] == scales.tolist() and d["dfa_n_scales"] == len(scales)
    assert d["dfa_span"] == scales[-1] / scales[0]
    assert 0 <= d["dfa_r2"] <= 1 and d["dfa_max_residual"] >= 0


def test_fit_diagnostics_on_a_planted_crossover_and_the_flags_it_gets():
    s = np.array([8, 11, 16, 22, 32, 45, 64, 90, 128, 181, 256])
    log_f = np.log(np.where(s <= 64, s ** 1.4, 64 ** 1.4 * (s / 64) ** 0.4))[:, None] + [[0.0, 0.1]]
    d = df.fit_diagnostics(s, log_f)
    assert d["crossover_scale"] == 64
    assert d["alpha_small"] == pytest.approx(1.4) and d["alpha_large"] == pytest.approx(0.4)
    assert d["dfa_r2"] < 0.99 and d["log_f_sd"] == pytest.approx([0.1 / np.sqrt(2)] * len(s))
    assert df.fit_flags(d, 0.9) is None
    assert df.fit_flags({**d, "dfa_r2": 0.5}, 1.2) == "poor_fit;nonstationary"
    assert df.fit_flags({**d, "dfa_span": 2.0, "dfa_r2": None}, float("nan")) == "narrow_span;poor_fit"
    assert df.fit_flags({"dfa_n_scales": 0}, 0.5) is None


def test_a_capture_without_any_exponent_has_scales_but_no_fit():
    d = df.fit_diagnostics(np.array([16, 32, 64]), np.full((3, 4), np.nan))
    assert d["dfa_r2"] is None and d["crossover_scale"] is None and d["log_f_mean"] == [None] * 3
    short = df.fit_diagnostics(np.array([], dtype=int), np.empty((0, 4)))  # a series too short for any scale
    assert short["dfa_n_scales"] == 0 and short["dfa_span"] is None and short["log_f_mean"] == []
    assert df.fit_flags(short, float("nan")) is None
    for n in (20, 36):  # no scale, and two (a line always fits them: no R^2): every kernel path gives the columns
        X = np.random.default_rng(n).standard_normal((3, n))
        scales, F, _ = dfa_fluctuation(X)
        got = df.fit_diagnostics(scales, np.log(F))
        assert got["dfa_n_scales"] == len(scales) and got["dfa_r2"] is None
        alpha, reasons, pair, log_f = fk.series_parts(X)
        assert df.fit_diagnostics(fk.dfa_plan(n, 16, 10)[0], log_f)["dfa_n_scales"] == len(scales)


def test_windows_of_64_points_are_flagged_narrow_and_probes_of_256_are_not():
    """The flag's threshold against the authors' scales at the lengths dynstudy uses."""
    for n, narrow in ((64, True), (128, True), (256, False), (2048, False)):
        scales, F, _ = dfa_fluctuation(np.random.default_rng(n).standard_normal((8, n)))
        d = df.fit_diagnostics(scales, np.log(F))
        assert ("narrow_span" in (df.fit_flags(d, 0.5) or "")) is narrow, n


def test_white_noise_of_32_channels_passes_the_fit_threshold_from_256_points():
    """MIN_R2's stated basis: the channel-mean line of white-noise captures has R^2 above 0.95 in 99% of them."""
    r2 = []
    for seed in range(200):
        labels = np.repeat(np.arange(10), 26)[:256]
        X = fk.pseudo_time(np.random.default_rng(seed).standard_normal((256, 32)), labels, 5)
        alpha, status, log_f = fk.dfa_status(X)
        r2.append(df.fit_diagnostics(fk.dfa_plan(256, 16, 10)[0], log_f)["dfa_r2"])
    assert np.quantile(r2, 0.01) > 0.95 > df.MIN_R2


def test_the_compiled_log_f_equals_the_literal_fluctuation_function():
    X = np.random.default_rng(3).standard_normal((9, 300)).cumsum(axis=1)
    X[4] = 2.0
    alpha, status, log_f = fk.dfa_status(X)
    scales, F, _ = dfa_fluctuation(X)
    np.testing.assert_allclose(log_f, np.log(F), rtol=0, atol=1e-10)
    assert np.isnan(log_f[:, 4]).all()


def test_the_capture_null_is_a_literal_simulation_of_its_shape_and_is_cached():
    labels = np.array([2, 0, 1, 1, 0, 2] * 40 + [1] * 16)
    cn.noise_null.cache_clear()
    got = cn.capture_null_columns(labels, 12, 0.5, 0.1, KW, 7)
    sizes = cn.class_sizes(labels)
    assert sizes == (80, 96, 80)
    settings = tuple(KW[s] for s in cn.NULL_SETTINGS)
    rng = np.random.default_rng(cn.null_seed(sizes, 12, 7, settings))
    block = np.repeat(np.arange(3), sizes)
    literal = [capture_metrics(rng.standard_normal((len(labels), 12)), block, **KW) for _ in range(7)]
    h = np.array([m["h_raw"] for m in literal])
    assert got["null_k"] == 7 and got["null_h_raw_mean"] == pytest.approx(h.mean(), abs=1e-12)
    assert got["null_h_raw_sd"] == pytest.approx(h.std(ddof=1), abs=1e-12)
    assert got["null_m_mean"] == pytest.approx(np.mean([m["metastability"] for m in literal]), abs=1e-12)
    cn.capture_null_columns(labels[::-1], 12, 0.7, 0.2, KW, 7)  # same shape, another order: no new simulation
    assert cn.noise_null.cache_info().misses == 1 and cn.noise_null.cache_info().hits == 1
    assert cn.capture_null_columns(labels, 12, 0.5, 0.1, KW, 0) == {"null_k": 0, **dict.fromkeys(df.NULL_COLUMNS[1:])}


def test_a_noise_capture_is_beyond_its_null_at_the_stated_rate():
    """Captures of i.i.d. noise against the K = 19 null of their shape: p <= 0.05 in 5% of them, for H_raw and M."""
    labels = np.repeat(np.arange(10), 26)[:256]
    rng = np.random.default_rng(11)
    p = {"h_raw": [], "m": []}
    for _ in range(1000):
        m = capture_metrics(rng.standard_normal((256, 8)), labels, **KW)
        cols = cn.capture_null_columns(labels, 8, m["h_raw"], m["metastability"], KW, 19)
        p["h_raw"].append(cols["h_raw_p"])
        p["m"].append(cols["m_p"])
    for name, values in p.items():
        assert 0.03 <= np.mean(np.array(values) <= df.BEYOND_NULL_P) <= 0.075, name


def test_a_run_of_noise_captures_is_called_beyond_its_null_at_most_five_percent_of_the_time():
    """within_null over runs of 20 captures whose H_raw and M are drawn from their K = 19 nulls (the p-values as
    null_comparison gives them): such a run is called beyond its null in at most 5% of runs."""
    rng = np.random.default_rng(5)
    calls = []
    for draws in rng.standard_normal((1000, 2, 20, 20)):  # run, metric, capture, (value, 19 null draws)
        counts = [sum(df.null_comparison(c[0], c[1:])["p"] <= df.BEYOND_NULL_P for c in metric) for metric in draws]
        calls.append(df.within_null(counts[0], 20) and df.within_null(counts[1], 20))
    assert 0.01 <= 1 - np.mean(calls) <= 0.05
    assert df.within_null(0, 0) is None and df.within_null(20, 20) is False


@pytest.mark.parametrize("n, gaussian, skewed", [(64, 0.15, 0.35), (256, 0.08, 0.35)])
def test_iaaft_keeps_the_values_exactly_and_the_spectrum_within_tolerance(n, gaussian, skewed):
    """The stated tolerance (docs/metrics.md): the surrogate's amplitude spectrum within 15% (N = 64) and 8% (N = 256)
    of the original's, relative L2, for series with Gaussian values (a random walk, fGn); within 35% for cubed noise,
    whose heavy tails no reordering can give a flat spectrum exactly."""
    rng = np.random.default_rng(n)
    X = np.vstack([np.cumsum(rng.standard_normal(n)), rng.standard_normal(n) ** 3,
                   df.fractional_gaussian_noise(0.8, n, 1, rng)[0], np.full(n, 4.0)])
    Y = tp.iaaft(X, np.random.default_rng(1))
    np.testing.assert_array_equal(np.sort(Y, axis=1), np.sort(X, axis=1))
    amp_x, amp_y = np.abs(np.fft.rfft(X[:3], axis=1)), np.abs(np.fft.rfft(Y[:3], axis=1))
    err = np.linalg.norm(amp_y - amp_x, axis=1) / np.linalg.norm(amp_x, axis=1)
    assert err[0] < gaussian and err[2] < gaussian and err[1] < skewed, err
    assert not np.array_equal(Y[:3], X[:3]) and (Y[3] == 4.0).all()
    many = tp.iaaft(X, np.random.default_rng(1), copies=3)  # iterated as one stack: each as if made alone
    one_by_one = np.random.default_rng(1)
    for copy in many:
        np.testing.assert_array_equal(copy, tp.iaaft(X, one_by_one))


def test_temporal_controls_place_each_window_in_its_surrogates_null():
    rng = np.random.default_rng(0)
    X = df.fractional_gaussian_noise(0.9, 200, 6, rng)
    steps = np.arange(200)
    params = {**DEFAULT_PARAMS, "temporal_window": 64, "temporal_stride": 64, "null_k": 9}
    rows, controls, _ = tp.temporal_tables(tp.temporal_series(steps, steps // 20, steps, X), params, seed=3)
    assert {c["control"] for c in controls} == set(tp.CONTROLS)
    for c in controls:
        row = next(r for r in rows if r["window"] == c["window"])
        assert c["null_k"] == 9 and c["null_h_raw_sd"] > 0
        assert c["h_raw_z"] == pytest.approx((row["h_raw"] - c["null_h_raw_mean"]) / c["null_h_raw_sd"])
    for r in rows:
        assert r["dfa_n_scales"] == 10 and (r["window"] == tp.WHOLE_RUN or "narrow_span" in r["fit_flags"])
