"""A DuckDB catalog over a store: every table queryable by its name.

``open_catalog(store)`` returns an in-memory DuckDB connection with one view
per table folder found in the store (``runs``, ``activations``,
``train_metrics``, ``capture_metrics``, ``run_summary``, ``cell_variability``,
``controls``), each over ``read_parquet('<store>/<table>/**/*.parquet',
hive_partitioning = true, union_by_name = true)``. Nothing is copied: queries
read the Parquet files, pushing filters on ``run_id`` down to file pruning.
"""
from __future__ import annotations

import os
from glob import glob

import duckdb

from analysis.schema import TABLES
from jobs.store import is_remote, resolve_store, table_dir


#: Tables written whole, not one partition per run.
UNPARTITIONED = ("cell_variability",)


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def table_glob(store: str, table: str) -> str:
    return f"{table_dir(store, table)}/**/*.parquet"


def _has_files(store: str, table: str) -> bool:
    if is_remote(store):
        return True  # listing is left to DuckDB; a missing table fails on first use
    return bool(glob(table_glob(store, table), recursive=True))


def existing_tables(store: str) -> list[str]:
    """Tables of the contract that have at least one file in ``store``."""
    return [t for t in TABLES if _has_files(store, t)]


def open_catalog(store: str) -> duckdb.DuckDBPyConnection:
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
    for table in existing_tables(store):
        hive = ", hive_types = {'run_id': VARCHAR}" if table not in UNPARTITIONED else ""
        con.execute(
            f"CREATE VIEW {table} AS SELECT * FROM read_parquet({_sql_str(table_glob(store, table))}, "
            f"hive_partitioning = true, union_by_name = true{hive})"
        )
    return con
