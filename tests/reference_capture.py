"""The per-capture analysis written plainly: the oracle the fast path is tested against.

Each capture is read through a DuckDB catalog of the run's files (sorted by
``ORDER BY stage, rank, sample``) and every variant of it (signal, noise and
order controls, channel re-draws, extra smoothing windows and probe sizes) is
a separate call of :func:`dynstudy.analysis.kernels.dynamics.capture_metrics`. ``dynstudy
analyze`` runs :mod:`dynstudy.analysis.run.capture_family`, which computes the
same tables with shared work; this module is what ``analyze(...,
open_source=reference_source)`` runs, what ``tests/test_fast_path.py`` compares
the fast path against (every table, to 1e-12) and the baseline of
``bench/bench_scale.py``.
"""
from __future__ import annotations

import numpy as np

from dynstudy.analysis.kernels import dynamics
from dynstudy.analysis.kernels.dfa_fit import fit_diagnostics, fit_flags, null_columns
from dynstudy.analysis.pipeline.catalog import open_catalog
from dynstudy.analysis.run.capture_null import NULL_SETTINGS, SENSITIVITY_NULL_COLUMNS, class_sizes, null_seed
from dynstudy.analysis.run.capture_plan import (
    CHANNEL_DRAWS,
    CONTROL_METRICS,
    channel_draws,
    metric_kwargs,
    noise_seed,
    sensitivity_settings,
)
from dynstudy.store_contract.scan import StoreScan


