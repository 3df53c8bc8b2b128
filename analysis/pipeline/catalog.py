"""A DuckDB catalog over a store: every table queryable by its name.

``open_catalog(store)`` scans the store (:func:`dynstudy.store_contract.scan.scan_store`, through the store's
index) and returns an in-memory DuckDB connection with one view per table that has files (``runs``,
``activations``, ``train_metrics``, ``capture_metrics``, ``run_summary``, ``cell_variability``, ``controls``,
...), each a pyarrow dataset over the table's files with the contract's columns, one fragment per file whose
partition is its run, so a filter on ``run_id`` opens that run's files alone. Nothing is copied: queries read
the Parquet files, except ``runs`` and ``run_summary``, read at once through the index's rows cache
(:mod:`dynstudy.store_contract.small_tables`). ``tables`` limits the catalog to the tables a command needs
(:func:`query_tables` finds a query's), so a query over ``run_summary`` never lists or opens the activations;
``runs`` limits a per-run table's view to some runs' folders (:mod:`dynstudy.analysis.pipeline.run_filter` finds
the runs a query is restricted to), and ``compacted`` reads ``run_summary`` of an object store from its
compaction (:mod:`dynstudy.store_contract.compaction`).
The views name their files one by one, never by a glob, so a store path with spaces, quotes, ``[``, ``]``,
``*`` or ``?`` works. Files that do not belong (a Parquet file at a table root, a non-Parquet or truncated
file, a foreign schema) are left out of their view and listed in the table ``unreadable_files`` with the
reason, so one stray file never hides or breaks the rest of a store.

``sandbox=True`` (``dynstudy sql``) then locks the connection down: no file
outside the store can be read, no extension installed or loaded, and no
setting changed afterwards.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

import duckdb
import pyarrow.dataset as ds

from dynstudy.store_contract.compaction import COMPACTED_TABLES, compacted_rows
from dynstudy.store_contract.files import filesystem, inner_path, is_remote, resolve_store
from dynstudy.store_contract.index import ROW_CACHED_TABLES
from dynstudy.store_contract.scan import StoreScan, scan_store
from dynstudy.store_contract.schemas import PARTITIONED, TABLES
from dynstudy.store_contract.small_tables import table_rows

#: DuckDB settings of every connection here: no extension installed or loaded (nothing downloaded).
NO_EXTENSIONS = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _dataset_view(con: duckdb.DuckDBPyConnection, scan: StoreScan, table: str) -> None:
    """``table`` as a pyarrow dataset over its files with the contract's columns, scanned by DuckDB (filters
    pushed down).

    Each file is a fragment whose partition expression is its run (the scan
    has checked that its rows are its folder's run), so a filter on run_id
    leaves the other runs' files unopened; the scan's sizes spare a HEAD
    request per object-store file.
    """
    fs, _ = filesystem(scan.store)
    fmt = ds.ParquetFileFormat()
    fragments = [fmt.make_fragment(inner_path(f.path), filesystem=fs, file_size=f.size,
                                   partition_expression=ds.scalar(True) if f.run_id is None
                                   else ds.field("run_id") == f.run_id)
                 for f in scan.files[table]]
    con.register(table, ds.FileSystemDataset(fragments, schema=TABLES[table], format=fmt, filesystem=fs))


def create_views(con: duckdb.DuckDBPyConnection, scan: StoreScan, whole_tables: bool = True,
                 write_index: bool = True, tables=tuple(TABLES), some_runs=()) -> None:
    """One view per table of ``scan`` over its files, and the table ``unreadable_files``.

    Files are read through pyarrow's filesystem (local or object store: no
    DuckDB extension, nothing downloaded), as a dataset with the contract's
    columns. With ``whole_tables`` (a scan of every run), the small per-run
    tables (:data:`dynstudy.store_contract.index.ROW_CACHED_TABLES`) are read
    at once through the index's rows cache
    (:func:`dynstudy.store_contract.small_tables.table_rows`; ``write_index``: updating the cache), except those
    of ``some_runs`` (tables the scan holds for some runs alone).
    """
    con.execute("CREATE TABLE unreadable_files (table_name VARCHAR, path VARCHAR, error VARCHAR)")
    if scan.foreign:
        con.executemany("INSERT INTO unreadable_files VALUES (?, ?, ?)", [list(f) for f in scan.foreign])
    for table in (t for t in scan.tables() if t in tables):
        if whole_tables and table in ROW_CACHED_TABLES and table not in some_runs:
            con.register(table, table_rows(scan.store, table, scan.files[table], write_index))
        else:
            _dataset_view(con, scan, table)


def query_tables(query: str) -> tuple[str, ...]:
    """The tables of the contract a catalog needs for ``query``: those it names, or every table when it names
    ``unreadable_files`` (which lists the foreign files of every table), none of them (``SHOW TABLES``), or
    cannot be parsed (DuckDB then reports the error)."""
    con = duckdb.connect(config=NO_EXTENSIONS)  # the default connection would make ~/.duckdb
    try:
        names = set().union(*(con.get_table_names(st.query, qualified=False) for st in con.extract_statements(query)))
    except duckdb.Error:
        return tuple(TABLES)
    named = tuple(t for t in TABLES if t in names)
    return tuple(TABLES) if "unreadable_files" in names or not named else named


def lock_down(con: duckdb.DuckDBPyConnection, store: str) -> None:
    """No file access outside ``store``, no extensions, no setting changes from here on.

    An object store's tables are read through pyarrow, so DuckDB itself then
    needs no file access at all.
    """
    if not is_remote(store):
        con.execute(f"SET allowed_directories = [{_sql_str(store.rstrip('/') + '/')}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def scan_tables(store: str, tables, runs: Mapping[str, Sequence[str]], write_index: bool = True) -> StoreScan:
    """A scan of ``tables`` in ``store``: each table of ``runs`` listed for its runs' folders alone (without the
    index), every other one whole (through it). A table none of whose runs has a file is listed whole too, so
    that whether it has a view does not depend on the runs asked for."""
    scan = scan_store(store, [t for t in tables if t not in runs], write_index=write_index)
    for table in (t for t in tables if t in runs):
        part = scan_store(store, [table], run_ids=runs[table])
        if not part.files[table]:
            part = scan_store(store, [table], write_index=write_index)
        scan.files[table] = part.files[table]
        scan.foreign.extend(part.foreign)
    return scan


def open_catalog(store: str, run_id: str | None = None, *, scan: StoreScan | None = None,
                 sandbox: bool = False, tables=tuple(TABLES), runs: Mapping[str, Sequence[str]] | None = None,
                 compacted: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per table present in ``store``.

    Parameters
    ----------
    store : local directory, or an s3:// / gs:// URI (read through pyarrow's
        filesystem, with the standard credentials: :func:`dynstudy.store_contract.files.filesystem`).
    run_id : only this run's files (and no cross-run table).
    scan : a scan of the store already made (default: scan it now).
    sandbox : lock the connection down after the views exist (read-only SQL); the store's index is then read,
        never written: nothing of ``dynstudy sql`` lands in the store.
    tables : the tables to scan and give a view (default: every table; :func:`query_tables` finds a query's),
        their foreign files alone in ``unreadable_files`` (with ``scan``: the tables of it that get a view).
    runs : per-run table -> the runs whose folders alone its view lists (:func:`query_runs
        <dynstudy.analysis.pipeline.run_filter.query_runs>` finds a query's; ``dynstudy sql --run``); the others
        are opened whole. Ignored with ``scan``.
    compacted : read a compacted table of an object store (``run_summary``) from its compaction when it is
        trusted (:mod:`dynstudy.store_contract.compaction`), without listing its folder: its foreign files are then
        not in ``unreadable_files`` (so a query naming that table must not ask for this). Ignored with ``scan``.
    """
    store = resolve_store(store)
    if not is_remote(store) and not os.path.isdir(store):
        raise FileNotFoundError(f"store {store!r} does not exist; run a study first (dynstudy run) or pass --store")
    runs = {t: r for t, r in (runs or {}).items() if t in PARTITIONED} if scan is None and run_id is None else {}
    compact = {}
    if compacted and scan is None and run_id is None:
        found = {t: compacted_rows(store, t) for t in tables if t in COMPACTED_TABLES and t not in runs}
        compact = {t: rows for t, rows in found.items() if rows is not None}
    if scan is None:
        scan = scan_store(store, tables, run_id=run_id, write_index=not sandbox) if run_id is not None \
            else scan_tables(store, [t for t in tables if t not in compact], runs, write_index=not sandbox)
    con = duckdb.connect(config=NO_EXTENSIONS)
    create_views(con, scan, whole_tables=run_id is None, write_index=not sandbox, tables=tables, some_runs=runs)
    for table, rows in compact.items():
        con.register(table, rows)
    if sandbox:
        lock_down(con, store)
    return con


def unreadable_files(con) -> list[tuple[str, str, str]]:
    """(table, path, error) of every file the catalog had to leave out."""
    return con.execute("SELECT table_name, path, error FROM unreadable_files ORDER BY path").fetchall()
