"""The rows of a small per-run table (:data:`dynstudy.store_contract.index.ROW_CACHED_TABLES`), in one read.

``runs`` and ``run_summary`` hold one short file per run, so reading them file by file costs one open (one
GET) per run. :func:`table_rows` takes a scan's files of such a table and returns their rows: those of
files the index's rows cache holds unchanged (same path, size and change stamp) from the cache, the others
read from their files (:data:`FILES_PER_READ` at a time); then it rewrites the cache when it read any file.
The files are exactly the scan's, so a row is never missed or counted twice.
"""
from __future__ import annotations

from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from dynstudy.store_contract.files import filesystem, table_dir
from dynstudy.store_contract.index import ROW_PATH_COLUMN, clock_ns, load_rows, save_rows, still
from dynstudy.store_contract.scan import StoreFile, TableFiles
from dynstudy.store_contract.schemas import TABLES

#: Files whose rows are gathered before they are cast to the contract's columns at once.
FILES_PER_READ = 2000
_KEYS = pa.schema([("rel", pa.string()), ("size", pa.int64()), ("stamp_ns", pa.int64())])


def file_keys(files: Sequence[StoreFile]) -> pa.Table:
    """(path inside the table, size, change stamp) of ``files``, one row each, as the rows cache keys them."""
    if isinstance(files, TableFiles):
        return files.rows.select(_KEYS.names)
    return pa.Table.from_pylist([{"rel": f.rel, "size": f.size, "stamp_ns": f.stamp_ns} for f in files], schema=_KEYS)


def conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """``table`` with exactly ``schema``'s columns, cast to its types; a column it lacks is null."""
    n = table.num_rows
    return pa.Table.from_arrays([table.column(f.name).cast(f.type) if f.name in table.column_names
                                 else pa.nulls(n, f.type) for f in schema], schema=schema)


def _read_chunk(fs: pafs.FileSystem, inner: str, rels: list[str], sizes: list[int], schema: pa.Schema) -> pa.Table:
    """The rows of some files (each read in one request) with ``schema``'s columns and the column naming each
    row's file."""
    tables = []
    for rel, size in zip(rels, sizes):
        with fs.open_input_file(f"{inner}/{rel}") as fh:
            got = pq.ParquetFile(pa.BufferReader(fh.read(size))).read(use_threads=False)
        tables.append(got.append_column(ROW_PATH_COLUMN, pa.array([rel] * got.num_rows, pa.string())))
    wanted = schema.append(pa.field(ROW_PATH_COLUMN, pa.string()))
    try:  # files of one table share their columns, or lack some: one cast for the whole chunk
        return conform(pa.concat_tables(tables, promote_options="permissive"), wanted)
    except (pa.ArrowException, ValueError):
        return pa.concat_tables([conform(t, wanted) for t in tables])


def read_files(store: str, table: str, keys: pa.Table, schema: pa.Schema) -> pa.Table:
    """Every row of the files ``keys`` names (as :func:`file_keys` gives them) with ``schema``'s columns (a column a
    file lacks is null; columns beyond them are left out) and :data:`ROW_PATH_COLUMN` naming each row's file."""
    fs, inner = filesystem(table_dir(store, table))
    parts = [schema.empty_table().append_column(ROW_PATH_COLUMN, pa.array([], pa.string()))]
    for start in range(0, keys.num_rows, FILES_PER_READ):
        chunk = keys.slice(start, FILES_PER_READ)
        parts.append(_read_chunk(fs, inner, chunk.column("rel").to_pylist(), chunk.column("size").to_pylist(),
                                 schema))
    return pa.concat_tables(parts)


def table_rows(store: str, table: str, files: Sequence[StoreFile], write_index: bool = True) -> pa.Table:
    """Every row of ``files`` (a scan's files of ``table``, one of the row-cached tables), with the contract's
    columns, from the index's rows cache where it holds a file unchanged (``write_index``: then update the cache)."""
    schema = TABLES[table]
    keys = file_keys(files)
    cached = load_rows(store, table, keys, schema)
    missing = keys.filter(pc.invert(pc.is_in(keys.column("rel"), value_set=cached.column(ROW_PATH_COLUMN))))
    if missing.num_rows == 0:
        return cached.drop_columns([ROW_PATH_COLUMN])
    fs, inner = filesystem(table_dir(store, table))
    checked_ns = clock_ns(store, fs) if write_index else 0  # the store's clock, asked only to save the cache
    whole = pa.concat_tables([cached, read_files(store, table, missing, schema)])
    if write_index:
        changed = [rel for rel, size, stamp in zip(*(missing.column(c).to_pylist() for c in _KEYS.names))
                   if not still(fs, f"{inner}/{rel}", size, stamp)]
        unchanged = pc.invert(pc.is_in(keys.column("rel"), value_set=pa.array(changed, pa.string())))
        cacheable = keys.filter(pc.and_(pc.greater_equal(keys.column("stamp_ns"), 0), unchanged))
        if cacheable.num_rows:
            rows = whole.filter(pc.is_in(whole.column(ROW_PATH_COLUMN), value_set=cacheable.column("rel")))
            save_rows(store, table, rows, cacheable, checked_ns)
    return whole.drop_columns([ROW_PATH_COLUMN])
