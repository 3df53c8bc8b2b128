"""Benchmark: the cross-run tables' rebuild on a large analysed store, step by step, time and peak memory.

``dynstudy analyze`` rebuilds cell_variability, claims, sensitivity, stopping and seed_agreement
whenever a run's analysis or inputs changed (:func:`dynstudy.analysis.pipeline.analyze.write_cross_run_tables`).
This runs the same steps on a store in one process, writing nothing but the index's caches, and prints
each step's wall time and the process's peak RSS after it:

    .venv/bin/python bench/bench_cross_run.py /work/scale/r10000

The store must be analysed (e.g. one of bench_store.py's). Run it on a quiet machine: the times
are wall times.
"""
from __future__ import annotations

import argparse
import resource
import time

from dynstudy.analysis.pipeline import analyze as a
from dynstudy.analysis.pipeline.seed_agreement import seed_agreement
from dynstudy.analysis.pipeline.stopping_compare import comparison
from dynstudy.analysis.pipeline.table_read import read_columns, runs_files, split_by_run
from dynstudy.analysis.run.capture_plan import run_params
from dynstudy.analysis.stats.claims import all_claims
from dynstudy.analysis.stats.claims_temporal import temporal_claims
from dynstudy.analysis.stats.sensitivity import WINDOW_COLUMNS, run_series, sensitivity
from dynstudy.analysis.stats.variability import cell_variability
from dynstudy.store_contract.files import resolve_store
from dynstudy.store_contract.scan import scan_store
from dynstudy.store_contract.schemas import TABLES


class Steps:
    """Prints each step's wall time and the peak RSS so far."""

    def __init__(self):
        self.t0 = self.last = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"{name:28s} {now - self.last:8.1f} s {now - self.t0:8.1f} s {peak:8.0f} MiB", flush=True)
        self.last = now


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("store", help="an analysed store")
    ap.add_argument("--plateau-points", type=float, default=0.5)
    store = resolve_store(ap.parse_args().store)
    points = ap.parse_args().plateau_points
    print(f"{'step':28s} {'step':>10s} {'total':>10s} {'peak RSS':>12s}")
    steps = Steps()
    sources = scan_store(store, a.CROSS_RUN_SOURCES)
    steps.done("scan of the sources")
    con = a.open_catalog(store, scan=sources, tables=("runs",))
    runs = [dict(zip(a.RUN_COLUMNS, r)) for r in con.execute(
        f"SELECT {', '.join(a.RUN_COLUMNS)} FROM runs ORDER BY run_id").fetchall()]
    whole, incomplete = a.current_summaries(store, runs, sources)
    steps.done(f"runs and summaries ({len(whole)})")
    cell_variability(whole)
    steps.done("cell_variability")
    ids = {s["run_id"] for s in whole}
    train = split_by_run(a.train_rows(sources, ids), ("epoch",))
    steps.done("train_metrics")
    curves = {rid: (c["epoch"].astype(int), c["val_acc"], c["val_loss"]) for rid, c in train.items()}
    epoch_steps = {rid: dict(zip(c["epoch"].tolist(), c["step"].tolist())) for rid, c in train.items()}
    params = {r["run_id"]: run_params(r["config"])[0] for r in runs if r["run_id"] in ids}
    counted = a.claim_inputs(whole, incomplete, runs)
    all_claims(counted, curves, points, params=params) + temporal_claims(counted, curves, epoch_steps, points,
                                                                         params=params)
    steps.done("claims")
    windows = read_columns(runs_files(sources.files.get("window_sensitivity", ()), ids),
                           TABLES["window_sensitivity"], WINDOW_COLUMNS, where={"kind": "epoch"})
    steps.done("window_sensitivity")
    sensitivity(whole, params, run_series(windows), curves, points)
    steps.done("sensitivity")
    comparison(sources, whole, runs, train=train)
    steps.done("stopping")
    seed_agreement(whole, sources)
    steps.done("seed_agreement")


if __name__ == "__main__":
    main()
