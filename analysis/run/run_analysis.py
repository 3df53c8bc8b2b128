"""One run's analysis, as a worker process or a Ray task runs it: its input files -> its metric tables.

:func:`analyze_and_write` reads the run's captures one at a time (through :mod:`dynstudy.analysis.run.capture_family`,
or a source the caller gives), computes the per-capture, per-control and window-sensitivity rows, the run-level series
(:func:`summarise_run`) and the temporal protocol's tables, and writes each table's file for the run. The cross-run
tables are not here: :mod:`dynstudy.analysis.pipeline.analyze` builds them once from every run's summary. This module
imports only what a run's analysis needs, so a worker process starts in a fraction of the time
:mod:`dynstudy.analysis.pipeline.analyze` (with its statistics, claims and catalog) takes to import.
"""
from __future__ import annotations

import math

import numpy as np

from dynstudy.analysis.kernels import dfa_fit, dynamics
from dynstudy.analysis.run.allocator import keep_freed_memory
from dynstudy.analysis.run.capture_family import FastSource
from dynstudy.analysis.run.capture_plan import run_params
from dynstudy.analysis.run.geometry_run import geometry_summary, run_geometry
from dynstudy.analysis.run.inventory import RunInputs, capture_gaps
from dynstudy.analysis.run.temporal_run import run_temporal
from dynstudy.store_contract.files import write_rows
from dynstudy.store_contract.schemas import ANALYSIS_TABLES, INPUT_DIGEST_KEY


def write_table(store: str, table: str, rows: list[dict], run_id: str | None = None, digest: str | None = None) -> None:
    """Write ``rows`` as the analysis table's file (one run's, or the cross-run table's), recording ``digest``."""
    schema = ANALYSIS_TABLES[table]
    write_rows(store, table, run_id, "part", {f.name: [r.get(f.name) for r in rows] for f in schema}, schema,
               metadata={INPUT_DIGEST_KEY: digest} if digest else None)


def _clean(x):
    """NaN -> None for nullable columns; numpy scalars -> python."""
    if x is None:
        return None
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def _nanmean(values) -> float | None:
    """Mean of the values that are not NaN (None counts as NaN); None when none of them is finite."""
    x = np.asarray(values, dtype=float)
    return np.nanmean(x) if np.isfinite(x).any() else None


def null_summary(trained: list[dict]) -> dict:
    """The run's end-of-epoch captures against their nulls: mean z-scores, how many lie beyond their null
    (:data:`dfa_fit.BEYOND_NULL_P`), whether that count is chance (:func:`dfa_fit.within_null`), and how many carry
    a fit flag other than nonstationary (a narrow span of scales or a poor line)."""
    out = {"n_fit_flagged": sum(bool(set((r.get("fit_flags") or "").split(";")) & {"narrow_span", "poor_fit"})
                                for r in trained)}
    if not trained or not trained[0].get("null_k"):
        return {**out, "h_raw_z_mean": None, "m_z_mean": None, "n_h_raw_beyond_null": None,
                "n_m_beyond_null": None, "within_null": None}
    beyond = {}
    for name in ("h_raw", "m"):
        p = np.array([np.nan if r[f"{name}_p"] is None else r[f"{name}_p"] for r in trained])
        out[f"{name}_z_mean"] = _nanmean([r[f"{name}_z"] for r in trained])
        beyond[name] = int((p <= dfa_fit.BEYOND_NULL_P).sum())
        out[f"n_{name}_beyond_null"] = beyond[name]
        n = int(np.isfinite(p).sum())
        beyond[name] = dfa_fit.within_null(beyond[name], n)
    out["within_null"] = None if None in beyond.values() else all(beyond.values())
    return out


def summarise_run(run: dict, cap_rows: list[dict], control_rows: list[dict], acc: dict, params: dict,
                  reason: str | None) -> dict:
    """The run_summary row; fills hz, mz, psi and volatility into the end-of-epoch ``cap_rows``.

    A run with a gap (``reason``) gets its controls and counts (among them
    ``n_nonstationary``, its end-of-epoch captures whose H_raw is above
    :data:`dynamics.NONSTATIONARY_ALPHA`) but no run-level metric or flag: a
    series with a hole is not analysed as if it were whole.
    """
    trained = [r for r in cap_rows if r["kind"] == "epoch"]
    summary = {key: run[key] for key in ("run_id", "study", "model", "dataset", "optimizer", "seed", "status")}
    summary.update(n_epochs=len(trained), reason=reason,
                   n_nonstationary=int(dynamics.nonstationary([r["h_raw"] for r in trained]).sum()))
    for name in ("noise", "order"):
        vals = [c["h_raw"] for c in control_rows if c["control"] == name and c["kind"] == "epoch"]
        summary[f"{name}_h_raw_mean"] = _nanmean(vals)
    summary.update(null_summary(trained))
    init = [r["h_raw"] for r in cap_rows if r["kind"] == "init"]
    summary["init_h_raw"] = init[0] if init else None
    if reason is not None:
        return summary
    if trained:
        rm = dynamics.run_metrics(
            np.array([r["h_eff"] for r in trained], dtype=float),
            np.array([r["metastability"] for r in trained], dtype=float),
            np.array([acc.get(r["epoch"], np.nan) for r in trained], dtype=float),
            epochs=np.array([r["epoch"] for r in trained]), w_h=params["w_h"], vol_window=params["vol_window"],
            vol_threshold=params["vol_threshold"], vol_patience=params["vol_patience"])
        for i, r in enumerate(trained):
            r.update(hz=rm["hz"][i], mz=rm["mz"][i], psi=rm["psi"][i], volatility=rm["volatility"][i])
        summary.update({key: rm[key] for key in ("h_eff_mean", "metastability_mean", "psi_mean", "psi_std",
                                                 "r_hz_mz", "r_psi_acc", "trigger_epoch", "state")})
        summary["h_raw_mean"] = _nanmean([r["h_raw"] for r in trained])
        summary["nonstationary"], summary["h_eff_saturated"] = dynamics.h_raw_flags(
            summary["h_raw_mean"], params["h_opt"], params["sigma_h"])
        summary["synchrony_mean"] = _nanmean([r["synchrony"] for r in trained])
    known = {e: a for e, a in acc.items() if a is not None and not math.isnan(a)}  # a run may log no val_acc
    if known:
        best_epoch = max(known, key=lambda e: (known[e], -e))
        summary.update(best_val_acc=known[best_epoch], best_epoch=best_epoch, final_val_acc=acc[max(acc)])
    return summary


