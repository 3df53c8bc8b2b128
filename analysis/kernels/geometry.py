"""Representation geometry of one stage's activations: similarity between states, and their dimensionality.

A capture of a stage is a matrix X [n probe samples, d channels]; the probe set is the same images at every
capture of every seed, so two captures' rows correspond. These kernels compare such matrices and describe each:

- :func:`features` centres X's columns and keeps what every comparison needs (the centred matrix, the
  squared norms of its rows, which are the diagonal of the linear Gram matrix K = X X^T, and X^T X);
- :func:`hsic_unbiased` is the unbiased HSIC estimator of Song et al. (2012) for linear kernels, computed in
  feature space (no n x n matrix): with K~ = K - diag(K) and centred X (so K 1 = 0)

      HSIC_1(K, L) = [ tr(K~ L~) + (1'K~1)(1'L~1) / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1 ] / (n(n-3))

  where tr(K~ L~) = ||X'Y||_F^2 - sum_i K_ii L_ii, 1'K~1 = -tr K and 1'K~L~1 = sum_i K_ii L_ii;
- :func:`linear_cka` is debiased linear CKA, HSIC_1(K, L) / sqrt(HSIC_1(K, K) HSIC_1(L, L)) (Kornblith et
  al. 2019; Nguyen et al. 2021 for the debiased form): 1 for X and X Q s (Q orthogonal, s > 0), centred on 0
  for independent X and Y at any n (the biased estimator is not: about 0.2 at n = 32); it can be slightly
  negative, and it is NaN only where a matrix has no variance (HSIC_1(K, K) <= 0), never silently clipped;
- :func:`cka_matrix` gives every pair of a list of captures (seeds at one epoch) from one cross-product of
  their stacked features, or, when those are wider than the probe set is long, from each capture's Gram
  matrix made once;
- :func:`spectrum` is the eigenvalues of X's channel covariance, and from it :func:`effective_rank`
  (RankMe: exp of the entropy of the normalised singular values, Garrido et al. 2023),
  :func:`participation_ratio` ((sum lambda)^2 / sum lambda^2) and the activation variance (sum lambda / d,
  the mean channel variance);
- :func:`random_projection` is the fixed Gaussian map to k dimensions a capture may store instead of every
  channel (Johnson-Lindenstrauss: inner products, hence Gram matrices and CKA, are kept in expectation).

All are pure numpy functions; n >= 4 samples is needed for the unbiased estimator.

Examples
--------
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(size=(256, 32))
>>> Q, _ = np.linalg.qr(rng.normal(size=(32, 32)))
>>> round(linear_cka(X, 3.0 * X @ Q), 12)
1.0
>>> abs(linear_cka(X, rng.normal(size=(256, 32)))) < 0.02
True
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

#: The fewest probe samples the unbiased HSIC estimator is defined for.
MIN_SAMPLES = 4
#: CKA between consecutive captures at or above which a representation has stopped moving (:func:`settle_epoch`).
DRIFT_SETTLED = 0.98


class Features(NamedTuple):
    """A capture of a stage prepared for comparisons: centred columns, the diagonal of its Gram matrix, and its
    channel cross-product (n times the covariance, which gives its spectrum and its own HSIC)."""

    X: np.ndarray     # [n, d], columns centred
    diag: np.ndarray  # [n], squared norm of each row (K_ii), float64
    XtX: np.ndarray   # [d, d], X' X

    @property
    def n(self) -> int:
        return self.X.shape[0]


def features(X) -> Features:
    """Centre the columns of ``X`` [n, d]; keep the diagonal of its linear Gram matrix and X' X.

    Parameters
    ----------
    X : array [n samples, d channels], finite, or :class:`Features` (returned as it is). float32 stays float32
        (the products then run in single precision, as the store keeps activations; sums are accumulated in
        float64), anything else is float64.

    Returns
    -------
    Features
    """
    if isinstance(X, Features):
        return X
    X = np.asarray(X)
    X = X if X.dtype in (np.float32, np.float64) else X.astype(np.float64)
    if X.ndim != 2:
        raise ValueError(f"X must be [samples, channels], got shape {X.shape}")
    if X.shape[0] < MIN_SAMPLES:
        raise ValueError(f"the unbiased HSIC needs at least {MIN_SAMPLES} samples, got {X.shape[0]}; "
                         f"use a larger probe")
    if not np.all(np.isfinite(X)):
        raise ValueError("X holds NaN or infinite values; geometry is defined for finite activations only")
    Xc = X - X.mean(axis=0, dtype=np.float64).astype(X.dtype)
    return Features(Xc, np.einsum("ij,ij->i", Xc, Xc, dtype=np.float64), Xc.T @ Xc.copy())


def _hsic_from_terms(cross_sq, diag_dot, trace_k, trace_l, n: int):
    """HSIC_1 from ||X'Y||_F^2, sum_i K_ii L_ii and the traces (scalars or broadcastable arrays)."""
    tr_kl = cross_sq - diag_dot
    return (tr_kl + trace_k * trace_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * diag_dot) / (n * (n - 3))


