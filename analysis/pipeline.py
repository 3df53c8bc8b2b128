"""``dynstudy analyze``: signal files -> metric tables.

For every run in the store, one capture at a time (memory stays bounded by
one capture, whatever the study's size):

1. list the run's input files and their digest (:mod:`analysis.inventory`);
   a run whose outputs record that digest is current and skipped unless
   ``force``; a run whose files have a gap is named, with the reason;
2. per capture (:func:`capture_rows`): read its activations (channel-major,
   probe order) through a DuckDB catalog of exactly those files, rebuild
   ``acts`` [P x C] and ``labels`` [P], and compute the capture's metrics with
   :func:`analysis.dynamics.capture_metrics`, beside the same metrics for the
   noise control (i.i.d. Gaussian features with the same labels, P, C and
   preprocessing), the order control (random instead of label order) and the
   extra smoothing windows;
3. over the run's epochs >= 1 (:func:`summarise_run`): Psi, its volatility,
   r(Hz,Mz), r(Psi,acc), the trigger and the state with
   :func:`analysis.dynamics.run_metrics`;
4. over the run's captures in training time, when it has every-N-step
   captures (:func:`analysis.temporal_run.run_temporal`): the temporal
   protocol's metrics per sliding window and for the whole run, beside its
   time-shuffled and phase-randomised surrogates.

Each run's results are written to ``capture_metrics``, ``controls``,
``window_sensitivity``, ``temporal_metrics``, ``temporal_controls`` and
``run_summary`` (one file per run, atomically,
each recording the input digest); then ``cell_variability``, ``claims`` and
``sensitivity`` are rebuilt from the summaries that are current and whole. A
run whose files cannot be read is named and skipped (its old outputs are
removed), and the rest of the analysis completes.
"""
from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
import os
import sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor

import numpy as np

from analysis import dynamics
from analysis.catalog import open_catalog
from analysis.claims import PLATEAU_POINTS, all_claims
from analysis.claims_temporal import temporal_claims
from analysis.inventory import RunInputs, capture_gaps, damaged_files, file_gaps, is_current, run_inputs
from analysis.sensitivity import run_series, sensitivity
from analysis.temporal_run import run_temporal
from analysis.variability import cell_variability
from store_contract.files import remove_run_files, resolve_store, write_rows
from store_contract.scan import StoreScan, scan_store
from store_contract.schemas import ANALYSIS_TABLES, INPUT_DIGEST_KEY, RUN_OUTPUTS

#: analysis settings a run's config may set (spec section ``analysis``); SPEC defaults.
#: smoothing windows every end-of-epoch capture is also analysed at (sensitivity).
SENSITIVITY_WINDOWS = (1, 5, 15)
#: probe sizes (the first P samples) every end-of-epoch capture is also analysed at, where the probe has them.
SENSITIVITY_PROBES = (256, 512, 1024, 2048, 4096)
#: re-drawn channel subsets per capture for the channel-draw control.
CHANNEL_DRAWS = 8
DEFAULT_PARAMS = {"smooth_window": 5, "h_opt": 0.7, "sigma_h": 0.15, "w_h": 0.5, "min_scale": 16,
                  "n_scales": 10, "vol_window": 3, "vol_threshold": 0.35, "vol_patience": 3, "compat": "dynstudy",
                  "temporal_window": 64, "temporal_stride": 16}
RUN_COLUMNS = ("run_id", "study", "model", "dataset", "optimizer", "seed", "status", "epochs_completed", "config")


def _write(store: str, table: str, rows: list[dict], run_id: str | None = None, digest: str | None = None) -> None:
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
    return {k: params[k] for k in dynamics.CAPTURE_PARAMS}


