"""Per-channel DFA exponents and Kuramoto phasors, as in :mod:`dynstudy.analysis.kernels.dynamics`, with work reused.

The definitions are those of :func:`dynstudy.analysis.kernels.dynamics.dfa_exponents` (DFA of
the paper: forward segments, least-squares detrending, the authors' scales)
and :func:`dynstudy.analysis.kernels.dynamics.kuramoto`; only the arithmetic is arranged for
``dynstudy analyze``, which computes them for many captures of one probe size:

- the scales and their log-scale regressor are computed once per
  (N, scales) and cached;
- the detrending residuals are formed explicitly, point by point, as in the
  reference (never |seg|^2 - |fit|^2, which loses digits on steep profiles),
  in one compiled loop over four rows at a time, kept in cache over all
  their scales (:func:`dynstudy.analysis.kernels.fast_loops.dfa_rows`);
- the Kuramoto phasors are normalised and summed over rows in one compiled
  pass (:func:`dynstudy.analysis.kernels.fast_loops.phase_sums`), and a caller may keep each
  channel's phasor to sum any subset of channels later (the channel-draw
  control) without recomputing a transform.

Results agree with the reference to rounding (tests/test_fast_path.py checks
every output table to 1e-12).
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

from dynstudy.analysis.kernels import dynamics, fast_loops
from dynstudy.analysis.kernels.params import DEFAULTS


@lru_cache(maxsize=64)
def dfa_plan(n: int, min_scale: int, n_scales: int):
    """(scales as int64, centred log scales) for length ``n``; read-only, since the cache shares them."""
    scales = dynamics.dfa_scales(n, min_scale, n_scales, "authors").astype(np.int64)
    ls = np.log(scales.astype(float))
    if len(ls):  # none below two DFA scales' worth of points
        ls -= ls.mean()
    for a in (scales, ls):
        a.setflags(write=False)
    return scales, ls


def class_centred(acts: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """:func:`dynstudy.analysis.kernels.dynamics.class_centred` of ``acts`` [P, C] (X [C, P]: samples stable-sorted by
    label, each class's mean subtracted, rows without within-class variation exactly zero), in one compiled pass."""
    labels = np.asarray(labels)
    if acts.ndim != 2 or labels.ndim != 1 or len(labels) != acts.shape[0] or acts.size == 0:
        return dynamics.class_centred(acts, labels)  # it names what is wrong
    order = np.argsort(labels, kind="stable")
    lab = labels[order]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    V = np.ascontiguousarray(np.asarray(acts, dtype=float).T)  # [C, P]: a view when acts is one
    out = np.empty(V.shape)
    fast_loops.centre_rows(V, order, starts, dynamics.ROUNDING, out)
    return out


def smoothed(x: np.ndarray, window: int, perm: np.ndarray | None = None) -> np.ndarray:
    """:func:`dynstudy.analysis.kernels.dynamics.smoothed`: the time points of ``x`` [C, P] reordered by ``perm`` (None:
    kept), then the centred rolling mean of width ``window``; a new array."""
    if window == 1:
        return np.ascontiguousarray(x if perm is None else x[:, perm])
    out = np.empty(x.shape)
    fast_loops.rolling_rows(np.ascontiguousarray(x, dtype=float), int(window),
                            np.empty(0, np.int64) if perm is None else np.asarray(perm, dtype=np.int64), out)
    return out


def pseudo_time(acts: np.ndarray, labels: np.ndarray, window: int) -> np.ndarray:
    """:func:`dynstudy.analysis.kernels.dynamics.pseudo_time` in label order: :func:`class_centred`, then
    :func:`smoothed`."""
    return smoothed(class_centred(acts, labels), window)


_REASONS = dict(zip((fast_loops.NON_FINITE, fast_loops.CONSTANT, fast_loops.FLAT), dynamics.DFA_REASONS))


def dfa_status(X, min_scale=DEFAULTS.min_scale, n_scales=DEFAULTS.n_scales
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(alpha [C], status [C] of :data:`dynstudy.analysis.kernels.fast_loops.OK` .. ``FLAT``, log F [S, C]) of every
    row of ``X`` [C, N] (log F NaN in the columns of rows without an exponent)."""
    X = np.ascontiguousarray(X, dtype=float)
    scales, ls = dfa_plan(X.shape[1], min_scale, n_scales)
    # F(s) at rounding level (float64 residuals are ~1e-16 of the profile) means exactly polynomial segments
    return fast_loops.dfa_rows(X, scales, ls, 1e-10)


def reasons_of(status: np.ndarray) -> list:
    """The reason of each row's missing exponent (None where it has one), as the reference words it."""
    return [_REASONS.get(code) for code in status.tolist()]


def dfa_exponents(X, min_scale=DEFAULTS.min_scale, n_scales=DEFAULTS.n_scales):
    """DFA exponent and reason of every row of ``X`` [C, N]: :func:`dynstudy.analysis.kernels.dynamics.dfa_exponents`
    with ``order=1``, forward segments, the authors' scales and ``return_reasons=True``.

    Returns
    -------
    (alpha [C], reasons: list of str or None)
    """
    X = np.asarray(X, dtype=float)
    if len(dfa_plan(X.shape[1], min_scale, n_scales)[0]) < 2:  # undefined everywhere: the reference says why
        return dynamics.dfa_exponents(X, min_scale, n_scales, return_reasons=True)
    alpha, status, _ = dfa_status(X, min_scale, n_scales)
    return alpha, reasons_of(status)


def _spectral_im(X: np.ndarray) -> np.ndarray:
    """Imaginary part [C, N] of the analytic signal of each row of ``X``: the Hilbert transform by the
    spectrum -i X(f), as :func:`dynstudy.analysis.kernels.dynamics.kuramoto` (the row mean only changes the DC bin,
    which the transform drops)."""
    spec = np.fft.rfft(X, axis=1)  # numpy's pocketfft: the same values as scipy's here, and a little faster
    spec *= -1j
    return np.fft.irfft(spec, n=X.shape[1], axis=1)


def phasors(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin [C, N] of the analytic-signal phase of each row of ``X`` minus its mean (phase 0 where
    the analytic signal is exactly 0)."""
    im = _spectral_im(X)
    re = X - X.mean(axis=1, keepdims=True)
    fast_loops.normalise_phasors(re, im)
    return re, im


def kuramoto_sums(X: np.ndarray, live: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sum of cos [N], sum of sin [N], rows that vary [C] bool) over the non-constant rows of ``X``.

    ``live``: the rows that vary, when the caller knows them. Rows are transformed in chunks of about 1 MiB.
    """
    X = np.ascontiguousarray(X, dtype=float)
    n = X.shape[1]
    live = ~(X == X[:, :1]).all(axis=1) if live is None else live
    cos, sin = np.zeros(n), np.zeros(n)
    step = dynamics.rows_per_chunk(n)
    for start in range(0, len(X), step):
        chunk = X[start:start + step]
        rows = np.flatnonzero(live[start:start + step])
        if len(rows):
            fast_loops.phase_sums(chunk, _spectral_im(chunk), rows, cos, sin)
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


def kuramoto(X, compat=DEFAULTS.compat, status: np.ndarray | None = None) -> tuple[float, float]:
    """(metastability, synchrony) of the rows of ``X`` [C, N]: :func:`dynstudy.analysis.kernels.dynamics.kuramoto`.

    ``status``: the rows' :func:`dfa_status`, when the caller has it (it says which rows are finite and
    which constant).
    """
    X = np.asarray(X, dtype=float)
    finite = np.isfinite(X).all() if status is None else not (status == fast_loops.NON_FINITE).any()
    if X.shape[1] < 2 or not finite:
        return math.nan, math.nan
    cos, sin, live = kuramoto_sums(X, None if status is None else status != fast_loops.CONSTANT)
    n_live = int(live.sum())
    return order_parameter(cos, sin, n_live, len(live) - n_live, compat)


def series_parts(X, min_scale=DEFAULTS.min_scale, n_scales=DEFAULTS.n_scales, compat=DEFAULTS.compat, phases=True):
    """(alpha [C], reasons, (metastability, synchrony), log F [S, C]) of the rows of ``X`` [C, N]: the parts of
    :func:`dynstudy.analysis.kernels.dynamics.series_metrics` and each row's log fluctuation function at the
    scales of :func:`dfa_plan`; (NaN, NaN) for the pair unless ``phases``."""
    X = np.ascontiguousarray(X, dtype=float)
    scales = dfa_plan(X.shape[1], min_scale, n_scales)[0]
    if len(scales) < 2:
        alpha, reasons = dfa_exponents(X, min_scale, n_scales)
        pair = kuramoto(X, compat) if phases else (math.nan, math.nan)
        return alpha, reasons, pair, np.full((len(scales), len(X)), np.nan)
    alpha, status, log_f = dfa_status(X, min_scale, n_scales)
    return alpha, reasons_of(status), kuramoto(X, compat, status) if phases else (math.nan, math.nan), log_f
