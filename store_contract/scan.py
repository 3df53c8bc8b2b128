"""What a store holds: every table's files, checked against the contract.

:func:`scan_store` lists each table's folder through pyarrow's filesystem
(local or object store) and reads each file's Parquet footer once. A file
belongs to its table when it sits where the layout puts it
(``<table>/run_id=<id>/<name>.parquet`` with the table's file name, or
``<table>/part.parquet`` for the cross-run tables), has a readable footer,
the table's key columns with the contract's types, and, in a run's folder,
only that run's rows. Anything else (a Parquet file at a table root, a
non-Parquet file, a truncated file, a foreign schema, a file copied into
another run's folder) is *foreign*: listed with its path and the reason,
and never read. Hidden files (``.name``: the atomic writer's temporaries)
are passed over.

Each file's *token* is a digest of its footer, which holds the write id
every dynstudy write puts there: a rewritten file always gets a new token,
an untouched (or restored) one keeps it. :func:`files_digest` turns a run's
files into one digest, the analysis's record of what it read.

A scan of whole tables keeps what each check found in the store's index
(:mod:`dynstudy.store_contract.index`) and reads the footers only of files
the index does not hold unchanged; the files themselves always come from
the listing. A scan of one run's partitions checks its few files directly.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from sys import intern
from typing import Iterable, Iterator, Optional, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from dynstudy.store_contract.files import filesystem, run_folder_problem, table_dir
from dynstudy.store_contract.index import ENTRY_SCHEMA, clock_ns, load_index, save_index, stamp_ns, still
from dynstudy.store_contract.schemas import FILE_NAMES, TABLES, UNPARTITIONED, schema_problem

_MAGIC = b"PAR1"


@dataclass(frozen=True, slots=True)
class StoreFile:
    """One file of a table that belongs there.

    A file keeps what its path is made of (its table's folder, one string for all of them, its run and its
    name) and its key-value metadata as JSON text; :attr:`path` and :attr:`metadata` build them when asked.
    A scan holds a table's files as columns (:class:`TableFiles`) and builds these only for the files asked for.
    """

    table: str
    folder: str            # the table's folder, as :func:`dynstudy.store_contract.files.table_dir` gives it
    run_id: Optional[str]  # None for the cross-run tables
    name: str              # file name without ``.parquet``, e.g. ``capture=000003``
    size: int
    token: str             # digest of the Parquet footer
    metadata_json: str = field(default="{}", compare=False, hash=False)  # key-value metadata, JSON, sorted keys
    columns: tuple = field(default=(), compare=False, hash=False)  # the file's column names
    stamp_ns: int = field(default=-1, compare=False, hash=False)  # change stamp as listed (index.stamp_ns)

    @property
    def rel(self) -> str:
        """The file's path inside its table's folder."""
        return f"{self.name}.parquet" if self.run_id is None else f"run_id={self.run_id}/{self.name}.parquet"

    @property
    def path(self) -> str:
        """Local path or URI, as DuckDB and pyarrow take it."""
        return f"{self.folder}/{self.rel}"

    @property
    def metadata(self) -> dict:
        """The file's key-value metadata (without Arrow's schema)."""
        return json.loads(self.metadata_json)


#: The columns of :attr:`TableFiles.rows`: a file's path inside its table's folder, where that places it, and
#: what checking it found (``columns``: JSON list of its column names; ``metadata``: JSON of its key-value metadata).
FILE_COLUMNS = pa.schema([("rel", pa.string()), ("run_id", pa.string()), ("name", pa.string()),
                          ("size", pa.int64()), ("stamp_ns", pa.int64()), ("token", pa.string()),
                          ("columns", pa.string()), ("metadata", pa.string())])


@lru_cache(maxsize=1024)
def _column_names(text: str) -> tuple:
    """The column names a JSON list holds (the files of one table share a few lists)."""
    return tuple(json.loads(text or "[]"))


#: Files of a table :meth:`TableFiles.of_run` turns into Python values at once: asking for every run in path order
#: converts each block once, and one block is held at a time.
BLOCK_FILES = 4096
_FILE_FIELDS = ("run_id", "name", "size", "token", "metadata", "columns", "stamp_ns")


class TableFiles:
    """The files of one table that belong, sorted by path, as one Arrow table (:data:`FILE_COLUMNS`).

    A store holds hundreds of thousands of files, so a scan keeps them as columns, not as an object per
    file: iterating, indexing or :meth:`of_run` builds :class:`StoreFile` objects for the files asked for
    alone. A run's files are adjacent (sorted by path, they share the prefix ``run_id=<id>/``), and
    :meth:`of_run` finds them through a map of run -> rows built at its first call.
    """

    def __init__(self, table: str, folder: str, rows: pa.Table):
        self.table, self.folder, self.rows = table, folder, rows
        self._runs: Optional[dict[str, tuple[int, int]]] = None
        self._block: tuple[int, int, list] = (0, 0, [])  # (first row, row after the last, their values by field)

    def __len__(self) -> int:
        return self.rows.num_rows

    def __iter__(self) -> Iterator[StoreFile]:
        for batch in self.rows.to_batches(max_chunksize=8192):
            yield from self._files(_values(batch), 0, batch.num_rows)

    def __getitem__(self, i: int) -> StoreFile:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"file {i} of {n}")
        return next(self._files(_values(self.rows.slice(i % n, 1)), 0, 1))

    def of_run(self, run_id: str) -> list[StoreFile]:
        """``run_id``'s files, in path order."""
        if self._runs is None:
            self._runs = _run_rows(self.rows)
        start, stop = self._runs.get(run_id, (0, 0))
        if start == stop:
            return []
        first, end, values = self._block
        if not (first <= start and stop <= end):
            end = max(stop, min(start + BLOCK_FILES, len(self)))
            first, values = start, _values(self.rows.slice(start, end - start))
            self._block = (first, end, values)
        return list(self._files(values, start - first, stop - first))

    def _files(self, values: list, start: int, stop: int) -> Iterator[StoreFile]:
        for run_id, name, size, token, metadata, columns, stamp in zip(*(v[start:stop] for v in values)):
            yield StoreFile(self.table, self.folder, run_id, name, size, token, metadata, _column_names(columns),
                            stamp)


