"""The temporal protocol's kernels: the paper's metrics over training time instead of pseudo-time.

A run's temporal signal is, for each metric channel, the series over its
captures in training order (every-N-step captures, with the init and
end-of-epoch captures where they fall; one point per optimiser step) of the
channel's pooled activation averaged over the step probe (the first P_t
probe images). Over that series [C, T] the same kernels as pseudo-time
(:func:`dynstudy.analysis.kernels.dynamics.series_metrics`: DFA per channel, H_eff, the
Kuramoto order over channels) give

- the whole run's H_raw, H_eff, metastability and synchrony;
- the same per sliding window (``window`` captures, every ``stride``), and
  over the windows Hz, Mz, Psi, its volatility, the trigger and the state
  (:func:`dynstudy.analysis.kernels.dynamics.run_metrics`, windows in place of epochs);
- each window's (and the whole run's) DFA fit diagnostics
  (:func:`dynstudy.analysis.kernels.dfa_fit.fit_diagnostics`) and flags;
- the same metrics for three surrogates of each window and of the whole run,
  its controls: ``shuffled`` (the time points in a random order, one
  permutation for all channels: temporal order destroyed, each instant's
  cross-channel pattern kept; DFA gives H near 0.5), ``phase_randomised``
  (every Fourier phase shifted by a random angle, the same angle for all
  channels: each channel's power spectrum and the cross-spectra kept,
  anything beyond them destroyed; Prichard and Theiler 1994) and ``iaaft``
  (:func:`iaaft`: each channel's values exactly and its spectrum
  approximately kept; Schreiber and Schmitz 1996). Each control row carries
  one surrogate's metrics and, from K more (``null_k``), the null
  distribution of H_raw and M under that surrogate, with the window's own
  values placed in it (z-score, empirical p-value).

Everything here is a pure function of arrays; :mod:`dynstudy.analysis.run.temporal_run`
reads a run's series from the store and writes the tables.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dynstudy.analysis.kernels import dynamics
from dynstudy.analysis.kernels.dfa_fit import fit_diagnostics, fit_flags, null_columns

#: The window number of the whole-run rows of temporal_metrics and temporal_controls.
WHOLE_RUN = -1
CONTROLS = ("shuffled", "phase_randomised", "iaaft")
#: Rounds of :func:`iaaft` at most (it stops earlier once the rank order is fixed).
IAAFT_MAX_ITER = 10
#: Keywords of :func:`dynstudy.analysis.kernels.dynamics.series_metrics` that a run's analysis settings give.
SERIES_PARAMS = ("h_opt", "sigma_h", "min_scale", "n_scales", "compat")
METRICS = ("h_raw", "h_eff", "metastability", "synchrony")


@dataclass(frozen=True)
class TemporalSeries:
    """A run's temporal signal: ``X`` [C, T], one column per optimiser step at which it was captured."""

    steps: np.ndarray   # int [T], strictly increasing
    epochs: np.ndarray  # int [T], the activations' epoch of each point
    X: np.ndarray       # float [C, T]


def temporal_series(steps, epochs, captures, X) -> TemporalSeries:
    """Order captures by training time, one point per step.

    Parameters
    ----------
    steps, epochs, captures : int arrays [T0], one entry per capture.
    X : float array [C, T0], column j the channel means of capture j.

    Returns
    -------
    The series sorted by (step, capture number); where several captures share
    a step (an every-N-step capture at an epoch's last step and the
    end-of-epoch capture after its validation: the same weights) the first
    one is kept.
    """
    steps, epochs, captures = (np.asarray(a, dtype=np.int64) for a in (steps, epochs, captures))
    X = np.asarray(X, dtype=float)
    if not (steps.shape == epochs.shape == captures.shape == X.shape[1:]):
        raise ValueError(f"steps {steps.shape}, epochs {epochs.shape}, captures {captures.shape} and X {X.shape}: "
                         "one step, epoch and capture number per column of X")
    order = np.lexsort((captures, steps))
    keep = order[np.r_[True, np.diff(steps[order]) > 0]] if len(order) else order
    return TemporalSeries(steps[keep], epochs[keep], X[:, keep])


