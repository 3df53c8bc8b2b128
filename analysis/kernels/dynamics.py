"""Metric kernels of the paper protocol: pure numpy/scipy functions over arrays.

One capture (``acts``: P probe samples x C channels, with labels) gives

- ``pseudo_time``: stable sort by label, subtract each class's mean, centred
  rolling mean as pandas' (window 5; 15 for DenseNet/VGG) shrinking at the
  edges -> X [C, P];
- ``dfa_exponents``: detrended fluctuation analysis per channel, on the
  authors' scales (``dfa_scales``) -> alpha [C]; H_raw = mean alpha,
  ``integration`` H_eff = exp(-(H_raw - 0.7)^2 / (2 0.15^2));
- ``kuramoto``: phases of the analytic signal, R(t) = |mean_c exp(i phi_c(t))|,
  metastability = std_t R (ddof 0), synchrony = mean_t R.

``compat`` chooses how channels are aggregated: "dynstudy" (the default)
averages H_raw over the channels that have an exponent and leaves constant
channels out of R(t); "authors" reproduces the authors' code (all-channel
mean, so one channel without an exponent makes H_raw missing; a constant
channel is a phase locked at 0).

One run (series over epochs) gives, in ``run_metrics``: Hz, Mz (z-scores,
ddof 1), Psi = w_H Hz + (1 - w_H) Mz, its rolling volatility, r(Hz, Mz),
r(Psi, acc), the convergence trigger and the taxonomy state.

Nothing here makes up a number: an undefined value is NaN with a reason
(a series too short for two DFA scales, a constant channel, non-finite input).
Only numpy and scipy are imported; training workers use these kernels too.
Rows go through in chunks of about 1 MiB with reused scratch space: fresh
large temporaries cost as much as the arithmetic. Speed: bench/bench_dynamics.py.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
from scipy import fft
from scipy.ndimage import uniform_filter1d

from dynstudy.analysis.kernels.params import DEFAULTS

STATES = ("Stable Convergent", "Rigidly Synchronised", "Metastable High-Integration", "Transitional",
          "Partial Integration")

#: Per-class-centred values all within this fraction of the channel's largest raw value are rounding noise
#: of a channel with no within-class variation: it is set to exactly zero (a constant channel).
ROUNDING = 1e-12
#: How a capture's channels are aggregated (``compat``): dynstudy's choices, or the authors' code.
COMPAT = ("dynstudy", "authors")
#: Settings of a spec's ``analysis`` section that ``capture_metrics`` takes (the analysis and the online trigger).
CAPTURE_PARAMS = ("smooth_window", "h_opt", "sigma_h", "min_scale", "n_scales", "compat")
#: Why a channel has no DFA exponent: non-finite values, one value throughout, exactly polynomial segments.
DFA_REASONS = ("non-finite values", "constant channel",
               "zero fluctuation at some scale (piecewise-polynomial or mostly constant channel)")
#: Values per chunk of rows (1 MiB of float64).
_CHUNK = 1 << 17
#: A DFA exponent above this describes a non-stationary series: the profile of a stationary series grows
#: at most like a random walk's (alpha <= 1); alpha > 1 is a drift, and DFA's exponent then measures the
#: drift, not integration. Applied to a capture's or window's H_raw and to a run's mean H_raw.
NONSTATIONARY_ALPHA = 1.0
#: H_eff is saturated where H_raw lies more than this many sigma_H from H_opt: H_eff is then a value in a
#: Gaussian's tail (below exp(-4.5) = 0.011), not a measurement; H_raw says more.
SATURATION_SIGMAS = 3.0


def _check_int(name: str, value, low: int, fix: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name}={value!r} is invalid: {fix}")
    return int(value)


def check_compat(compat) -> str:
    """``compat`` itself when it is one of :data:`COMPAT`; else ValueError naming the choices."""
    if compat not in COMPAT:
        raise ValueError(f"compat={compat!r} is invalid: use 'dynstudy' (the default) or 'authors' (the authors' "
                         "aggregation: all-channel H_raw mean, dead channels at phase 0)")
    return compat


def _check_series(X) -> np.ndarray:
    X = np.asarray(X, dtype=float)
    if X.ndim not in (1, 2):
        raise ValueError(f"X has shape {X.shape}: pass one series [N] or rows of series [C, N]")
    return np.atleast_2d(X)


def rows_per_chunk(n: int) -> int:
    """How many rows of ``n`` values make one chunk of work (1 MiB of float64)."""
    return max(1, _CHUNK // max(n, 1))


def _rolling_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Centred rolling mean along axis 1 over t - window // 2 .. t + (window - 1) // 2, shrinking at the edges.

    pandas ``rolling(window, center=True, min_periods=1).mean()``: an even
    window has its extra point before t (scipy's default origin does the same).
    """
    n = x.shape[1]
    before, after = window // 2, (window - 1) // 2
    sums = uniform_filter1d(x, window, axis=1, mode="constant", cval=0.0)
    t = np.arange(n)
    sums *= window / (np.minimum(t + after + 1, n) - np.maximum(t - before, 0))  # mean over the points inside
    return sums


