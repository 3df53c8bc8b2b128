"""A DuckDB catalog over a store: every table queryable by its name.

``open_catalog(store)`` returns an in-memory DuckDB connection with one view
per table folder found in the store (``runs``, ``activations``,
``train_metrics``, ``capture_metrics``, ``run_summary``, ``cell_variability``,
``controls``), each over ``read_parquet('<store>/<table>/**/*.parquet',
hive_partitioning = true, union_by_name = true)``. Nothing is copied: queries
read the Parquet files, pushing filters on ``run_id`` down to file pruning.
A file whose footer cannot be read (truncated, corrupt) is left out of its
view and listed in the table ``unreadable_files``, so one bad file never
hides the rest of a store.
"""
from __future__ import annotations

import os
from glob import glob

import duckdb
import pyarrow.parquet as pq

from analysis.schema import TABLES
from jobs.store import is_remote, resolve_store, table_dir


#: Tables written whole, not one partition per run.
UNPARTITIONED = ("cell_variability", "claims", "sensitivity")


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def table_glob(store: str, table: str, run_id: str | None = None) -> str:
    if run_id is not None and table not in UNPARTITIONED:
        return f"{table_dir(store, table, run_id)}/*.parquet"
    return f"{table_dir(store, table)}/**/*.parquet"


def _has_files(store: str, table: str, run_id: str | None = None) -> bool:
    if is_remote(store):
        return True  # listing is left to DuckDB; a missing table fails on first use
    return bool(glob(table_glob(store, table, run_id), recursive=True))


def existing_tables(store: str, run_id: str | None = None) -> list[str]:
    """Tables of the contract that have at least one file in ``store`` (for ``run_id``, if given)."""
    return [t for t in TABLES if _has_files(store, t, run_id)]


def open_catalog(store: str, run_id: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per table present in ``store``.

    Parameters
    ----------
    store : local directory, or an s3:// / gs:// URI (DuckDB's httpfs
        extension and its usual credentials are used then).
    """
    store = resolve_store(store)
    if not is_remote(store) and not os.path.isdir(store):
        raise FileNotFoundError(f"store {store!r} does not exist; run a study first (dynstudy run) or pass --store")
    con = duckdb.connect()
    if is_remote(store):
        con.execute("INSTALL httpfs; LOAD httpfs;")
    con.execute("CREATE TABLE unreadable_files (table_name VARCHAR, path VARCHAR, error VARCHAR)")
    for table in existing_tables(store, run_id):
        hive = ", hive_types = {'run_id': VARCHAR}" if table not in UNPARTITIONED else ""
        options = f"hive_partitioning = true, union_by_name = true{hive}"
        try:
            con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet("
                        f"{_sql_str(table_glob(store, table, run_id))}, {options})")
        except duckdb.Error:
            if is_remote(store):
                raise
            good = _skip_unreadable(con, store, table, run_id)
            if good:
                files = "[" + ", ".join(_sql_str(f) for f in good) + "]"
                con.execute(f"CREATE VIEW {table} AS SELECT * FROM read_parquet({files}, {options})")
    return con


def _skip_unreadable(con, store: str, table: str, run_id: str | None = None) -> list[str]:
    """Record the files of ``table`` whose Parquet footer cannot be read; return the others."""
    good = []
    for path in sorted(glob(table_glob(store, table, run_id), recursive=True)):
        try:
            pq.read_metadata(path)
            good.append(path)
        except Exception as err:  # truncated, corrupt, not Parquet
            con.execute("INSERT INTO unreadable_files VALUES (?, ?, ?)", [table, path, f"{type(err).__name__}: {err}"])
    return good


def unreadable_files(con) -> list[tuple[str, str, str]]:
    """(table, path, error) of every file the catalog had to leave out."""
    return con.execute("SELECT table_name, path, error FROM unreadable_files ORDER BY path").fetchall()
