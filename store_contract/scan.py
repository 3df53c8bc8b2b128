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
from sys import intern
from typing import Iterable, Iterator, NamedTuple, Optional, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from dynstudy.store_contract.files import filesystem, run_folder_problem, table_dir
from dynstudy.store_contract.index import Entry, clock_ns, load_entries, save_entries, stamp_ns, still
from dynstudy.store_contract.schemas import FILE_NAMES, TABLES, UNPARTITIONED, schema_problem

_MAGIC = b"PAR1"


@dataclass(frozen=True, slots=True)
class StoreFile:
    """One file of a table that belongs there.

    A store holds hundreds of thousands of files, so a file keeps what its path is made of (its table's folder,
    one string for all of them, its run and its name) and its key-value metadata as JSON text; :attr:`path` and
    :attr:`metadata` build them when asked.
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
    def path(self) -> str:
        """Local path or URI, as DuckDB and pyarrow take it."""
        if self.run_id is None:
            return f"{self.folder}/{self.name}.parquet"
        return f"{self.folder}/run_id={self.run_id}/{self.name}.parquet"

    @property
    def metadata(self) -> dict:
        """The file's key-value metadata (without Arrow's schema)."""
        return json.loads(self.metadata_json)


@dataclass
class StoreScan:
    """Files per table that belong, and the foreign ones with their reasons."""

    store: str
    files: dict[str, list[StoreFile]]
    foreign: list[tuple[str, str, str]]  # (table, path, reason)
    _by_run: Optional[dict[str, dict[str, list[StoreFile]]]] = field(default=None, repr=False, compare=False)

    def run_files(self, run_id: str, tables: Iterable[str]) -> dict[str, list[StoreFile]]:
        """``run_id``'s files of each of ``tables`` (from a map of run -> table -> files built at the first call,
        so asking for every run costs one pass over the scan, not one per run)."""
        if self._by_run is None:
            self._by_run = {}
            for table, found in self.files.items():
                for f in found:
                    if f.run_id is not None:
                        self._by_run.setdefault(f.run_id, {}).setdefault(table, []).append(f)
        mine = self._by_run.get(run_id, {})
        return {t: list(mine.get(t, ())) for t in tables}

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


class _TableCheck:
    """Checks the files of one table's listing, through its index when ``indexed`` (``saving``: then writing it)."""

    def __init__(self, store: str, table: str, fs: pafs.FileSystem, indexed: bool, saving: bool):
        self.store, self.table, self.fs, self.indexed = store, table, fs, indexed
        self.saving = indexed and saving
        self.known = load_entries(store, table) if indexed else {}
        self.entries: dict[str, Entry] = {}
        self.checked_ns: Optional[int] = None  # set before the first footer this scan reads

    def entry(self, listed: Listed, run_id: Optional[str]) -> Entry:
        """What checking the file ``listed`` finds, from the index when it holds it unchanged."""
        key, rel = listed.stamp, listed.rel
        cached = self.known.get(rel)
        if cached is not None and cached.size == listed.size and cached.stamp_ns == key:
            self.entries[rel] = cached
            return cached
        if self.checked_ns is None and self.saving:  # the store's clock, asked only by a scan that saves
            self.checked_ns = clock_ns(self.store, self.fs)
        meta, token, problem = check_file(self.table, self.fs, listed.inner, listed.size, run_id)
        found = Entry(listed.size, key, token, tuple(meta.schema.to_arrow_schema().names) if meta is not None else (),
                      _kv(meta) if meta is not None else "{}", problem)
        if key >= 0 and still(self.fs, listed.inner, listed.size, key):
            self.entries[rel] = found
        return found

    def save(self) -> None:
        """Write the table's index when this scan checked a footer (the store unwritable: it stays as it was)."""
        if self.saving and self.checked_ns is not None:
            save_entries(self.store, self.table, self.entries, self.checked_ns)


class Listed(NamedTuple):
    """One file as a table's listing gives it."""

    rel: str    # path inside the table's folder
    size: int
    stamp: int  # change stamp (:func:`dynstudy.store_contract.index.stamp_ns`)
    inner: str  # path as its filesystem names it


def _local_files(folder: str, rel: str) -> Iterator[Listed]:
    """The files under a local ``folder`` (``rel``: its path inside the table's folder), one stat each."""
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
                yield Listed(inside, st.st_size, st.st_ctime_ns, e.path)
        except FileNotFoundError:
            continue  # removed while listed


def _listing(store: str, table: str, run_ids: Optional[Sequence[str]]) -> list[Listed]:
    """The files under ``table``'s folder (under its ``run_ids``' folders alone, when given), sorted by path.
    Hidden files (``.name``: the atomic writer's temporaries) are passed over."""
    problems = [run_folder_problem(r) for r in run_ids or ()]
    if any(problems):
        raise ValueError(next(p for p in problems if p) + ": give run ids as the runs table lists them")
    prefix = table_dir(store, table)
    folders = [""] if run_ids is None else [f"run_id={r}" for r in sorted(set(run_ids))]
    fs, inner_prefix = filesystem(prefix)
    found = []
    for folder in folders:
        base = f"{inner_prefix}/{folder}" if folder else inner_prefix
        if isinstance(fs, pafs.LocalFileSystem):
            found += _local_files(base, folder)
            continue
        for info in fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True)):
            if info.type == pafs.FileType.File:
                found.append(Listed(info.path[len(inner_prefix.rstrip("/")) + 1:], info.size, stamp_ns(fs, info),
                                    info.path))
    return sorted((f for f in found if not f.rel.rsplit("/", 1)[-1].startswith(".")), key=lambda f: f.rel)


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
    files: dict[str, list[StoreFile]] = {}
    foreign: list[tuple[str, str, str]] = []
    for table in tables:
        if run_ids is not None and table in UNPARTITIONED:
            continue
        prefix = table_dir(store, table)
        fs, _ = filesystem(prefix)
        check = _TableCheck(store, table, fs, indexed=run_ids is None, saving=write_index)
        found = []
        for listed in _listing(store, table, run_ids):
            path = f"{prefix}/{listed.rel}"
            rid, name, problem = _place(table, listed.rel)
            rid, name = intern(rid) if rid else rid, intern(name) if name else name  # one string per run, per name
            if problem is None:
                entry = check.entry(listed, rid)
                problem = entry.problem
            if problem is not None:
                foreign.append((table, path, problem))
                continue
            found.append(StoreFile(table, prefix, rid, name, listed.size, entry.token, entry.metadata, entry.columns,
                                   entry.stamp_ns))
        if write_index:
            check.save()
        files[table] = found
    return StoreScan(store, files, foreign)


def files_digest(files: Iterable[StoreFile], salt: str = "") -> str:
    """One digest over (table, name, size, token) of ``files``, in any order."""
    lines = sorted(f"{f.table}/{f.run_id}/{f.name}:{f.size}:{f.token}" for f in files)
    return hashlib.sha256("\n".join([salt, *lines]).encode()).hexdigest()[:32]
