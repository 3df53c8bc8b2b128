"""The null distribution of a capture's H_raw and metastability: K captures of i.i.d. noise of its exact shape.

A capture's null is what the analysis gives on data with no structure at all, shaped as the capture is: for each
of K simulations, i.i.d. standard normal activations [P, C] (P probe samples, C metric channels) with the
capture's class sizes, through the same pipeline (class centring in label order, the smoothing window, DFA on
the run's scales, the Kuramoto order), as the noise control does once. White noise is fractional Gaussian noise
at H = 0.5, so this is also the fGn null. The null depends only on the shape (class sizes, channels) and the
settings, never on the data, so it is computed once per distinct shape in a process (:func:`noise_null` is
cached) and its seed comes from the shape: every worker gives every capture of that shape the same null.
"""
from __future__ import annotations

import hashlib
from functools import lru_cache

import numpy as np

from dynstudy.analysis.kernels import dynamics
from dynstudy.analysis.kernels import fast_kernels as fk
from dynstudy.analysis.kernels.dfa_fit import null_columns

#: The settings the null depends on (H_raw and M do not depend on h_opt or sigma_h).
NULL_SETTINGS = ("smooth_window", "min_scale", "n_scales", "compat")
#: The null columns of a window_sensitivity row (H_raw at another smoothing window or probe size).
SENSITIVITY_NULL_COLUMNS = ("null_h_raw_mean", "null_h_raw_sd", "h_raw_z", "h_raw_p")


def class_sizes(labels) -> tuple[int, ...]:
    """The capture's class sizes in label order: the shape of its label blocks after the stable sort."""
    return tuple(int(c) for c in np.unique(np.asarray(labels), return_counts=True)[1])


def null_seed(sizes: tuple[int, ...], n_channels: int, k: int, settings: tuple) -> list[int]:
    """The seed of a shape's null: a digest of everything the null depends on (stable across processes)."""
    digest = hashlib.sha1(repr((sizes, n_channels, k, settings)).encode()).hexdigest()
    return [int(digest[:8], 16), int(digest[8:16], 16)]


@lru_cache(maxsize=64)
def noise_null(sizes: tuple[int, ...], n_channels: int, k: int, settings: tuple) -> tuple[np.ndarray, np.ndarray]:
    """(H_raw [k], metastability [k]) of ``k`` i.i.d. noise captures with class sizes ``sizes`` and
    ``n_channels`` channels; ``settings``: the values of :data:`NULL_SETTINGS` in that order. Read-only arrays
    (the cache shares them)."""
    window, min_scale, n_scales, compat = settings
    labels = np.repeat(np.arange(len(sizes)), sizes)
    rng = np.random.default_rng(null_seed(sizes, n_channels, k, settings))
    h, m = np.full(k, np.nan), np.full(k, np.nan)
    for i in range(k):
        X = fk.pseudo_time(rng.standard_normal((len(labels), n_channels)), labels, window)
        alpha, reasons, pair, _ = fk.series_parts(X, min_scale, n_scales, compat)
        summary = dynamics.capture_summary(alpha, reasons, pair, compat)
        h[i], m[i] = summary["h_raw"], summary["metastability"]
    for a in (h, m):
        a.setflags(write=False)
    return h, m


def capture_null_columns(labels, n_channels: int, h_raw, metastability, kw: dict, k: int) -> dict:
    """:data:`dynstudy.analysis.kernels.dfa_fit.NULL_COLUMNS` of a capture (``kw``: its metric keywords, with
    ``smooth_window``); all None but ``null_k`` = 0 when ``k`` is 0."""
    if k == 0:
        return null_columns(h_raw, metastability, [], [])
    null_h, null_m = noise_null(class_sizes(labels), int(n_channels), int(k), tuple(kw[s] for s in NULL_SETTINGS))
    return null_columns(h_raw, metastability, null_h, null_m)