def pseudo_time(acts, labels, smooth_window=DEFAULTS.smooth_window, order="label", seed=0):
    """Turn one capture into the paper's pseudo-time series.

    Parameters
    ----------
    acts : array [P, C]
        Pooled activations, samples in probe order.
    labels : array [P]
        Class of each sample.
    smooth_window : int
        Width of the centred rolling mean, shrinking at the edges: pandas
        ``rolling(w, center=True, min_periods=1)``, so an even window at t
        covers t - w/2 .. t + w/2 - 1 (one more point before t than after).
        1 means no smoothing.
    order : {"label", "random"}
        "label" stable-sorts samples by label (the paper); "random" puts the
        centred samples in the order ``default_rng(seed).permutation(P)`` of
        label order instead (the order control). Per-class centring applies
        in both.
    seed : int
        Seed of the permutation when ``order="random"``.

    Returns
    -------
    X : array [C, P], C-contiguous
        A channel with no within-class variation comes out exactly zero (its
        centred values are rounding noise), so the metrics see it as constant.
    """
    x = class_centred(acts, labels)
    window = _check_int("smooth_window", smooth_window, 1, "use an integer >= 1 (1 = no smoothing)")
    if order not in ("label", "random"):
        raise ValueError(f"order={order!r} is invalid: use 'label' (the paper) or 'random' (the order control)")
    perm = np.random.default_rng(seed).permutation(x.shape[1]) if order == "random" else None
    return smoothed(x, window, perm, out=x)


def class_centred(acts, labels):
    """The first steps of :func:`pseudo_time`: samples stable-sorted by label, each class's mean subtracted.

    Returns X [C, P] (C-contiguous) before any reordering or smoothing; a
    channel with no within-class variation comes out exactly zero.
    """
    acts = np.asarray(acts, dtype=float)
    labels = np.asarray(labels)
    if acts.ndim != 2 or labels.ndim != 1 or len(labels) != acts.shape[0] or acts.size == 0:
        raise ValueError(f"acts must be a non-empty [samples x channels] array with one label per sample; got acts "
                         f"{acts.shape}, labels {labels.shape}: pass acts [P, C] and labels [P]")
    idx = np.argsort(labels, kind="stable")
    lab = labels[idx]
    starts = np.flatnonzero(np.r_[True, lab[1:] != lab[:-1]])
    counts = np.diff(np.r_[starts, len(lab)])
    peak = np.maximum(acts.max(axis=0), -acts.min(axis=0))  # largest |value| per channel
    x = np.empty((acts.shape[1], len(idx)))
    for i in range(0, len(idx), 512):  # acts[idx].T in blocks that stay in cache
        x[:, i:i + 512] = acts[idx[i:i + 512]].T
    step = rows_per_chunk(x.shape[1])
    for start in range(0, x.shape[0], step):
        xc = x[start:start + step]
        xc -= np.repeat(np.add.reduceat(xc, starts, axis=1) / counts, counts, axis=1)
        xc[np.maximum(xc.max(axis=1), -xc.min(axis=1)) <= ROUNDING * peak[start:start + step]] = 0.0
    return x


def smoothed(x, window, perm=None, out=None):
    """The last steps of :func:`pseudo_time` on class-centred rows ``x`` [C, P]: time points reordered by
    ``perm`` (the order control; None: label order kept), then the centred rolling mean of width ``window``.

    ``out``: where to write the result (it may be ``x`` itself); default a new array.
    """
    out = np.empty_like(x) if out is None else out
    step = rows_per_chunk(x.shape[1])
    for start in range(0, x.shape[0], step):
        xc = x[start:start + step]
        if perm is not None:
            xc = xc[:, perm]
        out[start:start + step] = _rolling_mean(xc, window) if window > 1 else xc
    return out


