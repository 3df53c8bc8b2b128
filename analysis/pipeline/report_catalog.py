"""The DuckDB connection the report reads: the store's catalog, its per-run tables read whole in one pass each.

The catalog's views (:func:`dynstudy.analysis.pipeline.catalog.open_catalog`) read a table file by file
through pyarrow, which costs about 0.7 ms a file; a report reads every per-run table whole (train_metrics
holds a file per run and epoch: 120,000 files at 10,000 runs). On a local store :func:`report_catalog`
reads each of those tables once with :func:`dynstudy.analysis.pipeline.table_read.read_columns` (DuckDB's
own Parquet reader over exactly the scan's files, about 0.2 ms a file) and puts the rows in place of the view, so
nothing is read twice and the report's queries stay the same. An object store keeps the catalog's views.
The files read are the scan's, so a file the scan left out (foreign, truncated) stays out and is
still named in ``unreadable_files``.
"""
from __future__ import annotations

import os

import duckdb

from dynstudy.analysis.pipeline.catalog import open_catalog
from dynstudy.analysis.pipeline.table_read import read_columns
from dynstudy.store_contract.files import is_remote, resolve_store
from dynstudy.store_contract.index import ROW_CACHED_TABLES
from dynstudy.store_contract.scan import scan_store
from dynstudy.store_contract.schemas import PARTITIONED, TABLES

#: Per-run tables the report reads whole (activations it never reads; the row-cached ones the catalog reads
#: at once already).
WHOLE_TABLES = tuple(t for t in PARTITIONED if t != "activations" and t not in ROW_CACHED_TABLES)


def report_catalog(store: str) -> duckdb.DuckDBPyConnection:
    """The catalog of ``store`` (every table scanned, so ``unreadable_files`` names every stray file) with,
    on a local store, each of :data:`WHOLE_TABLES` that has files read whole and registered under its name;
    activations, which the report never reads, get no view."""
    resolved = resolve_store(store)
    if not is_remote(resolved) and not os.path.isdir(resolved):
        return open_catalog(store)  # which says the store does not exist
    scan = scan_store(resolved)
    # views only of what the report reads another way: not of activations, not of the tables read whole below
    remote = is_remote(resolved)
    con = open_catalog(store, scan=scan, tables=tuple(t for t in TABLES if t != "activations"
                                                      and (remote or t not in WHOLE_TABLES)))
    con.execute("SET enable_progress_bar = false")
    if remote:
        return con
    for table in WHOLE_TABLES:
        if scan.files.get(table):
            con.register(table, read_columns(scan.files[table], TABLES[table]))
    return con
