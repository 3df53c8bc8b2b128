"""``dynstudy analyze``: signal files -> metric tables.

For every run in the store, one capture at a time (memory stays bounded by
one capture, whatever the study's size):

1. list the run's input files and their digest (:mod:`dynstudy.analysis.run.inventory`);
   a run whose outputs record that digest is current and skipped unless
   ``force``; a run whose files have a gap is named, with the reason;
2. per capture (:func:`dynstudy.analysis.run.capture_family.capture_rows`): read its
   activation file once with pyarrow (:mod:`dynstudy.analysis.run.capture_read`), rebuild
   ``acts`` [P x C] and ``labels`` [P], and compute the capture's metrics
   (those of :func:`dynstudy.analysis.kernels.dynamics.capture_metrics`), beside the same
   metrics for the noise control (i.i.d. Gaussian features with the same
   labels, P, C and preprocessing), the order control (random instead of
   label order), the channel re-draws and the extra smoothing windows and
   probe sizes, sharing the work their definitions share. The implementation
   this replaced (a DuckDB read and a whole ``capture_metrics`` per variant)
   is the tests' reference (``tests/reference_capture.py``);
3. over the run's epochs >= 1 (:func:`summarise_run`): Psi, its volatility,
   r(Hz,Mz), r(Psi,acc), the trigger and the state with
   :func:`dynstudy.analysis.kernels.dynamics.run_metrics`;
4. over the run's captures in training time, when it has every-N-step
   captures (:func:`dynstudy.analysis.run.temporal_run.run_temporal`): the temporal
   protocol's metrics per sliding window and for the whole run, beside its
   time-shuffled, phase-randomised and IAAFT surrogates, each also as a null of K surrogates;
5. each stage's representation geometry at the init and end-of-epoch captures
   (:func:`dynstudy.analysis.run.geometry_run.run_geometry`): effective rank, participation
   ratio, activation variance, CKA drift, beside i.i.d. noise of the same shape.

Each run's results are written to ``capture_metrics``, ``controls``,
``window_sensitivity``, ``geometry_metrics``, ``temporal_metrics``, ``temporal_controls`` and
``run_summary`` (one file per run, atomically,
each recording the input digest); then ``cell_variability``, ``claims``,
``sensitivity``, ``stopping`` and ``stopping_summary`` are rebuilt from the summaries that are current and
whole (the claims count every other run of a cell as dropped, with why). A
run whose files cannot be read is named and skipped (its old outputs are
removed), and the rest of the analysis completes. Runs go to local worker
processes, or with ``address`` to a Ray cluster as one task each
(:mod:`dynstudy.analysis.pipeline.ray_dispatch`); either way each run's files are written by
the worker that analysed it and the cross-run tables once, here, at the end.
"""
from __future__ import annotations

import multiprocessing
import os
import re
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from itertools import islice
from typing import Iterator

import pyarrow as pa

from dynstudy.analysis.kernels.params import PLATEAU_POINTS
from dynstudy.analysis.pipeline.catalog import open_catalog
from dynstudy.analysis.pipeline.seed_agreement import seed_agreement
from dynstudy.analysis.pipeline.stopping_compare import comparison
from dynstudy.analysis.pipeline.table_read import read_columns, runs_files, split_by_run
from dynstudy.analysis.pipeline.worker_env import single_threaded_children
from dynstudy.analysis.run.capture_plan import run_params
from dynstudy.analysis.run.inventory import ANALYSIS_VERSION, damaged_files, file_gaps, is_current, run_inputs
from dynstudy.analysis.run.run_analysis import analyze_and_write, analyze_in_worker, fast_source, write_table
from dynstudy.analysis.stats.claims import all_claims
from dynstudy.analysis.stats.claims_temporal import temporal_claims
from dynstudy.analysis.stats.sensitivity import WINDOW_COLUMNS, run_series, sensitivity
from dynstudy.analysis.stats.variability import cell_variability
from dynstudy.store_contract.compaction import begin_change, compact, end_change
from dynstudy.store_contract.files import remove_run_files, resolve_store
from dynstudy.store_contract.scan import StoreScan, files_digest, scan_store
from dynstudy.store_contract.schemas import INPUT_DIGEST_KEY, RUN_INPUTS, RUN_OUTPUTS, TABLES, UNPARTITIONED

