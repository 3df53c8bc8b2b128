"""The store's index: a cache of what checking each file found, so a command reads a footer once.

A scan of a whole table (:func:`dynstudy.store_contract.scan.scan_store`) lists the table's folder, which is
cheap, and checks each file's Parquet footer, which is not (one read per file, one GET per object). The index
keeps each check's result, keyed by the file's path in its table, size and change stamp (:func:`stamp_ns`), in
``<store>/_index/<table>.<sha256>.parquet`` (the file's own digest in its name); the next scan reads the
footers only of the files whose key it does not hold. For the small per-run tables (:data:`ROW_CACHED_TABLES`:
one short file per run) it also keeps the files' rows, in ``<store>/_index/<table>.rows.<sha256>.parquet``, so
a query over the whole table reads one object instead of one per run.

What the index may and may not do:

- the set of files always comes from the listing: an entry for a file that is gone is never
  used, and a file without an entry is checked, so the index cannot make a file missed or
  counted twice;
- an entry is used only when path, size and modification time all match, and only when the
  file's time is :data:`RACY_MARGIN_NS` or more before the check that wrote the entry (a file
  rewritten within its clock's resolution of that check, with the same size, is checked again);
- an index file that cannot be read, that lacks a column, or whose bytes do not match the digest
  its name records (a hand edit) is ignored and rewritten;
- only readers write it, each table's whole, atomically (the last writer wins; every writer's
  entries are true of the files they name), and a store where it cannot be written (read-only)
  is read without it. Trials and analysis workers never touch it, so they cannot lose an entry.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from typing import Optional

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from dynstudy.store_contract.files import filesystem, write_bytes_atomic

#: Folder of the index inside a store; no table's scan lists it.
INDEX_DIR = "_index"
#: Tables whose rows the index keeps beside the checks (one short file per run).
ROW_CACHED_TABLES = ("runs", "run_summary")
#: An entry is trusted only for a file at least this much older than the check that wrote it.
RACY_MARGIN_NS = 2_000_000_000
#: Bumped when the index's columns change: an index of another version is ignored.
INDEX_VERSION = "1"

_VERSION_KEY = b"dynstudy.index.version"
_CHECKED_KEY = b"dynstudy.index.checked_ns"  # the listing's time, by the clock of the store's files
#: The column of the cached rows that names each row's file (its path inside the table's folder).
ROW_PATH_COLUMN = "_index_path"
_PATH = ROW_PATH_COLUMN
ENTRY_SCHEMA = pa.schema([
    (_PATH, pa.string()),        # the file's path inside its table's folder
    ("size", pa.int64()),
    ("stamp_ns", pa.int64()),
    ("token", pa.string()),      # null for a file that does not belong
    ("columns", pa.string()),    # JSON list of the file's column names
    ("metadata", pa.string()),   # JSON object of its key-value metadata
    ("problem", pa.string()),    # why it does not belong (null: it does)
])


def index_dir(store: str) -> str:
    """The index's folder inside ``store``."""
    return f"{str(store).rstrip('/')}/{INDEX_DIR}"


def _stem(table: str, rows: bool) -> str:
    return f"{table}.rows" if rows else table


def stamp_ns(fs: pafs.FileSystem, info: pafs.FileInfo) -> int:
    """A listed file's change stamp in ns: on local disk its inode change time (ctime, which every write,
    rename or ``utime`` moves to now, so no program sets it back), on an object store its modification time
    (set by the server on upload); -1 when there is none (never trusted)."""
    if isinstance(fs, pafs.LocalFileSystem):
        try:
            return os.stat(info.path).st_ctime_ns
        except OSError:
            return -1
    return info.mtime_ns if info.mtime_ns is not None else -1


def still(fs: pafs.FileSystem, path: str, size: int, stamp: int) -> bool:
    """True when the local file at ``path`` still has ``size`` and ``stamp`` (an object store's is not asked:
    its stamp is the server's upload time, which a rewrite within the racy margin cannot reuse unseen)."""
    if not isinstance(fs, pafs.LocalFileSystem):
        return True
    try:
        st = os.stat(path)
    except OSError:
        return False
    return st.st_size == size and st.st_ctime_ns == stamp


def _versions(store: str, table: str, rows: bool) -> list[pafs.FileInfo]:
    """The index files of ``table`` (``<stem>.<sha256 of the file>.parquet``), newest first."""
    fs, inner = filesystem(index_dir(store))
    pattern = re.compile(re.escape(_stem(table, rows)) + r"\.([0-9a-f]{64})\.parquet")
    try:
        infos = fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True))
    except OSError:
        return []
    found = [i for i in infos if i.type == pafs.FileType.File and pattern.fullmatch(i.base_name)]
    return sorted(found, key=lambda i: i.mtime_ns or 0, reverse=True)


def _read_checked(store: str, table: str, rows: bool) -> tuple[Optional[pa.Table], int]:
    """(the newest intact index file's content, the time before which its entries may be trusted), or
    (None, 0) when there is none: missing, unreadable, of another version, or not matching the digest its
    name records (a hand edit)."""
    fs, _ = filesystem(index_dir(store))
    for info in _versions(store, table, rows):
        try:
            with fs.open_input_file(info.path) as fh:  # read whole in one request (a stream reads in chunks)
                data = fh.read()
            if hashlib.sha256(data).hexdigest() != info.base_name.split(".")[-2]:
                continue
            content = pq.read_table(pa.BufferReader(data))
        except (FileNotFoundError, OSError, pa.ArrowException):
            continue
        meta = content.schema.metadata or {}
        try:
            checked = int(meta[_CHECKED_KEY])
        except (KeyError, ValueError):
            continue
        if meta.get(_VERSION_KEY) != INDEX_VERSION.encode() or _PATH not in content.column_names:
            continue
        return content.replace_schema_metadata(None), checked - RACY_MARGIN_NS
    return None, 0