def capture_arrays(con, run_id: str, capture: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One capture as acts [P x C], labels [P], and each column's stage and rank.

    Columns are every stored channel, in (stage, rank) order; the run's metric
    subset is rank < channels_per_stage (more may be stored for the
    channel-draw control).
    """
    got = con.execute(
        "SELECT stage, rank, sample, label, value FROM activations WHERE run_id = ? AND capture = ? "
        "ORDER BY stage, rank, sample", [run_id, capture]).fetchnumpy()
    n_samples = int(got["sample"].max()) + 1
    if len(got["value"]) % n_samples:
        raise ValueError(f"run {run_id} capture {capture}: {len(got['value'])} values is not channels x {n_samples} "
                         "samples")
    acts = np.asarray(got["value"], dtype=np.float64).reshape(-1, n_samples).T
    return acts, np.asarray(got["label"][:n_samples]), got["stage"][::n_samples], np.asarray(got["rank"][::n_samples])


def sensitivity_rows(where: dict, acts, labels, noise, own: dict, own_noise: float, kw: dict, noise_at: dict,
                     k_null: int) -> list:
    """window_sensitivity rows of one end-of-epoch capture
    (:func:`dynstudy.analysis.run.capture_plan.sensitivity_settings`).

    ``own`` / ``own_noise``: the capture's metrics and noise control at the run's own settings (not recomputed).
    The noise control at other settings is computed once per run into ``noise_at`` (it depends only on the
    probe's labels and size, which are fixed per run).
    """
    n = len(labels)
    rows = []
    for window, p in sensitivity_settings(n, kw["smooth_window"]):
        same = (window, p) == (kw["smooth_window"], n)
        sig = own if same else dynamics.capture_metrics(acts[:p], labels[:p], **{**kw, "smooth_window": window})
        if not same and (window, p) not in noise_at:
            at = dynamics.capture_metrics(noise[:p], labels[:p], **{**kw, "smooth_window": window})
            noise_at[(window, p)] = at["h_raw"]
        at = {**kw, "smooth_window": window}
        null = null_columns(sig["h_raw"], sig["metastability"], *null_values(labels[:p], acts.shape[1], at, k_null))
        rows.append({**where, "smooth_window": window, "probe_size": p, "h_raw": sig["h_raw"],
                     "metastability": sig["metastability"],
                     "noise_h_raw": own_noise if same else noise_at[(window, p)],
                     **{c: null[c] for c in SENSITIVITY_NULL_COLUMNS}})
    return rows


def fit_columns(acts, labels, kw: dict) -> dict:
    """The DFA fit diagnostics of a capture, from the literal F(s) of every channel."""
    X = dynamics.pseudo_time(acts, labels, kw["smooth_window"])
    scales, F, _ = dynamics.dfa_fluctuation(X, kw["min_scale"], kw["n_scales"])
    return fit_diagnostics(scales, np.log(F))


def null_values(labels, n_channels: int, kw: dict, k: int) -> tuple[list, list]:
    """(H_raw, M) of ``k`` i.i.d. noise captures of the capture's shape, one capture_metrics call each."""
    sizes = class_sizes(labels)
    rng = np.random.default_rng(null_seed(sizes, n_channels, k, tuple(kw[s] for s in NULL_SETTINGS)))
    block_labels = np.repeat(np.arange(len(sizes)), sizes)
    runs = [dynamics.capture_metrics(rng.standard_normal((len(labels), n_channels)), block_labels, **kw)
            for _ in range(k)]
    return [r["h_raw"] for r in runs], [r["metastability"] for r in runs]


def capture_rows(con, where: dict, step: int, params: dict, k: int | None, noise_at: dict) -> tuple[dict, list, list]:
    """One capture's metrics row, its control rows and its window-sensitivity rows.

    ``where``: run_id, capture, kind, epoch. The noise control at the extra
    smoothing windows is computed once per run into ``noise_at`` (it depends
    only on the probe's labels and size, which are fixed per run).
    """
    run_id, capture, kind = where["run_id"], where["capture"], where["kind"]
    kw = metric_kwargs(params)
    acts_all, labels, stages, ranks = capture_arrays(con, run_id, capture)
    used = ranks < k if k is not None else np.ones(len(ranks), bool)
    acts = acts_all[:, used]
    m = {**dynamics.capture_metrics(acts, labels, **kw), **fit_columns(acts, labels, kw)}
    m["fit_flags"] = fit_flags(m, m["h_raw"])
    m.update(null_columns(m["h_raw"], m["metastability"], *null_values(labels, acts.shape[1], kw, params["null_k"])))
    noise = np.random.default_rng(noise_seed(run_id, capture)).standard_normal(acts.shape)
    controls = {"noise": dynamics.capture_metrics(noise, labels, **kw),
                "order": dynamics.capture_metrics(acts, labels, order="random", seed=capture, **kw)}
    if kind == "epoch" and k is not None and not used.all():
        draws = [dynamics.capture_metrics(acts_all[:, cols], labels, **kw)
                 for cols in channel_draws(stages, k, CHANNEL_DRAWS, noise_seed(run_id, capture))]
        controls["channel_draw"] = {key: float(np.nanmean([d[key] for d in draws])) for key in CONTROL_METRICS}
        controls["channel_draw"]["spread"] = float(np.nanstd([d["h_raw"] for d in draws], ddof=1))
    control_rows = [{**where, "control": name, "spread": c.get("spread"), **{key: c[key] for key in CONTROL_METRICS}}
                    for name, c in controls.items()]
    window_rows = []
    if kind == "epoch":
        window_rows = sensitivity_rows(where, acts, labels, noise, m, controls["noise"]["h_raw"], kw, noise_at,
                                       params["null_k"])
    return {**where, "step": step, **m}, control_rows, window_rows


class ReferenceSource:
    """One run's captures and accuracies through a DuckDB catalog of its files (the pre-issue-17 reads)."""

    def __init__(self, con, run_id: str):
        self.con, self.run_id = con, run_id

    def captures(self, params: dict, k: int | None):
        """(metrics row, control rows, window rows) of each capture, in capture order."""
        caps = self.con.execute("SELECT DISTINCT capture, kind, epoch, step FROM activations WHERE run_id = ? "
                                "AND kind != 'step' ORDER BY capture", [self.run_id]).fetchall()
        noise_at = {}
        for capture, kind, epoch, step in caps:
            where = {"run_id": self.run_id, "capture": capture, "kind": kind, "epoch": epoch}
            yield capture_rows(self.con, where, step, params, k, noise_at)

    def accuracy(self) -> dict:
        """epoch -> val_acc of the run's epoch files."""
        views = {r[0] for r in self.con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}
        if "train_metrics" not in views:
            return {}
        return dict(self.con.execute("SELECT epoch, val_acc FROM train_metrics WHERE run_id = ?",
                                     [self.run_id]).fetchall())


def reference_source(store: str, run_id: str, inputs) -> ReferenceSource:
    """The reference's capture source for ``analyze(..., open_source=reference_source)``: the run's files through
    a DuckDB catalog of exactly ``inputs``."""
    return ReferenceSource(open_catalog(store, scan=StoreScan(store, inputs.files, [])), run_id)
