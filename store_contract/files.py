"""Store locations, filesystems and the atomic writer.

A store is a local directory or an ``s3://`` / ``gs://`` URI. Each table is a
folder of hive-partitioned Parquet files, one folder per run::

    <store>/runs/run_id=<id>/run.parquet
    <store>/activations/run_id=<id>/capture=000003.parquet
    <store>/train_metrics/run_id=<id>/epoch=000003.parquet

(the ``capture=``/``epoch=`` parts are file names, not partitions). A file's
name is a function of (run, capture) or (run, epoch), so a retried or resumed
trial overwrites its files and never duplicates rows. On local disk a file is
written under a hidden temporary name and renamed into place, so a reader
never sees half a file; object stores make an object visible only once its
upload completes. Every file carries a fresh write id in its Parquet metadata,
so two versions of one file never look alike to the analysis's currency
check. Values are float32, compressed with zstd.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from dynstudy.store_contract.schemas import FILE_NAMES, PARTITIONED, TABLES, WRITE_ID_KEY, file_numbers

#: URI schemes of stores in an object store; a local store is a path or a ``file://`` URI.
REMOTE_SCHEMES = ("s3", "gs")


def check_store_uri(uri: str) -> str:
    """Return ``uri`` if dynstudy can write there, else raise ValueError.

    Local paths and ``s3://`` / ``gs://`` URIs are accepted.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError("store must be a non-empty path or an s3:// / gs:// URI")
    if "://" in uri:
        scheme = uri.split("://", 1)[0].lower()
        if scheme not in REMOTE_SCHEMES and scheme != "file":
            raise ValueError(f"store {uri!r} has unknown scheme {scheme!r}; use a local path, s3:// or gs://")
    return uri


def resolve_store(uri: str) -> str:
    """Absolute form of a store: local paths become absolute, URIs stay."""
    check_store_uri(uri)
    if uri.startswith("file://"):
        uri = uri[len("file://"):]
    if "://" in uri:
        return uri.rstrip("/")
    return str(Path(uri).expanduser().resolve())


def is_remote(uri: str) -> bool:
    return "://" in uri and uri.split("://", 1)[0].lower() in REMOTE_SCHEMES


def filesystem(path: str) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem of ``path`` and the path inside it.

    ``s3://`` and ``gs://`` go through pyarrow's own S3 and GCS filesystems,
    which take endpoint, region and credentials the standard way
    (``AWS_ENDPOINT_URL``, ``AWS_REGION``, ``AWS_ACCESS_KEY_ID`` /
    ``AWS_SECRET_ACCESS_KEY``, ``AWS_PROFILE``; Google's application default
    credentials); nothing is downloaded at run time.
    """
    if is_remote(path):
        return pafs.FileSystem.from_uri(path)
    return pafs.LocalFileSystem(), path


def inner_path(path: str) -> str:
    """``path`` as its filesystem names it (``s3://b/k`` -> ``b/k``; local paths unchanged)."""
    return path.split("://", 1)[1] if is_remote(path) else path


def table_dir(store: str, table: str, run_id: Optional[str] = None) -> str:
    """Folder of ``table`` (and of one run's partition) inside ``store``."""
    base = f"{str(store).rstrip('/')}/{table}"
    return f"{base}/run_id={run_id}" if run_id is not None else base


def run_folder_problem(run_id: str) -> Optional[str]:
    """Why ``run_id`` cannot name a run's folder inside a table (None: it can)."""
    if not isinstance(run_id, str) or run_id in ("", ".", "..") or "/" in run_id or "\\" in run_id:
        return f"run id {run_id!r} cannot name a run's folder (empty, '.', '..', or holding a slash)"
    return None


def write_table_atomic(table: pa.Table, path: str, metadata: Optional[dict] = None) -> None:
    """Write ``table`` to ``path`` so that readers see all of it or nothing.

    Local paths: write to a hidden temporary file in the same folder, fsync,
    then ``os.replace`` it over the final name (atomic on POSIX). Object
    stores: upload to a hidden temporary key, then copy it to the final key
    (an object appears whole or not at all) and delete the temporary one; an
    upload that dies midway leaves at most a hidden key, which readers pass
    over. The file's key-value metadata gets a fresh write id, plus ``metadata``.
    """
    meta = {**(table.schema.metadata or {}), WRITE_ID_KEY: uuid.uuid4().hex.encode(),
            **{k if isinstance(k, bytes) else k.encode(): v if isinstance(v, bytes) else str(v).encode()
               for k, v in (metadata or {}).items()}}
    table = table.replace_schema_metadata(meta)
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="zstd")  # a failure here writes nothing
    write_bytes_atomic(buf.getvalue(), path)


