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
from scipy.stats import binom

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
    two-sided p-value (1 + #{|null - m| >= |value - m|}) / (K + 1), m the mean of the K + 1 values together.

    Centring on the pooled mean treats the value and the K simulations alike, so a value drawn from the null is
    as likely to be the most extreme of the K + 1 as any of them: P(p <= j / (K + 1)) = j / (K + 1) exactly (up to
    ties). Centring on the null's own mean would call such a value extreme more often (about 6.5% instead of 5%
    with K = 19), the null mean lying closer to the null values than to a new draw.

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
    pooled = (null.sum() + value) / (len(null) + 1)
    dev = abs(value - pooled)
    p = (1 + int((np.abs(null - pooled) >= dev - 1e-12).sum())) / (len(null) + 1)
    return {"null_mean": mean, "null_sd": sd, "z": (value - mean) / sd if sd > 0 else np.nan, "p": min(p, 1.0),
            "k": len(null)}


#: A fit's scales must span at least this factor (largest / smallest scale) to count as a power law: a little under
#: two octaves, which the authors' scale rule gives from N = 256 on (16-63); a 64-point window spans one (16-32).
MIN_SPAN = 3.5
#: The smallest R^2 of the line through a capture's channel-mean log F(s) that counts as a straight line; white
#: noise of 32 channels gives R^2 above 0.95 in 99% of captures from N = 256 on (docs/metrics.md).
MIN_R2 = 0.9
#: The flags a fit can carry, in the order they are listed: its scales span less than :data:`MIN_SPAN`; its R^2 is
#: below :data:`MIN_R2` (or undefined: fewer than 3 scales); its H_raw exceeds 1 (a non-stationary series).
FIT_FLAGS = ("narrow_span", "poor_fit", "nonstationary")
#: The columns :func:`fit_diagnostics` gives (tables capture_metrics and temporal_metrics).
FIT_COLUMNS = ("dfa_n_scales", "dfa_span", "dfa_r2", "dfa_max_residual", "crossover_scale", "alpha_small",
               "alpha_large", "dfa_scales", "log_f_mean", "log_f_sd")
#: The columns :func:`null_columns` gives: the value's place in its null distribution, for H_raw and M.
NULL_COLUMNS = ("null_k", "null_h_raw_mean", "null_h_raw_sd", "h_raw_z", "h_raw_p",
                "null_m_mean", "null_m_sd", "m_z", "m_p")
#: A value whose empirical p-value against its null is at most this is "beyond its null" (with K = 19 simulations:
#: beyond every one of them, which a value drawn from the null is with probability exactly 1 / 20).
BEYOND_NULL_P = 0.05


def _finite_or_none(x) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


def fit_diagnostics(scales, log_f) -> dict:
    """The DFA fit of one capture (or window): its channels' log F(s) averaged, the line and the two-slope fit.

    H_raw is the mean of the channels' slopes, which is the slope of their mean log F(s) (a slope is linear in
    log F), so the line through the channel-mean log F is the fit H_raw stands for; its R^2 and largest residual
    say whether that is a straight line.

    Parameters
    ----------
    scales : int array [S].
    log_f : array [S, C], NaN in the columns of channels without an exponent (those are left out).

    Returns
    -------
    dict of :data:`FIT_COLUMNS`: ``dfa_n_scales``, ``dfa_span`` (largest / smallest scale), ``dfa_r2`` and
    ``dfa_max_residual`` of the line, ``crossover_scale``, ``alpha_small`` and ``alpha_large`` of
    :func:`crossover_fit` (None with fewer than 5 scales), and the lists ``dfa_scales``, ``log_f_mean`` and
    ``log_f_sd`` (SD over channels, None with one channel). Floats are None where undefined (no channel has F).

    Examples
    --------
    >>> import numpy as np
    >>> s = np.array([16, 32, 64, 128, 256])
    >>> d = fit_diagnostics(s, np.log(np.outer(s ** 0.5, [1.0, 2.0])))
    >>> d["dfa_n_scales"], d["dfa_span"], round(d["dfa_r2"], 12), round(d["log_f_sd"][0], 6)  # log 2 / sqrt 2
    (5, 16.0, 1.0, 0.490129)
    """
    scales = np.asarray(scales)
    out = {"dfa_n_scales": int(len(scales)), "dfa_span": float(scales[-1] / scales[0]) if len(scales) else None,
           "dfa_r2": None, "dfa_max_residual": None, "crossover_scale": None, "alpha_small": None,
           "alpha_large": None, "dfa_scales": [int(s) for s in scales], "log_f_mean": [], "log_f_sd": []}
    if len(scales) == 0:  # a series too short for any scale
        return out
    log_f = np.asarray(log_f, dtype=float).reshape(len(scales), -1)
    summary = fluctuation_summary(scales, np.exp(log_f))
    out["log_f_mean"] = [_finite_or_none(v) for v in summary["log_f_mean"]]
    out["log_f_sd"] = [_finite_or_none(v) for v in summary["log_f_sd"]]
    if summary["n_channels"] == 0 or len(scales) < 2:
        return out
    mean_f = np.exp(summary["log_f_mean"])
    line = loglog_fit(scales, mean_f)
    out["dfa_r2"], out["dfa_max_residual"] = _finite_or_none(line["r2"][0]), _finite_or_none(line["max_residual"][0])
    if len(scales) >= 5:
        cross = crossover_fit(scales, mean_f)
        out["crossover_scale"], out["alpha_small"], out["alpha_large"] = (
            _finite_or_none(cross[k][0]) for k in ("breakpoint", "alpha_small", "alpha_large"))
    return out


