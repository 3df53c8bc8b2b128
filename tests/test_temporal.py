"""The temporal protocol's kernels (analysis/temporal.py) against ground truth."""
from __future__ import annotations

import numpy as np
import pytest

from dynstudy.analysis.kernels import dynamics
from dynstudy.analysis.kernels import temporal as tp
from dynstudy.analysis.kernels.dfa_fit import fractional_gaussian_noise as fgn

PARAMS = {"temporal_window": 64, "temporal_stride": 16, "h_opt": 0.7, "sigma_h": 0.15, "min_scale": 16,
          "n_scales": 10, "compat": "dynstudy", "w_h": 0.5, "vol_window": 3, "vol_threshold": 0.35, "vol_patience": 3,
          "null_k": 3}


def series_of(X, steps=None) -> tp.TemporalSeries:
    t = X.shape[1]
    steps = np.arange(t) * 5 if steps is None else np.asarray(steps)
    return tp.temporal_series(steps, steps // 50, np.arange(t), X)


def whole(rows: list[dict]) -> dict:
    return next(r for r in rows if r["window"] == tp.WHOLE_RUN)


@pytest.mark.parametrize("hurst", [0.3, 0.5, 0.8])
def test_temporal_dfa_recovers_fgn_hurst_over_512_points(hurst):
    X = fgn(hurst, 512, 64, np.random.default_rng(int(hurst * 10)))
    rows, _, summary = tp.temporal_tables(series_of(X), PARAMS, seed=0)
    assert abs(whole(rows)["h_raw"] - hurst) < 0.05
    assert summary["temporal_h_raw"] == whole(rows)["h_raw"]
    assert summary["temporal_h_eff"] == pytest.approx(float(dynamics.integration(hurst, 0.7, 0.15)), abs=0.12)


def test_identical_phases_have_no_metastability():
    t = np.linspace(0, 30 * np.pi, 400)
    X = np.sin(t) * np.arange(1, 33)[:, None] + np.arange(32)[:, None]  # one phase; other amplitudes and means
    rows, _, _ = tp.temporal_tables(series_of(X), PARAMS, seed=0)
    for r in rows:
        assert r["synchrony"] == pytest.approx(1.0, abs=1e-9) and r["metastability"] == pytest.approx(0.0, abs=1e-9)


def test_surrogates_behave_as_defined():
    X = fgn(0.8, 512, 64, np.random.default_rng(8))
    rows, controls, _ = tp.temporal_tables(series_of(X), PARAMS, seed=[1, 2])
    got = {c["control"]: c for c in controls if c["window"] == tp.WHOLE_RUN}
    assert set(got) == set(tp.CONTROLS)
    assert abs(got["shuffled"]["h_raw"] - 0.5) < 0.05  # temporal order destroyed
    assert abs(got["phase_randomised"]["h_raw"] - whole(rows)["h_raw"]) < 0.1  # spectrum kept


def test_surrogate_definitions():
    rng = np.random.default_rng(0)
    X = fgn(0.7, 301, 8, rng) * np.arange(1, 9)[:, None] + 3.0
    for t in (301, 300):
        x = X[:, :t]
        y = tp.phase_randomise(x, np.random.default_rng(5))
        assert y.shape == x.shape and np.isrealobj(y)
        np.testing.assert_allclose(y.mean(axis=1), x.mean(axis=1), atol=1e-12)
        np.testing.assert_allclose(np.abs(np.fft.rfft(y - y.mean(1, keepdims=True))),
                                   np.abs(np.fft.rfft(x - x.mean(1, keepdims=True))), atol=1e-9)
        # the same phase shift for every row keeps the cross-spectrum of any two rows
        fx, fy = np.fft.rfft(x, axis=1), np.fft.rfft(y, axis=1)
        np.testing.assert_allclose(fy[0] * fy[1].conj(), fx[0] * fx[1].conj(), rtol=1e-9, atol=1e-6)
        assert not np.allclose(y, x)
    s = tp.time_shuffle(X, np.random.default_rng(1))
    perm = [int(np.flatnonzero(X[0] == v)[0]) for v in s[0]]
    np.testing.assert_array_equal(s, X[:, perm])  # one permutation for every row
    assert sorted(perm) == list(range(X.shape[1])) and perm != list(range(X.shape[1]))


def test_window_bookkeeping_is_exact():
    rng = np.random.default_rng(2)
    steps = np.cumsum(rng.integers(1, 4, 200))  # irregular steps
    X = rng.standard_normal((16, 200))
    rows, controls, _ = tp.temporal_tables(series_of(X, steps), PARAMS, seed=0)
    windows = [r for r in rows if r["window"] != tp.WHOLE_RUN]
    starts = list(range(0, 200 - 64 + 1, 16))
    assert [r["window"] for r in windows] == list(range(len(starts))) and len(starts) == 9
    for r, a in zip(windows, starts):
        assert (r["start_step"], r["end_step"], r["n_points"]) == (steps[a], steps[a + 63], 64)
        assert (r["start_epoch"], r["end_epoch"]) == (steps[a] // 50, steps[a + 63] // 50)
    assert (whole(rows)["start_step"], whole(rows)["end_step"], whole(rows)["n_points"]) == (steps[0], steps[-1], 200)
    assert len(controls) == len(tp.CONTROLS) * (len(starts) + 1)
    assert tp.sliding_windows(63, 64, 16) == [] and tp.sliding_windows(64, 64, 16) == [(0, 64)]
    with pytest.raises(ValueError, match="window=1"):
        tp.sliding_windows(10, 1, 1)


def test_window_metrics_are_the_pseudo_time_kernels_on_the_segment():
    rng = np.random.default_rng(4)
    X = fgn(0.6, 160, 12, rng)
    rows, controls, summary = tp.temporal_tables(series_of(X), PARAMS, seed=7)
    kw = {k: PARAMS[k] for k in tp.SERIES_PARAMS}
    w1 = next(r for r in rows if r["window"] == 1)
    want = dynamics.series_metrics(X[:, 16:80], **kw)
    assert all(w1[k] == want[k] for k in tp.METRICS)
    # Hz, Mz, Psi and volatility over windows, as run_metrics gives them over epochs
    windows = [r for r in rows if r["window"] >= 0]
    rm = dynamics.run_metrics(np.array([r["h_eff"] for r in windows]), np.array([r["metastability"] for r in windows]))
    np.testing.assert_array_equal([r["psi"] for r in windows], rm["psi"])
    np.testing.assert_array_equal([r["volatility"] for r in windows], rm["volatility"])
    assert summary["temporal_state"] == rm["state"] and summary["temporal_n_points"] == 160
    # a control is a function of the run's seed, the window and the control: the same inputs give the same rows
    assert tp.temporal_tables(series_of(X), PARAMS, seed=7)[1] == controls
    assert tp.temporal_tables(series_of(X), PARAMS, seed=8)[1] != controls


def test_trigger_step_is_the_last_step_of_the_firing_window():
    # windows of fGn of changing H: with these seeds the volatility stays below the threshold in windows 2-4
    rng = np.random.default_rng(11)
    X = np.concatenate([fgn(h, 64, 24, rng) for h in (0.2, 0.95, 0.3, 0.9, 0.7, 0.7, 0.7, 0.7, 0.7, 0.7)], axis=1)
    params = {**PARAMS, "temporal_stride": 64}
    steps = np.arange(X.shape[1]) * 3
    rows, _, summary = tp.temporal_tables(series_of(X, steps), params, seed=0)
    windows = [r for r in rows if r["window"] >= 0]
    fired = dynamics.convergence_trigger(np.array([r["volatility"] for r in windows]), 0.35, 3,
                                         epochs=np.arange(len(windows)))
    assert fired is not None
    assert summary["temporal_trigger_step"] == windows[fired]["end_step"] == steps[64 * fired + 63]


def test_series_order_and_one_point_per_step():
    X = np.arange(12.0).reshape(2, 6)
    s = tp.temporal_series(steps=[10, 0, 20, 20, 5, 30], epochs=[1, 0, 2, 2, 0, 3], captures=[3, 0, 4, 5, 1, 6], X=X)
    assert s.steps.tolist() == [0, 5, 10, 20, 30] and s.epochs.tolist() == [0, 0, 1, 2, 3]
    assert s.X[0].tolist() == [1.0, 4.0, 0.0, 2.0, 5.0]  # at step 20 the earlier capture (4) is kept
    with pytest.raises(ValueError, match="one step, epoch and capture number per column"):
        tp.temporal_series([0, 1], [0, 0], [0, 1], np.zeros((2, 3)))


def test_short_runs_have_no_windows_and_no_trigger():
    rows, controls, summary = tp.temporal_tables(series_of(np.random.default_rng(0).standard_normal((8, 40))),
                                                 PARAMS, seed=0)
    assert [r["window"] for r in rows] == [tp.WHOLE_RUN] and summary["temporal_trigger_step"] is None
    assert len(controls) == len(tp.CONTROLS) and summary["temporal_state"] is None
