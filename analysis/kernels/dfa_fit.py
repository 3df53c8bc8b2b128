"""How far a DFA exponent can be trusted: the fit behind it, and its spread on null data of the same length.

A DFA exponent is the slope of log F(s) on log s
(:func:`dynstudy.analysis.kernels.dynamics.dfa_fluctuation` gives the scales and F). These
kernels describe that fit and what the estimator does on data without structure:

- :func:`loglog_fit`: slope, R^2 and the largest absolute residual (in log F) of each row's fit,
  and the span of its scales;
- :func:`crossover_fit`: the continuous two-slope (hinge) fit with the best breakpoint among the
  scales, where each side has at least ``min_points`` scales;
- :func:`fluctuation_summary`: log F aggregated over channels, scale by scale (mean and SD);
- :func:`fractional_gaussian_noise`: exact fGn of a given Hurst exponent (Davies-Harte);
- :func:`null_alpha`: the DFA exponent of K simulated fGn series of a given length, the
  estimator's distribution at that length (white noise: H = 0.5);
- :func:`null_comparison`: a value against such a distribution: null mean and SD, z-score and
  the empirical two-sided p-value (with the +1 correction, never 0).

All are pure numpy functions over arrays, vectorised over rows.
"""
from __future__ import annotations

import numpy as np

from dynstudy.analysis.kernels.dynamics import dfa_fluctuation
from dynstudy.analysis.kernels.params import DEFAULTS


def _xy(scales, F):
    x = np.log(np.asarray(scales, dtype=float))
    y = np.log(np.asarray(F, dtype=float))
    if y.ndim == 1:
        y = y[:, None]
    if y.shape[0] != len(x):
        raise ValueError(f"F has {y.shape[0]} rows of scales but scales has {len(x)}; pass F as [scales, channels]")
    return x, y


def loglog_fit(scales, F) -> dict:
    """Least-squares line through (log s, log F(s)) of every column of ``F``.

    Parameters
    ----------
    scales : int array [S], increasing.
    F : array [S] or [S, C] (NaN columns give NaN results).

    Returns
    -------
    dict of arrays [C]: ``alpha`` (slope), ``intercept``, ``r2`` (1 for a perfect line; NaN with
    fewer than 3 scales, where a line always fits), ``max_residual`` (largest |log F - fit|), and the
    scalars ``n_scales`` and ``span`` (largest / smallest scale).

    Examples
    --------
    >>> import numpy as np
    >>> s = np.array([16, 32, 64, 128])
    >>> fit = loglog_fit(s, 2.0 * s ** 0.75)
    >>> round(float(fit["alpha"][0]), 12), round(float(fit["r2"][0]), 12), fit["span"]
    (0.75, 1.0, 8.0)
    """
    x, y = _xy(scales, F)
    xc = x - x.mean()
    alpha = xc @ (y - y.mean(axis=0)) / (xc @ xc)
    intercept = y.mean(axis=0) - alpha * x.mean()
    resid = y - (intercept + np.outer(x, alpha))
    ss_tot = ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = np.where(ss_tot > 0, 1 - (resid ** 2).sum(axis=0) / ss_tot, 1.0)
    if len(x) < 3:
        r2 = np.full_like(alpha, np.nan)
    return {"alpha": alpha, "intercept": intercept, "r2": r2, "max_residual": np.abs(resid).max(axis=0),
            "n_scales": len(x), "span": float(scales[-1] / scales[0]) if len(x) else np.nan}


def crossover_fit(scales, F, min_points: int = 3) -> dict:
    """Continuous two-slope fit of log F on log s, the breakpoint chosen among the scales.

    For each candidate breakpoint b (a scale with at least ``min_points`` scales on each side,
    itself included in both), log F = c + a1 min(log s - log b, 0) + a2 max(log s - log b, 0) is
    fitted by least squares; the breakpoint with the smallest residual sum of squares wins.

    Returns
    -------
    dict of arrays [C]: ``breakpoint`` (a scale), ``alpha_small`` (slope below it), ``alpha_large``
    (above), ``sse``; all NaN when the scales allow no breakpoint (fewer than 2 min_points - 1).

    Examples
    --------
    >>> import numpy as np
    >>> s = np.array([8, 16, 32, 64, 128, 256, 512])
    >>> F = np.where(s <= 64, s ** 1.5, 64 ** 1.5 * (s / 64) ** 0.5)
    >>> fit = crossover_fit(s, F)
    >>> float(fit["breakpoint"][0]), round(float(fit["alpha_small"][0]), 9), round(float(fit["alpha_large"][0]), 9)
    (64.0, 1.5, 0.5)
    """
    x, y = _xy(scales, F)
    c = y.shape[1]
    out = {k: np.full(c, np.nan) for k in ("breakpoint", "alpha_small", "alpha_large", "sse")}
    candidates = range(min_points - 1, len(x) - min_points + 1)
    if min_points < 2 or not len(candidates):
        return out
    best = np.full(c, np.inf)
    for k in candidates:
        d = x - x[k]
        design = np.column_stack([np.ones_like(x), np.minimum(d, 0), np.maximum(d, 0)])
        coef, *_ = np.linalg.lstsq(design, np.nan_to_num(y), rcond=None)
        sse = ((y - design @ coef) ** 2).sum(axis=0)
        better = sse < best
        best = np.where(better, sse, best)
        out["breakpoint"] = np.where(better, float(np.exp(x[k])), out["breakpoint"])
        out["alpha_small"] = np.where(better, coef[1], out["alpha_small"])
        out["alpha_large"] = np.where(better, coef[2], out["alpha_large"])
    out["sse"] = np.where(np.isfinite(best), best, np.nan)
    undefined = ~np.isfinite(y).all(axis=0)
    for key in out:
        out[key][undefined] = np.nan
    out["breakpoint"] = np.round(out["breakpoint"])
    return out


