"""The stopping-rule comparison of a store: its runs' curves read once, then :mod:`dynstudy.analysis.stats.stopping`.

``dynstudy analyze`` writes the comparison as the tables ``stopping`` and ``stopping_summary`` at its default
tolerance and margin; ``dynstudy stopping`` computes it again with the user's (:func:`compare_store`), on any
analysed store, one written by any trainer included.
"""
from __future__ import annotations

from dynstudy.analysis.run.capture_plan import run_params
from dynstudy.analysis.stats import stopping


def _views(con) -> set[str]:
    return {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}


def run_curves(con, summaries: list[dict], runs: list[dict], train=None) -> dict[str, dict]:
    """run_id -> the curves the rules replay, for the runs of ``summaries``: train_metrics' val_loss and val_acc,
    and the end-of-epoch captures' H_eff and M (``con``: a catalog with those views), with each run's settings.
    ``train``: the (run_id, epoch, val_loss, val_acc) rows in epoch order, when the caller has read them."""
    ids = {s["run_id"] for s in summaries}
    if train is None:
        if "train_metrics" not in _views(con):
            return {}
        train = con.execute("SELECT run_id, epoch, val_loss, val_acc FROM train_metrics ORDER BY run_id, epoch"
                            ).fetchall()
    train = [r for r in train if r[0] in ids]
    caps = []
    if "capture_metrics" in _views(con):
        caps = [r for r in con.execute("SELECT run_id, epoch, h_eff, metastability FROM capture_metrics "
                                       "WHERE kind = 'epoch' ORDER BY run_id, epoch").fetchall() if r[0] in ids]
    params = {r["run_id"]: run_params(r["config"])[0] for r in runs if r["run_id"] in ids}
    return stopping.run_curves(train, caps, params)


def comparison(con, summaries: list[dict], runs: list[dict], tolerance: float = stopping.TOLERANCE,
               margin: float = stopping.MARGIN, train=None) -> tuple[list[dict], list[dict]]:
    """(``stopping`` rows, ``stopping_summary`` rows) of the whole, current ``summaries`` (``train``: as
    :func:`run_curves` takes it)."""
    rows = stopping.replay(summaries, run_curves(con, summaries, runs, train))
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
    return comparison(open_catalog(store, scan=scan, tables=("train_metrics", "capture_metrics")), whole, runs,
                      tolerance, margin)
