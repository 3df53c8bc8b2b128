"""Metric kernels of the paper protocol: pure numpy/scipy functions over arrays.

One capture (``acts``: P probe samples x C channels, with labels) gives

- ``pseudo_time``: stable sort by label, subtract each class's mean, centred
  rolling mean (window 5; 15 for DenseNet/VGG) shrinking at the edges -> X [C, P];
- ``dfa_exponents``: detrended fluctuation analysis per channel -> alpha [C];
  H_raw = mean alpha, ``integration`` H_eff = exp(-(H_raw - 0.7)^2 / (2 0.15^2));
- ``kuramoto``: phases of the analytic signal, R(t) = |mean_c exp(i phi_c(t))|,
  metastability = std_t R (ddof 0), synchrony = mean_t R.

One run (series over epochs) gives, in ``run_metrics``: Hz, Mz (z-scores,
ddof 1), Psi = w_H Hz + (1 - w_H) Mz, its rolling volatility, r(Hz, Mz),
r(Psi, acc), the convergence trigger and the taxonomy state.

Nothing here makes up a number: an undefined value is NaN with a reason
(a series too short for two DFA scales, a constant channel, non-finite input).
Only numpy and scipy are imported; training workers use these kernels too.
Measured speed: ``bench/bench_dynamics.py`` (numbers in the README).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import hilbert

STATES = ("Stable Convergent", "Rigidly Synchronised", "Metastable High-Integration", "Transitional",
          "Partial Integration")


def pseudo_time(acts, labels, smooth_window=5, order="label", seed=0):
    """Turn one capture into the paper's pseudo-time series.

    Parameters
    ----------
    acts : array [P, C]
        Pooled activations, samples in probe order.
    labels : array [P]
        Class of each sample.
    smooth_window : int
        Width of the centred rolling mean; it shrinks at the edges
        (``min_periods=1``). 1 means no smoothing.
    order : {"label", "random"}
        "label" stable-sorts samples by label (the paper); "random" puts them
        in a random permutation instead (the order control). Per-class
        centring applies in both.
    seed : int
        Seed of the permutation when ``order="random"``.

    Returns
    -------
    X : array [C, P]
    """
    acts = np.asarray(acts, dtype=float)
    labels = np.asarray(labels)
    if acts.ndim != 2 or labels.ndim != 1 or len(labels) != acts.shape[0]:
        raise ValueError(f"acts must be [samples x channels] with one label per sample; got acts {acts.shape}, "
                         f"labels {labels.shape}")
    if smooth_window < 1:
        raise ValueError(f"smooth_window={smooth_window} must be >= 1 (1 = no smoothing)")
    if order not in ("label", "random"):
        raise ValueError(f"order={order!r}; allowed: 'label' (the paper) or 'random' (the order control)")
    idx = np.argsort(labels, kind="stable")
    x, lab = acts[idx], labels[idx]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    counts = np.diff(np.r_[starts, len(lab)])
    x = x - np.repeat(np.add.reduceat(x, starts, axis=0) / counts[:, None], counts, axis=0)
    if order == "random":
        x = x[np.random.default_rng(seed).permutation(len(lab))]
    if smooth_window > 1:
        n = x.shape[0]
        half_lo, half_hi = (smooth_window - 1) // 2, smooth_window // 2
        c = np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
        i = np.arange(n)
        lo, hi = np.clip(i - half_lo, 0, n), np.clip(i + half_hi + 1, 0, n)
        x = (c[hi] - c[lo]) / (hi - lo)[:, None]
    return x.T


def dfa_scales(n, min_scale=16, n_scales=10):
    """The DFA scales of a series of length ``n`` (SPEC rule).

    The distinct integers of ``logspace(log10 min_scale, log10 n/4, n_scales)``,
    truncated; when n/4 <= min_scale the top is n/2 instead. Empty when even
    n/2 is below ``min_scale``.
    """
    top = n / 4 if n / 4 > min_scale else n / 2
    if top < min_scale:
        return np.array([], dtype=int)
    return np.unique(np.logspace(np.log10(min_scale), np.log10(top), n_scales).astype(int))


def _detrend_basis(s: int, order: int) -> np.ndarray:
    """Orthonormal basis [s, order + 1] of polynomials of degree <= order on 0..s-1."""
    t = np.arange(s, dtype=float) / max(s - 1, 1)
    q, _ = np.linalg.qr(np.vander(t, order + 1, increasing=True))
    return q


def _fluctuation(Y: np.ndarray, s: int, order: int, overlap: bool, chunk: int = 1 << 22) -> np.ndarray:
    """F(s) per row of the profiles Y: mean over segments of the RMS detrending residual.

    Segments are the N // s non-overlapping windows from the start, or, with
    ``overlap``, every window of length s (step 1), processed in chunks so
    memory stays bounded. The least-squares fit is a projection on an
    orthonormal polynomial basis Q: the residual's sum of squares is
    |seg|^2 - |seg @ Q|^2 (disjoint segments), or the residual itself,
    seg - (seg @ Q) @ Q.T (overlapping windows).
    """
    q = _detrend_basis(s, order)
    c, n = Y.shape
    if not overlap:
        k = n // s
        segs = Y[:, :k * s].reshape(c, k, s)
        # residual sum of squares = |seg|^2 - |projection|^2 (q is orthonormal); one pass over the data
        rss = np.einsum("cks,cks->ck", segs, segs) - ((segs @ q) ** 2).sum(axis=2)
        return np.sqrt(np.clip(rss, 0, None) / s).mean(axis=1)
    windows = np.lib.stride_tricks.sliding_window_view(Y, s, axis=1)  # [c, n - s + 1, s], a view
    total = np.zeros(c)
    step = max(1, chunk // (c * s))
    for start in range(0, windows.shape[1], step):
        w = windows[:, start:start + step]
        res = w - (w @ q) @ q.T
        total += np.sqrt((res ** 2).mean(axis=2)).sum(axis=1)
    return total / windows.shape[1]


def dfa_exponents(X, min_scale=16, n_scales=10, order=1, overlap=False, return_reasons=False):
    """DFA exponent of every row of ``X``.

    Profile y = cumsum(x - mean x); for each scale s, the segments of y
    (N // s non-overlapping from the start, or every window with ``overlap``)
    are detrended by a least-squares polynomial of degree ``order``;
    F(s) = mean over segments of the residual RMS; alpha = least-squares slope
    of log F(s) on log s.

    Parameters
    ----------
    X : array [C, N] (or [N] for one series)
    min_scale, n_scales : see :func:`dfa_scales`.
    order : detrending polynomial degree (1 = DFA1, the paper).
    overlap : use every window (step 1) instead of disjoint segments.
    return_reasons : also return why each NaN is NaN.

    Returns
    -------
    alpha : array [C], NaN where undefined (fewer than two scales, a constant
        or non-finite row).
    reasons : list of str or None, with ``return_reasons``.
    """
    X = np.atleast_2d(np.asarray(X, dtype=float))
    c, n = X.shape
    alpha = np.full(c, np.nan)
    reasons = [None] * c
    scales = dfa_scales(n, min_scale, n_scales)
    finite = np.isfinite(X).all(axis=1)
    const = np.ptp(np.where(finite[:, None], X, 0), axis=1) == 0
    if len(scales) < 2:
        reasons = [f"series too short for DFA: N={n} gives {len(scales)} scale(s) from min_scale={min_scale}, "
                   "two are needed"] * c
        return (alpha, reasons) if return_reasons else alpha
    ok = finite & ~const
    for i in np.flatnonzero(~finite):
        reasons[i] = "non-finite values"
    for i in np.flatnonzero(finite & const):
        reasons[i] = "constant channel"
    if ok.any():
        Y = np.cumsum(X[ok] - X[ok].mean(axis=1, keepdims=True), axis=1)
        F = np.array([_fluctuation(Y, s, order, overlap) for s in scales])  # [scales, rows]
        # F(s) at rounding level (|residual| ~ 1e-8 |profile| in float64) means exactly polynomial
        # segments, e.g. a mostly-dead ReLU channel: log F would be noise, so alpha is undefined
        flat = (F <= 1e-6 * np.sqrt((Y ** 2).mean(axis=1))).any(axis=0)
        logF = np.log(np.where(flat, 1.0, F))
        logS = np.log(scales.astype(float))
        ls = logS - logS.mean()
        slope = (ls[:, None] * (logF - logF.mean(axis=0))).sum(axis=0) / (ls ** 2).sum()
        alpha[ok] = np.where(flat, np.nan, slope)
        for i in np.flatnonzero(ok)[flat]:
            reasons[i] = "zero fluctuation at some scale (piecewise-polynomial or mostly constant channel)"
    return (alpha, reasons) if return_reasons else alpha


def kuramoto(X):
    """(metastability, synchrony) of the rows of ``X`` as coupled oscillators.

    Each row minus its mean -> analytic signal (Hilbert transform, no
    band-pass) -> phase; R(t) = |mean over rows of exp(i phase)|;
    metastability = population std of R over t, synchrony = mean of R.
    NaN for non-finite input or fewer than two time points.
    """
    X = np.atleast_2d(np.asarray(X, dtype=float))
    if not np.isfinite(X).all() or X.shape[1] < 2:
        return math.nan, math.nan
    z = hilbert(X - X.mean(axis=1, keepdims=True), axis=1)
    mag = np.abs(z)
    unit = np.divide(z, mag, out=np.ones_like(z), where=mag > 0)  # exp(i phase); phase 0 where |z| = 0
    R = np.abs(unit.mean(axis=0))
    return float(R.std()), float(R.mean())


def integration(h_raw, h_opt=0.7, sigma_h=0.15):
    """H_eff = exp(-(H_raw - h_opt)^2 / (2 sigma_h^2)); NaN passes through."""
    return np.exp(-(np.asarray(h_raw, dtype=float) - h_opt) ** 2 / (2 * sigma_h ** 2))


def capture_metrics(acts, labels, *, smooth_window=5, order="label", seed=0, h_opt=0.7, sigma_h=0.15,
                    min_scale=16, n_scales=10, dfa_order=1, overlap=False):
    """All metrics of one capture.

    Returns
    -------
    dict with h_raw (mean DFA exponent over the channels that have one),
    h_eff, metastability, synchrony, n_channels, n_valid (channels with an
    exponent) and reason (why h_raw is NaN, else None).
    """
    X = pseudo_time(acts, labels, smooth_window, order, seed)
    alpha, reasons = dfa_exponents(X, min_scale, n_scales, dfa_order, overlap, return_reasons=True)
    valid = np.isfinite(alpha)
    h_raw = float(alpha[valid].mean()) if valid.any() else math.nan
    m, s = kuramoto(X)
    reason = None if valid.any() else (reasons[0] if reasons else "no channels")
    return {"h_raw": h_raw, "h_eff": float(integration(h_raw, h_opt, sigma_h)), "metastability": m, "synchrony": s,
            "n_channels": int(X.shape[0]), "n_valid": int(valid.sum()), "reason": reason}


def _z(x):
    ok = np.isfinite(x)
    out = np.full(len(x), np.nan)
    if ok.sum() >= 2 and np.std(x[ok], ddof=1) > 0:
        out[ok] = (x[ok] - x[ok].mean()) / np.std(x[ok], ddof=1)
    return out


def _pearson(a, b):
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return math.nan
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def psi_volatility(psi, window=3):
    """Rolling sample std (ddof 1) of the last ``window`` values at each index.

    NaN for the first ``window - 1`` indices and wherever any value of the
    window is missing.
    """
    psi = np.asarray(psi, dtype=float)
    if window < 2:
        raise ValueError(f"window={window} must be >= 2 for a sample std")
    out = np.full(len(psi), np.nan)
    if len(psi) >= window:
        out[window - 1:] = np.lib.stride_tricks.sliding_window_view(psi, window).std(axis=1, ddof=1)
    return out  # a NaN anywhere in a window makes its std NaN


def convergence_trigger(volatility, threshold=0.35, patience=3, epochs=None):
    """First epoch at which volatility has been below ``threshold`` for ``patience`` entries in a row.

    A missing value breaks the run. ``epochs`` labels the entries (default
    1, 2, ...). Returns None when the rule never fires.
    """
    epochs = np.arange(1, len(volatility) + 1) if epochs is None else np.asarray(epochs)
    run = 0
    for v, e in zip(volatility, epochs):
        run = run + 1 if np.isfinite(v) and v < threshold else 0
        if run >= patience:
            return int(e)
    return None


@dataclass(frozen=True)
class TaxonomyThresholds:
    """Thresholds of the taxonomy rule (SPEC), which reproduces the paper's nine rows."""

    r_stable: float = 0.0
    h_rigid: float = 0.1
    r_rigid: float = 0.8
    h_metastable: float = 0.9
    h_transitional: float = 0.8
    r_transitional: float = 0.5


def taxonomy_state(h_eff_mean, r_hz_mz, thresholds=None):
    """The training-dynamics state of a run, by the first rule that holds.

    r < 0: Stable Convergent; mean H_eff < 0.1 and r > 0.8: Rigidly
    Synchronised; mean H_eff >= 0.9: Metastable High-Integration;
    0.8 <= mean H_eff < 0.9 and r > 0.5: Transitional; else Partial Integration.
    """
    if not (np.isfinite(h_eff_mean) and np.isfinite(r_hz_mz)):
        raise ValueError(f"taxonomy_state needs finite h_eff_mean and r_hz_mz; got {h_eff_mean}, {r_hz_mz}")
    t = thresholds or TaxonomyThresholds()
    if r_hz_mz < t.r_stable:
        return STATES[0]
    if h_eff_mean < t.h_rigid and r_hz_mz > t.r_rigid:
        return STATES[1]
    if h_eff_mean >= t.h_metastable:
        return STATES[2]
    if t.h_transitional <= h_eff_mean < t.h_metastable and r_hz_mz > t.r_transitional:
        return STATES[3]
    return STATES[4]


def run_metrics(h_eff, metastability, val_acc=None, *, epochs=None, w_h=0.5, vol_window=3, vol_threshold=0.35,
                vol_patience=3, thresholds=None):
    """Run-level metrics from per-epoch H_eff, metastability and accuracy.

    Missing values stay missing: each z-score uses the values it has, Psi is
    missing where either part is, means and correlations skip missing pairs.
    A Pearson r needs three complete pairs and non-zero variance, else NaN;
    the state is None (with ``state_reason``) when r or mean H_eff is NaN.

    Returns
    -------
    dict with arrays hz, mz, psi, volatility and scalars h_eff_mean,
    metastability_mean, psi_mean, psi_std (ddof 1), r_hz_mz, r_psi_acc,
    trigger_epoch (int or None), state, state_reason.
    """
    h = np.asarray(h_eff, dtype=float)
    m = np.asarray(metastability, dtype=float)
    if h.ndim != 1 or h.shape != m.shape or len(h) == 0:
        raise ValueError(f"h_eff and metastability must be 1-D of the same, non-zero length; got {h.shape}, {m.shape}")
    hz, mz = _z(h), _z(m)
    psi = w_h * hz + (1 - w_h) * mz
    vol = psi_volatility(psi, vol_window)
    r = _pearson(hz, mz)
    acc = np.full(len(h), np.nan) if val_acc is None else np.asarray(val_acc, dtype=float)
    hm = float(np.nanmean(h)) if np.isfinite(h).any() else math.nan
    state = taxonomy_state(hm, r, thresholds) if np.isfinite(r) and np.isfinite(hm) else None
    state_reason = None if state else "r(Hz, Mz) undefined: fewer than 3 complete epochs or no variance"
    pf = psi[np.isfinite(psi)]
    return {"hz": hz, "mz": mz, "psi": psi, "volatility": vol, "h_eff_mean": hm,
            "metastability_mean": float(np.nanmean(m)) if np.isfinite(m).any() else math.nan,
            "psi_mean": float(pf.mean()) if len(pf) else math.nan,
            "psi_std": float(pf.std(ddof=1)) if len(pf) > 1 else math.nan,
            "r_hz_mz": r, "r_psi_acc": _pearson(psi, acc),
            "trigger_epoch": convergence_trigger(vol, vol_threshold, vol_patience, epochs), "state": state,
            "state_reason": state_reason}
