"""One run's representation geometry: each stage's rank and variance at every capture, and how far it drifts.

For the init capture (the untrained network) and every end-of-epoch capture, each stage's stored channels
[probe samples x channels] go through :mod:`dynstudy.analysis.kernels.geometry`:

- its own geometry: effective rank (RankMe), participation ratio, mean channel variance;
- drift: debiased linear CKA with the previous capture (``cka_prev``), with the untrained network
  (``cka_init``) and with the run's last end-of-epoch capture (``cka_final``);
- the noise control through the same kernels: i.i.d. Gaussian features of the stage's shape (its effective
  rank and participation ratio, and its CKA with the stage: the estimator's floor, near 0).

The geometry uses every channel the run stored for the stage (``capture.store_channels``; ``all`` keeps the
whole stage, which is what the geometry of a stage means; fewer gives the geometry of that channel sample, and
``width`` says how many). Step captures have no geometry rows. The run's last end-of-epoch capture is read first
(for ``cka_final``), then the others in order, each held with the previous one and the init and final ones.
"""
from __future__ import annotations

import zlib

import numpy as np

from dynstudy.analysis.kernels import geometry
from dynstudy.analysis.run.capture_read import capture_files, read_capture

#: The capture kinds that get geometry rows.
GEOMETRY_KINDS = ("init", "epoch")


def stage_features(cap) -> dict[str, geometry.Features]:
    """stage -> the :class:`~dynstudy.analysis.kernels.geometry.Features` of its stored channels, in rank order."""
    out = {}
    for stage in np.unique(cap.stages):
        cols = np.flatnonzero(cap.stages == stage)
        cols = cols[np.argsort(cap.ranks[cols], kind="stable")]
        out[str(stage)] = geometry.features(cap.acts[:, cols].astype(np.float32))
    return out


def noise_seed(run_id: str, capture: int, stage: str) -> int:
    """The noise control's seed: fixed by run, capture and stage, so a re-analysis draws the same noise."""
    return zlib.crc32(f"{run_id}/{capture}/{stage}".encode())


def _cka(a, b) -> float | None:
    if a is None or b is None or a.X.shape[0] != b.X.shape[0]:
        return None
    value = geometry.linear_cka(a, b)
    return value if np.isfinite(value) else None


def run_geometry(activation_files, run_id: str) -> list[dict]:
    """The ``geometry_metrics`` rows of one run, from its activation files (:class:`StoreFile` list).

    Returns
    -------
    list of dict, one per (capture, stage) of the init and end-of-epoch captures, in capture order.
    """
    files = capture_files(list(activation_files))
    last = read_capture(files[-1]) if files else None
    final = stage_features(last) if last is not None and last.kind == "epoch" else {}
    rows, init, prev = [], {}, {}
    for f in files:
        cap = last if f is files[-1] else read_capture(f)  # the last capture is read once
        if cap.kind not in GEOMETRY_KINDS:
            continue
        feats = stage_features(cap)
        if cap.kind == "init":
            init = feats
        for stage, fx in feats.items():
            n, width = fx.X.shape
            noise = geometry.features(np.random.default_rng(noise_seed(run_id, cap.capture, stage))
                                      .standard_normal((n, width)).astype(np.float32))
            own, floor = geometry.stage_geometry(fx), geometry.stage_geometry(noise)
            rows.append({"run_id": run_id, "capture": cap.capture, "kind": cap.kind, "epoch": cap.epoch,
                         "stage": stage, "width": width, "n_samples": n, **{k: own[k] for k in (
                             "effective_rank", "participation_ratio", "activation_variance")},
                         "cka_prev": _cka(prev.get(stage), fx), "cka_init": _cka(init.get(stage), fx),
                         "cka_final": _cka(final.get(stage), fx),
                         "noise_effective_rank": floor["effective_rank"],
                         "noise_participation_ratio": floor["participation_ratio"],
                         "noise_cka": _cka(noise, fx)})
        prev = feats
    return rows


def geometry_summary(rows: list[dict]) -> dict:
    """The run_summary columns of a run's geometry rows: at its last end-of-epoch capture, the stages' mean
    effective rank and CKA with the untrained network; and the epoch its stages' mean drift settles
    (:func:`dynstudy.analysis.kernels.geometry.settle_epoch`)."""
    epochs = [r for r in rows if r["kind"] == "epoch"]
    out = {"effective_rank_final": None, "cka_init_final": None, "drift_settle_epoch": None}
    if not epochs:
        return out
    last = max(r["capture"] for r in epochs)
    final = [r for r in epochs if r["capture"] == last]
    out["effective_rank_final"] = _mean(r["effective_rank"] for r in final)
    out["cka_init_final"] = _mean(r["cka_init"] for r in final)
    drift = {}
    for r in epochs:
        drift.setdefault(r["epoch"], []).append(r["cka_prev"])
    order = sorted(drift)
    out["drift_settle_epoch"] = geometry.settle_epoch(order, [_mean(drift[e]) for e in order])
    return out


def _mean(values) -> float | None:
    x = [float(v) for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(x)) if x else None
