"""Many runs' series as one distribution: per x (epoch, step), the median and the 50% and 90% bands across runs.

A cell with more than :data:`MAX_TRACED_RUNS` runs is drawn this way
(:func:`dynstudy.analysis.report.plots.band_figure`) instead of a line per run, so a figure's size and drawing
time do not grow with the seeds.

Examples
--------
>>> x, q, n = quantile_bands([(np.array([0, 1]), np.array([1.0, 2.0])), (np.array([1]), np.array([4.0]))])
>>> x.tolist(), q[2].tolist(), n.tolist()
([0.0, 1.0], [1.0, 3.0], [1, 2])
"""
from __future__ import annotations

import numpy as np

#: Above this many runs, a cell's series are drawn as bands, not a line per run.
MAX_TRACED_RUNS = 12
#: The quantiles drawn: the 90% band's edges, the 50% band's edges and the median.
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: Index of the median in :data:`QUANTILES`.
MEDIAN = 2


def traced(n_runs: int) -> bool:
    """Whether a cell of ``n_runs`` runs is drawn a line per run (else as bands)."""
    return n_runs <= MAX_TRACED_RUNS


def quantile_bands(series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:data:`QUANTILES` across runs at every x at which some run has a finite value.

    Parameters
    ----------
    series : iterable of (x, y) per run, arrays of equal length; non-finite y (and their x) are left out,
        a repeated x of one run keeps its last value.

    Returns
    -------
    (x, q, n): the sorted distinct x (float), q of shape (len(QUANTILES), len(x)) with numpy's linear
    quantiles of the runs' values at each x, and n, the number of runs with a value at each x.
    """
    kept = []
    for x, y in series:
        x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        ok = np.isfinite(x) & np.isfinite(y)
        kept.append((x[ok], y[ok]))
    xs = np.unique(np.concatenate([x for x, _ in kept])) if kept else np.array([])
    if not len(xs):
        return xs, np.empty((len(QUANTILES), 0)), np.zeros(0, dtype=int)
    grid = np.full((len(kept), len(xs)), np.nan)
    for i, (x, y) in enumerate(kept):
        grid[i, np.searchsorted(xs, x)] = y
    n = np.isfinite(grid).sum(axis=0)
    return xs, np.nanquantile(grid, QUANTILES, axis=0), n


def cell_bands(runs: list[dict], series: dict, panels) -> dict:
    """panel -> :func:`quantile_bands` of the ``runs``' (run infos) series of that panel (``series``: run_id ->
    {panel: (x, y)}); a run without the panel is left out of it."""
    return {p: quantile_bands([series[r["run_id"]][p] for r in runs if p in series.get(r["run_id"], {})])
            for p in panels}
