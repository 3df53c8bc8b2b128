"""The innermost loops of ``dynstudy analyze``, compiled with numba.

:mod:`dynstudy.analysis.kernels.fast_kernels` and :mod:`dynstudy.analysis.run.long_format` call these; the
definitions are those of :mod:`dynstudy.analysis.kernels.dynamics` (and of its literal
reference, tests/literal_dynamics.py), only fused into one pass each:

- :func:`dfa_rows`: per row, the profile, then for each scale and each of the
  N // s disjoint segments from the start the least-squares line (segment
  mean and slope on centred time) with the residual formed explicitly, point
  by point, as the reference does (never |seg|^2 - |fit|^2, which loses digits
  on steep profiles); F(s) = mean over segments of the residual RMS, alpha =
  slope of log F on log s. Four rows' profiles are interleaved ([N, 4], 64
  KiB at N = 2048, in the second-level cache over all their scales) and fitted
  side by side, one row per vector lane, so that no segment ends in a
  horizontal sum.
- :func:`phase_sums`, :func:`normalise_phasors`: cos and sin of the phase of
  the analytic signal (re / |z|, im / |z|; (1, im) where z is exactly 0),
  summed over rows or kept per row.
- :func:`centre_rows`, :func:`rolling_rows`: the pseudo-time series (label
  order, per-class centring, the order control's permutation, pandas' centred
  rolling mean with a running sum as scipy's uniform_filter1d keeps it).
- :func:`rows_sorted`, :func:`grid_problem`: the long-format decoder's checks
  (:mod:`dynstudy.analysis.run.long_format`) that rows are in (capture, stage,
  rank, sample) order and hold one value per channel and sample of each
  capture, with the same channels in every capture.

Loops are compiled with ``fastmath={"reassoc", "contract", "nsz", "arcp"}`` so
that sums vectorise: they add in another order, may fuse multiply-adds and
divide by reciprocals, which changes results at rounding level only
(tests/test_fast_path.py checks every output table against the reference path
to 1e-12). No flag assumes away NaN or infinity: non-finite rows are found and
named. Loops index row and segment slices with indices from ``range()``:
numba then knows them non-negative and drops its negative-index wraparound,
which otherwise keeps the loops from vectorising (2x on the DFA here). Compiled
code is cached next to this file (or in numba's user cache
where that is not writable), so a process compiles once per install.
"""
from __future__ import annotations

import math

import numba
import numpy as np

_FLAGS = {"reassoc", "contract", "nsz", "arcp"}


#: Row status codes of :func:`dfa_rows`.
OK, NON_FINITE, CONSTANT, FLAT = 0, 1, 2, 3


#: Rows whose DFA :func:`dfa_rows` runs side by side, one per vector lane (four doubles: AVX2). The lanes are
#: written out in :func:`_lane_fluctuations`, which a change here must follow.
LANES = 4


@numba.njit(cache=True, fastmath=_FLAGS, nogil=True)
def _profile(row: np.ndarray, y: np.ndarray, tiny: float) -> tuple[int, float]:
    """(status, floor) of one row; for an OK row its profile cumsum(row - mean) is written to ``y`` and floor
    is ``tiny`` x the profile's RMS (an F(s) at or below it means exactly polynomial segments)."""
    n = len(row)
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
                return NON_FINITE, 0.0
    if differ == 0:
        return CONSTANT, 0.0
    mean = total / n
    acc = 0.0
    sq = 0.0
    for j in range(n):
        acc += row[j] - mean
        y[j] = acc
        sq += acc * acc
    return OK, tiny * math.sqrt(sq / n)


