"""The stopping-rule comparison of a store: its runs' curves read once, then :mod:`dynstudy.analysis.stats.stopping`.

``dynstudy analyze`` writes the comparison as the tables ``stopping`` and ``stopping_summary`` at its default
tolerance and margin; ``dynstudy stopping`` computes it again with the user's (:func:`compare_store`), on any
analysed store, one written by any trainer included.
"""
from __future__ import annotations

from dynstudy.analysis.pipeline.table_read import read_columns, runs_files, split_by_run
from dynstudy.analysis.run.capture_plan import run_params
from dynstudy.analysis.stats import stopping
from dynstudy.store_contract.scan import StoreScan
from dynstudy.store_contract.schemas import TABLES


def run_curves(scan: StoreScan, summaries: list[dict], runs: list[dict], train=None) -> dict[str, dict]:
    """run_id -> the curves the rules replay, for the runs of ``summaries``: train_metrics' val_loss and val_acc,
    and the end-of-epoch captures' H_eff and M (read through ``scan``, a scan listing those tables), with each
    run's settings. ``train``: run_id -> column -> array of (at least) epoch, val_loss and val_acc in epoch order
    (:func:`dynstudy.analysis.pipeline.table_read.split_by_run`), when the caller has read them."""
    ids = {s["run_id"] for s in summaries}
    if train is None:
        train = _read(scan, "train_metrics", ids, ("run_id", "epoch", "val_loss", "val_acc"))
    train = {k: v for k, v in train.items() if k in ids}
    caps = _read(scan, "capture_metrics", ids, ("run_id", "epoch", "h_eff", "metastability"), {"kind": "epoch"})
    params = {r["run_id"]: run_params(r["config"])[0] for r in runs if r["run_id"] in ids}
    return stopping.run_curves(train, caps, params)


def _read(scan: StoreScan, table: str, ids: set, columns: tuple, where=None) -> dict[str, dict]:
    """run_id -> column -> array of ``table``'s rows of the runs ``ids``, in epoch order."""
    files = runs_files(scan.files.get(table, ()), ids)
    return split_by_run(read_columns(files, TABLES[table], columns, where), ("epoch",))


def comparison(scan: StoreScan, summaries: list[dict], runs: list[dict], tolerance: float = stopping.TOLERANCE,
               margin: float = stopping.MARGIN, train=None) -> tuple[list[dict], list[dict]]:
    """(``stopping`` rows, ``stopping_summary`` rows) of the whole, current ``summaries`` (``scan`` and ``train``:
    as :func:`run_curves` takes them)."""
    rows = stopping.replay(summaries, run_curves(scan, summaries, runs, train))
    return rows, stopping.summary(rows, tolerance, margin)


def compare_store(store: str, tolerance: float = stopping.TOLERANCE,
                  margin: float = stopping.MARGIN) -> tuple[list[dict], list[dict]]:
    """:func:`comparison` of an analysed store; ValueError naming the fix when it has no current analysis."""
    from dynstudy.analysis.pipeline.analyze import CROSS_RUN_SOURCES, RUN_COLUMNS, current_summaries
    from dynstudy.analysis.pipeline.catalog import open_catalog
    from dynstudy.store_contract.files import resolve_store
    from dynstudy.store_contract.scan import scan_store

    store = resolve_store(store)
    scan = scan_store(store, CROSS_RUN_SOURCES)
    if "runs" not in scan.tables():
        raise ValueError(f"store {store!r} has no runs: run a study into it first")
    con = open_catalog(store, scan=scan, tables=("runs",))
    runs = [dict(zip(RUN_COLUMNS, r)) for r in con.execute(
        f"SELECT {', '.join(RUN_COLUMNS)} FROM runs ORDER BY run_id").fetchall()]
    whole, _ = current_summaries(store, runs, scan)
    if not whole:
        raise ValueError(f"store {store!r} has no current analysis of a whole run: run `dynstudy analyze --store "
                         f"{store}` first")
    return comparison(scan, whole, runs, tolerance, margin)