def _well_formed(entries: pa.Table) -> bool:
    """True when ``entries`` name each file once and their column lists and metadata parse as JSON (an index
    that does not is not trusted at all)."""
    paths = entries.column(_PATH)
    if paths.null_count or pc.count_distinct(paths).as_py() != entries.num_rows:
        return False
    try:
        if not all(isinstance(json.loads(c or "[]"), list) for c in pc.unique(entries.column("columns")).to_pylist()):
            return False
    except (TypeError, ValueError):
        return False
    metadata = pc.fill_null(entries.column("metadata"), "{}")
    return bool(pc.all(pc.match_substring_regex(metadata, r"^\{.*\}$")).as_py())


def load_index(store: str, table: str) -> tuple[Optional[pa.Table], int]:
    """(``table``'s index entries as columns of :data:`ENTRY_SCHEMA`, the time before which an entry may be
    trusted), or (None, 0) when there is no usable index."""
    content, trusted_before = _read_checked(store, table, rows=False)
    if content is None or not set(ENTRY_SCHEMA.names) <= set(content.column_names):
        return None, 0
    try:
        entries = content.select(ENTRY_SCHEMA.names).cast(ENTRY_SCHEMA)
    except (pa.ArrowException, ValueError):
        return None, 0
    return (entries, trusted_before) if _well_formed(entries) else (None, 0)


def _write(store: str, table: str, content: pa.Table, checked_ns: int, rows: bool) -> bool:
    """Write ``content`` as the table's index file named by its digest, then remove the older ones."""
    meta = {_VERSION_KEY: INDEX_VERSION.encode(), _CHECKED_KEY: str(checked_ns).encode()}
    buf = pa.BufferOutputStream()
    pq.write_table(content.replace_schema_metadata(meta), buf, compression="zstd")
    data = buf.getvalue()
    name = f"{_stem(table, rows)}.{hashlib.sha256(data).hexdigest()}.parquet"
    try:
        older = _versions(store, table, rows)
        write_bytes_atomic(data, f"{index_dir(store)}/{name}")
        fs, _ = filesystem(index_dir(store))
        for info in older:
            if info.base_name != name:
                fs.delete_file(info.path)
    except (OSError, pa.ArrowException):
        return False  # a store this process cannot write (read-only), or a file another writer removed first
    return True


def save_index(store: str, table: str, entries: pa.Table, checked_ns: int) -> bool:
    """Write ``table``'s index (``entries``: columns of :data:`ENTRY_SCHEMA`, one row per file), its entries
    checked after ``checked_ns`` (the listing's time by the store's clock); False when the store cannot be written."""
    return _write(store, table, entries.sort_by(_PATH).cast(ENTRY_SCHEMA), checked_ns, rows=False)


def load_rows(store: str, table: str, keys: pa.Table, schema: pa.Schema) -> pa.Table:
    """The cached rows of the files of ``table`` whose size and change stamp in ``keys`` (columns ``rel``, the
    path inside the table, ``size`` and ``stamp_ns``: one row per file) match their entry and are trusted, with
    :data:`ROW_PATH_COLUMN` naming each row's file; no row for any other file."""
    content, trusted_before = _read_checked(store, table, rows=True)
    empty = schema.empty_table().append_column(_PATH, pa.array([], pa.string()))
    need = [_PATH, "size", "stamp_ns", *schema.names]
    if content is None or not set(need) <= set(content.column_names):
        return empty
    try:
        listed = keys.select(["rel", "size", "stamp_ns"]).rename_columns([_PATH, "k_size", "k_stamp_ns"])
        joined = content.join(listed, keys=_PATH, join_type="inner")
        stamp = joined.column("stamp_ns")
        keep = pc.and_(pc.and_(pc.equal(joined.column("size"), joined.column("k_size")),
                               pc.equal(stamp, joined.column("k_stamp_ns"))),
                       pc.and_(pc.greater_equal(stamp, 0), pc.less(stamp, trusted_before)))
        rows = joined.filter(pc.fill_null(keep, False)).select([*schema.names, _PATH])
        return rows.cast(schema.append(pa.field(_PATH, pa.string())))
    except (pa.ArrowException, ValueError):
        return empty


def save_rows(store: str, table: str, rows: pa.Table, keys: pa.Table, checked_ns: int) -> bool:
    """Write the cached rows of ``table`` (with :data:`ROW_PATH_COLUMN` naming each row's file), each file's size
    and change stamp from ``keys`` (as :func:`load_rows` takes them); False when the store cannot be written."""
    listed = keys.select(["rel", "size", "stamp_ns"]).rename_columns([_PATH, "size", "stamp_ns"])
    content = rows.join(listed, keys=_PATH, join_type="inner").sort_by(_PATH)
    return _write(store, table, content.replace_schema_metadata(None), checked_ns, rows=True)


def clock_ns(store: str, fs: pafs.FileSystem) -> int:
    """Now, by the clock of the store's files: this machine's for a local store; for an object store the
    modification time of a hidden probe object written and deleted here (where that write fails, this
    machine's clock less a minute, which trusts fewer entries)."""
    if isinstance(fs, pafs.LocalFileSystem):
        return time.time_ns()
    probe_fs, inner = filesystem(f"{str(store).rstrip('/')}/{INDEX_DIR}/.clock")
    try:
        with probe_fs.open_output_stream(inner) as sink:
            sink.write(b"")
        stamp = stamp_ns(probe_fs, probe_fs.get_file_info(inner))
        probe_fs.delete_file(inner)
        if stamp > 0:
            return stamp
    except OSError:
        pass
    return time.time_ns() - 60_000_000_000
