"""Some columns of a per-run table's files, read in bounded batches.

A catalog's view (:func:`dynstudy.analysis.pipeline.catalog.open_catalog`) reads a table file by file as a
pyarrow dataset scanned by DuckDB, and its memory grows with the number of files one query reads (train_metrics
holds a file per run and epoch: 120,000 files at 10,000 runs). :func:`read_columns` reads exactly the files a
scan lists, at most :data:`FILES_PER_QUERY` of them per query, and only the columns asked for: on a local store
with DuckDB's own Parquet reader on one thread (about 0.2 ms a file), on an object store (s3://, gs://, which
DuckDB cannot read here) with a pyarrow dataset over those files. The files read are the scan's, so a file the
scan left out (foreign, truncated) stays out and is still named in ``unreadable_files``.

Files written before a column was added lack it: it reads as null there, as in the catalog's view.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterable, Iterator, Mapping, Sequence

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from dynstudy.store_contract.files import filesystem, inner_path, is_remote
from dynstudy.store_contract.scan import StoreFile
from dynstudy.store_contract.small_tables import conform

#: Files one query reads at most.
FILES_PER_QUERY = 5000
#: DuckDB settings of the reader's connection: no extension installed or loaded (nothing downloaded).
_NO_EXTENSIONS = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}


def _wanted(schema: pa.Schema, columns: Sequence[str] | None, where: Mapping[str, object]) -> pa.Schema:
    """The fields of ``schema`` named in ``columns`` (all: None), in that order; KeyError naming an unknown one."""
    names = list(schema.names) if columns is None else list(columns)
    unknown = [c for c in [*names, *where] if c not in schema.names]
    if unknown:
        raise KeyError(f"column(s) {unknown} are not in the table's schema ({', '.join(schema.names)}): "
                       "ask for columns the contract names")
    return pa.schema([schema.field(c) for c in names])


def _groups(files: Iterable[StoreFile], where: Mapping[str, object]) -> Iterator[tuple[tuple, list[StoreFile]]]:
    """(column names, files) per set of column names the files have (the scan records each file's), leaving out
    the files that lack a column of ``where``: their rows have it null, which equals nothing."""
    groups = defaultdict(list)
    for f in files:
        groups[tuple(f.columns)].append(f)
    for names, group in groups.items():
        if all(c in names for c in where):
            yield names, group


def _local_batches(groups, wanted: pa.Schema, where: Mapping[str, object]) -> Iterator[pa.Table]:
    """:func:`read_batches` of a local store: DuckDB's read_parquet over each chunk of files, on one thread."""
    con = duckdb.connect(config=_NO_EXTENSIONS)
    # one thread, a bounded number of files per query: DuckDB's memory grows with the files one query reads
    # (about 17 kB a file on 2 threads, 1.4 kB like this, at the same speed)
    con.execute("SET enable_progress_bar = false")
    con.execute("SET threads = 1")
    cond = " AND ".join(f'"{c}" = $w{i}' for i, c in enumerate(where)) or "true"
    params = {f"w{i}": v for i, v in enumerate(where.values())}
    try:
        for names, group in groups:
            have = [c for c in wanted.names if c in names]
            select = ", ".join(f'"{c}"' for c in have) or "NULL AS _none"
            query = (f"SELECT {select} FROM read_parquet($files, hive_partitioning = false, union_by_name = {{}}) "
                     f"WHERE {cond}")
            paths = [f.path for f in group]
            for i in range(0, len(paths), FILES_PER_QUERY):
                chunk = {"files": paths[i:i + FILES_PER_QUERY], **params}
                try:
                    got = con.sql(query.format("false"), params=chunk).to_arrow_table()
                except duckdb.Error:  # same column names, different types: let DuckDB unify them file by file
                    got = con.sql(query.format("true"), params=chunk).to_arrow_table()
                yield conform(got, wanted)
    finally:
        con.close()


def _remote_batches(groups, wanted: pa.Schema, schema: pa.Schema, where: Mapping[str, object],
                    store: str) -> Iterator[pa.Table]:
    """:func:`read_batches` of an object store: a pyarrow dataset over each chunk of files (the scan's sizes
    spare a HEAD request a file)."""
    fs, _ = filesystem(store)
    fmt = ds.ParquetFileFormat()
    cond = None
    for c, v in where.items():
        cond = ds.field(c) == v if cond is None else cond & (ds.field(c) == v)
    for _, group in groups:
        for i in range(0, len(group), FILES_PER_QUERY):
            fragments = [fmt.make_fragment(inner_path(f.path), filesystem=fs, file_size=f.size)
                         for f in group[i:i + FILES_PER_QUERY]]
            dataset = ds.FileSystemDataset(fragments, schema=schema, format=fmt, filesystem=fs)
            yield conform(dataset.to_table(columns=wanted.names, filter=cond), wanted)


def read_batches(files: Sequence[StoreFile], schema: pa.Schema, columns: Sequence[str] | None = None,
                 where: Mapping[str, object] | None = None) -> Iterator[pa.Table]:
    """The rows of ``files`` (one table's, as a scan lists them), a table of ``columns`` per batch of at most
    :data:`FILES_PER_QUERY` files.

    Parameters
    ----------
    files : the files to read, all of one table and one store.
    schema : the table's contract schema (:data:`dynstudy.store_contract.schemas.TABLES`); each batch has its
        fields of ``columns`` with its types.
    columns : the columns wanted, in order (None: every column of ``schema``).
    where : column -> value: only rows where each of these columns equals its value (a file lacking one of
        them has no such row).
    """
    where = dict(where or {})
    wanted = _wanted(schema, columns, where)
    if not files:
        return
    groups = _groups(files, where)
    store = files[0].folder
    if is_remote(store):
        yield from _remote_batches(groups, wanted, schema, where, store)
    else:
        yield from _local_batches(groups, wanted, where)


def read_columns(files: Sequence[StoreFile], schema: pa.Schema, columns: Sequence[str] | None = None,
                 where: Mapping[str, object] | None = None) -> pa.Table:
    """Every row of :func:`read_batches` in one table (the rows of ``files`` in no particular order)."""
    wanted = _wanted(schema, columns, dict(where or {}))
    return pa.concat_tables([wanted.empty_table(), *read_batches(files, schema, columns, where)])


def runs_files(files: Iterable[StoreFile], run_ids: Iterable[str]) -> list[StoreFile]:
    """The files of ``files`` in the folders of ``run_ids`` (the scan has checked that a run's folder holds only
    its rows, so these are exactly the files of those runs' rows)."""
    ids = set(run_ids)
    return [f for f in files if f.run_id in ids]


def split_by_run(table: pa.Table, order: Sequence[str]) -> dict[str, dict[str, np.ndarray]]:
    """run_id -> column -> NumPy array of that run's rows of ``table``, sorted by ``run_id`` then ``order``
    (nulls of a float column are NaN; of any other column, None in an object array)."""
    table = table.sort_by([("run_id", "ascending"), *((c, "ascending") for c in order)])
    ids = table.column("run_id").to_numpy(zero_copy_only=False)
    cols = {c: _numpy(table.column(c)) for c in table.column_names if c != "run_id"}
    if not len(ids):
        return {}
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    ends = np.r_[starts[1:], len(ids)]
    return {str(ids[a]): {c: v[a:b] for c, v in cols.items()} for a, b in zip(starts, ends)}


def _numpy(col: pa.ChunkedArray) -> np.ndarray:
    """``col`` as NumPy: floats with NaN for null, other types as they convert (object arrays where null)."""
    if pa.types.is_floating(col.type):
        return pc.fill_null(col, np.nan).to_numpy() if col.null_count else col.to_numpy()
    if col.null_count:  # pyarrow would turn an integer column with nulls into floats
        return np.array(col.to_pylist(), dtype=object)
    return col.to_numpy(zero_copy_only=False)
