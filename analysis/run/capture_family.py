"""The metrics of one capture and of every variant the analysis needs, computed with shared work.

For each capture ``dynstudy analyze`` needs the metrics of the signal, of
its noise and order controls, on end-of-epoch captures also at the extra
smoothing windows and probe sizes of the sensitivity analysis and, for runs
that store more channels than they use, over re-drawn channel subsets. The
reference (:mod:`tests.reference_capture`) runs the whole :func:`dynstudy.analysis.kernels.dynamics.capture_metrics` for
each. The definitions let much of that work be shared, and here it is:

- the stable sort by label and the per-class centring are done once; the
  signal, the order control (a permutation of the centred samples) and each
  extra smoothing window are smoothings of that one array;
- every step before the Kuramoto sum is per channel, so the pseudo-time
  series, DFA exponents and phasors of all stored channels are computed once
  and each channel re-draw only averages its channels' exponents and sums
  their phasors (the reference recomputes all of it eight times);
- the noise control at the other windows and probe sizes needs only H_raw
  (no Hilbert transform), once per run;
- the DFA, phasor, centring and smoothing loops are compiled (:mod:`dynstudy.analysis.kernels.fast_kernels` over
  :mod:`dynstudy.analysis.kernels.fast_loops`).

Every value equals the reference's up to rounding (tests/test_fast_path.py).
"""
from __future__ import annotations

import numpy as np

from dynstudy.analysis.kernels import dynamics
from dynstudy.analysis.kernels import fast_kernels as fk
from dynstudy.analysis.kernels.dfa_fit import fit_diagnostics, fit_flags
from dynstudy.analysis.run.capture_null import SENSITIVITY_NULL_COLUMNS, capture_null_columns
from dynstudy.analysis.run.capture_plan import (
    CHANNEL_DRAWS,
    CONTROL_METRICS,
    channel_draws,
    metric_kwargs,
    noise_seed,
    sensitivity_settings,
)
from dynstudy.analysis.run.capture_read import Capture, capture_files, epoch_accuracy, read_capture


def _metrics(X: np.ndarray, kw: dict, phases: bool = True, fit: bool = False) -> dict:
    """:func:`dynstudy.analysis.kernels.dynamics.capture_metrics` of the pseudo-time series ``X`` [C, N] (metastability
    and synchrony NaN unless ``phases``), with its :func:`dynstudy.analysis.kernels.dfa_fit.fit_diagnostics` when
    ``fit``."""
    alpha, reasons, pair, log_f = fk.series_parts(X, kw["min_scale"], kw["n_scales"], kw["compat"], phases)
    out = dynamics.capture_summary(alpha, reasons, pair, kw["compat"], kw["h_opt"], kw["sigma_h"])
    if fit:
        out.update(fit_diagnostics(fk.dfa_plan(X.shape[1], kw["min_scale"], kw["n_scales"])[0], log_f))
    return out


def _h_raw(X: np.ndarray, kw: dict) -> float:
    return _metrics(X, kw, phases=False)["h_raw"]


class ChannelSet:
    """Per-channel DFA exponents, reasons and phasors of the pseudo-time series of all stored channels,
    from which the metrics of any subset of channels follow (:meth:`metrics`)."""

    def __init__(self, X: np.ndarray, kw: dict):
        self.kw, self.n = kw, X.shape[1]
        self.scales = fk.dfa_plan(self.n, kw["min_scale"], kw["n_scales"])[0]
        if len(self.scales) < 2:
            self.alpha, self.reasons = fk.dfa_exponents(X, kw["min_scale"], kw["n_scales"])
            self.log_f = np.full((len(self.scales), len(X)), np.nan)
        else:
            self.alpha, status, self.log_f = fk.dfa_status(X, kw["min_scale"], kw["n_scales"])
            self.reasons = fk.reasons_of(status)
        self.finite = np.isfinite(X).all(axis=1)
        self.live = ~(X == X[:, :1]).all(axis=1)
        self.cos, self.sin = np.zeros(X.shape), np.zeros(X.shape)
        step = dynamics.rows_per_chunk(self.n)
        for start in range(0, len(X), step):
            rows = slice(start, start + step)
            self.cos[rows], self.sin[rows] = fk.phasors(X[rows])

    def metrics(self, cols: np.ndarray, fit: bool = False) -> dict:
        """capture_metrics of the channels ``cols`` (indices, in the order the reference takes them), with their
        fit diagnostics when ``fit``."""
        kw = self.kw
        if self.n < 2 or not self.finite[cols].all():
            pair = (np.nan, np.nan)
        else:
            live = cols[self.live[cols]]
            pair = fk.order_parameter(self.cos[live].sum(axis=0), self.sin[live].sum(axis=0), len(live),
                                      len(cols) - len(live), kw["compat"])
        out = dynamics.capture_summary(self.alpha[cols], [self.reasons[i] for i in cols], pair, kw["compat"],
                                       kw["h_opt"], kw["sigma_h"])
        if fit:
            out.update(fit_diagnostics(self.scales, self.log_f[:, cols]))
        return out


