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
from dynstudy.store_contract.files import filesystem
from dynstudy.store_contract.scan import StoreFile

#: File names of every-N-step captures (``steps=FIRST-LAST``; :data:`dynstudy.store_contract.schemas.FILE_NAMES`).
STEP_FILES = "steps="
#: Second word of the surrogates' seed (the first is the run's own, as for its noise controls).
TEMPORAL_SEED = 0x7E


def _table(files: list[StoreFile], columns: list[str], where=None):
    fs, _ = filesystem(files[0].path)
    paths = [filesystem(f.path)[1] for f in files]
    return pads.dataset(paths, filesystem=fs, format="parquet").to_table(columns=columns, filter=where)


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
    (stage, rank) order. A capture without those channels or samples is a
    ValueError that names it: the series would mix channels.
    """
    t = _table(files, ["capture", "epoch", "step", "stage", "rank", "sample", "value"],
               (pads.field("sample") < n_samples) & (pads.field("rank") < n_channels))
    stage_names, stage = np.unique(t["stage"].to_numpy(zero_copy_only=False).astype(str), return_inverse=True)
    capture, rank, sample = (t[c].to_numpy() for c in ("capture", "rank", "sample"))
    rows = np.lexsort((sample, rank, stage, capture))
    captures, first, counts = np.unique(capture[rows], return_index=True, return_counts=True)
    width = len(stage_names) * n_channels
    short = captures[counts != width * n_samples]
    if len(short) or not len(captures):
        raise ValueError(f"run {run_id}: capture(s) {short.tolist()} lack some of the {n_samples} step-probe samples "
                         f"or rank < {n_channels} channels of the stages {stage_names.tolist()}: the temporal series "
                         "needs the same channels and samples at every capture")
    values = t["value"].to_numpy().astype(np.float64)[rows].reshape(len(captures), width, n_samples)
    head = rows[first]
    return temporal_series(t["step"].to_numpy()[head], t["epoch"].to_numpy()[head], captures, values.mean(axis=2).T)


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
