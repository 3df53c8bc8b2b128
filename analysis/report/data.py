"""What the study report shows, read from a DuckDB connection over a store.

Plain rows (lists of dicts) and per-run series; no HTML and no figures here
(:mod:`dynstudy.analysis.report.build` renders them). Every table may be absent or empty:
each reader then returns empty structures and the report says what is missing.
"""
from __future__ import annotations

import math
from collections import defaultdict

import duckdb
import numpy as np
import pyarrow as pa

from dynstudy.analysis.kernels.params import DEFAULTS, PLATEAU_POINTS, AnalysisParams
from dynstudy.analysis.stats.claims import plateau_epoch
from dynstudy.analysis.stats.variability import CELL_KEYS, finite_or_none
from dynstudy.store_contract.schemas import TABLES

#: Metric columns of capture_metrics drawn as trajectories.
TRAJECTORY_METRICS = ("h_eff", "metastability", "psi", "volatility")


def read_tables(con: duckdb.DuckDBPyConnection) -> dict[str, pa.Table]:
    """Every table of the contract that ``con`` can query (activations excepted), each read once, as Arrow.

    Returns
    -------
    dict table name -> its rows; a table that is absent, or whose view fails
    to read, is left out.
    """
    rows = con.execute("SELECT DISTINCT table_name FROM information_schema.tables").fetchall()
    names = {r[0] for r in rows}
    con.execute("SET enable_progress_bar = false")
    out = {}
    for table in TABLES:
        if table == "activations" or table not in names:
            continue
        try:
            out[table] = con.sql(f'SELECT * FROM "{table}"').to_arrow_table()
        except duckdb.Error:
            continue
    return out


def rows_of(tables: dict, table: str) -> list[dict]:
    """The rows of ``table`` of :func:`read_tables` as dicts, or [] when it is absent or empty."""
    return tables[table].to_pylist() if table in tables else []


def cell_of(row: dict) -> tuple:
    """The (model, dataset, optimizer) cell of a row, as strings."""
    return tuple(str(row.get(k)) for k in CELL_KEYS)


def unreadable(con) -> list[tuple]:
    """(table, path, reason) of the store's files the catalog left out (none without that table)."""
    try:
        return con.execute("SELECT table_name, path, error FROM unreadable_files ORDER BY path").fetchall()
    except duckdb.Error:
        return []


def cell_label(cell: tuple) -> str:
    return " · ".join(cell)


def run_params(config) -> AnalysisParams | None:
    """A run's analysis settings, read from its recorded config by :meth:`AnalysisParams.from_config`.

    None when the config is not recorded or cannot be read (not JSON, not an
    object, a setting this dynstudy does not know): the report then draws the
    defaults and says so.
    """
    if config in (None, ""):
        return None
    try:
        return AnalysisParams.from_config(config)
    except (ValueError, TypeError, AttributeError):
        return None


def params_of(info: dict) -> AnalysisParams:
    """The settings of a run info of :func:`run_index`: its own, or :data:`DEFAULTS` when they are unknown."""
    return info.get("params") or DEFAULTS


def per_run_text(infos: list[dict], describe, label=lambda info: info["run_id"]) -> str:
    """``describe(settings)`` for the runs ``infos``: one text when they share it, else each text with its runs.

    A run whose settings are unknown is described by the defaults, and named as such.
    """
    groups: dict[str, list[str]] = {}
    for info in infos:
        known = info.get("params") is not None
        txt = describe(params_of(info)) + ("" if known else " (defaults: the run's config does not say)")
        groups.setdefault(txt, {})[str(label(info))] = None
    if len(groups) <= 1:
        return next(iter(groups), describe(DEFAULTS))
    return "the runs' settings differ: " + "; ".join(f"{t} ({', '.join(ids)})" for t, ids in groups.items())


def by_setting(infos: list[dict], name: str, label=lambda info: info["run_id"]) -> dict:
    """Value of the setting ``name`` -> the distinct labels of the runs ``infos`` with it, values in sorted order."""
    out = defaultdict(dict)
    for info in infos:
        out[getattr(params_of(info), name)][str(label(info))] = None
    return {v: list(out[v]) for v in sorted(out)}


def run_index(runs: list[dict], summary: list[dict]) -> dict:
    """run_id -> merged run info: the runs row, filled in from run_summary, with its settings as ``params``.

    runs is authoritative for identity and status (it is live); run_summary
    adds the analysis columns. Runs known only to one table are kept.
    ``params``: the run's analysis settings (:func:`run_params`), None when unknown.
    """
    info = {}
    for row in summary:
        info[str(row["run_id"])] = dict(row)
    for row in runs:
        rid = str(row["run_id"])
        merged = info.setdefault(rid, {})
        for k, v in row.items():
            if v is not None or k not in merged:
                merged[k] = v
    for rid, row in info.items():
        row["run_id"] = rid
        if row.get("n_epochs") is None and row.get("epochs_completed") is not None:
            row["n_epochs"] = row["epochs_completed"]
        row["params"] = run_params(row.get("config"))
    return info


