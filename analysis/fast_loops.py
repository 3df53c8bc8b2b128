"""The innermost loops of ``dynstudy analyze``, compiled with numba.

:mod:`analysis.fast_kernels` and :mod:`analysis.capture_read` call these; the
definitions are those of :mod:`analysis.dynamics` (and of its literal
reference, tests/literal_dynamics.py), only fused into one pass each:

- :func:`dfa_rows`: per row, the profile, then for each scale and each of the
  N // s disjoint segments from the start the least-squares line (segment
  mean and slope on centred time) with the residual formed explicitly, point
  by point, as the reference does (never |seg|^2 - |fit|^2, which loses digits
  on steep profiles); F(s) = mean over segments of the residual RMS, alpha =
  slope of log F on log s. One row (16 KiB at N = 2048) stays in the
  first-level cache over all its scales.
- :func:`phase_sums`, :func:`normalise_phasors`: cos and sin of the phase of
  the analytic signal (re / |z|, im / |z|; (1, im) where z is exactly 0),
  summed over rows or kept per row.
- :func:`centre_rows`, :func:`rolling_rows`: the pseudo-time series (label
  order, per-class centring, the order control's permutation, pandas' centred
  rolling mean with a running sum as scipy's uniform_filter1d keeps it).
- :func:`rows_sorted`, :func:`grid_problem`: the reader's checks that a capture
  file's rows are in (stage, rank, sample) order and hold one value per
  channel and sample.

Loops are compiled with ``fastmath={"reassoc", "contract", "nsz", "arcp"}`` so
that sums vectorise: they add in another order, may fuse multiply-adds and
divide by reciprocals, which changes results at rounding level only
(tests/test_fast_path.py checks every output table against the reference path
to 1e-12). No flag assumes away NaN or infinity: non-finite rows are found and
named. Compiled code is cached next to this file (or in numba's user cache
where that is not writable), so a process compiles once per install.
"""
from __future__ import annotations

import math

import numba
import numpy as np

_FLAGS = {"reassoc", "contract", "nsz", "arcp"}


#: Row status codes of :func:`dfa_rows`.
OK, NON_FINITE, CONSTANT, FLAT = 0, 1, 2, 3


@numba.njit(cache=True, fastmath=_FLAGS, nogil=True)
def _fluctuation(y: np.ndarray, s: int) -> float:
    """F(s) of one profile ``y``: mean over its len(y) // s disjoint segments of the residual RMS about each
    segment's least-squares line (fitted on the centred times j - (s - 1) / 2), the residual formed point
    by point."""
    k = len(y) // s
    mid = (s - 1) / 2.0
    stt = s * (s * s - 1) / 12.0  # sum of (j - mid)^2
    total = 0.0
    for seg in range(k):
        a = seg * s
        s0 = 0.0
        s1 = 0.0
        for j in range(s):
            v = y[a + j]
            s0 += v
            s1 += (j - mid) * v
        mu = s0 / s
        b = s1 / stt
        r2 = 0.0
        for j in range(s):
            r = y[a + j] - mu - b * (j - mid)
            r2 += r * r
        total += math.sqrt(r2 / s)
    return total / k


@numba.njit(cache=True, fastmath=_FLAGS, nogil=True)
def dfa_rows(X: np.ndarray, scales: np.ndarray, ls: np.ndarray, tiny: float) -> tuple[np.ndarray, np.ndarray]:
    """(alpha [C], status [C]) of DFA1 on every row of ``X`` [C, N] at ``scales``.

    Per row: profile y = cumsum(x - mean x); F(s) per scale (:func:`_fluctuation`);
    alpha = slope of log F on log s (``ls``: the centred log scales). Status
    (alpha NaN unless OK): NON_FINITE, CONSTANT (every value equal), FLAT (F(s)
    <= ``tiny`` x RMS of the profile at some scale: exactly polynomial segments,
    where log F would be rounding noise).
    """
    c, n = X.shape
    m = len(scales)
    alpha = np.full(c, np.nan)
    status = np.zeros(c, np.int8)
    y = np.empty(n)
    logF = np.empty(m)
    lss = 0.0
    for i in range(m):
        lss += ls[i] * ls[i]
    for ch in range(c):
        row = X[ch]
        total = 0.0
        first = row[0]
        differ = 0
        for j in range(n):
            v = row[j]
            total += v
            differ += v != first
        if not math.isfinite(total):  # an infinity or NaN in the row (or a sum that overflows)
            for j in range(n):
                if not math.isfinite(row[j]):
                    status[ch] = NON_FINITE
                    break
            if status[ch] == NON_FINITE:
                continue
        if differ == 0:
            status[ch] = CONSTANT
            continue
        mean = total / n
        acc = 0.0
        sq = 0.0
        for j in range(n):
            acc += row[j] - mean
            y[j] = acc
            sq += acc * acc
        floor = tiny * math.sqrt(sq / n)
        flat = False
        for i in range(m):
            f = _fluctuation(y, scales[i])
            if f <= floor:
                flat = True
                break
            logF[i] = math.log(f)
        if flat:
            status[ch] = FLAT
            continue
        mlog = 0.0
        for i in range(m):
            mlog += logF[i]
        mlog /= m
        slope = 0.0
        for i in range(m):
            slope += ls[i] * (logF[i] - mlog)
        alpha[ch] = slope / lss
    return alpha, status