@numba.njit(cache=True, fastmath=_FLAGS, nogil=True)
def _lane_fluctuations(Y: np.ndarray, s: int) -> tuple[float, float, float, float]:
    """F(s) of each of the :data:`LANES` profiles in the columns of ``Y`` [N, 4]: the mean over the N // s
    disjoint segments from the start of the residual RMS about each segment's least-squares line (fitted on
    the centred times j - (s - 1) / 2), the residual formed point by point.

    The four rows' sums are independent, so they fill one vector register per step instead of each segment
    ending in a horizontal sum (2.1 ms against 2.9 ms for 128 x 2048 values, one row at a time with the same
    slices, in a scratch benchmark of CPU time here).
    """
    k = Y.shape[0] // s
    mid = (s - 1) / 2.0
    stt = s * (s * s - 1) / 12.0  # sum of (j - mid)^2
    f0 = f1 = f2 = f3 = 0.0
    for seg in range(k):
        W = Y[seg * s:(seg + 1) * s]  # a slice: indices from range() need no negative-index wraparound
        m0 = m1 = m2 = m3 = 0.0
        b0 = b1 = b2 = b3 = 0.0
        tj = -mid  # j - mid, exactly (half-integers)
        for j in range(s):
            v0, v1, v2, v3 = W[j, 0], W[j, 1], W[j, 2], W[j, 3]
            m0 += v0
            m1 += v1
            m2 += v2
            m3 += v3
            b0 += tj * v0
            b1 += tj * v1
            b2 += tj * v2
            b3 += tj * v3
            tj += 1.0
        m0, m1, m2, m3 = m0 / s, m1 / s, m2 / s, m3 / s
        b0, b1, b2, b3 = b0 / stt, b1 / stt, b2 / stt, b3 / stt
        r0 = r1 = r2 = r3 = 0.0
        tj = -mid
        for j in range(s):
            e0 = W[j, 0] - m0 - b0 * tj
            e1 = W[j, 1] - m1 - b1 * tj
            e2 = W[j, 2] - m2 - b2 * tj
            e3 = W[j, 3] - m3 - b3 * tj
            r0 += e0 * e0
            r1 += e1 * e1
            r2 += e2 * e2
            r3 += e3 * e3
            tj += 1.0
        f0 += math.sqrt(r0 / s)
        f1 += math.sqrt(r1 / s)
        f2 += math.sqrt(r2 / s)
        f3 += math.sqrt(r3 / s)
    return f0 / k, f1 / k, f2 / k, f3 / k


@numba.njit(cache=True, fastmath=_FLAGS, nogil=True)
def dfa_rows(X: np.ndarray, scales: np.ndarray, ls: np.ndarray, tiny: float) -> tuple[np.ndarray, np.ndarray,
                                                                                     np.ndarray]:
    """(alpha [C], status [C], log F [S, C]) of DFA1 on every row of ``X`` [C, N] at ``scales``.

    Per row: profile y = cumsum(x - mean x) (:func:`_profile`); F(s) per scale
    (:func:`_lane_fluctuations`, :data:`LANES` rows at a time); alpha = slope
    of log F on log s (``ls``: the centred log scales). Status (alpha NaN
    unless OK): NON_FINITE, CONSTANT (every value equal), FLAT (F(s) <=
    ``tiny`` x RMS of the profile at some scale: exactly polynomial segments,
    where log F would be rounding noise). log F is NaN in the columns of rows that are not OK.
    """
    c, n = X.shape
    m = len(scales)
    alpha = np.full(c, np.nan)
    log_f = np.full((m, c), np.nan)
    status = np.zeros(c, np.int8)
    Y = np.zeros((n, LANES))
    F = np.empty((m, LANES))
    floor = np.zeros(LANES)
    rows = np.zeros(LANES, np.int64)
    lss = 0.0
    for i in range(m):
        lss += ls[i] * ls[i]
    q = 0
    for ch in range(c):
        code, floor[q] = _profile(X[ch], Y[:, q], tiny)
        status[ch] = code
        if code == OK:
            rows[q] = ch
            q += 1
        if q == 0 or (q < LANES and ch < c - 1):
            continue
        Y[:, q:] = 0.0  # lanes left over at the end: zero profiles, results unused
        for i in range(m):
            F[i, 0], F[i, 1], F[i, 2], F[i, 3] = _lane_fluctuations(Y, scales[i])
        for lane in range(q):
            flat = False
            mlog = 0.0
            for i in range(m):
                flat = flat or F[i, lane] <= floor[lane]
                mlog += math.log(F[i, lane])
            if flat:
                status[rows[lane]] = FLAT
                continue
            mlog /= m
            slope = 0.0
            for i in range(m):
                lf = math.log(F[i, lane])
                log_f[i, rows[lane]] = lf
                slope += ls[i] * (lf - mlog)
            alpha[rows[lane]] = slope / lss
        q = 0
    return alpha, status, log_f