def runs_by_cell(index: dict) -> dict:
    """cell -> run infos sorted by seed then run_id; cells in sorted order."""
    cells = defaultdict(list)
    for row in index.values():
        cells[cell_of(row)].append(row)
    return {c: sorted(cells[c], key=lambda r: (r.get("seed") is None, r.get("seed") or 0, r["run_id"]))
            for c in sorted(cells)}


def accuracy_scale(train_rows: list[dict]) -> float:
    """100 when val_acc is stored as a fraction (0..1), else 1 (already in %)."""
    accs = [finite_or_none(r.get("val_acc")) for r in train_rows]
    accs = [a for a in accs if a is not None]
    return 100.0 if not accs or max(accs) <= 1.0 + 1e-9 else 1.0


def val_acc_series(train_rows: list[dict]) -> dict:
    """run_id -> (epochs, val_acc as stored) with one value per epoch (its last step)."""
    last = {}
    for r in train_rows:
        acc = finite_or_none(r.get("val_acc"))
        if acc is None or r.get("epoch") is None:
            continue
        key = (str(r["run_id"]), int(r["epoch"]))
        step = r.get("step") if r.get("step") is not None else -1
        if key not in last or step >= last[key][0]:
            last[key] = (step, acc)
    out = defaultdict(lambda: ([], []))
    for (rid, epoch), (_, acc) in sorted(last.items()):
        out[rid][0].append(epoch)
        out[rid][1].append(acc)
    return {rid: (np.array(e), np.array(a, dtype=float)) for rid, (e, a) in out.items()}


def accuracy_series(stored: dict, scale: float) -> dict:
    """run_id -> (epochs, val_acc in %) from :func:`val_acc_series` (``scale``: :func:`accuracy_scale`)."""
    return {rid: (e, a * scale) for rid, (e, a) in stored.items()}


def plateau_points(claims: list[dict]) -> tuple[float, bool]:
    """(points, recorded): the plateau points ``dynstudy analyze`` used, as its ``claims`` rows record them.

    Claims of an older analysis, or no claims: (:data:`PLATEAU_POINTS`, False).
    """
    found = [v for v in (r.get("plateau_points") for r in claims) if v is not None and math.isfinite(v)]
    return (float(found[0]), True) if found else (PLATEAU_POINTS, False)


def plateau_epochs(stored: dict, scale: float, points: float) -> dict:
    """run_id -> its accuracy plateau epoch (or None): the claims' rule
    (:func:`dynstudy.analysis.stats.claims.plateau_epoch`, within ``points`` percentage points of the best) on
    :func:`val_acc_series`, as a fraction (``scale`` 100: stored as one; 1: stored in %)."""
    return {rid: plateau_epoch(e, a if scale == 100 else a / 100, points) for rid, (e, a) in stored.items()}


def capture_series(capture_rows: list[dict]) -> dict:
    """run_id -> {metric: (epochs, values)} from capture_metrics.

    One capture per epoch: the first one taken at it (captures are numbered
    in time order, so that is the capture right after the epoch ended; later
    captures at the same epoch count are intra-epoch, every-N-steps ones).
    """
    first = {}
    for r in capture_rows:
        if r.get("epoch") is None or r.get("kind") == "step":
            continue
        key = (str(r["run_id"]), int(r["epoch"]))
        cap = r.get("capture") if r.get("capture") is not None else 0
        if key not in first or cap < first[key][0]:
            first[key] = (cap, r)
    out = defaultdict(dict)
    per_run = defaultdict(list)
    for (rid, epoch), (_, r) in sorted(first.items()):
        per_run[rid].append((epoch, r))
    for rid, items in per_run.items():
        epochs = np.array([e for e, _ in items], dtype=float)
        for m in TRAJECTORY_METRICS:
            vals = np.array([finite_or_none(r.get(m)) if finite_or_none(r.get(m)) is not None else np.nan
                             for _, r in items], dtype=float)
            out[rid][m] = (epochs, vals)
    return dict(out)


def run_series(index: dict, captures: dict, accuracy: dict) -> dict:
    """run_id -> {panel: (epochs, values)}: its :func:`capture_series` and its val accuracy in % as ``val_acc``;
    a run with neither is left out."""
    out = {}
    for rid in index:
        series = dict(captures.get(rid, {}))
        if rid in accuracy:
            series["val_acc"] = accuracy[rid]
        if series:
            out[rid] = series
    return out


def _mean(values) -> float | None:
    vals = [v for v in (finite_or_none(x) for x in values) if v is not None]
    return float(np.mean(vals)) if vals else None