def _values(rows) -> list[list]:
    """The values of each of :data:`_FILE_FIELDS` of some of a table's files (a table or record batch)."""
    return [rows.column(c).to_pylist() for c in _FILE_FIELDS]


def _run_rows(rows: pa.Table) -> dict[str, tuple[int, int]]:
    """run_id -> (first row, row after its last) of a table's files sorted by path (one entry per run)."""
    if rows.num_rows == 0 or rows.column("run_id").null_count == rows.num_rows:
        return {}
    runs = pc.run_end_encode(rows.column("run_id").combine_chunks())
    ends = runs.run_ends.to_pylist()
    return {intern(r): (a, b) for r, a, b in zip(runs.values.to_pylist(), [0, *ends[:-1]], ends)}


def _of_run(files: Sequence[StoreFile], run_id: str) -> list[StoreFile]:
    """``run_id``'s files among ``files`` (a scan's :class:`TableFiles`, or a list of files)."""
    if isinstance(files, TableFiles):
        return files.of_run(run_id)
    return [f for f in files if f.run_id == run_id]


@dataclass
class StoreScan:
    """Files per table that belong (:class:`TableFiles`, or lists of :class:`StoreFile` for a scan put together
    by hand), and the foreign ones with their reasons."""

    store: str
    files: dict[str, Sequence[StoreFile]]
    foreign: list[tuple[str, str, str]]  # (table, path, reason)

    def run_files(self, run_id: str, tables: Iterable[str]) -> dict[str, list[StoreFile]]:
        """``run_id``'s files of each of ``tables``."""
        return {t: _of_run(self.files.get(t, ()), run_id) for t in tables}

    def tables(self) -> list[str]:
        """Tables that hold at least one file that belongs."""
        return [t for t in TABLES if self.files.get(t)]


def _expected(table: str) -> str:
    examples = FILE_NAMES[table].pattern.replace(r"(\d{6})", "NNNNNN").split("|")
    return " or ".join(f"{e}.parquet" if table in UNPARTITIONED else f"run_id=<id>/{e}.parquet" for e in examples)


