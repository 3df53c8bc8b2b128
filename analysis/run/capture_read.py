"""One run's input files read directly with pyarrow, one capture at a time.

The fast path of ``dynstudy analyze`` reads each capture file once, with the
columns it needs (the stage names as a dictionary, the capture's number,
kind, epoch and step from the footer's statistics, not one per row), and decodes its rows with
:func:`dynstudy.analysis.run.long_format.decode_captures`: files written by dynstudy's workers are already in
(stage, rank, sample) order, which is checked in one compiled pass, and only a file in another order is sorted. The
result is what the reference's ``SELECT ... ORDER BY stage, rank, sample`` through DuckDB gives
(:func:`tests.reference_capture.capture_arrays`). Local paths and object stores go through
:func:`dynstudy.store_contract.files.filesystem`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dynstudy.analysis.run.long_format import COLUMNS, decode_captures
from dynstudy.store_contract.files import filesystem, read_run_row, resolve_store
from dynstudy.store_contract.scan import StoreFile, scan_store

#: Columns with one value per file, taken from the footer's statistics.
CONSTANT = ("capture", "kind", "epoch", "step")


@dataclass
class Capture:
    """One capture: acts [P x C] over every stored channel in (stage, rank) order, labels [P], and each
    column's stage and rank."""

    capture: int
    kind: str
    epoch: int
    step: int
    acts: np.ndarray
    labels: np.ndarray
    stages: np.ndarray
    ranks: np.ndarray


def _read(f: StoreFile, columns, dictionary=()):
    fs, inner = filesystem(f.path)
    return pq.read_table(inner, columns=list(columns), filesystem=fs, read_dictionary=list(dictionary))


def _one(f: StoreFile, pf: pq.ParquetFile, column: str):
    """The one value of ``column`` in the open file ``pf``, from its footer's statistics where they say it
    (else read)."""
    meta = pf.metadata
    idx = meta.schema.names.index(column)
    stats = [meta.row_group(i).column(idx).statistics for i in range(meta.num_row_groups)]
    if stats and all(st is not None and st.has_min_max and st.null_count == 0 for st in stats):
        values = sorted({st.min for st in stats} | {st.max for st in stats})
    else:
        values = pc.unique(pf.read(columns=[column])[column]).to_pylist()
    if len(values) != 1:
        raise ValueError(f"{f.path}: column {column} holds {len(values)} values {values[:4]}; a capture file holds "
                         "one capture")
    return values[0]


def read_capture(f: StoreFile) -> Capture:
    """The capture in activation file ``f``; ValueError when the file is not one capture of channels x samples."""
    fs, inner = filesystem(f.path)
    with fs.open_input_file(inner) as fh:  # one open, one footer read
        pf = pq.ParquetFile(fh, read_dictionary=["stage"], pre_buffer=True)
        t = pf.read(columns=list(COLUMNS))  # the decoder's columns, stage as a dictionary (no string per row)
        if t.num_rows == 0:
            raise ValueError(f"{f.path}: no rows")
        capture, kind, epoch, step = (_one(f, pf, c) for c in CONSTANT)
    if f.name != f"capture={capture:06d}":
        raise ValueError(f"{f.path} holds capture {capture}, not the one its name says")
    d = decode_captures(t, f.path)
    return Capture(int(capture), kind, int(epoch), int(step), d.values[0].T, d.labels[0], d.stages, d.ranks)


def capture_files(files: list[StoreFile]) -> list[StoreFile]:
    """The init and end-of-epoch capture files (``capture=NNNNNN``) in capture order (their names number them).

    Every-N-step captures (``steps=FIRST-LAST`` files) make the temporal
    series (:mod:`dynstudy.analysis.run.temporal_run`) and have no capture metrics of their own.
    """
    return sorted((f for f in files if f.name.startswith("capture=")), key=lambda f: f.name)


def epoch_accuracy(files: list[StoreFile]) -> dict:
    """epoch -> val_acc over the run's train_metrics files."""
    acc = {}
    for f in files:
        t = _read(f, ("epoch", "val_acc"))
        acc.update(zip(t["epoch"].to_pylist(), t["val_acc"].to_pylist()))
    return acc


@dataclass
class RunData:
    """One run as its files hold it: the ``runs`` row (``config`` parsed), its init and end-of-epoch captures in
    capture order, and its per-epoch ``train_metrics`` rows in epoch order."""

    run: dict
    captures: list[Capture]
    train_metrics: list[dict]


def read_run(store: str, run_id: str) -> RunData:
    """Read run ``run_id`` of ``store`` (a folder or an ``s3://`` / ``gs://`` URI) with pyarrow.

    Examples
    --------
    >>> run = read_run("dynstudy-store", "demo-tiny_cnn-digits-sgd-s0")  # doctest: +SKIP
    >>> run.captures[1].acts.shape  # [probe samples, stored channels]  # doctest: +SKIP
    (256, 128)
    """
    store = resolve_store(store)
    row = read_run_row(store, run_id)
    if row is None:
        raise KeyError(f"store {store!r} has no run {run_id!r}: list its runs with "
                       "dynstudy sql \"SELECT run_id FROM runs\"")
    row = dict(row, config=json.loads(row["config"]) if isinstance(row.get("config"), str) else row.get("config"))
    files = scan_store(store, ("activations", "train_metrics"), run_id=run_id).files
    captures = [read_capture(f) for f in capture_files(files.get("activations", []))]
    metrics = [r for f in files.get("train_metrics", []) for r in _read_all(f).to_pylist()]
    return RunData(row, captures, sorted(metrics, key=lambda r: (r.get("epoch") or 0)))


def _read_all(f: StoreFile):
    fs, inner = filesystem(f.path)
    return pq.read_table(inner, filesystem=fs)