@numba.njit(cache=True, fastmath=_FLAGS, nogil=True)
def phase_sums(X: np.ndarray, im: np.ndarray, rows: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> None:
    """Add, over the rows ``rows`` of the analytic signals z = (X - row mean) + i im [R, N], re / |z| to ``cos``
    [N] and im / |z| to ``sin`` [N] (the phasor; (1, im) where z is exactly 0, as
    :func:`analysis.dynamics.kuramoto` defines it)."""
    n = X.shape[1]
    for r in rows:
        mean = 0.0
        for t in range(n):
            mean += X[r, t]
        mean /= n
        for t in range(n):
            a = X[r, t] - mean
            b = im[r, t]
            h = a * a + b * b
            zero = h == 0.0
            inv = 1.0 / math.sqrt(1.0 if zero else h)
            cos[t] += (1.0 if zero else a) * inv
            sin[t] += b * inv


@numba.njit(cache=True, fastmath=_FLAGS, nogil=True)
def normalise_phasors(re: np.ndarray, im: np.ndarray) -> None:
    """Replace ``re`` and ``im`` [R, N] in place by cos and sin of the phase (re / |z|, im / |z|; (1, im) at z = 0)."""
    rows, n = re.shape
    for r in range(rows):
        for t in range(n):
            a = re[r, t]
            b = im[r, t]
            h = a * a + b * b
            zero = h == 0.0
            inv = 1.0 / math.sqrt(1.0 if zero else h)
            re[r, t] = (1.0 if zero else a) * inv
            im[r, t] = b * inv


@numba.njit(cache=True, fastmath=_FLAGS, nogil=True)
def centre_rows(V: np.ndarray, order: np.ndarray, starts: np.ndarray, rounding: float, out: np.ndarray) -> None:
    """``out`` [C, P] = each row of ``V`` [C, P] taken in the sample order ``order``, minus the mean of each
    class (the runs of samples from ``starts``, with len(order) appended as the end); a row whose centred
    values are all within ``rounding`` x its largest raw |value| becomes exactly zero (no within-class
    variation: the metrics then see a constant channel), as :func:`analysis.dynamics.class_centred`."""
    c, p = V.shape
    g = len(starts)
    for r in range(c):
        peak = 0.0
        for t in range(p):
            peak = max(peak, abs(V[r, t]))
        for t in range(p):
            out[r, t] = V[r, order[t]]
        spread = 0.0
        for k in range(g):
            a = starts[k]
            b = starts[k + 1] if k + 1 < g else p
            total = 0.0
            for t in range(a, b):
                total += out[r, t]
            mean = total / (b - a)
            for t in range(a, b):
                out[r, t] -= mean
                spread = max(spread, abs(out[r, t]))
        if spread <= rounding * peak:
            out[r, :] = 0.0


@numba.njit(cache=True, fastmath=_FLAGS, nogil=True)
def rolling_rows(x: np.ndarray, window: int, perm: np.ndarray, out: np.ndarray) -> None:
    """``out`` [C, N] = the centred rolling mean of width ``window`` of each row of ``x`` [C, N] with its time
    points first taken in the order ``perm`` (an empty ``perm``: kept in order).

    pandas ``rolling(window, center=True, min_periods=1).mean()``: at t the mean
    of t - window // 2 .. t + (window - 1) // 2, shrinking at the edges. The
    window sum is a running sum, as scipy's uniform_filter1d (the reference) keeps it.
    """
    c, n = x.shape
    before = window // 2
    after = (window - 1) // 2
    row = np.empty(n)
    for r in range(c):
        if len(perm):
            for t in range(n):
                row[t] = x[r, perm[t]]
        else:
            for t in range(n):
                row[t] = x[r, t]
        total = 0.0
        for t in range(min(after, n)):
            total += row[t]
        for t in range(n):
            if t + after < n:
                total += row[t + after]
            if t - before - 1 >= 0:
                total -= row[t - before - 1]
            out[r, t] = total / (min(t + after + 1, n) - max(t - before, 0))


@numba.njit(cache=True, nogil=True)
def rows_sorted(codes: np.ndarray, rank: np.ndarray, sample: np.ndarray) -> bool:
    """True when the rows are sorted by (codes, rank, sample), in one pass."""
    for i in range(1, len(codes)):
        if codes[i] != codes[i - 1]:
            if codes[i] < codes[i - 1]:
                return False
        elif rank[i] != rank[i - 1]:
            if rank[i] < rank[i - 1]:
                return False
        elif sample[i] < sample[i - 1]:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def grid_problem(codes: np.ndarray, rank: np.ndarray, sample: np.ndarray, label: np.ndarray, n: int) -> int:
    """-1 when rows sorted by (codes, rank, sample) hold every sample 0 .. n - 1 once per channel with one
    label per sample; else the first row that breaks it."""
    for i in range(len(codes)):
        j = i % n
        if sample[i] != j or label[i] != label[j]:
            return i
        if j and (codes[i] != codes[i - 1] or rank[i] != rank[i - 1]):
            return i
    return -1