def sensitivity_rows(where: dict, acts, labels, noise, own: dict, own_noise: float, kw: dict, noise_at: dict) -> list:
    """window_sensitivity rows of one end-of-epoch capture: every window of :data:`SENSITIVITY_WINDOWS` on the
    whole probe, and the run's own window on the first P samples for each smaller P of :data:`SENSITIVITY_PROBES`.

    ``own`` / ``own_noise``: the capture's metrics and noise control at the run's own settings (not recomputed).
    The noise control at other settings is computed once per run into ``noise_at`` (it depends only on the
    probe's labels and size, which are fixed per run).
    """
    n = len(labels)
    settings = [(w, n) for w in sorted(set(SENSITIVITY_WINDOWS) | {kw["smooth_window"]})]
    settings += [(kw["smooth_window"], p) for p in SENSITIVITY_PROBES if p < n]
    rows = []
    for window, p in settings:
        same = (window, p) == (kw["smooth_window"], n)
        sig = own if same else dynamics.capture_metrics(acts[:p], labels[:p], **{**kw, "smooth_window": window})
        if not same and (window, p) not in noise_at:
            noise_at[(window, p)] = dynamics.capture_metrics(noise[:p], labels[:p], **{**kw, "smooth_window": window})["h_raw"]
        rows.append({**where, "smooth_window": window, "probe_size": p, "h_raw": sig["h_raw"],
                     "metastability": sig["metastability"], "noise_h_raw": own_noise if same else noise_at[(window, p)]})
    return rows


def capture_rows(con, where: dict, step: int, params: dict, k: int | None, noise_at: dict) -> tuple[dict, list, list]:
    """One capture's metrics row, its control rows and its window-sensitivity rows.

    ``where``: run_id, capture, kind, epoch. The noise control at the extra
    smoothing windows is computed once per run into ``noise_at`` (it depends
    only on the probe's labels and size, which are fixed per run).
    """
    run_id, capture, kind = where["run_id"], where["capture"], where["kind"]
    kw = _metric_kwargs(params)
    acts_all, labels, stages, ranks = capture_arrays(con, run_id, capture)
    used = ranks < k if k is not None else np.ones(len(ranks), bool)
    acts = acts_all[:, used]
    m = dynamics.capture_metrics(acts, labels, **kw)
    noise = np.random.default_rng(_noise_seed(run_id, capture)).standard_normal(acts.shape)
    controls = {"noise": dynamics.capture_metrics(noise, labels, **kw),
                "order": dynamics.capture_metrics(acts, labels, order="random", seed=capture, **kw)}
    if kind == "epoch" and k is not None and not used.all():
        draws = [dynamics.capture_metrics(acts_all[:, cols], labels, **kw)
                 for cols in channel_draws(stages, k, CHANNEL_DRAWS, _noise_seed(run_id, capture))]
        controls["channel_draw"] = {key: float(np.nanmean([d[key] for d in draws]))
                                    for key in ("h_raw", "h_eff", "metastability", "synchrony")}
        controls["channel_draw"]["spread"] = float(np.nanstd([d["h_raw"] for d in draws], ddof=1))
    control_rows = [{**where, "control": name, "spread": c.get("spread"),
                     **{key: c[key] for key in ("h_raw", "h_eff", "metastability", "synchrony")}}
                    for name, c in controls.items()]
    window_rows = []
    if kind == "epoch":
        window_rows = sensitivity_rows(where, acts, labels, noise, m, controls["noise"]["h_raw"], kw, noise_at)
    return {**where, "step": step, **m}, control_rows, window_rows