@numba.njit(cache=True, fastmath=_FLAGS, nogil=True)
def phase_sums(X: np.ndarray, im: np.ndarray, rows: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> None:
    """Add, over the rows ``rows`` of the analytic signals z = (X - row mean) + i im [R, N], re / |z| to ``cos``
    [N] and im / |z| to ``sin`` [N] (the phasor; (1, im) where z is exactly 0, as
    :func:`dynstudy.analysis.kernels.dynamics.kuramoto` defines it)."""
    n = X.shape[1]
    for r in rows:
        x = X[r]  # row slices: indices from range() need no negative-index wraparound, so the loops vectorise
        h_row = im[r]
        mean = 0.0
        for t in range(n):
            mean += x[t]
        mean /= n
        for t in range(n):
            a = x[t] - mean
            b = h_row[t]
            h = a * a + b * b
            inv = 1.0 / math.sqrt(h) if h != 0.0 else 1.0  # written so, the loop vectorises (3.6x)
            cos[t] += a * inv if h != 0.0 else 1.0
            sin[t] += b * inv


@numba.njit(cache=True, fastmath=_FLAGS, nogil=True)
def normalise_phasors(re: np.ndarray, im: np.ndarray) -> None:
    """Replace ``re`` and ``im`` [R, N] in place by cos and sin of the phase (re / |z|, im / |z|; (1, im) at z = 0)."""
    rows, n = re.shape
    for r in range(rows):
        x = re[r]
        y = im[r]
        for t in range(n):
            a = x[t]
            b = y[t]
            h = a * a + b * b
            inv = 1.0 / math.sqrt(h) if h != 0.0 else 1.0
            x[t] = a * inv if h != 0.0 else 1.0
            y[t] = b * inv


@numba.njit(cache=True, fastmath=_FLAGS, nogil=True)
def centre_rows(V: np.ndarray, order: np.ndarray, starts: np.ndarray, rounding: float, out: np.ndarray) -> None:
    """``out`` [C, P] = each row of ``V`` [C, P] taken in the sample order ``order``, minus the mean of each
    class (the runs of samples from ``starts``, with len(order) appended as the end); a row whose centred
    values are all within ``rounding`` x its largest raw |value| becomes exactly zero (no within-class
    variation: the metrics then see a constant channel), as :func:`dynstudy.analysis.kernels.dynamics.class_centred`."""
    c, p = V.shape
    g = len(starts)
    for r in range(c):
        v = V[r]
        o = out[r]
        peak = 0.0
        for t in range(p):
            peak = max(peak, abs(v[t]))
        for t in range(p):
            o[t] = v[order[t]]
        spread = 0.0
        for k in range(g):
            a = starts[k]
            b = starts[k + 1] if k + 1 < g else p
            cls = o[a:b]
            total = 0.0
            for t in range(b - a):
                total += cls[t]
            mean = total / (b - a)
            for t in range(b - a):
                cls[t] -= mean
                spread = max(spread, abs(cls[t]))
        if spread <= rounding * peak:
            o[:] = 0.0


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
    head = min(before + 1, n)  # t < head: nothing leaves the window yet
    tail = max(head, n - after)  # t >= tail: nothing enters it any more
    inv = 1.0 / window
    row = np.empty(n)
    for r in range(c):
        src = x[r]
        o = out[r]
        if len(perm):
            for t in range(n):
                row[t] = src[perm[t]]
        else:
            row[:] = src
        total = 0.0
        for t in range(min(after, n)):
            total += row[t]
        for t in range(head):
            if t + after < n:
                total += row[t + after]
            o[t] = total / (min(t + after + 1, n) - max(t - before, 0))
        for t in range(head, tail):  # the whole window inside the series
            total += row[t + after] - row[t - before - 1]
            o[t] = total * inv
        for t in range(tail, n):
            total -= row[t - before - 1]
            o[t] = total / (n - (t - before))


@numba.njit(cache=True, nogil=True)
def rows_sorted(capture: np.ndarray | None, codes: np.ndarray, rank: np.ndarray, sample: np.ndarray) -> bool:
    """True when the rows are sorted by (capture, codes, rank, sample), in one pass; ``capture`` None: rows of
    one capture (the compiled loop then has no capture comparison)."""
    for i in range(1, len(codes)):
        if capture is not None and capture[i] != capture[i - 1]:
            if capture[i] < capture[i - 1]:
                return False
        elif codes[i] != codes[i - 1]:
            if codes[i] < codes[i - 1]:
                return False
        elif rank[i] != rank[i - 1]:
            if rank[i] < rank[i - 1]:
                return False
        elif sample[i] < sample[i - 1]:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def grid_problem(codes: np.ndarray, rank: np.ndarray, sample: np.ndarray, label: np.ndarray, n: int,
                 width: int) -> int:
    """-1 when rows sorted by (capture, codes, rank, sample), ``width * n`` rows per capture, hold every sample
    0 .. n - 1 once per channel, one label per sample in each capture and the same ``width`` channels in every
    capture; else the first row that breaks it."""
    block = width * n
    for b in range(0, len(codes) - block + 1, block):
        for c in range(b, b + block, n):
            if c >= block and (codes[c] != codes[c - block] or rank[c] != rank[c - block]):
                return c
            for j in range(n):
                i = c + j
                if sample[i] != j or label[i] != label[b + j] or codes[i] != codes[c] or rank[i] != rank[c]:
                    return i
    return -1
