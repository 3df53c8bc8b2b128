"""Do different seeds learn the same representation? CKA between the seeds of a cell, epoch by epoch.

For every cell (model x dataset x optimizer) with two or more whole runs, each run's end-of-epoch captures are
read once, in epoch order and in step across the seeds; at each epoch the seeds that reached it are compared,
stage by stage, every pair with debiased linear CKA (:func:`dynstudy.analysis.kernels.geometry.cka_matrix`,
one product for all pairs), beside the shuffled-probe control: the same pair with one seed's probe samples in a
fixed random order, so the two seeds are compared on different images (near 0 when agreement is about the
images, not about the statistics of the activations alone). ``dynstudy analyze`` writes the rows as the table
``seed_agreement``; :func:`dynstudy.analysis.stats.agreement.pair_mean_interval` gives a cell's mean over pairs
with its seed-level interval.
"""
from __future__ import annotations

import heapq
import zlib
from collections import defaultdict
from collections.abc import Iterator

import numpy as np

from dynstudy.analysis.kernels import geometry
from dynstudy.analysis.run.capture_read import capture_files, read_capture
from dynstudy.analysis.run.geometry_run import stage_features
from dynstudy.analysis.stats.variability import CELL_KEYS, finite_or_none
from dynstudy.store_contract.scan import StoreScan


def epoch_features(files) -> Iterator[tuple[int, dict]]:
    """(epoch, stage -> features) of a run's end-of-epoch captures, in capture order, one file read at a time."""
    for f in capture_files(list(files)):
        cap = read_capture(f)
        if cap.kind == "epoch":
            yield cap.epoch, stage_features(cap)


def probe_order(cell: tuple, n: int) -> np.ndarray:
    """The shuffled-probe control's fixed order of ``n`` probe samples for ``cell``."""
    return np.random.default_rng(zlib.crc32("/".join(map(str, cell)).encode())).permutation(n)


def _by_epoch(runs: list[dict], scan: StoreScan) -> Iterator[tuple[int, list[tuple[dict, dict]]]]:
    """(epoch, [(run, stage features)] of the runs that reached it), epochs in order, each run's files in step."""
    streams = [(run, epoch_features(scan.run_files(run["run_id"], ["activations"])["activations"]))
               for run in runs]
    heap = []
    for i, (run, it) in enumerate(streams):
        first = next(it, None)
        if first is not None:
            heap.append((first[0], i, first[1]))
    heapq.heapify(heap)
    while heap:
        epoch, group = heap[0][0], []
        while heap and heap[0][0] == epoch:
            _, i, feats = heapq.heappop(heap)
            group.append((streams[i][0], feats))
            nxt = next(streams[i][1], None)
            if nxt is not None:
                heapq.heappush(heap, (nxt[0], i, nxt[1]))
        yield epoch, sorted(group, key=lambda rf: (rf[0]["seed"], rf[0]["run_id"]))


def cell_rows(cell: tuple, runs: list[dict], scan: StoreScan) -> list[dict]:
    """The ``seed_agreement`` rows of one cell's ``runs`` (summaries: run_id, seed)."""
    rows = []
    for epoch, group in _by_epoch(runs, scan):
        if len(group) < 2:
            continue
        stages = sorted(set.intersection(*(set(feats) for _, feats in group)))
        for stage in stages:
            feats = [f[stage] for _, f in group]
            n = feats[0].n
            if any(f.n != n for f in feats):
                continue  # probe sizes differ: not the same images
            order = probe_order(cell, n)
            shuffled = [geometry.Features(f.X[order], f.diag[order], f.XtX) for f in feats]
            M = geometry.cka_matrix(feats + shuffled)
            m = len(feats)
            for a in range(m):
                for b in range(a + 1, m):
                    ra, rb = group[a][0], group[b][0]
                    rows.append({**dict(zip(CELL_KEYS, cell)), "stage": stage, "epoch": epoch,
                                 "run_a": ra["run_id"], "run_b": rb["run_id"], "seed_a": ra["seed"],
                                 "seed_b": rb["seed"], "n_samples": n, "width_a": feats[a].X.shape[1],
                                 "width_b": feats[b].X.shape[1], "cka": finite_or_none(M[a, b]),
                                 "shuffled_cka": finite_or_none(M[m + a, b])})
    return rows


#: Seeds of a cell compared: its first this many by seed number. The pairs grow as seeds^2 (1,000 seeds would be
#: half a million pairs per epoch and stage), while a mean over pairs is already precise with a few dozen.
MAX_SEEDS = 20


def seed_agreement(summaries: list[dict], scan: StoreScan) -> list[dict]:
    """The ``seed_agreement`` rows of every cell of the whole, current ``summaries`` with two runs or more (its
    first :data:`MAX_SEEDS` by seed), their captures read through ``scan`` (a scan that lists the runs'
    activations)."""
    cells = defaultdict(list)
    for s in summaries:
        cells[tuple(s[k] for k in CELL_KEYS)].append(s)
    rows = []
    for cell, runs in sorted(cells.items()):
        runs = sorted(runs, key=lambda r: (r["seed"], r["run_id"]))[:MAX_SEEDS]
        if len(runs) >= 2:
            rows += cell_rows(cell, runs, scan)
    return rows