def _place(table: str, rel: str) -> tuple[Optional[str], Optional[str], Optional[str]]:
    """(run_id, name, problem) of a file at ``rel`` inside the table's folder."""
    parts = rel.split("/")
    stem = parts[-1][:-len(".parquet")] if parts[-1].endswith(".parquet") else None
    if table in UNPARTITIONED:
        ok = len(parts) == 1 and stem is not None and FILE_NAMES[table].fullmatch(stem)
        return None, stem, None if ok else f"not a file of this table's layout (expected {_expected(table)})"
    run_id = parts[0][len("run_id="):] if parts[0].startswith("run_id=") else ""
    ok = len(parts) == 2 and run_id and stem is not None and FILE_NAMES[table].fullmatch(stem)
    return run_id or None, stem, None if ok else f"not a file of this table's layout (expected {_expected(table)})"


def read_footer(fs: pafs.FileSystem, inner: str, size: int) -> tuple[pq.FileMetaData, str]:
    """The Parquet metadata of a file and the digest of its footer; ValueError if it has none."""
    if size < 12:
        raise ValueError(f"not a Parquet file ({size} bytes)")
    with fs.open_input_file(inner) as fh:
        fh.seek(size - 8)
        end = fh.read(8)
        length = int.from_bytes(end[:4], "little")
        if end[4:] != _MAGIC or length > size - 12:
            raise ValueError("not a Parquet file, or truncated (no Parquet footer at its end)")
        fh.seek(size - 8 - length)
        footer = fh.read(length)
    try:
        meta = pq.read_metadata(pa.BufferReader(footer + end))
    except (pa.ArrowException, OSError) as err:
        raise ValueError(f"unreadable Parquet footer ({err})") from None
    return meta, hashlib.sha256(footer).hexdigest()[:32]


def _run_id_problem(meta: pq.FileMetaData, run_id: str) -> Optional[str]:
    """Why the file's run_id statistics say it holds another run's rows (None: they don't)."""
    names = meta.schema.names
    if "run_id" not in names:
        return None
    idx = names.index("run_id")
    for i in range(meta.num_row_groups):
        st = meta.row_group(i).column(idx).statistics
        if st is not None and st.has_min_max and (st.min != run_id or st.max != run_id):
            return f"holds rows of run {st.min!r}, not of its folder's run {run_id!r}"
    return None


def check_file(table: str, fs: pafs.FileSystem, inner: str, size: int, run_id: Optional[str]):
    """(metadata, token, problem) of one file placed in ``table``."""
    try:
        meta, token = read_footer(fs, inner, size)
    except (ValueError, OSError) as err:
        return None, None, str(err)
    problem = schema_problem(table, meta.schema.to_arrow_schema())
    if problem is None and run_id is not None:
        problem = _run_id_problem(meta, run_id)
    return meta, token, problem


def _kv(meta: pq.FileMetaData) -> str:
    """The key-value metadata of a file (without Arrow's schema) as JSON text with sorted keys."""
    return json.dumps({k.decode(errors="replace"): v.decode(errors="replace") for k, v in (meta.metadata or {}).items()
                       if not k.startswith(b"ARROW")}, sort_keys=True)


#: Files a batch of a listing or of footer checks holds as Python values before it becomes Arrow columns.
BATCH = 16384
#: A table's files as listed and placed (``problem``: why the file's place is not one of the table's layout).
_PLACED = pa.schema([("rel", pa.string()), ("run_id", pa.string()), ("name", pa.string()), ("size", pa.int64()),
                     ("stamp_ns", pa.int64()), ("problem", pa.string())])
#: What checking the files found (``problem``: why one does not belong; ``keep``: its entry may be indexed).
_CHECKED = pa.schema([*FILE_COLUMNS, ("problem", pa.string()), ("keep", pa.bool_())])


def _as_table(rows: Iterable[tuple], schema: pa.Schema) -> pa.Table:
    """``rows`` (tuples in ``schema``'s column order) as an Arrow table, :data:`BATCH` rows at a time."""
    batches, chunk = [], []
    for row in rows:
        chunk.append(row)
        if len(chunk) == BATCH:
            batches.append(pa.RecordBatch.from_arrays(list(map(pa.array, zip(*chunk), schema.types)), schema=schema))
            chunk = []
    if chunk:
        batches.append(pa.RecordBatch.from_arrays(list(map(pa.array, zip(*chunk), schema.types)), schema=schema))
    return pa.Table.from_batches(batches, schema=schema)