#: The run of a file's path (its ``run_id=<id>`` folder).
_RUN_FOLDER = re.compile(r"/run_id=([^/]+)/")
RUN_COLUMNS = ("run_id", "study", "model", "dataset", "optimizer", "seed", "status", "epochs_completed", "config")


def _views(con) -> set[str]:
    return {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}


def plan_runs(scan: StoreScan, runs: list[dict], force: bool) -> tuple[list, int, dict]:
    """(runs to analyse with the gap in their files, how many are current, failed run -> reason). A run's input
    files are listed again when it is handed out (:func:`jobs`), so the plan holds no file of any run."""
    todo, current, failed = [], 0, {}
    suspects = {m.group(1) for _, path, _ in scan.foreign for m in [_RUN_FOLDER.search(path)] if m}
    for run in runs:
        damaged = damaged_files(scan, run["run_id"]) if run["run_id"] in suspects else []
        if damaged:
            failed[run["run_id"]] = "; ".join(f"unreadable file {path} ({why})" for path, why in damaged)
            continue
        inputs = run_inputs(scan, run["run_id"])
        if not force and is_current(scan, inputs):
            current += 1
            continue
        todo.append((run, file_gaps(run, inputs)))
    return todo, current, failed


def jobs(store: str, scan: StoreScan, todo: list, open_source=fast_source) -> Iterator[tuple]:
    """The arguments of :func:`analyze_and_write` for each run of ``todo`` (as :func:`plan_runs` gives it), each
    run's input files listed from ``scan`` as its job is made."""
    for run, reason in todo:
        yield store, run, run_inputs(scan, run["run_id"]), reason, open_source


#: Jobs handed to each worker ahead of its results: enough to keep it busy, few enough that the jobs in flight
#: hold a few runs' input files, not every run's.
AHEAD_PER_WORKER = 2


def _run_all(store: str, scan: StoreScan, todo: list, workers: int | None, open_source=fast_source,
             address: str | None = None):
    """Results of :func:`analyze_and_write` for ``todo``, in its order: as Ray tasks on the cluster at ``address``
    (:mod:`dynstudy.analysis.pipeline.ray_dispatch`), else in ``workers`` local processes (one: in this process)."""
    made = jobs(store, scan, todo, open_source)
    if address is not None:
        from dynstudy.analysis.pipeline.ray_dispatch import run_on_cluster

        yield from run_on_cluster(address, made)
        return
    workers = max(1, min(workers or os.cpu_count() or 1, len(todo)))
    if workers == 1:
        yield from (analyze_and_write(*job) for job in made)
        return
    # spawn, not fork: the parent holds a multi-threaded DuckDB connection
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        with single_threaded_children():  # the first jobs start every worker, inside this block
            ahead = deque(pool.submit(analyze_in_worker, *job) for job in islice(made, workers * AHEAD_PER_WORKER))
        while ahead:
            result = ahead.popleft().result()
            ahead.extend(pool.submit(analyze_in_worker, *job) for job in islice(made, 1))
            yield result


#: What the cross-run tables are computed from: the runs' inputs and the summaries (and windows) of their analyses.
CROSS_RUN_SOURCES = (*RUN_INPUTS, "run_summary", "window_sensitivity", "capture_metrics", *UNPARTITIONED)


def current_summaries(store: str, runs: list[dict], scan: StoreScan | None = None) -> tuple[list[dict], list[dict]]:
    """(whole summaries, incomplete summaries): the run summaries that match their inputs now.

    A summary of a run that changed since (a study still running, a file
    restored) or that was removed from ``runs`` is left out of both lists.
    ``scan``: a scan of :data:`CROSS_RUN_SOURCES` made now (default: made here).
    """
    scan = scan if scan is not None else scan_store(store, CROSS_RUN_SOURCES)
    con = open_catalog(store, scan=scan, tables=("run_summary",))
    if "run_summary" not in _views(con):
        return [], []
    known = {r["run_id"] for r in runs}
    cols = [c[0] for c in con.execute("DESCRIBE run_summary").fetchall()]
    rows = [dict(zip(cols, r)) for r in con.execute("SELECT * FROM run_summary ORDER BY run_id").fetchall()]
    rows = [r for r in rows if r["run_id"] in known and r.get("input_digest") == run_inputs(scan, r["run_id"]).digest]
    return [r for r in rows if r.get("reason") is None], [r for r in rows if r.get("reason") is not None]


