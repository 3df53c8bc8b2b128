"""A literal, loop-based implementation of the paper protocol, written plainly
from SPEC.md to check the vectorised kernels against (and to time them in
bench/). Slow on purpose: one channel, one segment, one time point at a time.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.signal import hilbert


def pseudo_time(acts, labels, smooth_window):
    acts = np.asarray(acts, dtype=float)
    order = sorted(range(len(labels)), key=lambda i: labels[i])  # Python's sort is stable
    x = acts[order].copy()
    lab = [labels[i] for i in order]
    for c in set(lab):
        rows = [i for i in range(len(lab)) if lab[i] == c]
        x[rows] -= x[rows].mean(axis=0)
    n = len(lab)
    out = np.empty_like(x)
    for t in range(n):
        lo = max(0, t - (smooth_window - 1) // 2)
        hi = min(n, t + smooth_window // 2 + 1)
        out[t] = x[lo:hi].mean(axis=0)
    return out.T


def scales(n):
    top = n / 4
    if top <= 16:
        top = n / 2
    return sorted(set(int(v) for v in np.logspace(math.log10(16), math.log10(top), 10)))


def dfa(x):
    x = np.asarray(x, dtype=float)
    n = len(x)
    y = np.cumsum(x - x.mean())
    sc = scales(n)
    if len(sc) < 2:
        return math.nan
    logs, logf = [], []
    for s in sc:
        rms = []
        for k in range(n // s):
            seg = y[k * s:(k + 1) * s]
            t = np.arange(s)
            coef = np.polyfit(t, seg, 1)
            rms.append(math.sqrt(np.mean((seg - np.polyval(coef, t)) ** 2)))
        logs.append(math.log(s))
        logf.append(math.log(np.mean(rms)))
    return np.polyfit(logs, logf, 1)[0]


def kuramoto(X):
    phases = [np.angle(hilbert(row - row.mean())) for row in X]
    R = []
    for t in range(X.shape[1]):
        R.append(abs(sum(complex(math.cos(p[t]), math.sin(p[t])) for p in phases) / len(phases)))
    return float(np.std(R)), float(np.mean(R))


def capture_metrics(acts, labels, smooth_window=5):
    X = pseudo_time(acts, labels, smooth_window)
    alphas = [dfa(row) for row in X]
    h_raw = float(np.mean(alphas))
    h_eff = math.exp(-(h_raw - 0.7) ** 2 / (2 * 0.15 ** 2))
    m, s = kuramoto(X)
    return {"h_raw": h_raw, "h_eff": h_eff, "metastability": m, "synchrony": s}
