"""Small stores written in the workers' own format, without Ray or torch.

``make_store(path, seeds, epochs)`` writes runs, activations (capture 0 =
init, then one per epoch) and train_metrics for one cell per dataset, with
values whose DFA exponent and metastability are well defined, so that
``dynstudy analyze`` has real work and every table gets rows.
"""
from __future__ import annotations

import json

import numpy as np

from store_contract.files import write_rows

STAGES = ("stage1", "stage2", "stage3", "stage4")
K, PROBE, CLASSES = 4, 64, 4


def _config(run_id: str, seed: int, dataset: str, epochs: int, probe: int = PROBE) -> dict:
    return {"run_id": run_id, "study": "made", "store": "/elsewhere", "model": "tiny_cnn", "seed": seed,
            "dataset": {"name": dataset}, "optimizer": {"name": "sgd", "lr": 0.1},
            "train": {"epochs": epochs}, "capture": {"probe_size": probe, "channels_per_stage": K},
            "analysis": {}}


def write_capture(store, run_id: str, capture: int, epoch: int, rng, probe: int = PROBE, stored: int = K) -> None:
    """One capture file; ``stored`` channels per stage (the metrics use the first K: more feed the channel re-draws)."""
    PROBE, K = probe, stored  # noqa: N806  (the probe size and stored channels of this capture)
    labels = np.repeat(np.arange(CLASSES, dtype=np.int32), PROBE // CLASSES)
    n = len(STAGES) * K * PROBE
    values = np.cumsum(rng.standard_normal((len(STAGES) * K, PROBE)), axis=1) * 0.1 + rng.standard_normal((len(STAGES) * K, PROBE))
    write_rows(store, "activations", run_id, f"capture={capture:06d}", {
        "run_id": [run_id] * n, "capture": np.full(n, capture), "kind": ["init" if capture == 0 else "epoch"] * n,
        "epoch": np.full(n, epoch), "step": np.full(n, 10 * epoch),
        "stage": np.repeat(np.array(STAGES, dtype=object), K * PROBE), "channel": np.tile(np.repeat(np.arange(K), PROBE), len(STAGES)),
        "rank": np.tile(np.repeat(np.arange(K), PROBE), len(STAGES)), "sample": np.tile(np.arange(PROBE), len(STAGES) * K),
        "label": np.tile(labels, len(STAGES) * K), "value": values.reshape(-1).astype(np.float32)})


def write_epoch(store, run_id: str, epoch: int, rng) -> None:
    write_rows(store, "train_metrics", run_id, f"epoch={epoch:06d}", {
        "run_id": [run_id], "epoch": [epoch], "step": [10 * epoch], "train_loss": [1.0 / epoch],
        "val_loss": [1.2 / epoch], "val_acc": [min(0.99, 0.3 + 0.1 * epoch + 0.01 * rng.random())], "lr": [0.1]})


def write_run_row(store, run_id: str, seed: int, dataset: str, epochs: int, status: str = "finished",
                  done: int | None = None, attempts: int = 1, probe: int = PROBE) -> None:
    write_rows(store, "runs", run_id, "run", {
        "run_id": [run_id], "study": ["made"], "model": ["tiny_cnn"], "dataset": [dataset], "optimizer": ["sgd"],
        "seed": [seed], "status": [status], "epochs_completed": [epochs if done is None else done],
        "config": [json.dumps(_config(run_id, seed, dataset, epochs, probe), sort_keys=True)], "attempts": [attempts]})


def make_store(store, seeds=(0, 1, 2), epochs: int = 6, datasets=("digits", "synthetic"), probe: int = PROBE,
               stored: int = K) -> list[str]:
    """Write one finished run per (dataset, seed) with ``stored`` channels per stage (K used); return the run ids."""
    ids = []
    for dataset in datasets:
        for seed in seeds:
            run_id = f"tiny_cnn-{dataset}-sgd-s{seed}-made"
            rng = np.random.default_rng([seed, len(dataset)])
            for e in range(epochs + 1):
                write_capture(store, run_id, e, e, rng, probe, stored)
                if e:
                    write_epoch(store, run_id, e, rng)
            write_run_row(store, run_id, seed, dataset, epochs, probe=probe)
            ids.append(run_id)
    return ids