def claim_inputs(summaries: list[dict], incomplete: list[dict], runs: list[dict]) -> list[dict]:
    """The rows the claims count: the whole summaries, the incomplete ones (with their gap in ``reason``), and a
    stand-in for each run of ``runs`` without a current summary (its status; "no current analysis" when finished),
    so that every claim row can say which of its cell's runs it dropped and why."""
    have = {r["run_id"] for r in summaries} | {r["run_id"] for r in incomplete}
    stand_ins = [{**{k: r[k] for k in ("run_id", "model", "dataset", "optimizer", "seed", "status")},
                  "reason": "no current analysis"} for r in runs if r["run_id"] not in have]
    return list(summaries) + list(incomplete) + stand_ins


def cross_run_digest(scan: StoreScan, summaries: list[dict], runs: list[dict], plateau_points: float) -> str:
    """Digest of what the cross-run tables are computed from: each run's ``runs`` file, the input digest of its
    current summary (which covers its train_metrics and its window_sensitivity) and ``plateau_points``."""
    runs_files = {f.run_id: f for f in scan.files.get("runs", [])}
    digests = {s["run_id"]: s.get("input_digest") for s in summaries}
    lines = sorted(f"{r['run_id']}:{runs_files[r['run_id']].token if r['run_id'] in runs_files else '-'}:"
                   f"{digests.get(r['run_id'], '-')}" for r in runs)
    return files_digest([], "\n".join([ANALYSIS_VERSION, repr(float(plateau_points)), *lines]))


def cross_run_tables_current(scan: StoreScan, digest: str) -> bool:
    """True when every cross-run table's file records ``digest``: computed from what the store holds now."""
    key = INPUT_DIGEST_KEY.decode()
    return all(len(scan.files.get(t, [])) == 1 and scan.files[t][0].metadata.get(key) == digest
               for t in UNPARTITIONED)


def train_rows(scan: StoreScan, ids: set[str]) -> pa.Table:
    """run_id, epoch, val_acc, val_loss and step of the train_metrics of the runs ``ids`` (read in bounded batches
    of files: :func:`dynstudy.analysis.pipeline.table_read.read_columns`)."""
    return read_columns(runs_files(scan.files.get("train_metrics", ()), ids), TABLES["train_metrics"],
                        ("run_id", "epoch", "val_acc", "val_loss", "step"))


def write_cross_run_tables(store: str, scan: StoreScan, summaries: list[dict], runs: list[dict],
                           plateau_points: float, incomplete: list[dict] = (), digest: str | None = None) -> None:
    """cell_variability, claims, sensitivity, stopping, stopping_summary and seed_agreement from the whole,
    current ``summaries`` (the stopping rules replayed on their train_metrics and end-of-epoch capture_metrics,
    read with the windows through ``scan``, a scan of :data:`CROSS_RUN_SOURCES`; the seeds of each cell compared
    on their end-of-epoch captures); every claims row records
    ``plateau_points``, the plateau rule's points, for the report's plateau markers. The claims count the
    ``incomplete`` summaries and the runs without a current summary as dropped runs. Each file records ``digest``
    (:func:`cross_run_digest`)."""
    write_table(store, "cell_variability", cell_variability(summaries), digest=digest)
    ids = {s["run_id"] for s in summaries}
    train = split_by_run(train_rows(scan, ids), ("epoch",))
    curves = {rid: (c["epoch"].astype(int), c["val_acc"], c["val_loss"]) for rid, c in train.items()}
    epoch_steps = {rid: dict(zip(c["epoch"].tolist(), c["step"].tolist())) for rid, c in train.items()}
    params = {r["run_id"]: run_params(r["config"])[0] for r in runs if r["run_id"] in ids}
    counted = claim_inputs(summaries, list(incomplete), runs)
    claims = (all_claims(counted, curves, plateau_points, params=params)
              + temporal_claims(counted, curves, epoch_steps, plateau_points, params=params))
    write_table(store, "claims", [{**r, "plateau_points": plateau_points} for r in claims], digest=digest)
    windows = read_columns(runs_files(scan.files.get("window_sensitivity", ()), ids), TABLES["window_sensitivity"],
                           WINDOW_COLUMNS, where={"kind": "epoch"})
    write_table(store, "sensitivity", sensitivity(summaries, params, run_series(windows), curves, plateau_points),
                digest=digest)
    stops, stop_summary = comparison(scan, summaries, runs, train=train)
    write_table(store, "stopping", stops, digest=digest)
    write_table(store, "stopping_summary", stop_summary, digest=digest)
    write_table(store, "seed_agreement", seed_agreement(summaries, scan), digest=digest)