def sliding_windows(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """``(start, stop)`` index pairs of every full window: start = 0, stride, ...; stop = start + window <= n."""
    if window < 2 or stride < 1:
        raise ValueError(f"window={window}, stride={stride}: use window >= 2 and stride >= 1 (in captures)")
    return [(a, a + window) for a in range(0, n - window + 1, stride)]


def time_shuffle(X, rng) -> np.ndarray:
    """``X`` [C, T] with its columns (time points) in a random order, the same for every row."""
    X = np.asarray(X, dtype=float)
    return X[:, rng.permutation(X.shape[1])]


def phase_randomise(X, rng) -> np.ndarray:
    """A phase-randomised surrogate of the rows of ``X`` [C, T].

    Each row's mean is kept and its Fourier amplitudes too (so its power
    spectrum and autocorrelation); every frequency's phase is shifted by an
    angle drawn uniformly from [0, 2 pi), the same angle for every row, so the
    cross-spectra between rows are kept as well. The zero frequency and, for
    even T, the Nyquist frequency stay real.
    """
    X = np.asarray(X, dtype=float)
    t = X.shape[1]
    mean = X.mean(axis=1, keepdims=True)
    spectrum = np.fft.rfft(X - mean, axis=1)
    angles = rng.uniform(0.0, 2.0 * np.pi, spectrum.shape[1])
    angles[0] = 0.0
    if t % 2 == 0:
        angles[-1] = 0.0
    return np.fft.irfft(spectrum * np.exp(1j * angles), n=t, axis=1) + mean


def iaaft(X, rng, max_iter: int = IAAFT_MAX_ITER, copies: int | None = None) -> np.ndarray:
    """An iterative amplitude-adjusted Fourier transform surrogate of the rows of ``X`` [C, T].

    Schreiber and Schmitz (1996): from a random reordering of the time points (the same for every row), alternate
    (a) giving each row the Fourier amplitudes of the original row, keeping the current phases, and (b) replacing
    each row's values by the original row's values in the same rank order, until the rank order no longer changes
    or after ``max_iter`` rounds. The result ends with (b): each row holds exactly the original row's values (its
    amplitude distribution), in an order whose power spectrum approaches the original's; any structure beyond the
    two is destroyed. A constant row stays itself.

    ``copies``: that many independent surrogates at once, [copies, C, T], iterated together (each from its own
    reordering, drawn in turn from ``rng``; the first is the surrogate ``copies=None`` gives).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.cumsum(np.random.default_rng(0).standard_normal((2, 128)), axis=1)
    >>> y = iaaft(x, np.random.default_rng(1))
    >>> bool((np.sort(y, axis=1) == np.sort(x, axis=1)).all()), bool((y != x).any())
    (True, True)
    """
    X = np.asarray(X, dtype=float)
    c, t = X.shape
    k = 1 if copies is None else int(copies)
    values = np.tile(np.sort(X, axis=1), (k, 1))
    amplitude = np.tile(np.abs(np.fft.rfft(X, axis=1)), (k, 1))
    Y = np.concatenate([X[:, rng.permutation(t)] for _ in range(k)]) if k else np.empty((0, t))
    order = np.argsort(Y, axis=1, kind="stable")
    for _ in range(int(max_iter)):
        spectrum = np.fft.rfft(Y, axis=1)
        size = np.abs(spectrum)
        phase = np.divide(spectrum, size, out=np.ones_like(spectrum), where=size > 0)
        new = np.argsort(np.fft.irfft(amplitude * phase, n=t, axis=1), axis=1, kind="stable")
        np.put_along_axis(Y, new, values, axis=1)  # each row's j-th smallest value where the shaped row has its own
        if (new == order).all():
            break
        order = new
    return Y if copies is None else Y.reshape(k, c, t)


SURROGATES = {"shuffled": time_shuffle, "phase_randomised": phase_randomise, "iaaft": iaaft}


def _metrics(X, kw: dict, fit: bool = False) -> dict:
    m = dynamics.series_metrics(X, **kw)
    out = {k: m[k] for k in METRICS}
    if fit:
        scales, F, _ = dynamics.dfa_fluctuation(X, kw["min_scale"], kw["n_scales"])
        out.update(fit_diagnostics(scales, np.log(F)))
        out["fit_flags"] = fit_flags(out, out["h_raw"])
    return out


def _null(X, name: str, kw: dict, k: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """(H_raw [k], M [k]) of ``k`` surrogates ``name`` of ``X`` [C, T]: the surrogates made together (IAAFT
    iterates them as one stack) and their channels' DFA exponents computed in one call."""
    if k == 0:
        return np.empty(0), np.empty(0)
    if name == "iaaft":
        blocks = iaaft(X, rng, copies=k)
    else:
        blocks = np.stack([SURROGATES[name](X, rng) for _ in range(k)])
    c = X.shape[0]
    alpha, reasons = dynamics.dfa_exponents(blocks.reshape(k * c, -1), kw["min_scale"], kw["n_scales"],
                                            return_reasons=True)
    h, m = np.full(k, np.nan), np.full(k, np.nan)
    for i, block in enumerate(blocks):
        got = dynamics.capture_summary(alpha[i * c:(i + 1) * c], reasons[i * c:(i + 1) * c],
                                       dynamics.kuramoto(block, kw["compat"]), kw["compat"], kw["h_opt"], kw["sigma_h"])
        h[i], m[i] = got["h_raw"], got["metastability"]
    return h, m


def _bounds(series: TemporalSeries, a: int, b: int) -> dict:
    return {"start_step": int(series.steps[a]), "end_step": int(series.steps[b - 1]),
            "start_epoch": int(series.epochs[a]), "end_epoch": int(series.epochs[b - 1]), "n_points": b - a}


def temporal_tables(series: TemporalSeries, params: dict, seed) -> tuple[list[dict], list[dict], dict]:
    """The temporal protocol over one run's series.

    Parameters
    ----------
    series : the run's :class:`TemporalSeries`.
    params : the run's analysis settings: ``temporal_window`` and
        ``temporal_stride`` (in captures), the keys of :data:`SERIES_PARAMS`,
        and ``w_h``, ``vol_window``, ``vol_threshold``, ``vol_patience``.
    seed : seeds the surrogates (a surrogate is a function of the run, the
        window and the control).

    Returns
    -------
    (metric rows, control rows, summary). A metric row per window, and one
    with window :data:`WHOLE_RUN` (no Hz, Mz, Psi or volatility: those are
    over windows); each metric row's ``nonstationary`` says whether its H_raw
    exceeds :data:`dynamics.NONSTATIONARY_ALPHA` (None where H_raw is
    undefined). A control row per window and control, and per control for
    the whole run. The summary: temporal_h_raw, temporal_h_eff,
    temporal_metastability (the whole run's), temporal_trigger_step (the
    last step of the window at which the volatility trigger fires, None when
    it never does), temporal_state (the taxonomy state of the windows'
    series, None when undefined), temporal_n_points, temporal_n_nonstationary
    (windows whose H_raw exceeds :data:`dynamics.NONSTATIONARY_ALPHA`), and
    :func:`dynamics.h_raw_flags` of the whole run's H_raw:
    temporal_nonstationary and temporal_h_eff_saturated.
    """
    kw = {k: params[k] for k in SERIES_PARAMS}
    n = series.X.shape[1]
    spans = sliding_windows(n, params["temporal_window"], params["temporal_stride"])
    k = int(params["null_k"])
    whole = _metrics(series.X, kw, fit=True) if n >= 2 else dict.fromkeys(METRICS, math.nan)
    rows = [{"window": WHOLE_RUN, **(_bounds(series, 0, n) if n else {"n_points": 0}), **whole}]
    for i, (a, b) in enumerate(spans):
        rows.append({"window": i, **_bounds(series, a, b), **_metrics(series.X[:, a:b], kw, fit=True)})
    controls = []
    for j, name in enumerate(CONTROLS):
        for row, (a, b) in zip(rows, [(0, n)] + spans) if n >= 2 else ():
            i = row["window"]
            rng = np.random.default_rng([*np.atleast_1d(seed).tolist(), i + 1, j])
            X = series.X[:, a:b]
            null_rng = np.random.default_rng([*np.atleast_1d(seed).tolist(), i + 1, j, 1])
            controls.append({"window": i, "control": name, **_metrics(SURROGATES[name](X, rng), kw),
                             **null_columns(row["h_raw"], row["metastability"], *_null(X, name, kw, k, null_rng))})
    for r, flag in zip(rows, dynamics.known_flags([r["h_raw"] for r in rows], dynamics.nonstationary)):
        r["nonstationary"] = flag
    windows = rows[1:]
    summary = {"temporal_h_raw": whole["h_raw"], "temporal_h_eff": whole["h_eff"],
               "temporal_metastability": whole["metastability"], "temporal_trigger_step": None,
               "temporal_state": None, "temporal_n_points": n,
               "temporal_n_nonstationary": sum(bool(r["nonstationary"]) for r in windows)}
    summary["temporal_nonstationary"], summary["temporal_h_eff_saturated"] = dynamics.h_raw_flags(
        whole["h_raw"], params["h_opt"], params["sigma_h"])
    if windows:
        rm = dynamics.run_metrics(np.array([r["h_eff"] for r in windows]),
                                  np.array([r["metastability"] for r in windows]),
                                  epochs=np.arange(len(windows)), w_h=params["w_h"], vol_window=params["vol_window"],
                                  vol_threshold=params["vol_threshold"], vol_patience=params["vol_patience"])
        for k, r in enumerate(windows):
            r.update(hz=rm["hz"][k], mz=rm["mz"][k], psi=rm["psi"][k], volatility=rm["volatility"][k])
        if rm["trigger_epoch"] is not None:
            summary["temporal_trigger_step"] = windows[rm["trigger_epoch"]]["end_step"]
        summary["temporal_state"] = rm["state"]
    return rows, controls, summary