def dfa_scales(n, min_scale=DEFAULTS.min_scale, n_scales=DEFAULTS.n_scales, rule="authors"):
    """The DFA scales of a series of length ``n``.

    Parameters
    ----------
    n : int
        Series length.
    min_scale, n_scales : int
        Smallest scale and number of log-spaced points (the paper: 16, 10).
    rule : {"authors", "rounded"}
        "authors" (the default) is the authors' code, literally:
        ``max_win = n // 4``, ``n // 2`` when ``n // 4 <= min_scale``, and
        ``np.unique(np.logspace(np.log10(min_scale), np.log10(max_win), n_scales).astype(int))``.
        The cast truncates, so a point that is an integer only up to
        floating-point rounding can drop by one (the top scale is 63 at
        n = 256 and 249 at 1000, the ninth 347 at 2047; 512 at 2048 is kept).
        "rounded": top = n / 4 (a float; n / 2 when n / 4 <= min_scale) and
        points within rounding of an integer kept as that integer (64 at
        n = 256, 250 at 1000, 348 at 2047).

    Returns
    -------
    scales : int array, increasing
        Empty when the top scale is below ``min_scale`` (the authors' code
        would go on with scales below it). Under "authors" two scales come
        for sure from n = 2 min_scale + 4 (36 for 16) on, except at n = 4
        min_scale + 4 .. + 7 (68-71 for 16: n // 4 = 17, whose logspace
        point truncates to 16 with numpy on x86-64), which give one.
    """
    n = _check_int("n", n, 0, "use the series length, an integer >= 0")
    min_scale = _check_int("min_scale", min_scale, 2, "use an integer >= 2 (the paper uses 16)")
    n_scales = _check_int("n_scales", n_scales, 2, "use an integer >= 2 (the paper uses 10)")
    if rule == "authors":
        top = n // 4 if n // 4 > min_scale else n // 2
        if top < min_scale:
            return np.array([], dtype=int)
        return np.unique(np.logspace(np.log10(min_scale), np.log10(top), n_scales).astype(int))
    if rule == "rounded":
        top = n / 4 if n / 4 > min_scale else n / 2
        if top < min_scale:
            return np.array([], dtype=int)
        v = np.logspace(np.log10(min_scale), np.log10(top), n_scales)
        return np.unique(np.floor(v * (1 + 1e-12)).astype(int))
    raise ValueError(f"rule={rule!r} is invalid: use 'authors' (the authors' code, the default) or 'rounded'")


def _detrend_basis(s: int, order: int) -> np.ndarray:
    """Orthonormal basis [s, order + 1] of the polynomials of degree <= order on s equally spaced points."""
    q, _ = np.linalg.qr(np.vander(np.linspace(-1.0, 1.0, s), order + 1, increasing=True))
    return q