def analyze(store: str, *, force: bool = False, workers: int | None = 1, plateau_points: float = PLATEAU_POINTS,
            out=None, address: str | None = None, open_source=fast_source) -> dict:
    """Analyse every run of ``store``; return counts of analysed/current runs and the failed and incomplete ones.

    ``workers`` processes analyse runs in parallel (None: one per CPU); each
    holds one capture at a time, so memory grows with workers, not with the store.
    ``plateau_points``: a run's accuracy plateau is its first epoch within this
    many percentage points of its best val_acc (claims, sensitivity, and the
    report's plateau markers: the claims table records it).
    ``address``: a Ray cluster (``ray.init`` address, e.g. ``auto`` or
    ``ray://host:10001``); each run's analysis is then a Ray task there, reading
    and writing the store, and ``workers`` is ignored. The cross-run tables
    are computed here, once, at the end. ``open_source``: how each run's
    captures are read and computed (:func:`dynstudy.analysis.run.run_analysis.fast_source`; the tests and the
    scale bench pass their reference implementation).
    """
    out = out or sys.stdout
    store = resolve_store(store)
    scan = scan_store(store)
    if "runs" not in scan.tables() or "activations" not in scan.tables():
        raise FileNotFoundError(f"store {store!r} has no runs/activations tables yet; run a study first")
    con = open_catalog(store, scan=scan, tables=("runs",))
    runs = [dict(zip(RUN_COLUMNS, r)) for r in con.execute(
        f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY run_id").fetchall()]
    for table, path, error in scan.foreign:
        print(f"analyze: unreadable file {path}: {error}", file=out, flush=True)
    todo, current, failed = plan_runs(scan, runs, force)
    change = begin_change(store, "run_summary") if todo or failed else None  # a compaction is stale from here
    for run_id, why in failed.items():
        remove_run_files(store, run_id, RUN_OUTPUTS)  # no stale outputs of a run that cannot be read
        print(f"analyze: skipped run {run_id}: {why}", file=out, flush=True)
    done = 0
    for run_id, error, n_captures, summary in _run_all(store, scan, todo, workers, open_source, address):
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
    end_change(store, "run_summary", change)
    # nothing written or removed: the first scan is as recent a view of the sources as a second would be
    sources = scan if not todo and not failed else None
    del scan  # one scan's files in memory at a time
    sources = sources or scan_store(store, CROSS_RUN_SOURCES)
    whole, incomplete = current_summaries(store, runs, sources)
    if not whole and not incomplete:
        print(f"analyze: no run could be analysed ({len(failed)} skipped)", file=out, flush=True)
        compact(store, "run_summary")
        return {"store": store, "analysed": done, "current": current, "failed": failed, "incomplete": {}}
    digest = cross_run_digest(sources, whole + incomplete, runs, plateau_points)
    if cross_run_tables_current(sources, digest):
        print("analyze: the cross-run tables (cell_variability, claims, sensitivity, stopping, seed_agreement) are "
              "current", file=out,
              flush=True)
    else:
        write_cross_run_tables(store, sources, whole, runs, plateau_points, incomplete, digest)
    gaps = {r["run_id"]: r["reason"] for r in incomplete}
    if gaps:
        print(f"analyze: {len(gaps)} run(s) incomplete, kept out of the cross-run tables: "
              + "; ".join(f"{k} ({v})" for k, v in gaps.items()), file=out, flush=True)
    compact(store, "run_summary")
    print(f"analyze: {done} runs analysed, {current} already current, {len(failed)} skipped", file=out, flush=True)
    return {"store": store, "analysed": done, "current": current, "failed": failed, "incomplete": gaps}
