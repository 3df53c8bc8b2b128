"""The store: where workers write their tables, atomically and idempotently.

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
upload completes. Values are float32, compressed with zstd.

Only pyarrow is needed here: the analysis layer imports the schemas too.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Optional

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

REMOTE_SCHEMES = ("s3", "gs")

RUNS = pa.schema([
    ("run_id", pa.string()),
    ("study", pa.string()),
    ("model", pa.string()),
    ("dataset", pa.string()),
    ("optimizer", pa.string()),
    ("seed", pa.int64()),
    ("status", pa.string()),          # running | finished | diverged | failed
    ("stop_reason", pa.string()),     # max_epochs | early_stopping | volatility | diverged | error
    ("epochs_completed", pa.int64()),
    ("config", pa.string()),          # the full trial config, JSON
    ("versions", pa.string()),        # software versions, JSON
    ("device", pa.string()),
    ("hostname", pa.string()),
    ("started_at", pa.timestamp("us", tz="UTC")),
    ("updated_at", pa.timestamp("us", tz="UTC")),
    ("error", pa.string()),
])

ACTIVATIONS = pa.schema([
    ("run_id", pa.string()),
    ("capture", pa.int32()),          # 0 = initialisation, then numbered in training order
    ("kind", pa.string()),            # init | epoch (after an epoch's validation) | step (every N steps)
    ("epoch", pa.int32()),            # epochs completed when captured
    ("step", pa.int64()),             # optimiser steps completed when captured
    ("stage", pa.string()),           # e.g. layer1..layer4
    ("channel", pa.int32()),          # channel index within the stage's output
    ("rank", pa.int32()),             # position in the run's random channel order; metrics use rank < K
    ("sample", pa.int32()),           # position in the probe set (fixed, unshuffled order)
    ("label", pa.int32()),
    ("value", pa.float32()),          # global-average-pooled activation
])

TRAIN_METRICS = pa.schema([
    ("run_id", pa.string()),
    ("epoch", pa.int32()),
    ("step", pa.int64()),
    ("train_loss", pa.float64()),
    ("train_acc", pa.float64()),
    ("val_loss", pa.float64()),
    ("val_acc", pa.float64()),
    ("lr", pa.float64()),
    ("epoch_time_s", pa.float64()),
    ("capture_time_s", pa.float64()),
])

#: Tables written by workers, one folder of files per run.
WORKER_TABLES = {"runs": RUNS, "activations": ACTIVATIONS, "train_metrics": TRAIN_METRICS}


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


def table_dir(store: str, table: str, run_id: Optional[str] = None) -> str:
    """Folder of ``table`` (and of one run's partition) inside ``store``."""
    base = f"{store.rstrip('/')}/{table}"
    return f"{base}/run_id={run_id}" if run_id is not None else base


def write_table_atomic(table: pa.Table, path: str) -> None:
    """Write ``table`` to ``path`` so that readers see all of it or nothing.

    Local paths: write to a hidden temporary file in the same folder, fsync,
    then ``os.replace`` it over the final name (atomic on POSIX). Remote URIs:
    a single object upload, which becomes visible only when complete.
    """
    if is_remote(path):
        filesystem, inner = pafs.FileSystem.from_uri(path)
        with filesystem.open_output_stream(inner) as sink:
            pq.write_table(table, sink, compression="zstd")
        return
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.parent / f".{final.name}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "wb") as fh:
            pq.write_table(table, fh, compression="zstd")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_rows(store: str, table: str, run_id: str | None, name: str, columns: dict, schema=None) -> str:
    """Write one file of ``table`` (for ``run_id``, or the whole table) from a dict of columns.

    The columns are cast to ``schema`` (default: the worker table's; missing
    optional columns are filled with nulls), so every file of a table has the
    same types.
    """
    schema = schema if schema is not None else WORKER_TABLES[table]
    n = len(next(iter(columns.values())))
    arrays = []
    for field in schema:
        values = columns.get(field.name)
        if values is None:
            arrays.append(pa.nulls(n, type=field.type))
        else:
            arrays.append(pa.array(values, type=field.type) if not isinstance(values, pa.Array) else values.cast(field.type))
    path = f"{table_dir(store, table, run_id)}/{name}.parquet"
    write_table_atomic(pa.Table.from_arrays(arrays, schema=schema), path)
    return path