def _local_files(folder: str, rel: str) -> Iterator[tuple[str, int, int]]:
    """(path inside the table's folder, size, change stamp) of the files under a local ``folder`` (``rel``: its
    path inside the table's folder), one stat each."""
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return
    for e in entries:
        inside = f"{rel}/{e.name}" if rel else e.name
        try:
            if e.is_dir():
                yield from _local_files(e.path, inside)
            elif e.is_file():
                st = e.stat()
                yield inside, st.st_size, st.st_ctime_ns
        except FileNotFoundError:
            continue  # removed while listed


def _remote_files(fs: pafs.FileSystem, base: str, inner_prefix: str) -> Iterator[tuple[str, int, int]]:
    """(path inside the table's folder, size, change stamp) of the objects under ``base``."""
    for info in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
        if info.type == pafs.FileType.File:
            yield info.path[len(inner_prefix.rstrip("/")) + 1:], info.size, stamp_ns(fs, info)


def _placed(table: str, listed: Iterable[tuple[str, int, int]]) -> Iterator[tuple]:
    """Rows of :data:`_PLACED` for the ``listed`` files that are not hidden (``.name``: the atomic writer's
    temporaries)."""
    for rel, size, stamp in listed:
        if not rel.rsplit("/", 1)[-1].startswith("."):
            run_id, name, problem = _place(table, rel)
            yield rel, run_id, name, size, stamp, problem


def _listing(store: str, table: str, run_ids: Optional[Sequence[str]]) -> pa.Table:
    """The files under ``table``'s folder (under its ``run_ids``' folders alone, when given) as :data:`_PLACED`,
    sorted by path."""
    problems = [run_folder_problem(r) for r in run_ids or ()]
    if any(problems):
        raise ValueError(next(p for p in problems if p) + ": give run ids as the runs table lists them")
    fs, inner_prefix = filesystem(table_dir(store, table))
    folders = [""] if run_ids is None else [f"run_id={r}" for r in sorted(set(run_ids))]
    parts = [_PLACED.empty_table()]
    for folder in folders:
        base = f"{inner_prefix}/{folder}" if folder else inner_prefix
        listed = _local_files(base, folder) if isinstance(fs, pafs.LocalFileSystem) \
            else _remote_files(fs, base, inner_prefix)
        parts.append(_as_table(_placed(table, listed), _PLACED))
    return pa.concat_tables(parts).sort_by("rel")


def _checks(table: str, fs: pafs.FileSystem, inner_prefix: str, todo: pa.Table) -> Iterator[tuple]:
    """Rows of :data:`_CHECKED` for the placed files ``todo``, each footer read once."""
    for batch in todo.to_batches(max_chunksize=BATCH):
        for rel, run_id, name, size, stamp in zip(*(batch.column(c).to_pylist()
                                                    for c in ("rel", "run_id", "name", "size", "stamp_ns"))):
            inner = f"{inner_prefix.rstrip('/')}/{rel}"
            meta, token, problem = check_file(table, fs, inner, size, run_id)
            columns = json.dumps(meta.schema.to_arrow_schema().names) if meta is not None else "[]"
            yield (rel, run_id, name, size, stamp, token, columns, _kv(meta) if meta is not None else "{}", problem,
                   stamp >= 0 and still(fs, inner, size, stamp))


def _from_index(placed: pa.Table, entries: pa.Table, trusted_before: int) -> tuple[pa.Table, pa.Table]:
    """(rows of :data:`_CHECKED` for the ``placed`` files whose index ``entries`` hold them unchanged, the other
    placed files): an entry counts when path, size and change stamp all match and it is trusted."""
    at = pc.index_in(placed.column("rel"), value_set=entries.column(ENTRY_SCHEMA.names[0]))  # entry of each file
    found = pc.is_valid(at)
    mine = entries.take(pc.fill_null(at, 0))  # a file without an entry takes the first one, never a hit below
    stamp = mine.column("stamp_ns")
    hit = pc.and_(pc.and_(found, pc.equal(mine.column("size"), placed.column("size"))),
                  pc.and_(pc.and_(pc.equal(stamp, placed.column("stamp_ns")), pc.greater_equal(stamp, 0)),
                          pc.less(stamp, trusted_before)))
    hit = pc.fill_null(hit, False)
    cached, known = placed.filter(hit), mine.filter(hit)
    keep = pc.is_valid(cached.column("rel"))  # an entry from the index may be indexed again: all true
    found = pa.Table.from_arrays([cached.column(c) for c in ("rel", "run_id", "name", "size", "stamp_ns")]
                                 + [known.column(c) for c in ("token", "columns", "metadata", "problem")] + [keep],
                                 schema=_CHECKED)
    return found, placed.filter(pc.invert(hit))