def hsic_unbiased(a, b) -> float:
    """Unbiased HSIC (Song et al. 2012) between two captures with linear kernels.

    Parameters
    ----------
    a, b : array [n, d_a] and [n, d_b] (rows: the same samples), or :class:`Features`.

    Returns
    -------
    float (can be negative: the estimator is unbiased, so it scatters around 0 for independent data)
    """
    fa, fb = features(a), features(b)
    if fa.n != fb.n:
        raise ValueError(f"the captures have {fa.n} and {fb.n} samples; compare captures of the same probe set")
    cross_sq = _sq(fa.XtX) if fa is fb else _sq(fa.X.T @ fb.X)
    return float(_hsic_from_terms(cross_sq, fa.diag @ fb.diag, fa.diag.sum(), fb.diag.sum(), fa.n))


def _sq(M: np.ndarray) -> float:
    """Squared Frobenius norm, accumulated in float64."""
    return float(np.sum(np.square(M, dtype=np.float64)))


def linear_cka(a, b) -> float:
    """Debiased linear CKA between two captures of the same probe samples.

    Parameters
    ----------
    a, b : array [n, d_a] and [n, d_b], or :class:`Features`.

    Returns
    -------
    float: HSIC_1(a, b) / sqrt(HSIC_1(a, a) HSIC_1(b, b)); NaN when either self-HSIC is not positive (a
    capture without variance).

    Examples
    --------
    >>> X = np.random.default_rng(1).normal(size=(64, 8))
    >>> round(linear_cka(X, X), 12)
    1.0
    """
    fa, fb = features(a), features(b)
    own_a, own_b = hsic_unbiased(fa, fa), hsic_unbiased(fb, fb)
    if own_a <= 0 or own_b <= 0:
        return float("nan")
    return hsic_unbiased(fa, fb) / float(np.sqrt(own_a * own_b))


def cka_matrix(captures: Sequence) -> np.ndarray:
    """Debiased linear CKA between every pair of ``captures`` (each [n, d_i] or :class:`Features`).

    Every pair's ||X_i' X_j||_F^2 = tr(K_i K_j) comes from one product: of the stacked centred features when
    their total width is at most n, else of the captures' flattened Gram matrices (each made once), so M
    captures never cost M^2 / 2 separate products.

    Returns
    -------
    array [M, M], symmetric, 1 on the diagonal of captures with variance (NaN rows for those without).
    """
    feats = [features(c) for c in captures]
    if not feats:
        return np.zeros((0, 0))
    n = feats[0].n
    if any(f.n != n for f in feats):
        raise ValueError(f"the captures have {sorted({f.n for f in feats})} samples; compare captures of the same "
                         f"probe set")
    cross_sq = _cross_sq_by_grams(feats) if sum(f.X.shape[1] for f in feats) > n else _cross_sq_by_features(feats)
    D = np.stack([f.diag for f in feats])
    diag_dot = D @ D.T
    traces = D.sum(axis=1)
    H = _hsic_from_terms(cross_sq, diag_dot, traces[:, None], traces[None, :], n)
    self_h = np.diag(H).copy()
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.sqrt(np.where(self_h > 0, self_h, np.nan))
        return H / np.outer(scale, scale)


def _cross_sq_by_features(feats: Sequence[Features]) -> np.ndarray:
    """||X_i' X_j||_F^2 of every pair from one product of the stacked features (n (sum d)^2: narrow captures)."""
    edges = np.concatenate([[0], np.cumsum([f.X.shape[1] for f in feats])])
    Z = np.concatenate([f.X for f in feats], axis=1)
    G = Z.T @ Z
    m = len(feats)
    out = np.empty((m, m))
    for i in range(m):
        for j in range(i, m):
            block = G[edges[i]:edges[i + 1], edges[j]:edges[j + 1]]
            out[i, j] = out[j, i] = np.sum(block * block, dtype=np.float64)
    return out