def fluctuation_summary(scales, F) -> dict:
    """log F(s) over a capture's channels, scale by scale: mean, SD (ddof 1) and how many channels have it.

    Returns
    -------
    dict: ``scale`` [S], ``log_f_mean`` [S], ``log_f_sd`` [S] (NaN with fewer than 2 channels), ``n_channels``.
    """
    _, y = _xy(scales, F)
    keep = np.isfinite(y).all(axis=0)
    y = y[:, keep]
    n = y.shape[1]
    mean = y.mean(axis=1) if n else np.full(len(y), np.nan)
    sd = y.std(axis=1, ddof=1) if n > 1 else np.full(len(y), np.nan)
    return {"scale": np.asarray(scales), "log_f_mean": mean, "log_f_sd": sd, "n_channels": int(n)}


def fractional_gaussian_noise(hurst: float, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Exact fractional Gaussian noise of unit variance, [size, n] (Davies-Harte circulant embedding).

    Parameters
    ----------
    hurst : Hurst exponent in (0, 1); 0.5 is white noise.
    n : series length (>= 2). size : number of independent series. rng : numpy Generator.

    Examples
    --------
    >>> import numpy as np
    >>> x = fractional_gaussian_noise(0.5, 4096, 1, np.random.default_rng(0))
    >>> x.shape, abs(float(x.std()) - 1) < 0.05
    ((1, 4096), True)
    """
    if not 0 < hurst < 1:
        raise ValueError(f"hurst={hurst!r} is invalid: use a Hurst exponent strictly between 0 and 1")
    if int(n) < 2:
        raise ValueError(f"n={n!r} is invalid: use a series length >= 2")
    k = np.arange(n + 1, dtype=float)
    gamma = 0.5 * (np.abs(k + 1) ** (2 * hurst) - 2 * k ** (2 * hurst) + np.abs(k - 1) ** (2 * hurst))
    circ = np.concatenate([gamma, gamma[-2:0:-1]])  # first row of the 2n circulant
    lam = np.fft.fft(circ).real
    m = len(circ)
    w = rng.standard_normal((size, m)) + 1j * rng.standard_normal((size, m))
    return np.fft.fft(np.sqrt(np.clip(lam, 0, None) / m) * w, axis=1).real[:, :n]


def null_alpha(n: int, k: int, *, hurst: float = 0.5, seed: int = 0, min_scale: int = DEFAULTS.min_scale,
               n_scales: int = DEFAULTS.n_scales, scale_rule: str = "authors") -> np.ndarray:
    """The DFA exponent of ``k`` independent fGn series of length ``n`` (default white noise): the estimator's
    distribution at that length, on the same scales as the analysis."""
    if int(k) < 1:
        raise ValueError(f"k={k!r} is invalid: use the number of simulations, an integer >= 1")
    x = fractional_gaussian_noise(hurst, n, int(k), np.random.default_rng(seed))
    scales, F, _ = dfa_fluctuation(x, min_scale, n_scales, scale_rule=scale_rule)
    return loglog_fit(scales, F)["alpha"] if len(scales) >= 2 else np.full(int(k), np.nan)


def null_comparison(value, null) -> dict:
    """``value`` against the simulated values ``null``: null mean and SD (ddof 1), z-score, and the empirical
    two-sided p-value (1 + #{|null - mean| >= |value - mean|}) / (K + 1).

    Examples
    --------
    >>> r = null_comparison(0.5, [0.4, 0.5, 0.6])
    >>> round(r["null_mean"], 12), round(r["z"], 12), r["p"]
    (0.5, 0.0, 1.0)
    """
    null = np.asarray(null, dtype=float)
    null = null[np.isfinite(null)]
    if len(null) < 2 or not np.isfinite(value):
        return {"null_mean": np.nan, "null_sd": np.nan, "z": np.nan, "p": np.nan, "k": len(null)}
    mean, sd = float(null.mean()), float(null.std(ddof=1))
    dev = abs(value - mean)
    p = (1 + int((np.abs(null - mean) >= dev - 1e-12).sum())) / (len(null) + 1)
    return {"null_mean": mean, "null_sd": sd, "z": (value - mean) / sd if sd > 0 else np.nan, "p": min(p, 1.0),
            "k": len(null)}
