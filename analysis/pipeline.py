"""``dynstudy analyze``: signal files -> metric tables.

For every run in the store, one capture at a time (memory stays bounded by
one capture, whatever the study's size):

1. read the capture's activations (channel-major, probe order) through the
   DuckDB catalog and rebuild ``acts`` [P x C] and ``labels`` [P];
2. compute the capture's metrics with :func:`analysis.dynamics.capture_metrics`,
   and the same metrics for the noise control (i.i.d. Gaussian features with
   the same labels, P, C and preprocessing) and the order control (random
   instead of label order);
3. over the run's epochs >= 1, compute Psi, its volatility, r(Hz,Mz),
   r(Psi,acc), the trigger and the state with :func:`analysis.dynamics.run_metrics`.

Each run's results are written to ``capture_metrics``, ``controls`` and
``run_summary`` (one file per run, atomically); then ``cell_variability`` is
rebuilt from all run summaries. A run whose outputs are newer than all its
input files is skipped unless ``force``; a run whose files cannot be read is
named and skipped, and the rest of the analysis completes.
"""
from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import sys
from concurrent.futures import ProcessPoolExecutor
from collections import defaultdict
from glob import glob

import numpy as np

from analysis import dynamics
from analysis.catalog import open_catalog, unreadable_files
from analysis.claims import PLATEAU_POINTS, all_claims
from analysis.sensitivity import run_series, sensitivity
from analysis.schema import ANALYSIS_TABLES
from analysis.variability import cell_variability
from jobs.store import is_remote, resolve_store, table_dir, write_rows

#: analysis settings a run's config may set (spec section ``analysis``); SPEC defaults.
#: smoothing windows every end-of-epoch capture is also analysed at (sensitivity).
SENSITIVITY_WINDOWS = (1, 5, 15)
#: re-drawn channel subsets per capture for the channel-draw control.
CHANNEL_DRAWS = 8
DEFAULT_PARAMS = {"smooth_window": 5, "h_opt": 0.7, "sigma_h": 0.15, "w_h": 0.5, "min_scale": 16,
                  "n_scales": 10, "vol_window": 3, "vol_threshold": 0.35, "vol_patience": 3}


def _write(store: str, table: str, rows: list[dict], run_id: str | None = None, name: str = "part") -> None:
    schema = ANALYSIS_TABLES[table]
    write_rows(store, table, run_id, name, {f.name: [r.get(f.name) for r in rows] for f in schema}, schema)


def _clean(x):
    """NaN -> None for nullable columns; numpy scalars -> python."""
    if x is None:
        return None
    if isinstance(x, (float, np.floating)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, np.integer):
        return int(x)
    return x


def _run_is_current(store: str, run_id: str) -> bool:
    """True when the run's summary is newer than every input file of the run."""
    if is_remote(store):
        return False
    out = f"{table_dir(store, 'run_summary', run_id)}/part.parquet"
    if not os.path.exists(out):
        return False
    inputs = [p for t in ("runs", "activations", "train_metrics") for p in glob(f"{table_dir(store, t, run_id)}/*.parquet")]
    return all(os.path.getmtime(p) <= os.path.getmtime(out) for p in inputs)


def _noise_seed(run_id: str, capture: int) -> list[int]:
    return [int(hashlib.sha1(run_id.encode()).hexdigest()[:8], 16), capture]


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
        raise ValueError(f"run {run_id} capture {capture}: {len(got['value'])} values is not channels x {n_samples} samples")
    acts = np.asarray(got["value"], dtype=np.float64).reshape(-1, n_samples).T
    return acts, np.asarray(got["label"][:n_samples]), got["stage"][::n_samples], np.asarray(got["rank"][::n_samples])


def channel_draws(stages: np.ndarray, k: int, n_draws: int, seed: list[int]) -> list[np.ndarray]:
    """``n_draws`` column subsets with ``k`` random stored channels per stage (the channel-draw control)."""
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(stages == s) for s in np.unique(stages)]
    return [np.concatenate([rng.choice(g, size=min(k, len(g)), replace=False) for g in groups]) for _ in range(n_draws)]


def _metric_kwargs(params: dict) -> dict:
    return {k: params[k] for k in ("smooth_window", "h_opt", "sigma_h", "min_scale", "n_scales")}


