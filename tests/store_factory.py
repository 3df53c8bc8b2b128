"""Small stores written in the workers' own format, without Ray or torch.

``make_store(path, seeds, epochs)`` writes runs, activations (capture 0 =
init, then one per epoch; with ``every``, also a capture every that many of
an epoch's 10 steps, as the temporal protocol takes them) and train_metrics
for one cell per dataset, with
values whose DFA exponent and metastability are well defined, so that
``dynstudy analyze`` has real work and every table gets rows.
"""
from __future__ import annotations

import json

import numpy as np

from dynstudy.store_contract.files import write_rows

STAGES = ("stage1", "stage2", "stage3", "stage4")
#: Channels the smoke preset stores per capture: every channel of tiny_cnn's four stages on digits (32 + 48 + 64 +
#: 96; tests/test_models.py checks it against the zoo).
SMOKE_CHANNELS = 240
K, PROBE, CLASSES = 4, 64, 4


STEPS_PER_EPOCH = 10


def _config(run_id: str, seed: int, dataset: str, epochs: int, probe: int = PROBE, every: int | None = None,
            analysis: dict | None = None) -> dict:
    capture = {"probe_size": probe, "channels_per_stage": K}
    if every:
        capture.update(every_n_steps=every, step_probe_size=STEP_PROBE)
    return {"run_id": run_id, "study": "made", "store": "/elsewhere", "model": "tiny_cnn", "seed": seed,
            "dataset": {"name": dataset}, "optimizer": {"name": "sgd", "lr": 0.1},
            "train": {"epochs": epochs}, "capture": capture, "analysis": analysis or {}}


STEP_PROBE = 32


def write_capture(store, run_id: str, capture: int, epoch: int, rng, probe: int = PROBE, stored: int = K) -> None:
    """One capture file; ``stored`` channels per stage (the metrics use the first K: more feed the channel re-draws)."""
    write_rows(store, "activations", run_id, f"capture={capture:06d}",
               capture_columns(run_id, capture, epoch, rng, probe, stored=stored))


def capture_columns(run_id: str, capture: int, epoch: int, rng, probe: int = PROBE, kind: str | None = None,
                    step: int | None = None, stored: int = K) -> dict:
    PROBE, K = probe, stored  # noqa: N806  (the probe size and stored channels of this capture)
    labels = np.repeat(np.arange(CLASSES, dtype=np.int32), PROBE // CLASSES)
    n = len(STAGES) * K * PROBE
    shape = (len(STAGES) * K, PROBE)
    values = np.cumsum(rng.standard_normal(shape), axis=1) * 0.1 + rng.standard_normal(shape)
    kind = kind or ("init" if capture == 0 else "epoch")
    return {
        "run_id": [run_id] * n, "capture": np.full(n, capture), "kind": [kind] * n,
        "epoch": np.full(n, epoch), "step": np.full(n, STEPS_PER_EPOCH * epoch if step is None else step),
        "stage": np.repeat(np.array(STAGES, dtype=object), K * PROBE),
        "channel": np.tile(np.repeat(np.arange(K), PROBE), len(STAGES)),
        "rank": np.tile(np.repeat(np.arange(K), PROBE), len(STAGES)),
        "sample": np.tile(np.arange(PROBE), len(STAGES) * K),
        "label": np.tile(labels, len(STAGES) * K), "value": values.reshape(-1).astype(np.float32)}


def write_epoch(store, run_id: str, epoch: int, rng) -> None:
    write_rows(store, "train_metrics", run_id, f"epoch={epoch:06d}", {
        "run_id": [run_id], "epoch": [epoch], "step": [STEPS_PER_EPOCH * epoch], "train_loss": [1.0 / epoch],
        "val_loss": [1.2 / epoch], "val_acc": [min(0.99, 0.3 + 0.1 * epoch + 0.01 * rng.random())], "lr": [0.1]})


def write_run_row(store, run_id: str, seed: int, dataset: str, epochs: int, status: str = "finished",
                  done: int | None = None, attempts: int = 1, probe: int = PROBE, every: int | None = None,
                  analysis: dict | None = None) -> None:
    write_rows(store, "runs", run_id, "run", {
        "run_id": [run_id], "study": ["made"], "model": ["tiny_cnn"], "dataset": [dataset], "optimizer": ["sgd"],
        "seed": [seed], "status": [status], "epochs_completed": [epochs if done is None else done],
        "config": [json.dumps(_config(run_id, seed, dataset, epochs, probe, every, analysis), sort_keys=True)],
        "attempts": [attempts]})


def make_store(store, seeds=(0, 1, 2), epochs: int = 6, datasets=("digits", "synthetic"), probe: int = PROBE,
               every: int | None = None, analysis: dict | None = None, stored: int = K) -> list[str]:
    """Write one finished run per (dataset, seed) with ``stored`` channels per stage (K used); return the run ids.

    ``every``: also a step capture (the first :data:`STEP_PROBE` samples,
    the metric channels) every that many steps, the epoch's last step
    included, before the epoch's own capture, as the trainer numbers them.
    """
    ids = []
    for dataset in datasets:
        for seed in seeds:
            run_id = f"tiny_cnn-{dataset}-sgd-s{seed}-made"
            rng = np.random.default_rng([seed, len(dataset)])
            capture = 0
            for e in range(epochs + 1):
                if e and every:  # one file of the epoch's step captures, as the trainer writes them
                    first, parts = capture, []
                    for step in range(STEPS_PER_EPOCH * (e - 1) + every, STEPS_PER_EPOCH * e + 1, every):
                        parts.append(capture_columns(run_id, capture, e, rng, STEP_PROBE, kind="step", step=step))
                        capture += 1
                    write_rows(store, "activations", run_id, f"steps={first:06d}-{capture - 1:06d}",
                               {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]})
                write_capture(store, run_id, capture, e, rng, probe, stored)
                capture += 1
                if e:
                    write_epoch(store, run_id, e, rng)
            write_run_row(store, run_id, seed, dataset, epochs, probe=probe, every=every, analysis=analysis)
            ids.append(run_id)
    return ids