def write_bytes_atomic(data, path: str) -> None:
    """Write ``data`` (bytes or a pyarrow buffer) to ``path`` so that readers see all of it or nothing
    (see :func:`write_table_atomic`)."""
    if is_remote(path):
        _upload_atomic(data, path)
        return
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as fh:
            fh.write(memoryview(data))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def _upload_atomic(data, path: str) -> None:
    """Upload under a hidden key, copy into place, delete the hidden key."""
    fs, inner = filesystem(path)
    folder, name = inner.rsplit("/", 1)
    tmp = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
    try:
        with fs.open_output_stream(tmp) as sink:
            sink.write(data)
        fs.copy_file(tmp, inner)
    finally:
        try:
            fs.delete_file(tmp)
        except OSError:
            pass


def remove_write_leftovers(store: str, run_id: str, tables=PARTITIONED) -> int:
    """Delete the hidden temporaries (``.<name>.<hex>.tmp``) in ``run_id``'s partitions; return how many went.

    A writer killed between its temporary and the final name (a hard exit, a
    lost node) leaves one behind: invisible to readers, but never reclaimed
    otherwise. Called when a run's trial resumes, once its earlier attempt is gone.
    """
    removed = 0
    for table in tables:
        fs, inner = filesystem(table_dir(store, table, run_id))
        for info in fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True)):
            if info.type == pafs.FileType.File and info.base_name.startswith(".") and info.base_name.endswith(".tmp"):
                fs.delete_file(info.path)
                removed += 1
    return removed


def remove_files_from(store: str, run_id: str, table: str, first: int) -> list[str]:
    """Delete ``run_id``'s files of ``table`` that hold a number ``first`` or higher; return their names.

    The numbers are capture numbers (activations) or epochs (train_metrics), as
    :func:`dynstudy.store_contract.schemas.file_numbers` reads them from the
    file's name. A run restored from a checkpoint drops what was written after
    it, so that what it writes again is there exactly once. Files whose name
    is not one of the table's are left alone.
    """
    fs, inner = filesystem(table_dir(store, table, run_id))
    removed = []
    for info in fs.get_file_info(pafs.FileSelector(inner, allow_not_found=True)):
        stem = info.base_name[:-len(".parquet")] if info.base_name.endswith(".parquet") else None
        if info.type != pafs.FileType.File or stem is None or not FILE_NAMES[table].fullmatch(stem):
            continue
        if max(file_numbers(table, stem)) >= first:
            fs.delete_file(info.path)
            removed.append(info.base_name)
    return sorted(removed)


def check_writable(store: str) -> None:
    """Write and delete a hidden object in an ``s3://`` / ``gs://`` store; OSError (with the cause) if it fails."""
    fs, inner = filesystem(store)
    probe = f"{inner.rstrip('/')}/.dynstudy-write-check-{uuid.uuid4().hex}"
    with fs.open_output_stream(probe) as sink:
        sink.write(b"ok")
    fs.delete_file(probe)


def write_rows(store: str, table: str, run_id: str | None, name: str, columns: dict, schema=None,
               metadata: Optional[dict] = None) -> str:
    """Write one file of ``table`` (for ``run_id``, or the whole table) from a dict of columns.

    The columns are cast to ``schema`` (default: the contract's; missing
    optional columns are filled with nulls), so every file of a table has the
    same types. ``metadata``: extra Parquet key-value metadata.
    """
    schema = schema if schema is not None else TABLES[table]
    n = len(next(iter(columns.values())))
    arrays = []
    for field in schema:
        values = columns.get(field.name)
        if values is None:
            arrays.append(pa.nulls(n, type=field.type))
        else:
            is_array = isinstance(values, pa.Array)
            arrays.append(values.cast(field.type) if is_array else pa.array(values, type=field.type))
    path = f"{table_dir(store, table, run_id)}/{name}.parquet"
    write_table_atomic(pa.Table.from_arrays(arrays, schema=schema), path, metadata)
    return path


def read_run_row(store: str, run_id: str) -> Optional[dict]:
    """The ``runs`` row of ``run_id``, or None when the run has none (or it cannot be read)."""
    fs, inner = filesystem(f"{table_dir(store, 'runs', run_id)}/run.parquet")
    try:
        with fs.open_input_file(inner) as fh:
            rows = pq.read_table(fh).to_pylist()
    except (FileNotFoundError, OSError, pa.ArrowException):
        return None
    return rows[0] if len(rows) == 1 else None


def remove_run_files(store: str, run_id: str, tables=PARTITIONED) -> int:
    """Delete ``run_id``'s partition of each of ``tables``; return how many files went. The removal of a
    compacted table's partition is marked as a change of it (:mod:`dynstudy.store_contract.compaction`)."""
    from dynstudy.store_contract.compaction import begin_change, end_change  # it builds on this module

    removed = 0
    for table in tables:
        fs, inner = filesystem(table_dir(store, table, run_id))
        info = fs.get_file_info(inner)
        if info.type == pafs.FileType.NotFound:
            continue
        removed += sum(1 for f in fs.get_file_info(pafs.FileSelector(inner, recursive=True))
                       if f.type == pafs.FileType.File)
        change = begin_change(store, table)
        fs.delete_dir(inner)
        end_change(store, table, change)
    return removed
