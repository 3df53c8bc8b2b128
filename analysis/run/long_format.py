"""Long-format activation rows decoded into arrays: the one decoder every reader of ``activations`` uses.

The ``activations`` table (:data:`dynstudy.store_contract.schemas.ACTIVATIONS`) holds one row per (capture,
stage, rank, sample) with the sample's label and the channel's pooled value. :func:`decode_captures` turns a
table of such rows, one capture or many, into one array of values per capture, channel and sample, with the
columns in (stage, rank) order and stages in name order: what ``SELECT ... ORDER BY capture, stage, rank,
sample`` gives (the reference, tests/reference_capture.py, reads captures that way through DuckDB). Rows
written by dynstudy's workers are already in that order (capture by capture, channel-major, probe order),
which is checked in one compiled pass (:func:`dynstudy.analysis.kernels.fast_loops.rows_sorted`); only rows in
another order are sorted. Every capture must hold every sample 0 .. P - 1 once per channel, one label per
sample, and the same channels as the others (:func:`dynstudy.analysis.kernels.fast_loops.grid_problem`).

Readers: :func:`dynstudy.analysis.run.capture_read.read_capture` (one capture file) and
:func:`dynstudy.analysis.run.temporal_run.read_series` (a run's files, filtered to the step probe).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from dynstudy.analysis.kernels import fast_loops

#: Columns :func:`decode_captures` reads from every row.
COLUMNS = ("stage", "rank", "sample", "label", "value")
#: The column that tells captures apart, needed when a table holds more than one.
CAPTURE = "capture"


@dataclass
class LongCaptures:
    """K captures of C channels and P samples decoded from long-format rows.

    Attributes
    ----------
    captures : int array [K] or None
        Capture numbers in increasing order; None when the table had no ``capture`` column (K = 1).
    heads : int array [K]
        Each capture's first row (in (stage, rank, sample) order) as a row index of the decoded table, for
        columns with one value per capture (``epoch``, ``step``).
    values : float64 array [K x C x P], C-contiguous
        ``values[i].T`` is capture i's activations [P x C].
    labels : int array [K x P]
        Each capture's label of each sample.
    stages, ranks : arrays [C]
        Each column's stage name (object) and rank.
    """

    captures: np.ndarray | None
    heads: np.ndarray
    values: np.ndarray
    labels: np.ndarray
    stages: np.ndarray
    ranks: np.ndarray


def stage_codes(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(codes [rows], names [S]) of a stage column: ``names`` in sorted order, ``names[codes]`` the column.

    Parameters
    ----------
    column : string or dictionary-encoded string column (chunks with different dictionaries are unified).
    """
    enc = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    enc = enc if isinstance(enc, pa.DictionaryArray) else enc.dictionary_encode()
    names = np.asarray(enc.dictionary.to_pylist(), dtype=object)
    order = np.argsort(names.astype(str), kind="stable")
    codes = enc.indices.to_numpy()
    if (order != np.arange(len(order))).any():  # dictionary not in name order: codes in sorted order of names
        rename = np.empty(len(order), codes.dtype)
        rename[order] = np.arange(len(order))
        codes = rename[codes]
    return codes, names[order]


def decode_captures(table: pa.Table, where: str) -> LongCaptures:
    """The captures in ``table``'s long-format rows as arrays; ValueError naming ``where`` when they are not
    captures of the same channels x samples.

    Parameters
    ----------
    table : pyarrow table with the columns :data:`COLUMNS`, and :data:`CAPTURE` when it holds more than one
        capture; its rows in any order.
    where : what the rows are (a file's path, a run), for the error.

    Returns
    -------
    LongCaptures : values in (capture, stage, rank, sample) order, bit for bit the table's values as float64.

    Examples
    --------
    >>> import pyarrow as pa
    >>> t = pa.table({"stage": ["b", "b", "a", "a"], "rank": [0, 0, 0, 0], "sample": [0, 1, 0, 1],
    ...               "label": [3, 4, 3, 4], "value": [1.0, 2.0, 3.0, 4.0]})
    >>> d = decode_captures(t, "example")
    >>> d.values[0].T.tolist(), d.stages.tolist(), d.labels.tolist()
    ([[3.0, 1.0], [4.0, 2.0]], ['a', 'b'], [[3, 4]])
    """
    if table.num_rows == 0:
        raise ValueError(f"{where}: no rows")
    codes, names = stage_codes(table["stage"])
    rank, sample, label, value = (table[c].to_numpy() for c in ("rank", "sample", "label", "value"))
    capture = table[CAPTURE].to_numpy() if CAPTURE in table.column_names else None
    rows = None
    if not fast_loops.rows_sorted(capture, codes, rank, sample):
        keys = (sample, rank, codes) if capture is None else (sample, rank, codes, capture)
        rows = np.lexsort(keys)
        codes, rank, sample, label, value = codes[rows], rank[rows], sample[rows], label[rows], value[rows]
        capture = None if capture is None else capture[rows]
    starts = np.zeros(1, np.int64) if capture is None else np.flatnonzero(np.diff(capture, prepend=capture[0] - 1))
    counts = np.diff(starts, append=len(value))
    n = int(sample.max()) + 1
    block = int(counts[0])
    uneven = bool((counts != block).any()) or block % n != 0
    row = -1 if uneven else fast_loops.grid_problem(codes, rank, sample, label, n, block // n)
    if uneven or row >= 0:
        raise ValueError(_grid_error(where, n, None if capture is None else capture[starts], counts,
                                     None if capture is None or row < 0 else capture[row]))
    values = np.asarray(value, dtype=np.float64).reshape(len(starts), block // n, n)
    return LongCaptures(None if capture is None else capture[starts], starts if rows is None else rows[starts], values,
                        label.reshape(len(starts), block)[:, :n], names[codes[:block:n]], rank[:block:n])


def _grid_error(where: str, n: int, captures: np.ndarray | None, counts: np.ndarray, at: int | None) -> str:
    """The error of rows that are not captures of the same channels x samples: ``captures`` [K] (None: one
    capture) of ``counts`` [K] rows each; ``at``: the capture where the grid first breaks (None: the captures
    whose row counts differ from the most common one)."""
    text = (f"{where}: {counts.sum()} rows are not one value per (stage, rank, sample) for samples 0..{n - 1}, "
            "with one label per sample")
    if captures is None:
        return text
    if at is None:
        sizes, times = np.unique(counts, return_counts=True)
        odd = captures[counts != sizes[np.argmax(times)]]
        at = odd.tolist()[:8] + (["..."] if len(odd) > 8 else [])
    return f"{text} and the same channels in every capture (of {len(captures)} captures: {at})"