def fit_flags(diagnostics: dict, h_raw) -> str | None:
    """The :data:`FIT_FLAGS` a fit carries, joined by ``;`` (None: none; a fit with no scales carries none).

    Examples
    --------
    >>> fit_flags({"dfa_n_scales": 10, "dfa_span": 2.0, "dfa_r2": 0.95}, 1.2)
    'narrow_span;nonstationary'
    """
    if not diagnostics.get("dfa_n_scales"):
        return None
    r2 = diagnostics.get("dfa_r2")
    flags = [diagnostics["dfa_span"] < MIN_SPAN, r2 is None or not r2 >= MIN_R2,
             h_raw is not None and np.isfinite(h_raw) and h_raw > 1.0]
    return ";".join(name for name, on in zip(FIT_FLAGS, flags) if on) or None


def null_columns(h_raw, metastability, null_h_raw, null_m) -> dict:
    """:data:`NULL_COLUMNS` of a value pair (H_raw, M) against K simulated pairs of its null (K = 0: all None).

    Examples
    --------
    >>> c = null_columns(0.5, 0.1, [0.4, 0.5, 0.6], [0.1, 0.2, 0.3])
    >>> c["null_k"], c["h_raw_z"], c["h_raw_p"], c["m_p"]
    (3, 0.0, 1.0, 0.75)
    """
    out = {"null_k": int(len(null_h_raw))}
    for name, value, null in (("h_raw", h_raw, null_h_raw), ("m", metastability, null_m)):
        value = np.nan if value is None else value
        r = null_comparison(value, null)
        out.update({f"null_{name}_mean": _finite_or_none(r["null_mean"]),
                    f"null_{name}_sd": _finite_or_none(r["null_sd"]),
                    f"{name}_z": _finite_or_none(r["z"]), f"{name}_p": _finite_or_none(r["p"])})
    return out


def within_null(n_beyond: int, n: int, n_metrics: int = 2, level: float = BEYOND_NULL_P) -> bool | None:
    """Whether ``n_beyond`` of ``n`` values beyond their nulls (each with probability ``level`` under its null) is
    what chance gives: the binomial upper tail P(X >= n_beyond), X ~ Binomial(n, level), exceeds ``level /
    n_metrics`` (Bonferroni over the run's ``n_metrics`` metrics). Under the null with independent values a run is
    called beyond its null at most ``level`` of the time (tests/test_dfa_fit.py simulates it). None when ``n`` is 0.

    Examples
    --------
    >>> within_null(1, 20), within_null(6, 20)
    (True, False)
    """
    if n == 0:
        return None
    tail = float(binom.sf(n_beyond - 1, n, level))
    return tail > level / n_metrics