def capture_rows(cap: Capture, run_id: str, params: dict, k: int | None, noise_at: dict) -> tuple[dict, list, list]:
    """One capture's metrics row, control rows and window-sensitivity rows, as
    :func:`tests.reference_capture.capture_rows` gives them.

    ``noise_at``: the noise control's H_raw at other (window, probe size) settings, filled once per run.
    """
    kw = metric_kwargs(params)
    kw["compat"] = dynamics.check_compat(kw["compat"])
    window = kw["smooth_window"]
    where = {"run_id": run_id, "capture": cap.capture, "kind": cap.kind, "epoch": cap.epoch}
    used = cap.ranks < k if k is not None else np.ones(len(cap.ranks), bool)
    acts = cap.acts if used.all() else cap.acts[:, used]
    redraw = cap.kind == "epoch" and k is not None and not used.all()
    centred = fk.class_centred(cap.acts if redraw else acts, cap.labels)
    if redraw:  # the pseudo-time series of every stored channel, once
        channels = ChannelSet(fk.smoothed(centred, window), kw)
        m = channels.metrics(np.flatnonzero(used), fit=True)
        centred = centred[used]
    else:
        m = _metrics(fk.smoothed(centred, window), kw, fit=True)
    m["fit_flags"] = fit_flags(m, m["h_raw"])
    m.update(capture_null_columns(cap.labels, acts.shape[1], m["h_raw"], m["metastability"], kw, params["null_k"]))
    n = len(cap.labels)
    noise = np.random.default_rng(noise_seed(run_id, cap.capture)).standard_normal(acts.shape)
    perm = np.random.default_rng(cap.capture).permutation(n)
    controls = {"noise": _metrics(fk.pseudo_time(noise, cap.labels, window), kw),
                "order": _metrics(fk.smoothed(centred, window, perm), kw)}
    if redraw:
        draws = [channels.metrics(cols) for cols in channel_draws(cap.stages, k, CHANNEL_DRAWS,
                                                                   noise_seed(run_id, cap.capture))]
        controls["channel_draw"] = {key: float(np.nanmean([d[key] for d in draws])) for key in CONTROL_METRICS}
        controls["channel_draw"]["spread"] = float(np.nanstd([d["h_raw"] for d in draws], ddof=1))
    control_rows = [{**where, "control": name, "spread": c.get("spread"), **{key: c[key] for key in CONTROL_METRICS}}
                    for name, c in controls.items()]
    window_rows = []
    if cap.kind == "epoch":
        for w, p in sensitivity_settings(n, window):
            same = (w, p) == (window, n)
            if same:
                sig = m
            elif p == n:
                sig = _metrics(fk.smoothed(centred, w), kw)
            else:
                sig = _metrics(fk.pseudo_time(acts[:p], cap.labels[:p], w), kw)
            if not same and (w, p) not in noise_at:
                noise_at[(w, p)] = _h_raw(fk.pseudo_time(noise[:p], cap.labels[:p], w), kw)
            null = capture_null_columns(cap.labels[:p], acts.shape[1], sig["h_raw"], sig["metastability"],
                                        {**kw, "smooth_window": w}, params["null_k"])
            window_rows.append({**where, "smooth_window": w, "probe_size": p, "h_raw": sig["h_raw"],
                                "metastability": sig["metastability"],
                                "noise_h_raw": controls["noise"]["h_raw"] if same else noise_at[(w, p)],
                                **{c: null[c] for c in SENSITIVITY_NULL_COLUMNS}})
    return {**where, "step": cap.step, **m}, control_rows, window_rows


class FastSource:
    """One run's captures and accuracies read straight from its input files
    (:mod:`dynstudy.analysis.run.capture_read`)."""

    def __init__(self, run_id: str, files: dict):
        self.run_id, self.files = run_id, files

    def captures(self, params: dict, k: int | None):
        """(metrics row, control rows, window rows) of each capture, in capture order, one capture in memory."""
        found = capture_files(self.files.get("activations", []))
        if not found:
            raise ValueError(f"run {self.run_id} has no activation files")
        noise_at = {}
        for f in found:
            yield capture_rows(read_capture(f), self.run_id, params, k, noise_at)

    def accuracy(self) -> dict:
        """epoch -> val_acc of the run's epoch files."""
        return epoch_accuracy(self.files.get("train_metrics", []))