def analyze_run(source, run: dict, params: dict, k: int | None = None, reason: str | None = None,
                activation_files=()) -> dict[str, list[dict]]:
    """The rows one run contributes to capture_metrics, controls, window_sensitivity, the temporal tables and
    run_summary.

    ``source`` yields each capture's rows (:class:`dynstudy.analysis.run.capture_family.FastSource`) and the
    run's accuracies. The run-level series
    (Psi, volatility, r, state) is over the captures
    taken after each epoch's validation; capture 0 is the init control and
    every-N-step captures make the temporal series (:func:`run_temporal`),
    with no capture metrics of their own. End-of-epoch captures are
    also analysed at every smoothing window of :data:`SENSITIVITY_WINDOWS`
    for the sensitivity analysis, and, when the run stored more channels than
    it uses, over :data:`CHANNEL_DRAWS` re-drawn channel subsets (the
    channel-draw control). ``reason``: the run's files have a gap (see
    :mod:`dynstudy.analysis.run.inventory`); the end-of-epoch captures are also checked
    against the epoch files here. ``activation_files``: the run's activation
    files, from which :func:`run_temporal` reads the temporal series.
    """
    cap_rows, control_rows, window_rows = [], [], []
    for row, controls, windows in source.captures(params, k):
        [row["nonstationary"]] = dynamics.known_flags(row["h_raw"], dynamics.nonstationary)
        cap_rows.append(row)
        control_rows += controls
        window_rows += windows
    acc = source.accuracy()
    if reason is None:
        captured = [r["epoch"] for r in cap_rows if r["kind"] == "epoch"]
        if run.get("status") == "running":  # the newest capture may be written before its epoch file
            captured = [e for e in captured if e <= max(acc, default=0)]
        reason = capture_gaps(captured, list(acc))
    summary = summarise_run(run, cap_rows, control_rows, acc, params, reason)
    temporal_rows, temporal_controls, temporal_summary = \
        run_temporal(list(activation_files), run["run_id"], params, k) if reason is None and activation_files \
        else ([], [], {})
    summary.update(temporal_summary)
    clean = lambda rows: [{key: _clean(v) for key, v in r.items()} for r in rows]  # noqa: E731
    geometry_rows = run_geometry(activation_files, run["run_id"]) if activation_files else []
    summary.update(geometry_summary(geometry_rows))
    return {"capture_metrics": clean(cap_rows), "controls": clean(control_rows),
            "window_sensitivity": clean(window_rows), "geometry_metrics": clean(geometry_rows),
            "temporal_metrics": clean(temporal_rows),
            "temporal_controls": clean(temporal_controls), "run_summary": clean([summary])}


def fast_source(store: str, run_id: str, inputs: RunInputs) -> FastSource:
    """The capture source ``dynstudy analyze`` uses: each capture file read once with pyarrow, every variant of
    the capture computed with shared work (:mod:`dynstudy.analysis.run.capture_family`)."""
    return FastSource(run_id, inputs.files)


def analyze_and_write(store: str, run: dict, inputs: RunInputs, reason: str | None,
                      open_source=fast_source) -> tuple[str, str | None, int, dict]:
    """Analyse one run from exactly ``inputs`` and write its tables; return (run_id, error, captures, summary).

    The outputs record ``inputs.digest``. An unreadable or inconsistent file
    makes the error, naming it; nothing of the run is written then.
    ``open_source(store, run_id, inputs)`` makes the run's capture source
    (:func:`fast_source`; the tests' reference implementation passes its own).
    """
    try:
        source = open_source(store, run["run_id"], inputs)
        tables = analyze_run(source, run, *run_params(run["config"]), reason=reason,
                             activation_files=inputs.files.get("activations", []))
    except Exception as err:  # a file that changed or broke after the scan: name it, skip the run
        return run["run_id"], f"{type(err).__name__}: {err}", 0, {}
    tables["run_summary"][0]["input_digest"] = inputs.digest
    for table, rows in tables.items():  # run_summary last
        write_table(store, table, rows, run["run_id"], inputs.digest)
    return run["run_id"], None, len(tables["capture_metrics"]), tables["run_summary"][0]


def analyze_in_worker(store: str, run: dict, inputs: RunInputs, reason: str | None,
                      open_source=fast_source) -> tuple[str, str | None, int, dict]:
    """:func:`analyze_and_write` in a worker process or Ray task of ``dynstudy analyze``; the fast path first
    keeps freed memory in the process (:func:`dynstudy.analysis.run.allocator.keep_freed_memory`)."""
    if open_source is fast_source:
        keep_freed_memory()
    return analyze_and_write(store, run, inputs, reason, open_source)
