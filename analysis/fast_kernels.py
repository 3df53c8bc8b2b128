"""Per-channel DFA exponents and Kuramoto phasors, as in :mod:`analysis.dynamics`, with work reused.

The definitions are those of :func:`analysis.dynamics.dfa_exponents` (DFA of
the paper: forward segments, least-squares detrending, the authors' scales)
and :func:`analysis.dynamics.kuramoto`; only the arithmetic is arranged for
``dynstudy analyze``, which computes them for many captures of one probe size:

- the scales and their orthonormal detrending bases are computed once per
  (N, scales, order) and cached (the reference recomputes a QR
  factorisation per call and scale); the residual is formed explicitly as in
  the reference (never |seg|^2 - |Q^T seg|^2, which loses digits on steep profiles);
- the Kuramoto phasors are normalised in place and summed over rows, and a
  caller may keep each channel's phasor to sum any subset of channels later
  (the channel-draw control) without recomputing a transform.

Results agree with the reference to rounding (tests/test_fast_path.py checks
every output table to 1e-12). Only numpy and scipy are imported.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from scipy import fft

from analysis import dynamics

@lru_cache(maxsize=64)
def dfa_plan(n: int, min_scale: int, n_scales: int, order: int = 1):
    """(scales, centred log scales, orthonormal detrending basis Q [s, order + 1] per scale) for length ``n``.

    Cached: the reference recomputes the same QR factorisation at every call
    and scale. Arrays are read-only, since the cache shares them.
    """
    scales = dynamics.dfa_scales(n, min_scale, n_scales, "authors")
    ls = np.log(scales.astype(float))
    ls -= ls.mean()
    bases = tuple(dynamics._detrend_basis(int(s), order) for s in scales)
    for a in (scales, ls, *bases):
        a.setflags(write=False)
    return scales, ls, bases


def dfa_exponents(X, min_scale=16, n_scales=10):
    """DFA exponent and reason of every row of ``X`` [C, N]: :func:`analysis.dynamics.dfa_exponents`
    with ``order=1``, forward segments, the authors' scales and ``return_reasons=True``.

    Returns
    -------
    (alpha [C], reasons: list of str or None)
    """
    X = np.asarray(X, dtype=float)
    c, n = X.shape
    scales, ls, bases = dfa_plan(n, min_scale, n_scales)
    if len(scales) < 2:  # undefined everywhere: the reference says why
        return dynamics.dfa_exponents(X, min_scale, n_scales, return_reasons=True)
    alpha = np.full(c, np.nan)
    finite = np.isfinite(X).all(axis=1)
    const = finite & (X == X[:, :1]).all(axis=1)
    ok = np.flatnonzero(finite & ~const)
    flat = np.zeros(c, dtype=bool)
    step = dynamics._rows_per_chunk(n)
    profiles = np.empty((min(step, len(ok)), n))
    work = np.empty(len(profiles) * (n + 2 * (n // min_scale)))  # c k (s + 2) <= c (n + 2 n // min_scale)
    for start in range(0, len(ok), step):
        rows = ok[start:start + step]
        Y = np.take(X, rows, axis=0, out=profiles[:len(rows)])
        Y -= Y.mean(axis=1, keepdims=True)
        np.cumsum(Y, axis=1, out=Y)
        F = np.array([dynamics._fluctuation(Y, q, False, work) for q in bases])  # [scales, rows]
        tiny = (F <= 1e-10 * np.sqrt(np.einsum("cn,cn->c", Y, Y) / n)).any(axis=0)
        logF = np.log(np.where(tiny, 1.0, F))
        alpha[rows] = np.where(tiny, np.nan, ls @ (logF - logF.mean(axis=0)) / (ls @ ls))
        flat[rows] = tiny
    reasons = np.select([~finite, const, flat], ["non-finite values", "constant channel", "zero fluctuation at some "
                                                 "scale (piecewise-polynomial or mostly constant channel)"], "")
    return alpha, [r or None for r in reasons.tolist()]


def phasors(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [C, N] of the analytic-signal phase of each row of ``X`` minus its mean.

    As :func:`analysis.dynamics.kuramoto`: Hilbert transform by the spectrum
    -i X(f); where the analytic signal is exactly 0 the phase is 0.
    """
    spec = fft.rfft(X, axis=1)
    spec *= -1j
    im = fft.irfft(spec, n=X.shape[1], axis=1)
    re = X - X.mean(axis=1, keepdims=True)
    h = np.multiply(re, re)
    h += np.square(im)
    zero = h == 0
    if zero.any():
        re[zero], h[zero] = 1.0, 1.0
    np.sqrt(h, out=h)
    np.divide(1.0, h, out=h)
    re *= h
    im *= h
    return re, im


def kuramoto_sums(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sum of cos [N], sum of sin [N], rows that vary [C] bool) over the non-constant rows of ``X``.

    Rows are transformed in chunks of about 1 MiB.
    """
    n = X.shape[1]
    live = ~(X == X[:, :1]).all(axis=1)
    keep = np.flatnonzero(live)
    cos, sin = np.zeros(n), np.zeros(n)
    step = dynamics._rows_per_chunk(n)
    for start in range(0, len(keep), step):
        re, im = phasors(X[keep[start:start + step]])
        cos += re.sum(axis=0)
        sin += im.sum(axis=0)
    return cos, sin, live


def order_parameter(cos: np.ndarray, sin: np.ndarray, n_live: int, n_dead: int, compat: str) -> tuple[float, float]:
    """(metastability, synchrony) from phasor sums over ``n_live`` varying rows and ``n_dead`` constant ones.

    ``compat="authors"`` counts a constant row as a phase locked at 0 (cos 1, sin 0); "dynstudy" leaves it out.
    """
    dead = n_dead if compat == "authors" else 0
    if n_live + dead == 0:
        return math.nan, math.nan
    R = np.sqrt(np.square(cos + dead) + sin * sin) / (n_live + dead)
    return float(R.std()), float(R.mean())


def kuramoto(X, compat="dynstudy") -> tuple[float, float]:
    """(metastability, synchrony) of the rows of ``X`` [C, N]: :func:`analysis.dynamics.kuramoto`."""
    X = np.asarray(X, dtype=float)
    if X.shape[1] < 2 or not np.isfinite(X).all():
        return math.nan, math.nan
    cos, sin, live = kuramoto_sums(X)
    n_live = int(live.sum())
    return order_parameter(cos, sin, n_live, len(live) - n_live, compat)