def _scan_table(store: str, table: str, run_ids: Optional[Sequence[str]], write_index: bool
                ) -> tuple[TableFiles, list[tuple[str, str, str]]]:
    """(the files of ``table`` that belong, the foreign ones): a whole table's through its index (``write_index``:
    then updating it when a footer was read), some runs' partitions (``run_ids``) directly."""
    prefix = table_dir(store, table)
    fs, inner_prefix = filesystem(prefix)
    placed = _listing(store, table, run_ids)
    misplaced = placed.filter(pc.is_valid(placed.column("problem")))
    todo = placed.filter(pc.is_null(placed.column("problem")))
    entries, trusted_before = load_index(store, table) if run_ids is None else (None, 0)
    cached = _CHECKED.empty_table()
    if entries is not None:
        cached, todo = _from_index(todo, entries, trusted_before)
    saving = run_ids is None and write_index and todo.num_rows > 0
    checked_ns = clock_ns(store, fs) if saving else None  # the store's clock, before the first footer is read
    checked = pa.concat_tables([cached, _as_table(_checks(table, fs, inner_prefix, todo), _CHECKED)]).sort_by("rel")
    if saving:
        kept = checked.filter(checked.column("keep"))
        save_index(store, table, pa.table([kept.column(c) for c in ("rel", "size", "stamp_ns", "token", "columns",
                                                                    "metadata", "problem")], schema=ENTRY_SCHEMA),
                   checked_ns)
    problems = pa.concat_tables([misplaced.select(["rel", "problem"]),
                                 checked.filter(pc.is_valid(checked.column("problem"))).select(["rel", "problem"])])
    foreign = [(table, f"{prefix}/{rel}", why) for rel, why in sorted(zip(*(problems.column(c).to_pylist()
                                                                            for c in ("rel", "problem"))))]
    belong = checked.filter(pc.is_null(checked.column("problem"))).select(FILE_COLUMNS.names).combine_chunks()
    at = belong.schema.get_field_index("columns")  # the files of a table share a few column lists: stored once each
    belong = belong.set_column(at, "columns", pc.dictionary_encode(belong.column("columns")))
    del placed, todo, cached, checked
    pa.default_memory_pool().release_unused()  # the listing and the index are gone: hand their pages back
    return TableFiles(table, prefix, belong), foreign


def scan_store(store: str, tables: Iterable[str] = tuple(TABLES), run_id: Optional[str] = None,
               write_index: bool = True, run_ids: Optional[Sequence[str]] = None) -> StoreScan:
    """Every file of ``tables`` in ``store`` (of some runs' partitions, with ``run_id`` or ``run_ids``), checked.

    Parameters
    ----------
    store : a resolved store location (local directory or s3:// / gs:// URI).
    tables : the tables to list (default: all of the contract).
    run_id : list only this run's partitions (and no cross-run table); the index is then neither read nor written.
    write_index : update the index with the footers this scan read (False: only read it).
    run_ids : list only these runs' partitions (and no cross-run table), as ``run_id`` does for one.
    """
    if run_id is not None:
        run_ids = [run_id]
    files: dict[str, Sequence[StoreFile]] = {}
    foreign: list[tuple[str, str, str]] = []
    for table in tables:
        if run_ids is not None and table in UNPARTITIONED:
            continue
        files[table], found = _scan_table(store, table, run_ids, write_index)
        foreign += found
    return StoreScan(store, files, foreign)


def files_digest(files: Iterable[StoreFile], salt: str = "") -> str:
    """One digest over (table, name, size, token) of ``files``, in any order."""
    lines = sorted(f"{f.table}/{f.run_id}/{f.name}:{f.size}:{f.token}" for f in files)
    return hashlib.sha256("\n".join([salt, *lines]).encode()).hexdigest()[:32]