def control_values(index: dict, capture_rows: list[dict], control_rows: list[dict]) -> dict:
    """run_id -> {signal, noise, order, init}: H_raw of the run and its controls.

    run_summary's columns (h_raw_mean, noise_h_raw_mean, order_h_raw_mean,
    init_h_raw) are used where present; otherwise the values are computed from
    capture_metrics (signal: mean over epochs >= 1; init: epoch 0) and
    controls (mean over that control's captures). Runs with no value at all
    are left out.
    """
    sig, init = defaultdict(list), {}
    for r in capture_rows:
        epoch = r.get("epoch")
        if epoch is None or r.get("kind") == "step":
            continue
        if int(epoch) >= 1:
            sig[str(r["run_id"])].append(r.get("h_raw"))
        elif int(epoch) == 0:
            init[str(r["run_id"])] = finite_or_none(r.get("h_raw"))
    ctrl = defaultdict(list)
    for r in control_rows:
        if r.get("kind") == "step":
            continue
        ctrl[(str(r["run_id"]), str(r.get("control")))].append(r.get("h_raw"))
    out = {}
    for rid, info in index.items():
        vals = {
            "signal": finite_or_none(info.get("h_raw_mean")),
            "noise": finite_or_none(info.get("noise_h_raw_mean")),
            "order": finite_or_none(info.get("order_h_raw_mean")),
            "init": finite_or_none(info.get("init_h_raw")),
        }
        vals["channel_draw"] = None  # only in the controls table (runs that store extra channels)
        fallback = {"signal": _mean(sig.get(rid, [])), "noise": _mean(ctrl.get((rid, "noise"), [])),
                    "order": _mean(ctrl.get((rid, "order"), [])), "init": init.get(rid),
                    "channel_draw": _mean(ctrl.get((rid, "channel_draw"), []))}
        vals = {k: v if v is not None else fallback[k] for k, v in vals.items()}
        if any(v is not None for v in vals.values()):
            out[rid] = vals
    return out


#: H_raw of the signal and of each control, in report order.
CONTROL_KEYS = ("signal", "noise", "order", "init", "channel_draw")


def controls_by_cell(cells: dict, per_run: dict) -> list[dict]:
    """Per cell and control: n seeds, mean and std (ddof 1) of H_raw."""
    out = []
    for cell, runs in cells.items():
        for key in CONTROL_KEYS:
            vals = [per_run[r["run_id"]][key] for r in runs if r["run_id"] in per_run]
            vals = np.array([v for v in vals if v is not None], dtype=float)
            if not len(vals):
                continue
            out.append({**dict(zip(CELL_KEYS, cell)), "control": key, "n_seeds": len(vals),
                        "mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else None})
    return out


def _g(value, digits: int = 6):
    """A value for a page's JSON: None where not finite, else ``digits`` significant digits."""
    v = finite_or_none(value)
    return None if v is None else float(f"{v:.{digits}g}")


def fit_title(row: dict) -> str:
    """One end-of-epoch capture's DFA fit in words: its H_raw against its null, R^2, span, crossover, flags."""
    parts = [f"epoch {row.get('epoch')}: H_raw {_g(row.get('h_raw'), 3)}"]
    if finite_or_none(row.get("h_raw_z")) is not None:
        parts.append(f"(z {row['h_raw_z']:+.2f}, p {row['h_raw_p']:.2g} against {row.get('null_k')} noise captures "
                     "of its shape)")
    if finite_or_none(row.get("dfa_r2")) is not None:
        parts.append(f"· R² {row['dfa_r2']:.3f} over {row.get('dfa_n_scales')} scales ({row.get('dfa_span'):.3g}x)")
    if finite_or_none(row.get("crossover_scale")) is not None:
        parts.append(f"· two slopes {row['alpha_small']:.2f} / {row['alpha_large']:.2f} at s = "
                     f"{row['crossover_scale']:.0f}")
    if row.get("fit_flags"):
        parts.append(f"· flags: {row['fit_flags'].replace(';', ', ')}")
    return " ".join(parts)


def fluctuation_data(capture_rows: list[dict]) -> dict:
    """run_id -> its end-of-epoch captures' fluctuation functions, for the cell pages' figure: ``epochs``, and per
    capture its ``scales``, the channel-mean log F(s) (``mean``), its SD over channels (``sd``) and a ``titles``
    line (:func:`fit_title`). Captures of an analysis without these columns are left out (a run with none is
    absent)."""
    out = {}
    for r in sorted((r for r in capture_rows if r.get("kind") == "epoch" and r.get("dfa_scales")
                     and r.get("log_f_mean") and r.get("epoch") is not None), key=lambda r: (r["run_id"], r["epoch"])):
        d = out.setdefault(r["run_id"], {"epochs": [], "scales": [], "mean": [], "sd": [], "titles": []})
        keep = [i for i, v in enumerate(r["log_f_mean"]) if finite_or_none(v) is not None]
        if len(keep) < 2:
            continue
        sd = r.get("log_f_sd") or [None] * len(r["log_f_mean"])
        d["epochs"].append(int(r["epoch"]))
        d["scales"].append([int(r["dfa_scales"][i]) for i in keep])
        d["mean"].append([_g(r["log_f_mean"][i]) for i in keep])
        d["sd"].append([_g(sd[i]) for i in keep])
        d["titles"].append(fit_title(r))
    return {k: v for k, v in out.items() if v["epochs"]}
