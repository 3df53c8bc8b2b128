"""A compacted copy of ``run_summary`` in an object store's index: a query over it costs the same requests at any size.

Listing ``run_summary/`` costs one request per 1,000 runs, so even with the index's rows cache
(:mod:`dynstudy.store_contract.small_tables`) a query over it costs more the more runs a store holds. Its only
writers are dynstudy's: ``analyze`` (its workers write one file per run) and run removal
(:func:`dynstudy.store_contract.files.remove_run_files`, on a trial's fresh start or ``--replace``). Each
*marks* its change in ``<store>/_index/changes/`` before touching a file (``<table>.<id>.open``) and when done
(``<table>.<id>.done``, then the ``.open`` goes); ``analyze``, at its end, writes the table's rows to
``<store>/_index/<table>.compact.<sha256>.parquet`` (the file's own digest in its name).

A reader lists ``_index/`` (one request) and trusts the compaction only when no change mark of the table is
there, exactly one compaction file is, and its bytes match the digest its name records and carry this module's
version; it then reads that one file. Anything else (a mark left by a writer that is still at work or died,
two compactions from writers that raced, a truncated, deleted or hand-edited file) sends it back to the listing
path, which checks every file. The compactor keeps this true: it lists the marks and compactions first, then
reads the table through the listing path, writes its compaction, and only then deletes the compactions and the
finished marks it had listed, so a change that began after its listing keeps its mark (and the reader on the
listing path) until the next compaction, and two compactors racing leave two compactions (again: the listing
path), never a stale one trusted.

What the compacted path does not see: a file of the table changed by anything but dynstudy's writers (a hand
copy or deletion, another tool). Such a change shows from the next ``dynstudy analyze`` on, or at once when
``_index/`` or its ``<table>.compact.*`` file is deleted. ``unreadable_files`` is built on the listing path
only, so a query naming it never uses the compaction. Local stores list cheaply and never use it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from dynstudy.store_contract.files import filesystem, is_remote, write_bytes_atomic
from dynstudy.store_contract.index import index_dir
from dynstudy.store_contract.scan import scan_store
from dynstudy.store_contract.schemas import TABLES
from dynstudy.store_contract.small_tables import table_rows

#: Tables an object store keeps compacted.
COMPACTED_TABLES = ("run_summary",)
#: Folder of the change marks inside the index's folder.
CHANGES_DIR = "changes"
#: Bumped when the compaction's layout changes: a compaction of another version is not trusted.
COMPACTION_VERSION = "1"
_VERSION_KEY = b"dynstudy.compaction.version"


@dataclass(frozen=True)
class IndexListing:
    """What ``_index/`` holds for one table: its compaction files and its change marks (id -> suffixes)."""

    compactions: list[pafs.FileInfo]
    marks: dict[str, set[str]]

    def trusted(self) -> bool:
        """No change mark, and exactly one compaction."""
        return not self.marks and len(self.compactions) == 1

    def finished(self) -> list[str]:
        """Ids of the changes that are done (a ``.done`` mark: every file of the change was in place before it, so
        an ``.open`` beside it is only a leftover of a writer that stopped before removing it)."""
        return sorted(i for i, kinds in self.marks.items() if "done" in kinds)


def _compaction_name(table: str) -> re.Pattern:
    return re.compile(re.escape(table) + r"\.compact\.([0-9a-f]{64})\.parquet")


def _mark_name(table: str) -> re.Pattern:
    return re.compile(re.escape(table) + r"\.([0-9a-f]{32})\.(open|done)")


def list_index(store: str, table: str) -> IndexListing:
    """``table``'s compactions and change marks in ``store``'s index (one listing request)."""
    fs, inner = filesystem(index_dir(store))
    try:
        infos = fs.get_file_info(pafs.FileSelector(inner, recursive=True, allow_not_found=True))
    except OSError:
        infos = []
    compact, mark = _compaction_name(table), _mark_name(table)
    compactions, marks = [], {}
    changes = f"{inner.rstrip('/')}/{CHANGES_DIR}/"
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        if info.path.startswith(changes):
            found = mark.fullmatch(info.path[len(changes):])
            if found:
                marks.setdefault(found.group(1), set()).add(found.group(2))
        elif info.path == f"{inner.rstrip('/')}/{info.base_name}" and compact.fullmatch(info.base_name):
            compactions.append(info)
    return IndexListing(compactions, marks)


def _mark_path(store: str, table: str, change: str, kind: str) -> str:
    return f"{index_dir(store)}/{CHANGES_DIR}/{table}.{change}.{kind}"


def begin_change(store: str, table: str) -> Optional[str]:
    """Mark a change of ``table``'s files about to begin (object stores; None elsewhere): the id to end it with.

    The mark records this host, process and time, so that someone clearing a mark left by a process that died
    can tell whose it is."""
    if not is_remote(store) or table not in COMPACTED_TABLES:
        return None
    change = uuid.uuid4().hex
    who = {"host": socket.gethostname(), "pid": os.getpid(), "began": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                                     time.gmtime())}
    write_bytes_atomic(json.dumps(who).encode(), _mark_path(store, table, change, "open"))
    return change


def end_change(store: str, table: str, change: Optional[str]) -> None:
    """Mark the change ``change`` (from :func:`begin_change`) of ``table`` done: every file it wrote is in place."""
    if change is None:
        return
    write_bytes_atomic(b"{}", _mark_path(store, table, change, "done"))
    fs, inner = filesystem(_mark_path(store, table, change, "open"))
    fs.delete_file(inner)


def _read_compaction(fs: pafs.FileSystem, info: pafs.FileInfo, table: str) -> Optional[pa.Table]:
    """The rows of one compaction file, or None when it is damaged, hand-edited or of another version."""
    try:
        with fs.open_input_file(info.path) as fh:  # read whole in one request (a stream reads in chunks)
            data = fh.read()
        if hashlib.sha256(data).hexdigest() != _compaction_name(table).fullmatch(info.base_name).group(1):
            return None
        content = pq.read_table(pa.BufferReader(data))
    except (FileNotFoundError, OSError, pa.ArrowException):
        return None
    if (content.schema.metadata or {}).get(_VERSION_KEY) != COMPACTION_VERSION.encode():
        return None
    try:
        return content.select(TABLES[table].names).cast(TABLES[table])
    except (KeyError, pa.ArrowException, ValueError):
        return None


def compacted_rows(store: str, table: str) -> Optional[pa.Table]:
    """Every row of ``table`` from its compaction, when it is trusted (see the module's notes); None: read the
    table through the listing path instead."""
    if not is_remote(store) or table not in COMPACTED_TABLES:
        return None
    listing = list_index(store, table)
    if not listing.trusted():
        return None
    fs, _ = filesystem(index_dir(store))
    return _read_compaction(fs, listing.compactions[0], table)


def compact(store: str, table: str) -> bool:
    """Write ``table``'s compaction from its files as they are now, unless a trusted one is there already; remove
    the compactions and finished change marks listed before the read. True when a compaction was written."""
    if not is_remote(store) or table not in COMPACTED_TABLES:
        return False
    before = list_index(store, table)
    if before.trusted():
        return False
    scan = scan_store(store, (table,))
    rows = table_rows(store, table, scan.files.get(table, []))
    meta = {_VERSION_KEY: COMPACTION_VERSION.encode()}
    buf = pa.BufferOutputStream()
    pq.write_table(rows.replace_schema_metadata(meta), buf, compression="zstd")
    data = buf.getvalue()
    name = f"{table}.compact.{hashlib.sha256(data).hexdigest()}.parquet"
    write_bytes_atomic(data, f"{index_dir(store)}/{name}")
    fs, _ = filesystem(index_dir(store))
    for info in before.compactions:
        if info.base_name != name:
            _delete(fs, info.path)
    for change in before.finished():
        for kind in sorted(before.marks[change]):
            _delete(fs, filesystem(_mark_path(store, table, change, kind))[1])
    return True


def _delete(fs: pafs.FileSystem, inner: str) -> None:
    try:
        fs.delete_file(inner)
    except FileNotFoundError:
        pass  # another compactor removed it first