def analyze_run(con, run: dict, params: dict, k: int | None = None) -> dict[str, list[dict]]:
    """The rows one run contributes to capture_metrics, controls, window_sensitivity and run_summary.

    The run-level series (Psi, volatility, r, state) is over the captures
    taken after each epoch's validation; capture 0 is the init control and
    every-N-step captures get capture metrics only. End-of-epoch captures are
    also analysed at every smoothing window of :data:`SENSITIVITY_WINDOWS`
    for the sensitivity analysis (the noise control at other windows once per
    run: the probe's labels and size, all it depends on, are fixed), and, when the run
    stored more channels than it uses, over :data:`CHANNEL_DRAWS` re-drawn
    channel subsets (the channel-draw control).
    """
    run_id = run["run_id"]
    kw = _metric_kwargs(params)
    caps = con.execute("SELECT DISTINCT capture, kind, epoch, step FROM activations WHERE run_id = ? ORDER BY capture",
                       [run_id]).fetchall()
    cap_rows, control_rows, window_rows, noise_at = [], [], [], {}
    for capture, kind, epoch, step in caps:
        acts_all, labels, stages, ranks = capture_arrays(con, run_id, capture)
        used = ranks < k if k is not None else np.ones(len(ranks), bool)
        acts = acts_all[:, used]
        m = dynamics.capture_metrics(acts, labels, **kw)
        where = {"run_id": run_id, "capture": capture, "kind": kind, "epoch": epoch}
        cap_rows.append({**where, "step": step, **m})
        noise = np.random.default_rng(_noise_seed(run_id, capture)).standard_normal(acts.shape)
        controls = {"noise": dynamics.capture_metrics(noise, labels, **kw),
                    "order": dynamics.capture_metrics(acts, labels, order="random", seed=capture, **kw)}
        if kind == "epoch" and k is not None and not used.all():
            draws = [dynamics.capture_metrics(acts_all[:, cols], labels, **kw)
                     for cols in channel_draws(stages, k, CHANNEL_DRAWS, _noise_seed(run_id, capture))]
            controls["channel_draw"] = {key: float(np.nanmean([d[key] for d in draws]))
                                        for key in ("h_raw", "h_eff", "metastability", "synchrony")}
            controls["channel_draw"]["spread"] = float(np.nanstd([d["h_raw"] for d in draws], ddof=1))
        for name, c in controls.items():
            control_rows.append({**where, "control": name, "spread": c.get("spread"),
                                 **{key: c[key] for key in ("h_raw", "h_eff", "metastability", "synchrony")}})
        if kind == "epoch":
            for window in sorted(set(SENSITIVITY_WINDOWS) | {kw["smooth_window"]}):
                same = window == kw["smooth_window"]
                sig = m if same else dynamics.capture_metrics(acts, labels, **{**kw, "smooth_window": window})
                if not same and window not in noise_at:  # the probe (labels, P, C) is fixed per run
                    noise_at[window] = dynamics.capture_metrics(noise, labels, **{**kw, "smooth_window": window})["h_raw"]
                window_rows.append({**where, "smooth_window": window, "h_raw": sig["h_raw"],
                                    "metastability": sig["metastability"],
                                    "noise_h_raw": controls["noise"]["h_raw"] if same else noise_at[window]})

    acc = dict(con.execute("SELECT epoch, val_acc FROM train_metrics WHERE run_id = ?", [run_id]).fetchall()) \
        if "train_metrics" in _views(con) else {}
    trained = [r for r in cap_rows if r["kind"] == "epoch"]
    summary = {k: run[k] for k in ("run_id", "study", "model", "dataset", "optimizer", "seed", "status")}
    summary["n_epochs"] = len(trained)
    if trained:
        rm = dynamics.run_metrics(
            np.array([r["h_eff"] for r in trained], dtype=float),
            np.array([r["metastability"] for r in trained], dtype=float),
            np.array([acc.get(r["epoch"], np.nan) for r in trained], dtype=float),
            epochs=np.array([r["epoch"] for r in trained]), w_h=params["w_h"], vol_window=params["vol_window"],
            vol_threshold=params["vol_threshold"], vol_patience=params["vol_patience"])
        for i, r in enumerate(trained):
            r.update(hz=rm["hz"][i], mz=rm["mz"][i], psi=rm["psi"][i], volatility=rm["volatility"][i])
        summary.update({k: rm[k] for k in ("h_eff_mean", "metastability_mean", "psi_mean", "psi_std", "r_hz_mz",
                                            "r_psi_acc", "trigger_epoch", "state")})
        summary["h_raw_mean"] = np.nanmean([r["h_raw"] for r in trained]) if _any_finite(trained, "h_raw") else None
        summary["synchrony_mean"] = np.nanmean([r["synchrony"] for r in trained]) if _any_finite(trained, "synchrony") else None
    for name in ("noise", "order"):
        vals = [c["h_raw"] for c in control_rows if c["control"] == name and c["kind"] == "epoch"]
        summary[f"{name}_h_raw_mean"] = np.nanmean(vals) if np.isfinite(vals).any() else None
    init = [r["h_raw"] for r in cap_rows if r["kind"] == "init"]
    summary["init_h_raw"] = init[0] if init else None
    if acc:
        best_epoch = max(acc, key=lambda e: (acc[e], -e))
        summary.update(best_val_acc=acc[best_epoch], best_epoch=best_epoch, final_val_acc=acc[max(acc)])
    clean = lambda rows: [{k: _clean(v) for k, v in r.items()} for r in rows]  # noqa: E731
    return {"capture_metrics": clean(cap_rows), "controls": clean(control_rows),
            "window_sensitivity": clean(window_rows), "run_summary": clean([summary])}


def _any_finite(rows, key) -> bool:
    return any(r[key] is not None and np.isfinite(r[key]) for r in rows)


def _views(con) -> set[str]:
    return {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}