def summarise_run(run: dict, cap_rows: list[dict], control_rows: list[dict], acc: dict, params: dict,
                  reason: str | None) -> dict:
    """The run_summary row; fills hz, mz, psi and volatility into the end-of-epoch ``cap_rows``.

    A run with a gap (``reason``) gets its controls and counts but no run-level
    metric: a series with a hole is not analysed as if it were whole.
    """
    trained = [r for r in cap_rows if r["kind"] == "epoch"]
    summary = {key: run[key] for key in ("run_id", "study", "model", "dataset", "optimizer", "seed", "status")}
    summary.update(n_epochs=len(trained), reason=reason)
    for name in ("noise", "order"):
        vals = [c["h_raw"] for c in control_rows if c["control"] == name and c["kind"] == "epoch"]
        summary[f"{name}_h_raw_mean"] = np.nanmean(vals) if np.isfinite(vals).any() else None
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
        summary["h_raw_mean"] = np.nanmean([r["h_raw"] for r in trained]) if _any_finite(trained, "h_raw") else None
        summary["synchrony_mean"] = np.nanmean([r["synchrony"] for r in trained]) if _any_finite(trained, "synchrony") else None
    if acc:
        best_epoch = max(acc, key=lambda e: (acc[e], -e))
        summary.update(best_val_acc=acc[best_epoch], best_epoch=best_epoch, final_val_acc=acc[max(acc)])
    return summary


def analyze_run(con, run: dict, params: dict, k: int | None = None, reason: str | None = None) -> dict[str, list[dict]]:
    """The rows one run contributes to capture_metrics, controls, window_sensitivity, the temporal tables and
    run_summary.

    The run-level series (Psi, volatility, r, state) is over the captures
    taken after each epoch's validation; capture 0 is the init control and
    every-N-step captures make the temporal series (:func:`run_temporal`),
    with no capture metrics of their own. End-of-epoch captures are
    also analysed at every smoothing window of :data:`SENSITIVITY_WINDOWS`
    for the sensitivity analysis, and, when the run stored more channels than
    it uses, over :data:`CHANNEL_DRAWS` re-drawn channel subsets (the
    channel-draw control). ``reason``: the run's files have a gap (see
    :mod:`analysis.inventory`); the end-of-epoch captures are also checked
    against the epoch files here.
    """
    run_id = run["run_id"]
    # every-N-step captures feed the temporal protocol only (run_temporal): their step probe is too small
    # for pseudo-time metrics of its own, and a run has hundreds of them
    caps = con.execute("SELECT DISTINCT capture, kind, epoch, step FROM activations WHERE run_id = ? AND kind != 'step' "
                       "ORDER BY capture", [run_id]).fetchall()
    cap_rows, control_rows, window_rows, noise_at = [], [], [], {}
    for capture, kind, epoch, step in caps:
        where = {"run_id": run_id, "capture": capture, "kind": kind, "epoch": epoch}
        row, controls, windows = capture_rows(con, where, step, params, k, noise_at)
        cap_rows.append(row)
        control_rows += controls
        window_rows += windows
    acc = dict(con.execute("SELECT epoch, val_acc FROM train_metrics WHERE run_id = ?", [run_id]).fetchall()) \
        if "train_metrics" in _views(con) else {}
    if reason is None:
        captured = [r["epoch"] for r in cap_rows if r["kind"] == "epoch"]
        if run.get("status") == "running":  # the newest capture may be written before its epoch file
            captured = [e for e in captured if e <= max(acc, default=0)]
        reason = capture_gaps(captured, list(acc))
    summary = summarise_run(run, cap_rows, control_rows, acc, params, reason)
    temporal_rows, temporal_controls, temporal_summary = run_temporal(con, run_id, params, k) \
        if reason is None else ([], [], {})
    summary.update(temporal_summary)
    clean = lambda rows: [{key: _clean(v) for key, v in r.items()} for r in rows]  # noqa: E731
    return {"capture_metrics": clean(cap_rows), "controls": clean(control_rows),
            "window_sensitivity": clean(window_rows), "temporal_metrics": clean(temporal_rows),
            "temporal_controls": clean(temporal_controls), "run_summary": clean([summary])}


def _any_finite(rows, key) -> bool:
    return any(r[key] is not None and np.isfinite(r[key]) for r in rows)


def _views(con) -> set[str]:
    return {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}