def _fluctuation(Y: np.ndarray, q: np.ndarray, overlap: bool, work: np.ndarray) -> np.ndarray:
    """F(s) per row of the profiles Y: mean over segments of the RMS detrending residual.

    Segments are the N // s disjoint windows from the start, or with
    ``overlap`` every window of length s. The least-squares fit is the
    projection on the orthonormal basis Q [s, order + 1]; the residual
    seg - (seg @ Q) @ Q.T is formed explicitly (|seg|^2 - |seg @ Q|^2 loses
    digits on steep profiles such as a random walk's), in batches through the
    scratch buffer ``work`` (at least rows x (s + order + 1) values).
    """
    s, j = q.shape
    c, n = Y.shape
    if overlap:
        segs = np.lib.stride_tricks.sliding_window_view(Y, s, axis=1)  # [c, n - s + 1, s], a view
    else:
        segs = Y[:, :n // s * s].reshape(c, n // s, s)  # a view
    step = len(work) // (c * (s + j))
    total = np.zeros(c)
    for start in range(0, segs.shape[1], step):
        w = segs[:, start:start + step]
        size = w.shape[0] * w.shape[1]
        proj = np.matmul(w, q, out=work[:size * j].reshape(c, -1, j))
        res = np.matmul(proj, q.T, out=work[size * j:size * (j + s)].reshape(w.shape))
        np.subtract(w, res, out=res)
        total += np.sqrt(np.einsum("cks,cks->ck", res, res) / s).sum(axis=1)
    return total / segs.shape[1]


def _too_short(n: int, n_found: int, min_scale: int, scale_rule: str) -> str:
    """Why a series of length ``n`` has no DFA exponent: fewer than two scales."""
    m = min_scale
    lo, gap = {"authors": (2 * m + 4, (4 * m + 4, 4 * m + 7)), "rounded": (2 * m + 2, (4 * m + 1, 4 * m + 3))}[
        scale_rule]
    return (f"series too short for DFA: N={n} gives {n_found} distinct scale(s) from min_scale={m}; "
            f"two are needed (N >= {lo}, and N not in {gap[0]}..{gap[1]})")


def dfa_fluctuation(X, min_scale=DEFAULTS.min_scale, n_scales=DEFAULTS.n_scales, order=1, overlap=False,
                    scale_rule="authors"):
    """The DFA fluctuation function F(s) of every row of ``X`` ([C, N], or [N] for one series).

    Profile y = cumsum(x - mean x); for each scale s of :func:`dfa_scales` the segments of y (N // s
    disjoint from the start, or every window with ``overlap``) are detrended by a least-squares
    polynomial of degree ``order``; F(s) = mean over segments of the residual RMS.
    :func:`dfa_exponents` is the slope of log F(s) on log s.

    Returns
    -------
    scales : int array [S]
        Empty when the series is too short for two scales (F then has no rows of scales).
    F : array [S, C]
        NaN in a row's column where it has no exponent: a non-finite or constant row, or F(s) at
        rounding level at some scale.
    why : int array [C]
        0 where F is defined, else 1 + the index of the reason in :data:`DFA_REASONS`.

    Examples
    --------
    >>> import numpy as np
    >>> scales, F, why = dfa_fluctuation(np.random.default_rng(0).standard_normal((2, 256)))
    >>> scales.tolist(), F.shape, why.tolist()
    ([16, 18, 21, 25, 29, 34, 40, 47, 54, 63], (10, 2), [0, 0])
    """
    X = _check_series(X)
    order = _check_int("order", order, 0, "use the detrending degree, an integer >= 0 (1 = DFA1)")
    if _check_int("min_scale", min_scale, 2, "use an integer >= 2") <= order + 1:
        raise ValueError(f"min_scale={min_scale} is invalid for order={order}: a segment of <= order + 1 points "
                         f"is fitted exactly; use min_scale >= {order + 2}")
    c, n = X.shape
    scales = dfa_scales(n, min_scale, n_scales, scale_rule)
    F = np.full((len(scales), c), np.nan)
    finite = np.isfinite(X).all(axis=1)
    const = finite & (X == X[:, :1]).all(axis=1)
    why = np.select([~finite, const], [1, 2], 0)
    if len(scales) < 2:
        return scales, F, why
    ok = np.flatnonzero(finite & ~const)
    bases = [_detrend_basis(s, order) for s in scales]
    step = rows_per_chunk(n)
    profiles = np.empty((min(step, len(ok)), n))  # scratch space, reused by every chunk of rows
    work = np.empty(len(profiles) * max(n + (order + 1) * (n // min_scale), scales[-1] + order + 1))
    for start in range(0, len(ok), step):
        rows = ok[start:start + step]
        Y = np.take(X, rows, axis=0, out=profiles[:len(rows)])
        Y -= Y.mean(axis=1, keepdims=True)
        np.cumsum(Y, axis=1, out=Y)
        Fc = np.array([_fluctuation(Y, q, overlap, work) for q in bases])  # [scales, rows]
        # F(s) at rounding level (float64 residuals are ~1e-16 of the profile) means exactly polynomial
        # segments at that scale: log F would be noise, so alpha is undefined
        tiny = (Fc <= 1e-10 * np.sqrt(np.einsum("cn,cn->c", Y, Y) / n)).any(axis=0)
        F[:, rows] = np.where(tiny, np.nan, Fc)
        why[rows[tiny]] = 3
    return scales, F, why


def dfa_exponents(X, min_scale=DEFAULTS.min_scale, n_scales=DEFAULTS.n_scales, order=1, overlap=False,
                  return_reasons=False, scale_rule="authors"):
    """DFA exponent of every row of ``X`` ([C, N], or [N] for one series).

    Profile y = cumsum(x - mean x); for each scale s of :func:`dfa_scales`
    (``min_scale``, ``n_scales``, ``rule=scale_rule``: the authors' rule by
    default) the segments of y (N // s disjoint from the start, or every
    window with ``overlap``) are detrended by a least-squares polynomial of degree
    ``order`` (1 = DFA1, the paper; min_scale must exceed order + 1);
    F(s) = mean over segments of the residual RMS (:func:`dfa_fluctuation`);
    alpha = least-squares slope of log F(s) on log s.

    Returns
    -------
    alpha : array [C]
        NaN where undefined: fewer than two scales, a non-finite or constant
        row, or F(s) at rounding level at some scale (a row exactly
        polynomial on every segment, e.g. a mostly dead ReLU channel).
    reasons : list of str or None, one per row, with ``return_reasons``.
    """
    scales, F, why = dfa_fluctuation(X, min_scale, n_scales, order, overlap, scale_rule)
    c = F.shape[1]
    if len(scales) < 2:
        alpha = np.full(c, np.nan)
        why_short = _too_short(_check_series(X).shape[1], len(scales), min_scale, scale_rule)
        return (alpha, [why_short] * c) if return_reasons else alpha
    ls = np.log(scales.astype(float))
    ls -= ls.mean()
    logF = np.log(F)
    alpha = ls @ (logF - logF.mean(axis=0)) / (ls @ ls)
    if not return_reasons:
        return alpha
    return alpha, [DFA_REASONS[w - 1] if w else None for w in why.tolist()]


def _phase_sums(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums over rows of cos and sin of the analytic-signal phase of each row minus its mean, [N] each.

    Real part x - mean x; imaginary part the Hilbert transform, spectrum -i X(f)
    (at DC and, for even N, Nyquist that is imaginary and irfft drops it, as
    it should). Where the analytic signal is exactly 0 the phase is 0.
    """
    spec = fft.rfft(X, axis=1)
    spec *= -1j
    im = fft.irfft(spec, n=X.shape[1], axis=1)
    re = X - X.mean(axis=1, keepdims=True)
    inv = re * re
    inv += np.square(im)
    zero = inv == 0
    if zero.any():
        re[zero], inv[zero] = 1.0, 1.0
    np.sqrt(inv, out=inv)
    np.divide(1.0, inv, out=inv)  # 1 / |z|
    return np.einsum("ct,ct->t", re, inv), np.einsum("ct,ct->t", im, inv)


def kuramoto(X, compat=DEFAULTS.compat):
    """(metastability, synchrony) of the rows of ``X`` as coupled oscillators.

    Each row minus its mean -> analytic signal (Hilbert transform, no
    band-pass) -> phase; R(t) = |mean over rows of exp(i phase)|;
    metastability = population std of R over t, synchrony = mean of R.

    Parameters
    ----------
    X : array [C, N] (or [N])
    compat : {"dynstudy", "authors"}
        What a constant row (a dead channel) is. "dynstudy" (the default):
        it has no phase and is left out; NaN when no row varies. "authors":
        a phase locked at 0 (their ``np.angle`` of an all-zero analytic
        signal), so it counts in the mean with exp(i 0) = 1; with every row
        constant R(t) = 1 (metastability 0, synchrony 1).

    Returns
    -------
    (metastability, synchrony) : floats
        NaN for non-finite input or fewer than two time points.
    """
    X = _check_series(X)
    compat = check_compat(compat)
    n = X.shape[1]
    if n < 2 or not np.isfinite(X).all():
        return math.nan, math.nan
    keep = np.flatnonzero(~(X == X[:, :1]).all(axis=1))
    dead = X.shape[0] - len(keep) if compat == "authors" else 0
    if len(keep) + dead == 0:
        return math.nan, math.nan
    cos, sin = np.full(n, float(dead)), np.zeros(n)  # a dead row at phase 0 adds cos 1, sin 0
    step = rows_per_chunk(n)
    for start in range(0, len(keep), step):
        c, s = _phase_sums(X[keep[start:start + step]])
        cos += c
        sin += s
    R = np.sqrt(cos * cos + sin * sin) / (len(keep) + dead)
    return float(R.std()), float(R.mean())


def integration(h_raw, h_opt=DEFAULTS.h_opt, sigma_h=DEFAULTS.sigma_h):
    """H_eff = exp(-(H_raw - h_opt)^2 / (2 sigma_h^2)) for a scalar or an array; NaN passes through."""
    if not sigma_h > 0:
        raise ValueError(f"sigma_h={sigma_h!r} is invalid: use a width > 0 (the paper uses 0.15)")
    return np.exp(-(np.asarray(h_raw, dtype=float) - h_opt) ** 2 / (2 * sigma_h ** 2))


def nonstationary(h_raw):
    """Whether each DFA exponent (or mean exponent, H_raw) describes a non-stationary series.

    Parameters
    ----------
    h_raw : float or array
        DFA exponents; NaN where undefined.

    Returns
    -------
    bool array of the shape of ``h_raw``: ``h_raw > NONSTATIONARY_ALPHA`` (False where NaN; see
    :func:`known_flags` for a flag that is unknown there).
    """
    return np.asarray(h_raw, dtype=float) > NONSTATIONARY_ALPHA


def h_eff_saturated(h_raw, h_opt=DEFAULTS.h_opt, sigma_h=DEFAULTS.sigma_h):
    """Whether H_eff of each H_raw lies in the Gaussian's tail: ``|h_raw - h_opt| > SATURATION_SIGMAS * sigma_h``.

    Parameters
    ----------
    h_raw : float or array
        H_raw values; NaN where undefined.
    h_opt, sigma_h : float
        The run's integration settings (:func:`integration`).

    Returns
    -------
    bool array of the shape of ``h_raw`` (False where NaN; see :func:`known_flags`).
    """
    return np.abs(np.asarray(h_raw, dtype=float) - h_opt) > SATURATION_SIGMAS * sigma_h


def known_flags(values, flag) -> list:
    """``flag(values)`` as a list of bool, None where a value is missing (None or NaN): an unknown flag.

    Examples
    --------
    >>> known_flags([0.8, 1.2, None], nonstationary)
    [False, True, None]
    """
    x = np.array([np.nan if v is None else v for v in np.atleast_1d(values)], dtype=float)
    return [bool(f) if ok else None for f, ok in zip(flag(x), np.isfinite(x))]


def h_raw_flags(h_raw, h_opt=DEFAULTS.h_opt, sigma_h=DEFAULTS.sigma_h) -> tuple:
    """(non-stationary, H_eff saturated) of one H_raw value (:func:`nonstationary`, :func:`h_eff_saturated`);
    (None, None) where it is missing (None or NaN): unknown, not False."""
    [drift] = known_flags(h_raw, nonstationary)
    [tail] = known_flags(h_raw, lambda x: h_eff_saturated(x, h_opt, sigma_h))
    return drift, tail


def series_metrics(X, *, h_opt=DEFAULTS.h_opt, sigma_h=DEFAULTS.sigma_h, min_scale=DEFAULTS.min_scale,
                   n_scales=DEFAULTS.n_scales, dfa_order=1, overlap=False, compat=DEFAULTS.compat,
                   scale_rule="authors"):
    """DFA and Kuramoto metrics of the rows of ``X`` [C, N], each row one channel's series.

    The second half of :func:`capture_metrics` (which first builds ``X`` by
    :func:`pseudo_time`); the temporal protocol (:mod:`dynstudy.analysis.kernels.temporal`)
    calls it on series over training time. The keywords go to
    :func:`integration`, :func:`dfa_exponents` (``dfa_order`` is its
    ``order``, ``scale_rule`` its rule) and :func:`kuramoto` (``compat``).

    Parameters
    ----------
    compat : {"dynstudy", "authors"}
        "dynstudy" (the default): H_raw is the mean over the channels that
        have an exponent, and constant channels are left out of the Kuramoto
        order. "authors": their aggregation, so published per-epoch values
        can be reproduced from activations: H_raw is the mean over all
        channels, missing as soon as one channel has no exponent, and a
        constant channel counts as a phase locked at 0.

    Returns
    -------
    dict
        h_raw (NaN when undefined); h_eff; metastability and synchrony;
        n_channels; n_valid (channels with an exponent); reason: why h_raw is
        NaN (each distinct cause with its count when they differ), else None.
    """
    compat = check_compat(compat)
    X = _check_series(X)
    alpha, reasons = dfa_exponents(X, min_scale, n_scales, dfa_order, overlap, return_reasons=True,
                                   scale_rule=scale_rule)
    return capture_summary(alpha, reasons, kuramoto(X, compat), compat, h_opt, sigma_h)


def capture_summary(alpha, reasons, kuramoto_pair, compat=DEFAULTS.compat, h_opt=DEFAULTS.h_opt,
                    sigma_h=DEFAULTS.sigma_h):
    """The dict of :func:`capture_metrics` from the channels' DFA exponents and reasons and (M, synchrony).

    H_raw is the mean of ``alpha`` over the channels that have one (``compat="dynstudy"``) or over all
    of them (``"authors"``: missing as soon as one lacks it); ``reason`` says why it is missing.
    """
    valid = np.isfinite(alpha)
    reason = None
    if valid.all() or (valid.any() and compat == "dynstudy"):
        h_raw = float(alpha[valid].mean())
    else:
        h_raw = math.nan
        causes = Counter(r for r in reasons if r is not None)
        listed = "; ".join(f"{why} ({count})" for why, count in causes.most_common())
        if valid.any():  # compat="authors": one channel without an exponent makes the all-channel mean missing
            reason = (f"compat='authors' averages all {len(alpha)} channels and {len(alpha) - int(valid.sum())} "
                      f"have no DFA exponent: {listed}")
        else:
            reason = reasons[0] if len(causes) == 1 else "no channel has a DFA exponent: " + listed
    m, s = kuramoto_pair
    return {"h_raw": h_raw, "h_eff": float(integration(h_raw, h_opt, sigma_h)), "metastability": m, "synchrony": s,
            "n_channels": int(len(alpha)), "n_valid": int(valid.sum()), "reason": reason}


def capture_metrics(acts, labels, *, smooth_window=DEFAULTS.smooth_window, order="label", seed=0,
                    h_opt=DEFAULTS.h_opt, sigma_h=DEFAULTS.sigma_h, min_scale=DEFAULTS.min_scale,
                    n_scales=DEFAULTS.n_scales, dfa_order=1, overlap=False, compat=DEFAULTS.compat,
                    scale_rule="authors"):
    """All metrics of one capture: :func:`pseudo_time`, then :func:`series_metrics` (DFA and Kuramoto) on it.

    ``acts`` [P, C] and ``labels`` [P]; ``smooth_window``, ``order`` and
    ``seed`` go to :func:`pseudo_time`, the other keywords to
    :func:`series_metrics` (whose docstring says what ``compat`` chooses and
    what the returned dict holds).
    """
    compat = check_compat(compat)
    X = pseudo_time(acts, labels, smooth_window, order, seed)
    return series_metrics(X, h_opt=h_opt, sigma_h=sigma_h, min_scale=min_scale, n_scales=n_scales, dfa_order=dfa_order,
                          overlap=overlap, compat=compat, scale_rule=scale_rule)


def _z(x: np.ndarray) -> np.ndarray:
    """z-scores over the present values (sample std); all NaN with < 2 values or all of them equal."""
    ok = np.isfinite(x)
    out = np.full(len(x), np.nan)
    if ok.sum() >= 2 and np.ptp(x[ok]) > 0:  # equal values: the std is 0 or rounding noise, no z-score
        out[ok] = (x[ok] - x[ok].mean()) / np.std(x[ok], ddof=1)
    return out


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r over complete pairs; NaN with fewer than 3 pairs or no variance."""
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return math.nan
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def _mean(x: np.ndarray) -> float:
    ok = np.isfinite(x)
    return float(x[ok].mean()) if ok.any() else math.nan


def psi_volatility(psi, window=DEFAULTS.vol_window):
    """Rolling sample std (ddof 1) of the last ``window`` values at each index.

    NaN for the first ``window - 1`` indices and wherever any value of the
    window is missing.
    """
    psi = np.asarray(psi, dtype=float)
    window = _check_int("window", window, 2, "use an integer >= 2 (a sample std needs two values)")
    if psi.ndim != 1:
        raise ValueError(f"psi has shape {psi.shape}: pass a 1-D series over epochs")
    out = np.full(len(psi), np.nan)
    if len(psi) >= window:
        out[window - 1:] = np.lib.stride_tricks.sliding_window_view(psi, window).std(axis=1, ddof=1)
    return out  # a NaN anywhere in a window makes its std NaN


def convergence_trigger(volatility, threshold=DEFAULTS.vol_threshold, patience=DEFAULTS.vol_patience, epochs=None):
    """First epoch at which volatility has been below ``threshold`` for ``patience`` entries in a row.

    A missing value breaks the run. ``epochs`` labels the entries (default
    1, 2, ...). Returns the epoch label (int), or None when the rule never fires.
    """
    vol = np.asarray(volatility, dtype=float)
    patience = _check_int("patience", patience, 1, "use an integer >= 1")
    epochs = np.arange(1, len(vol) + 1) if epochs is None else np.asarray(epochs)
    if vol.ndim != 1 or epochs.shape != vol.shape:
        raise ValueError(f"volatility {vol.shape} and epochs {epochs.shape} must be 1-D of the same length")
    below = np.cumsum(np.r_[0, vol < threshold])  # NaN < threshold is False: it breaks the run
    hits = np.flatnonzero(below[patience:] - below[:-patience] == patience)  # entries i .. i + patience - 1
    return int(epochs[hits[0] + patience - 1]) if len(hits) else None


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
    """The training-dynamics state of a run (one of :data:`STATES`), by the first rule that holds.

    r < 0: Stable Convergent; mean H_eff < 0.1 and r > 0.8: Rigidly
    Synchronised; mean H_eff >= 0.9: Metastable High-Integration;
    0.8 <= mean H_eff < 0.9 and r > 0.5: Transitional; else Partial
    Integration (thresholds from ``thresholds``, a :class:`TaxonomyThresholds`).
    A NaN input is a ValueError: such a run has no state.
    """
    if not (np.isfinite(h_eff_mean) and np.isfinite(r_hz_mz)):
        raise ValueError(f"taxonomy_state needs finite h_eff_mean and r_hz_mz; got {h_eff_mean}, {r_hz_mz}: "
                         "a run without them has no state")
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


def run_metrics(h_eff, metastability, val_acc=None, *, epochs=None, w_h=DEFAULTS.w_h, vol_window=DEFAULTS.vol_window,
                vol_threshold=DEFAULTS.vol_threshold, vol_patience=DEFAULTS.vol_patience, thresholds=None):
    """Run-level metrics from per-epoch H_eff, metastability and (optional) validation accuracy.

    Missing values stay missing: each z-score uses the values it has, Psi is
    missing where either part is, means and correlations skip missing pairs.
    A z-score is all missing with fewer than two values or no spread; a
    Pearson r needs three complete pairs and non-zero variance, else NaN; the
    state is None, with ``state_reason``, when r(Hz, Mz) or mean H_eff is NaN.

    Returns
    -------
    dict with arrays hz, mz, psi, volatility (one entry per epoch) and scalars
    h_eff_mean, metastability_mean, psi_mean, psi_std (ddof 1), r_hz_mz,
    r_psi_acc, trigger_epoch (epoch label or None), state, state_reason.
    """
    h = np.asarray(h_eff, dtype=float)
    m = np.asarray(metastability, dtype=float)
    if h.ndim != 1 or h.shape != m.shape or len(h) == 0:
        raise ValueError(f"h_eff and metastability must be 1-D of the same, non-zero length; got {h.shape}, "
                         f"{m.shape}: pass one value per epoch (NaN where missing)")
    acc = np.full(len(h), np.nan) if val_acc is None else np.asarray(val_acc, dtype=float)
    if acc.shape != h.shape:
        raise ValueError(f"val_acc has shape {acc.shape}, h_eff {h.shape}: pass one accuracy per epoch")
    if not 0 <= w_h <= 1:
        raise ValueError(f"w_h={w_h!r} is invalid: use a weight in [0, 1] (the paper uses 0.5)")
    hz, mz = _z(h), _z(m)
    psi = w_h * hz + (1 - w_h) * mz
    vol = psi_volatility(psi, vol_window)
    r = _pearson(hz, mz)
    hm = _mean(h)
    state, state_reason = None, None
    if math.isnan(hm):
        state_reason = "mean H_eff undefined: no epoch has H_eff"
    elif math.isnan(r):
        state_reason = "r(Hz, Mz) undefined: fewer than 3 epochs with both H_eff and M, or no variance"
    else:
        state = taxonomy_state(hm, r, thresholds)
    present = psi[np.isfinite(psi)]
    return {"hz": hz, "mz": mz, "psi": psi, "volatility": vol, "h_eff_mean": hm, "metastability_mean": _mean(m),
            "psi_mean": float(present.mean()) if len(present) else math.nan,
            "psi_std": float(present.std(ddof=1)) if len(present) > 1 else math.nan,
            "r_hz_mz": r, "r_psi_acc": _pearson(psi, acc),
            "trigger_epoch": convergence_trigger(vol, vol_threshold, vol_patience, epochs), "state": state,
            "state_reason": state_reason}