def run_params(config_json: str | None) -> tuple[dict, int | None]:
    """A run's analysis settings (its config's ``analysis`` section over the
    defaults) and its metric channel count per stage."""
    cfg = json.loads(config_json) if config_json else {}
    return {**DEFAULT_PARAMS, **(cfg.get("analysis") or {})}, (cfg.get("capture") or {}).get("channels_per_stage")


def analyze_and_write(store: str, run: dict, con=None) -> tuple[str, str | None, int, str | None]:
    """Analyse one run and write its tables; return (run_id, error, captures, state).

    Without ``con`` a catalog restricted to the run's files is opened (the
    parallel workers do this). An unreadable or inconsistent file makes the
    error, naming it; nothing of the run is written then.
    """
    try:
        tables = analyze_run(con or open_catalog(store, run["run_id"]), run, *run_params(run["config"]))
    except Exception as err:  # a corrupt or truncated file: name it, skip the run
        return run["run_id"], f"{type(err).__name__}: {err}", 0, None
    for table, rows in tables.items():
        _write(store, table, rows, run["run_id"])
    return run["run_id"], None, len(tables["capture_metrics"]), tables["run_summary"][0].get("state")


def analyze(store: str, *, force: bool = False, workers: int | None = 1, plateau_points: float = PLATEAU_POINTS,
            out=sys.stdout) -> dict:
    """Analyse every run of ``store``; return counts of analysed/skipped/failed runs.

    ``workers`` processes analyse runs in parallel (None: one per CPU); each
    holds one capture at a time, so memory grows with workers, not with the store.
    ``plateau_points``: a run's accuracy plateau is its first epoch within this
    many percentage points of its best val_acc (claims and sensitivity).
    """
    store = resolve_store(store)
    con = open_catalog(store)
    views = _views(con)
    if "runs" not in views or "activations" not in views:
        raise FileNotFoundError(f"store {store!r} has no runs/activations tables yet; run a study first")
    runs = [dict(zip(("run_id", "study", "model", "dataset", "optimizer", "seed", "status", "config"), r))
            for r in con.execute("SELECT run_id, study, model, dataset, optimizer, seed, status, config "
                                 "FROM runs ORDER BY run_id").fetchall()]
    done = current = 0
    failed = {}
    for table, path, error in unreadable_files(con):
        run_id = next((part[len("run_id="):] for part in path.split("/") if part.startswith("run_id=")), None)
        if run_id:
            failed[run_id] = f"unreadable file {path} ({error})"
            print(f"analyze: skipped run {run_id}: unreadable file {path}: {error}", file=out, flush=True)
    todo = []
    for run in runs:
        if run["run_id"] in failed:
            continue
        if not force and _run_is_current(store, run["run_id"]):
            current += 1
            continue
        todo.append(run)
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    if workers > 1:
        # spawn, not fork: the parent holds a multi-threaded DuckDB connection
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(analyze_and_write, [store] * len(todo), todo)
    else:
        pool, results = None, (analyze_and_write(store, run, con) for run in todo)
    try:
        for run_id, error, n_captures, state in results:
            if error:
                failed[run_id] = error
                print(f"analyze: skipped run {run_id}: {error}", file=out, flush=True)
            else:
                done += 1
                print(f"analyze: {run_id}: {n_captures} captures, state {state}", file=out, flush=True)
    finally:
        if pool is not None:
            pool.shutdown()
    con = open_catalog(store)  # re-open: run_summary may be new
    if "run_summary" not in _views(con):
        print(f"analyze: no run could be analysed ({len(failed)} skipped)", file=out, flush=True)
        return {"store": store, "analysed": done, "current": current, "failed": failed}
    cols = [c[0] for c in con.execute("DESCRIBE run_summary").fetchall()]
    summaries = [dict(zip(cols, r)) for r in con.execute("SELECT * FROM run_summary").fetchall()]
    _write(store, "cell_variability", cell_variability(summaries))
    curves = defaultdict(lambda: ([], [], []))
    for run_id, epoch, acc, loss in con.execute(
            "SELECT run_id, epoch, val_acc, val_loss FROM train_metrics ORDER BY run_id, epoch").fetchall():
        for part, v in zip(curves[run_id], (epoch, acc, loss)):
            part.append(v)
    curves = {k: tuple(np.array(p, dtype=float if i else int) for i, p in enumerate(v)) for k, v in curves.items()}
    _write(store, "claims", all_claims(summaries, curves, plateau_points))
    if "window_sensitivity" in _views(con):
        windows = [dict(zip(("run_id", "kind", "epoch", "smooth_window", "h_raw", "metastability", "noise_h_raw"), r))
                   for r in con.execute("SELECT run_id, kind, epoch, smooth_window, h_raw, metastability, noise_h_raw "
                                        "FROM window_sensitivity").fetchall()]
        params = {r["run_id"]: run_params(r["config"])[0] for r in runs}
        known = [s for s in summaries if s["run_id"] in params]
        _write(store, "sensitivity", sensitivity(known, params, run_series(windows), curves,
                                                       plateau_points))
    print(f"analyze: {done} runs analysed, {current} already current, {len(failed)} skipped", file=out, flush=True)
    return {"store": store, "analysed": done, "current": current, "failed": failed}