def run_params(config_json: str | None) -> tuple[dict, int | None]:
    """A run's analysis settings (its config's ``analysis`` section over the
    defaults) and its metric channel count per stage."""
    cfg = json.loads(config_json) if config_json else {}
    return {**DEFAULT_PARAMS, **(cfg.get("analysis") or {})}, (cfg.get("capture") or {}).get("channels_per_stage")


def analyze_and_write(store: str, run: dict, inputs: RunInputs, reason: str | None) -> tuple[str, str | None, int, dict]:
    """Analyse one run from exactly ``inputs`` and write its tables; return (run_id, error, captures, summary).

    The outputs record ``inputs.digest``. An unreadable or inconsistent file
    makes the error, naming it; nothing of the run is written then.
    """
    try:
        con = open_catalog(store, scan=StoreScan(store, inputs.files, []))
        tables = analyze_run(con, run, *run_params(run["config"]), reason=reason)
    except Exception as err:  # a file that changed or broke after the scan: name it, skip the run
        return run["run_id"], f"{type(err).__name__}: {err}", 0, {}
    tables["run_summary"][0]["input_digest"] = inputs.digest
    for table, rows in tables.items():  # run_summary last
        _write(store, table, rows, run["run_id"], inputs.digest)
    return run["run_id"], None, len(tables["capture_metrics"]), tables["run_summary"][0]


def plan_runs(scan: StoreScan, runs: list[dict], force: bool) -> tuple[list, int, dict]:
    """(runs to analyse with their inputs and gap, how many are current, failed run -> reason)."""
    todo, current, failed = [], 0, {}
    for run in runs:
        damaged = damaged_files(scan, run["run_id"])
        if damaged:
            failed[run["run_id"]] = "; ".join(f"unreadable file {path} ({why})" for path, why in damaged)
            continue
        inputs = run_inputs(scan, run["run_id"])
        if not force and is_current(scan, inputs):
            current += 1
            continue
        todo.append((run, inputs, file_gaps(run, inputs)))
    return todo, current, failed


