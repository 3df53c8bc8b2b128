"""One run's temporal protocol: its series over training time read from the store, then its tables.

The series (:func:`read_series`) comes from the run's activations: for every
capture (init, every-N-step and end-of-epoch ones) and every metric channel
(rank < channels_per_stage), the mean of the channel's pooled activation
over the step probe (the first P_t samples, P_t the size of the run's step
captures). The tables (:func:`run_temporal`) are
:func:`analysis.temporal.temporal_tables` of it. A run without every-N-step
captures has no temporal tables (its summary's temporal columns stay null).
"""
from __future__ import annotations

import hashlib

import numpy as np

from analysis.temporal import TemporalSeries, temporal_series, temporal_tables

def step_probe(con, run_id: str) -> tuple[int, int] | None:
    """(P_t, stored ranks) of the run's every-N-step captures; None when it has none."""
    got = con.execute("SELECT count(*), min(n), min(k) FROM (SELECT capture, max(sample) + 1 AS n, max(rank) + 1 AS k "
                      "FROM activations WHERE run_id = ? AND kind = 'step' GROUP BY capture)", [run_id]).fetchone()
    return None if not got[0] else (int(got[1]), int(got[2]))


def read_series(con, run_id: str, n_samples: int, n_channels: int) -> TemporalSeries:
    """The run's temporal signal: channel means over the first ``n_samples`` samples of every capture.

    Columns of X are the channels of rank < ``n_channels`` per stage, in
    (stage, rank) order. A capture without those channels or samples is a
    ValueError that names it: the series would mix channels.
    """
    got = con.execute(
        "SELECT capture, epoch, step, stage, rank, value FROM activations "
        "WHERE run_id = ? AND sample < ? AND rank < ? ORDER BY capture, stage, rank, sample",
        [run_id, n_samples, n_channels]).fetchnumpy()
    captures, first, counts = np.unique(got["capture"], return_index=True, return_counts=True)
    short = captures[counts != counts.max()] if len(counts) else captures
    if len(short) or not len(captures) or counts[0] % n_samples:
        raise ValueError(f"run {run_id}: capture(s) {short.tolist()} lack some of the {n_samples} step-probe samples "
                         f"or rank < {n_channels} channels the other captures have: the temporal series needs the "
                         "same channels and samples at every capture")
    n_caps, width = len(captures), counts[0] // n_samples
    columns = np.stack([np.asarray(got["stage"]).astype(str), np.asarray(got["rank"]).astype(str)])
    columns = columns.reshape(2, n_caps, width, n_samples)[:, :, :, 0]
    if not (columns == columns[:, :1]).all():
        bad = captures[~(columns == columns[:, :1]).all(axis=(0, 2))]
        raise ValueError(f"run {run_id}: capture(s) {bad.tolist()} hold other channels than capture "
                         f"{captures[0]}: the temporal series needs the same channels at every capture")
    means = np.asarray(got["value"], dtype=np.float64).reshape(n_caps, width, n_samples).mean(axis=2)
    return temporal_series(np.asarray(got["step"])[first], np.asarray(got["epoch"])[first], captures, means.T)


def run_temporal(con, run_id: str, params: dict, k: int | None) -> tuple[list[dict], list[dict], dict]:
    """(temporal_metrics rows, temporal_controls rows, summary columns) of one run; empty without step captures.

    ``params``: the run's analysis settings (with ``temporal_window`` and
    ``temporal_stride``); ``k``: its metric channels per stage
    (None: the channels its step captures stored).
    """
    probe = step_probe(con, run_id)
    if probe is None:
        return [], [], {}
    n_samples, stored = probe
    series = read_series(con, run_id, n_samples, k or stored)
    seed = [int(hashlib.sha1(run_id.encode()).hexdigest()[:8], 16), 0x7E]
    rows, controls, summary = temporal_tables(series, params, seed)
    return ([{"run_id": run_id, **r} for r in rows], [{"run_id": run_id, **c} for c in controls], summary)
