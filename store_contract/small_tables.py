"""The rows of a small per-run table (:data:`dynstudy.store_contract.index.ROW_CACHED_TABLES`), in one read.

``runs`` and ``run_summary`` hold one short file per run, so reading them file by file costs one
open (one GET) per run. :func:`table_rows` takes a scan's files of such a table and returns their
rows: those of files the index's rows cache holds unchanged (same path, size and change
stamp) from the cache, the others read from their files; then it rewrites the cache when it read
any file. The files are exactly the scan's, so a row is never missed or counted twice.
"""
from __future__ import annotations

from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dynstudy.store_contract.files import filesystem, table_dir
from dynstudy.store_contract.index import ROW_PATH_COLUMN, clock_ns, load_rows, save_rows, still
from dynstudy.store_contract.scan import StoreFile
from dynstudy.store_contract.schemas import TABLES


def _rel(store: str, table: str, f: StoreFile) -> str:
    return f.path[len(table_dir(store, table)) + 1:]


def _read_file(f: StoreFile, schema: pa.Schema) -> pa.Table:
    """One file's rows with the contract's columns (a column it lacks is null; columns beyond them are left out)."""
    fs, inner = filesystem(f.path)
    with fs.open_input_file(inner) as fh:
        got = pq.read_table(fh)
    n = got.num_rows
    cols = [got.column(field.name).cast(field.type) if field.name in got.column_names else pa.nulls(n, field.type)
            for field in schema]
    return pa.Table.from_arrays(cols, schema=schema)


def table_rows(store: str, table: str, files: Sequence[StoreFile], write_index: bool = True) -> pa.Table:
    """Every row of ``files`` (a scan's files of ``table``, one of the row-cached tables), with the contract's
    columns, from the index's rows cache where it holds a file unchanged (``write_index``: then update the cache)."""
    schema = TABLES[table]
    keys = {_rel(store, table, f): (f.size, f.stamp_ns) for f in files}
    cached = load_rows(store, table, keys, schema)
    have = set(cached.column(ROW_PATH_COLUMN).to_pylist())
    missing = [f for f in files if _rel(store, table, f) not in have]
    if not missing:
        return cached.drop_columns([ROW_PATH_COLUMN])
    fs, _ = filesystem(store)
    checked_ns = clock_ns(store, fs) if write_index else 0  # the store's clock, asked only to save the cache
    fresh, changed = [], set()
    for f in missing:
        rows = _read_file(f, schema)
        fresh.append(rows.append_column(ROW_PATH_COLUMN, pa.array([_rel(store, table, f)] * rows.num_rows,
                                                                   pa.string())))
        if not still(fs, filesystem(f.path)[1], f.size, f.stamp_ns):
            changed.add(_rel(store, table, f))
    whole = pa.concat_tables([cached, *fresh])
    cacheable = [k for k, (_, m) in keys.items() if m >= 0 and k not in changed]
    if cacheable and write_index:
        keep = pc.is_in(whole.column(ROW_PATH_COLUMN), pa.array(cacheable, pa.string()))
        save_rows(store, table, whole.filter(keep), keys, checked_ns)
    return whole.drop_columns([ROW_PATH_COLUMN])