def _run_all(store: str, todo: list, workers: int | None):
    """Results of :func:`analyze_and_write` for ``todo``, in parallel processes when ``workers`` > 1."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    if workers == 1:
        yield from (analyze_and_write(store, run, inputs, reason) for run, inputs, reason in todo)
        return
    # spawn, not fork: the parent holds a multi-threaded DuckDB connection
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(analyze_and_write, *zip(*[(store, run, inputs, reason) for run, inputs, reason in todo]))


def current_summaries(store: str, runs: list[dict]) -> tuple[list[dict], list[dict], object]:
    """(whole summaries, incomplete summaries, catalog): the run summaries that match their inputs now.

    A summary of a run that changed since (a study still running, a file
    restored) or that was removed from ``runs`` is left out of both lists.
    """
    scan = scan_store(store)
    con = open_catalog(store, scan=scan)
    if "run_summary" not in _views(con):
        return [], [], con
    known = {r["run_id"] for r in runs}
    cols = [c[0] for c in con.execute("DESCRIBE run_summary").fetchall()]
    rows = [dict(zip(cols, r)) for r in con.execute("SELECT * FROM run_summary ORDER BY run_id").fetchall()]
    rows = [r for r in rows if r["run_id"] in known and r.get("input_digest") == run_inputs(scan, r["run_id"]).digest]
    return [r for r in rows if r.get("reason") is None], [r for r in rows if r.get("reason") is not None], con


def write_cross_run_tables(store: str, con, summaries: list[dict], runs: list[dict], plateau_points: float) -> None:
    """cell_variability, claims and sensitivity from the whole, current ``summaries``."""
    _write(store, "cell_variability", cell_variability(summaries))
    ids = {s["run_id"] for s in summaries}
    curves, epoch_steps = defaultdict(lambda: ([], [], [])), defaultdict(dict)
    for run_id, epoch, acc, loss, step in con.execute(
            "SELECT run_id, epoch, val_acc, val_loss, step FROM train_metrics ORDER BY run_id, epoch").fetchall():
        if run_id in ids:
            for part, v in zip(curves[run_id], (epoch, acc, loss)):
                part.append(v)
            epoch_steps[run_id][epoch] = step
    curves = {k: tuple(np.array(p, dtype=float if i else int) for i, p in enumerate(v)) for k, v in curves.items()}
    _write(store, "claims", all_claims(summaries, curves, plateau_points)
           + temporal_claims(summaries, curves, epoch_steps, plateau_points))
    windows = []
    if "window_sensitivity" in _views(con):
        cols = ("run_id", "kind", "epoch", "smooth_window", "probe_size", "h_raw", "metastability", "noise_h_raw")
        windows = [dict(zip(cols, r)) for r in con.execute(f"SELECT {', '.join(cols)} FROM window_sensitivity").fetchall()
                   if r[0] in ids]
    params = {r["run_id"]: run_params(r["config"])[0] for r in runs if r["run_id"] in ids}
    _write(store, "sensitivity", sensitivity(summaries, params, run_series(windows), curves, plateau_points))


def analyze(store: str, *, force: bool = False, workers: int | None = 1, plateau_points: float = PLATEAU_POINTS,
            out=None) -> dict:
    """Analyse every run of ``store``; return counts of analysed/current runs and the failed and incomplete ones.

    ``workers`` processes analyse runs in parallel (None: one per CPU); each
    holds one capture at a time, so memory grows with workers, not with the store.
    ``plateau_points``: a run's accuracy plateau is its first epoch within this
    many percentage points of its best val_acc (claims and sensitivity).
    """
    out = out or sys.stdout
    store = resolve_store(store)
    scan = scan_store(store)
    con = open_catalog(store, scan=scan)
    views = _views(con)
    if "runs" not in views or "activations" not in views:
        raise FileNotFoundError(f"store {store!r} has no runs/activations tables yet; run a study first")
    runs = [dict(zip(RUN_COLUMNS, r)) for r in con.execute(
        f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY run_id").fetchall()]
    for table, path, error in scan.foreign:
        print(f"analyze: unreadable file {path}: {error}", file=out, flush=True)
    todo, current, failed = plan_runs(scan, runs, force)
    for run_id, why in failed.items():
        remove_run_files(store, run_id, RUN_OUTPUTS)  # no stale outputs of a run that cannot be read
        print(f"analyze: skipped run {run_id}: {why}", file=out, flush=True)
    done = 0
    for run_id, error, n_captures, summary in _run_all(store, todo, workers):
        if error:
            failed[run_id] = error
            remove_run_files(store, run_id, RUN_OUTPUTS)
            print(f"analyze: skipped run {run_id}: {error}", file=out, flush=True)
            continue
        done += 1
        if summary.get("reason"):
            print(f"analyze: {run_id}: {n_captures} captures, INCOMPLETE: {summary['reason']}", file=out, flush=True)
        else:
            print(f"analyze: {run_id}: {n_captures} captures, state {summary.get('state')}", file=out, flush=True)
    whole, incomplete, con = current_summaries(store, runs)
    if not whole and not incomplete:
        print(f"analyze: no run could be analysed ({len(failed)} skipped)", file=out, flush=True)
        return {"store": store, "analysed": done, "current": current, "failed": failed, "incomplete": {}}
    write_cross_run_tables(store, con, whole, runs, plateau_points)
    gaps = {r["run_id"]: r["reason"] for r in incomplete}
    if gaps:
        print(f"analyze: {len(gaps)} run(s) incomplete, kept out of cell_variability, claims and sensitivity: "
              + "; ".join(f"{k} ({v})" for k, v in gaps.items()), file=out, flush=True)
    print(f"analyze: {done} runs analysed, {current} already current, {len(failed)} skipped", file=out, flush=True)
    return {"store": store, "analysed": done, "current": current, "failed": failed, "incomplete": gaps}