def _cross_sq_by_grams(feats: Sequence[Features]) -> np.ndarray:
    """The same as tr(K_i K_j) from each capture's n x n Gram matrix, made once (n^2 sum d + M^2 n^2: wide
    captures, where the stacked features would be wider than the probe set is long)."""
    n = feats[0].n
    F = np.empty((len(feats), n * n), dtype=np.result_type(*(f.X for f in feats)))
    for i, f in enumerate(feats):
        # X @ copy(X).T: OpenBLAS's general product runs about 3x faster here than the symmetric one X @ X.T selects
        np.matmul(f.X, f.X.copy().T, out=F[i].reshape(n, n))
    return (F @ F.T).astype(np.float64)


def spectrum(X) -> np.ndarray:
    """Eigenvalues of the channel covariance of ``X`` [n, d] (columns centred, divided by n), largest first.

    These are the squared singular values of the centred X over n, from X' X (kept by :func:`features`), so
    the cost is n d^2 once per capture (the SVD of X is not needed).
    """
    f = features(X)
    return np.clip(np.linalg.eigvalsh(f.XtX.astype(np.float64) / f.n)[::-1], 0.0, None)


def effective_rank(eigenvalues, eps: float = 1e-12) -> float:
    """RankMe (Garrido et al. 2023): exp of the Shannon entropy of the normalised singular values.

    Parameters
    ----------
    eigenvalues : covariance eigenvalues (:func:`spectrum`); the singular values are their square roots.
    eps : added to each normalised singular value before the log, as RankMe does.

    Returns
    -------
    float in [1, d] (NaN for a matrix without variance).

    Examples
    --------
    >>> round(effective_rank([4.0, 4.0, 4.0, 0.0]), 6)
    3.0
    """
    s = np.sqrt(np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None))
    total = s.sum()
    if total <= 0:
        return float("nan")
    p = s / total + eps
    return float(np.exp(-np.sum(p * np.log(p))))


def participation_ratio(eigenvalues) -> float:
    """(sum lambda)^2 / sum lambda^2 of the covariance eigenvalues: d for an isotropic matrix, 1 for rank one.

    Examples
    --------
    >>> participation_ratio([1.0, 1.0, 0.0, 0.0])
    2.0
    """
    lam = np.clip(np.asarray(eigenvalues, dtype=np.float64), 0.0, None)
    sq = np.sum(lam * lam)
    return float(lam.sum() ** 2 / sq) if sq > 0 else float("nan")


def stage_geometry(X) -> dict:
    """A capture's own geometry: effective rank, participation ratio, mean channel variance, and width.

    Parameters
    ----------
    X : array [n, d], or :class:`Features`.

    Returns
    -------
    dict with ``effective_rank``, ``participation_ratio``, ``activation_variance`` (mean over channels of the
    variance over samples, ddof 0) and ``width`` (d).
    """
    lam = spectrum(X)
    return {"effective_rank": effective_rank(lam), "participation_ratio": participation_ratio(lam),
            "activation_variance": float(lam.sum() / lam.size), "width": int(lam.size)}


def random_projection(width: int, k: int, seed: int) -> np.ndarray:
    """A fixed Gaussian projection [width, k] with entries N(0, 1/k) drawn from ``seed``.

    X @ P keeps X's inner products in expectation (E[P P'] = I), so Gram matrices and CKA of projected captures
    approximate those of the full ones, with an error that shrinks as k grows. A stage no wider than ``k`` is
    not projected (the identity is returned).
    """
    if width <= k:
        return np.eye(width)
    return np.random.default_rng(seed).normal(scale=1.0 / np.sqrt(k), size=(width, k))


def settle_epoch(epochs, cka_prev, threshold: float = DRIFT_SETTLED):
    """The first epoch from which CKA with the previous capture stays at or above ``threshold`` to the run's end.

    Parameters
    ----------
    epochs : int array, increasing.
    cka_prev : CKA of each epoch's capture with the one before (NaN or None: unknown, which breaks a stretch).

    Returns
    -------
    int or None (the drift never settles, or the last epoch is below the threshold).

    Examples
    --------
    >>> settle_epoch([1, 2, 3, 4, 5], [0.5, 0.99, 0.9, 0.985, 0.99])
    4
    """
    values = np.array([np.nan if v is None else v for v in cka_prev], dtype=float)
    below = ~(values >= threshold)
    if len(values) == 0 or below[-1]:
        return None
    last_below = np.flatnonzero(below)
    return int(np.asarray(epochs)[last_below[-1] + 1 if len(last_below) else 0])
