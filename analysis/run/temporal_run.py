"""One run's temporal protocol: its series over training time read from its files, then its tables.

The series (:func:`read_series`) comes from the run's activation files
(pyarrow, local paths and object stores alike): for every capture (init,
every-N-step and end-of-epoch ones) and every metric channel (rank <
channels_per_stage), the mean of the channel's pooled activation over the
step probe (the first P_t samples, P_t the size of the run's step captures).
The tables (:func:`run_temporal`) are :func:`dynstudy.analysis.kernels.temporal.temporal_tables`
of it. A run without every-N-step captures has no temporal tables (its
summary's temporal columns stay null).
"""
from __future__ import annotations

import numpy as np
import pyarrow.dataset as pads

from dynstudy.analysis.kernels.temporal import TemporalSeries, temporal_series, temporal_tables
from dynstudy.analysis.run.capture_plan import run_seed
from dynstudy.analysis.run.long_format import CAPTURE, COLUMNS, decode_captures
from dynstudy.store_contract.files import filesystem
from dynstudy.store_contract.scan import StoreFile
from dynstudy.store_contract.schemas import file_numbers

#: File names of every-N-step captures (``steps=FIRST-LAST``; :data:`dynstudy.store_contract.schemas.FILE_NAMES`).
STEP_FILES = "steps="
#: Second word of the surrogates' seed (the first is the run's own, as for its noise controls).
TEMPORAL_SEED = 0x7E


def _table(files: list[StoreFile], columns: list[str], where=None):
    """Rows of ``files`` in the order of their capture numbers (rows of files in capture order need no sort)."""
    files = sorted(files, key=lambda f: file_numbers("activations", f.name)[0])
    fs, _ = filesystem(files[0].path)
    paths = [filesystem(f.path)[1] for f in files]
    fmt = pads.ParquetFileFormat(read_options=pads.ParquetReadOptions(dictionary_columns=["stage"]))
    return pads.dataset(paths, filesystem=fs, format=fmt).to_table(columns=columns, filter=where)


def step_probe(files: list[StoreFile]) -> tuple[int, int] | None:
    """(P_t, stored ranks) of the run's every-N-step captures (the smallest over them); None when it has none."""
    steps = [f for f in files if f.name.startswith(STEP_FILES)]
    if not steps:
        return None
    t = _table(steps, ["capture", "sample", "rank"])
    capture = t["capture"].to_numpy()
    caps, inverse = np.unique(capture, return_inverse=True)
    n = np.zeros(len(caps), np.int64)
    k = np.zeros(len(caps), np.int64)
    np.maximum.at(n, inverse, t["sample"].to_numpy() + 1)
    np.maximum.at(k, inverse, t["rank"].to_numpy() + 1)
    return int(n.min()), int(k.min())


def read_series(files: list[StoreFile], run_id: str, n_samples: int, n_channels: int) -> TemporalSeries:
    """The run's temporal signal: channel means over the first ``n_samples`` samples of every capture.

    Columns of X are the channels of rank < ``n_channels`` per stage, in
    (stage, rank) order; the captures' rows are decoded by
    :func:`dynstudy.analysis.run.long_format.decode_captures`. A capture without
    those channels or samples is a ValueError that names the run: the series
    would mix channels.
    """
    t = _table(files, [CAPTURE, "epoch", "step", *COLUMNS],
               (pads.field("sample") < n_samples) & (pads.field("rank") < n_channels))
    where = f"run {run_id}: the step probe (samples < {n_samples}, ranks < {n_channels})"
    need = "the temporal series needs the same channels and samples at every capture"
    try:
        d = decode_captures(t, where)
    except ValueError as err:
        raise ValueError(f"{err}: {need}") from err
    if d.values.shape[2] != n_samples or len(d.ranks) != len(np.unique(d.stages)) * n_channels:
        raise ValueError(f"{where}: captures lack some of the {n_samples} step-probe samples or rank < {n_channels} "
                         f"channels of the stages {np.unique(d.stages).tolist()}: {need}")
    return temporal_series(t["step"].to_numpy()[d.heads], t["epoch"].to_numpy()[d.heads], d.captures,
                           d.values.mean(axis=2).T)


def run_temporal(files: list[StoreFile], run_id: str, params: dict, k: int | None
                 ) -> tuple[list[dict], list[dict], dict]:
    """(temporal_metrics rows, temporal_controls rows, summary columns) of one run; empty without step captures.

    ``files``: the run's activation files; ``params``: its analysis settings
    (with ``temporal_window`` and ``temporal_stride``); ``k``: its metric
    channels per stage (None: the channels its step captures stored).
    """
    probe = step_probe(files)
    if probe is None:
        return [], [], {}
    n_samples, stored = probe
    series = read_series(files, run_id, n_samples, k or stored)
    rows, controls, summary = temporal_tables(series, params, [run_seed(run_id), TEMPORAL_SEED])
    return ([{"run_id": run_id, **r} for r in rows], [{"run_id": run_id, **c} for c in controls], summary)
