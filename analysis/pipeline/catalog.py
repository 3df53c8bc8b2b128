"""A DuckDB catalog over a store: every table queryable by its name.

``open_catalog(store)`` scans the store (:func:`dynstudy.store_contract.scan.scan_store`)
and returns an in-memory DuckDB connection with one view per table that has
files (``runs``, ``activations``, ``train_metrics``, ``capture_metrics``,
``run_summary``, ``cell_variability``, ``controls``, ...), each over
``read_parquet([the table's files], union_by_name = true)``. Nothing is copied: queries read the Parquet files. The
views name their files one by one, never by a glob, so a store path with spaces, quotes, ``[``, ``]``, ``*`` or ``?``
works. Files that do not belong (a Parquet file at a table root, a non-Parquet or truncated file, a foreign schema) are
left out of their view and listed in the table ``unreadable_files`` with the reason, so one stray file never hides or
breaks the rest of a store.

``sandbox=True`` (``dynstudy sql``) then locks the connection down: no file
outside the store can be read, no extension installed or loaded, and no
setting changed afterwards.
"""
from __future__ import annotations

import os

import duckdb

from dynstudy.store_contract.files import filesystem, inner_path, is_remote, resolve_store
from dynstudy.store_contract.scan import StoreScan, scan_store
from dynstudy.store_contract.schemas import TABLES


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def _remote_view(con: duckdb.DuckDBPyConnection, scan: StoreScan, table: str) -> None:
    """``table`` as a pyarrow dataset over the object store, scanned by DuckDB (filters pushed down).

    Each file is a fragment whose partition expression is its run (the scan
    has checked that its rows are its folder's run), so a filter on run_id
    leaves the other runs' files unopened; the scan's sizes spare a HEAD
    request per file.
    """
    import pyarrow.dataset as ds

    fs, _ = filesystem(scan.store)
    fmt = ds.ParquetFileFormat()
    fragments = [fmt.make_fragment(inner_path(f.path), filesystem=fs, file_size=f.size,
                                   partition_expression=ds.scalar(True) if f.run_id is None
                                   else ds.field("run_id") == f.run_id)
                 for f in scan.files[table]]
    con.register(table, ds.FileSystemDataset(fragments, schema=TABLES[table], format=fmt, filesystem=fs))


def create_views(con: duckdb.DuckDBPyConnection, scan: StoreScan) -> None:
    """One view per table of ``scan`` over its files, and the table ``unreadable_files``.

    Local files are read by DuckDB's own Parquet reader; object-store files
    through pyarrow's filesystem (no DuckDB extension, nothing downloaded), as
    a dataset with the contract's columns.
    """
    con.execute("CREATE TABLE unreadable_files (table_name VARCHAR, path VARCHAR, error VARCHAR)")
    if scan.foreign:
        con.executemany("INSERT INTO unreadable_files VALUES (?, ?, ?)", [list(f) for f in scan.foreign])
    for table in scan.tables():
        if is_remote(scan.store):
            _remote_view(con, scan, table)
            continue
        files = "[" + ", ".join(_sql_str(f.path) for f in scan.files[table]) + "]"
        # no hive partitioning: every file carries its run_id, checked against its folder by the scan
        con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet({files}, union_by_name = true)")


def lock_down(con: duckdb.DuckDBPyConnection, store: str) -> None:
    """No file access outside ``store``, no extensions, no setting changes from here on.

    An object store's tables are read through pyarrow, so DuckDB itself then
    needs no file access at all.
    """
    if not is_remote(store):
        con.execute(f"SET allowed_directories = [{_sql_str(store.rstrip('/') + '/')}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def open_catalog(store: str, run_id: str | None = None, *, scan: StoreScan | None = None,
                 sandbox: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per table present in ``store``.

    Parameters
    ----------
    store : local directory, or an s3:// / gs:// URI (read through pyarrow's
        filesystem, with the standard credentials: :func:`dynstudy.store_contract.files.filesystem`).
    run_id : only this run's files (and no cross-run table).
    scan : a scan of the store already made (default: scan it now).
    sandbox : lock the connection down after the views exist (read-only SQL).
    """
    store = resolve_store(store)
    if not is_remote(store) and not os.path.isdir(store):
        raise FileNotFoundError(f"store {store!r} does not exist; run a study first (dynstudy run) or pass --store")
    scan = scan if scan is not None else scan_store(store, run_id=run_id)
    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    create_views(con, scan)
    if sandbox:
        lock_down(con, store)
    return con


def unreadable_files(con) -> list[tuple[str, str, str]]:
    """(table, path, error) of every file the catalog had to leave out."""
    return con.execute("SELECT table_name, path, error FROM unreadable_files ORDER BY path").fetchall()
