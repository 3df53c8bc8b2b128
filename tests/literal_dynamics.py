"""A literal, loop-based implementation of the paper protocol, written plainly
from SPEC.md to check the vectorised kernels against (and to time them in
bench/). Slow on purpose: one channel, one segment, one time point at a time,
np.polyfit for every fit, no shared code with ``dynstudy.analysis.kernels.dynamics``.
"""
from __future__ import annotations

import math

import numpy as np
from scipy.signal import hilbert


def pseudo_time(acts, labels, smooth_window, order="label", seed=0):
    """Stable sort by label, per-class centring, (optional random order), centred rolling mean."""
    acts = np.asarray(acts, dtype=float)
    labels = list(np.asarray(labels))
    idx = sorted(range(len(labels)), key=lambda i: labels[i])  # Python's sort is stable
    x = acts[idx].copy()
    lab = [labels[i] for i in idx]
    for c in set(lab):
        rows = [i for i in range(len(lab)) if lab[i] == c]
        x[rows] -= x[rows].mean(axis=0)
    n = len(lab)
    if order == "random":
        x = x[np.random.default_rng(seed).permutation(n)]
    out = np.empty_like(x)
    for t in range(n):
        # pandas rolling(w, center=True, min_periods=1): t - w // 2 .. t + (w - 1) // 2, cut at the edges
        lo = max(0, t - smooth_window // 2)
        hi = min(n, t + (smooth_window - 1) // 2 + 1)
        out[t] = x[lo:hi].mean(axis=0)
    return out.T


def scales(n, min_scale=16, n_scales=10, rule="authors"):
    """The authors' scales: max_win = N // 4 (N // 2 if that is <= min_scale), then their numpy expression.

    ``rule="rounded"``: distinct truncated integers of the geometric sequence
    min_scale .. N/4 (a float; N/2 if N/4 <= min_scale), exact integers kept.
    """
    if rule == "rounded":
        top = n / 4
        if top <= min_scale:
            top = n / 2
        if top < min_scale:
            return []
        values = [min_scale * (top / min_scale) ** (i / (n_scales - 1)) for i in range(n_scales)]
        return sorted(set(math.floor(v + 1e-9) for v in values))  # exact integers stay themselves
    max_win = n // 4
    if max_win <= min_scale:
        max_win = n // 2
    if max_win < min_scale:
        return []
    return [int(s) for s in np.unique(np.logspace(np.log10(min_scale), np.log10(max_win), n_scales).astype(int))]


def dfa(x, order=1, overlap=False, min_scale=16, n_scales=10, rule="authors"):
    x = np.asarray(x, dtype=float)
    n = len(x)
    y = np.cumsum(x - x.mean())
    sc = scales(n, min_scale, n_scales, rule)
    if len(sc) < 2:
        return math.nan
    logs, logf = [], []
    for s in sc:
        starts = range(n - s + 1) if overlap else [k * s for k in range(n // s)]
        rms = []
        for start in starts:
            seg = y[start:start + s]
            t = np.arange(s)
            coef = np.polyfit(t, seg, order)
            rms.append(math.sqrt(np.mean((seg - np.polyval(coef, t)) ** 2)))
        f = np.mean(rms)
        if f <= 1e-10 * math.sqrt(np.mean(y ** 2)):  # F(s) at rounding level (a constant channel): undefined
            return math.nan
        logs.append(math.log(s))
        logf.append(math.log(f))
    return np.polyfit(logs, logf, 1)[0]


def kuramoto(X, compat="dynstudy"):
    """(metastability, synchrony); channels without variation have no phase and are left out
    (``compat="authors"``: they are a phase locked at 0)."""
    X = np.asarray(X, dtype=float)
    if not np.isfinite(X).all():
        return math.nan, math.nan
    phases = []
    for row in X:
        if row.max() > row.min():
            phases.append(np.angle(hilbert(row - row.mean())))
        elif compat == "authors":
            phases.append(np.zeros(len(row)))
    if not phases:
        return math.nan, math.nan
    R = []
    for t in range(X.shape[1]):
        R.append(abs(sum(complex(math.cos(p[t]), math.sin(p[t])) for p in phases) / len(phases)))
    return float(np.std(R)), float(np.mean(R))


def capture_metrics(acts, labels, smooth_window=5, order="label", seed=0, compat="dynstudy"):
    X = pseudo_time(acts, labels, smooth_window, order, seed)
    alphas = [dfa(row) for row in X]
    if compat == "authors":
        h_raw = sum(alphas) / len(alphas)  # NaN as soon as one channel has no exponent
    else:
        present = [a for a in alphas if math.isfinite(a)]
        h_raw = sum(present) / len(present) if present else math.nan
    h_eff = math.exp(-(h_raw - 0.7) ** 2 / (2 * 0.15 ** 2))
    m, s = kuramoto(X, compat)
    return {"h_raw": h_raw, "h_eff": h_eff, "metastability": m, "synchrony": s}


def zscore(values):
    present = [v for v in values if math.isfinite(v)]
    if len(present) < 2 or max(present) == min(present):  # no spread: no z-score
        return [math.nan] * len(values)
    mean = sum(present) / len(present)
    sd = math.sqrt(sum((v - mean) ** 2 for v in present) / (len(present) - 1))
    return [(v - mean) / sd if math.isfinite(v) else math.nan for v in values]


def pearson(a, b):
    pairs = [(u, v) for u, v in zip(a, b) if math.isfinite(u) and math.isfinite(v)]
    if len(pairs) < 3:
        return math.nan
    mu = sum(u for u, _ in pairs) / len(pairs)
    mv = sum(v for _, v in pairs) / len(pairs)
    suv = sum((u - mu) * (v - mv) for u, v in pairs)
    suu = sum((u - mu) ** 2 for u, _ in pairs)
    svv = sum((v - mv) ** 2 for _, v in pairs)
    if suu == 0 or svv == 0:
        return math.nan
    return suv / math.sqrt(suu * svv)


def run_metrics(h_eff, metastability, val_acc, w_h=0.5, window=3, threshold=0.35, patience=3):
    hz, mz = zscore(list(h_eff)), zscore(list(metastability))
    psi = [w_h * a + (1 - w_h) * b for a, b in zip(hz, mz)]  # NaN if either is NaN
    vol = []
    for e in range(len(psi)):
        last = psi[e - window + 1:e + 1] if e >= window - 1 else []
        if len(last) < window or not all(math.isfinite(v) for v in last):
            vol.append(math.nan)
            continue
        mean = sum(last) / window
        vol.append(math.sqrt(sum((v - mean) ** 2 for v in last) / (window - 1)))
    trigger, run = None, 0
    for e, v in enumerate(vol):
        run = run + 1 if math.isfinite(v) and v < threshold else 0
        if run >= patience:
            trigger = e + 1
            break
    present = [v for v in psi if math.isfinite(v)]
    mean = sum(present) / len(present) if present else math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in present) / (len(present) - 1)) if len(present) > 1 else math.nan
    return {"hz": hz, "mz": mz, "psi": psi, "volatility": vol, "psi_mean": mean, "psi_std": std,
            "r_hz_mz": pearson(hz, mz), "r_psi_acc": pearson(psi, list(val_acc)), "trigger_epoch": trigger}
