"""Metric kernels of the paper protocol: pure numpy/scipy, vectorised.

(integrator's interim version; replaced by the kernels module when it lands)
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import hilbert

STATES = ("Stable Convergent", "Rigidly Synchronised", "Metastable High-Integration", "Transitional",
          "Partial Integration")


def pseudo_time(acts, labels, smooth_window=5, order="label", seed=0):
    acts = np.asarray(acts, dtype=float)
    labels = np.asarray(labels)
    if acts.ndim != 2 or len(labels) != acts.shape[0]:
        raise ValueError(f"acts must be [samples x channels] with one label per sample; got {acts.shape}, {labels.shape}")
    if order == "label":
        idx = np.argsort(labels, kind="stable")
    elif order == "random":
        idx = np.random.default_rng(seed).permutation(len(labels))
    else:
        raise ValueError(f"order={order!r}; allowed: 'label', 'random'")
    x, lab = acts[idx], labels[idx]
    uniq, inv = np.unique(lab, return_inverse=True)
    sums = np.zeros((len(uniq), x.shape[1]))
    np.add.at(sums, inv, x)
    x = x - (sums / np.bincount(inv)[:, None])[inv]
    if smooth_window > 1:
        n = x.shape[0]
        half_lo, half_hi = (smooth_window - 1) // 2, smooth_window // 2
        c = np.vstack([np.zeros((1, x.shape[1])), np.cumsum(x, axis=0)])
        i = np.arange(n)
        lo, hi = np.clip(i - half_lo, 0, n), np.clip(i + half_hi + 1, 0, n)
        x = (c[hi] - c[lo]) / (hi - lo)[:, None]
    return x.T


def dfa_scales(n, min_scale=16, n_scales=10):
    top = n / 4 if n / 4 > min_scale else n / 2
    if top < min_scale:
        return np.array([], dtype=int)
    return np.unique(np.logspace(np.log10(min_scale), np.log10(top), n_scales).astype(int))


def dfa_exponents(X, min_scale=16, n_scales=10, order=1, overlap=False, return_reasons=False):
    X = np.atleast_2d(np.asarray(X, dtype=float))
    c, n = X.shape
    alpha = np.full(c, np.nan)
    reasons = [None] * c
    scales = dfa_scales(n, min_scale, n_scales)
    finite = np.isfinite(X).all(axis=1)
    const = np.ptp(np.where(finite[:, None], X, 0), axis=1) == 0
    if len(scales) < 2:
        reasons = [f"series too short: N={n} < {2 * min_scale} (two scales needed)"] * c
        return (alpha, reasons) if return_reasons else alpha
    ok = finite & ~const
    for i in np.flatnonzero(~finite):
        reasons[i] = "non-finite values"
    for i in np.flatnonzero(finite & const):
        reasons[i] = "constant channel"
    if ok.any():
        Y = np.cumsum(X[ok] - X[ok].mean(axis=1, keepdims=True), axis=1)
        logF = []
        for s in scales:
            t = np.arange(s, dtype=float)
            V = np.vander(t, order + 1)
            P = np.eye(s) - V @ np.linalg.pinv(V)
            if overlap:
                segs = np.lib.stride_tricks.sliding_window_view(Y, s, axis=1)
            else:
                k = n // s
                segs = Y[:, :k * s].reshape(Y.shape[0], k, s)
            res = segs @ P.T
            rms = np.sqrt((res ** 2).mean(axis=2))
            logF.append(np.log(rms.mean(axis=1)))
        logF = np.array(logF)
        logS = np.log(scales.astype(float))
        ls = logS - logS.mean()
        alpha[ok] = (ls[:, None] * (logF - logF.mean(axis=0))).sum(axis=0) / (ls ** 2).sum()
    return (alpha, reasons) if return_reasons else alpha


def kuramoto(X):
    X = np.atleast_2d(np.asarray(X, dtype=float))
    if not np.isfinite(X).all() or X.shape[1] < 2:
        return math.nan, math.nan
    phase = np.angle(hilbert(X - X.mean(axis=1, keepdims=True), axis=1))
    R = np.abs(np.exp(1j * phase).mean(axis=0))
    return float(R.std()), float(R.mean())


def integration(h_raw, h_opt=0.7, sigma_h=0.15):
    return np.exp(-(np.asarray(h_raw, dtype=float) - h_opt) ** 2 / (2 * sigma_h ** 2))


def capture_metrics(acts, labels, *, smooth_window=5, order="label", seed=0, h_opt=0.7, sigma_h=0.15,
                    min_scale=16, n_scales=10, dfa_order=1, overlap=False):
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
    psi = np.asarray(psi, dtype=float)
    out = np.full(len(psi), np.nan)
    for i in range(window - 1, len(psi)):
        w = psi[i - window + 1:i + 1]
        if np.isfinite(w).all():
            out[i] = np.std(w, ddof=1)
    return out


def convergence_trigger(volatility, threshold=0.35, patience=3, epochs=None):
    epochs = np.arange(1, len(volatility) + 1) if epochs is None else np.asarray(epochs)
    run = 0
    for v, e in zip(volatility, epochs):
        run = run + 1 if np.isfinite(v) and v < threshold else 0
        if run >= patience:
            return int(e)
    return None


@dataclass(frozen=True)
class TaxonomyThresholds:
    r_stable: float = 0.0
    h_rigid: float = 0.1
    r_rigid: float = 0.8
    h_metastable: float = 0.9
    h_transitional: float = 0.8
    r_transitional: float = 0.5


def taxonomy_state(h_eff_mean, r_hz_mz, thresholds=None):
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
    h = np.asarray(h_eff, dtype=float)
    m = np.asarray(metastability, dtype=float)
    hz, mz = _z(h), _z(m)
    psi = w_h * hz + (1 - w_h) * mz
    vol = psi_volatility(psi, vol_window)
    r = _pearson(hz, mz)
    acc = np.full(len(h), np.nan) if val_acc is None else np.asarray(val_acc, dtype=float)
    hm = float(np.nanmean(h)) if np.isfinite(h).any() else math.nan
    state = taxonomy_state(hm, r, thresholds) if np.isfinite(r) and np.isfinite(hm) else None
    pf = psi[np.isfinite(psi)]
    return {"hz": hz, "mz": mz, "psi": psi, "volatility": vol, "h_eff_mean": hm,
            "metastability_mean": float(np.nanmean(m)) if np.isfinite(m).any() else math.nan,
            "psi_mean": float(pf.mean()) if len(pf) else math.nan,
            "psi_std": float(pf.std(ddof=1)) if len(pf) > 1 else math.nan,
            "r_hz_mz": r, "r_psi_acc": _pearson(psi, acc),
            "trigger_epoch": convergence_trigger(vol, vol_threshold, vol_patience, epochs), "state": state}
