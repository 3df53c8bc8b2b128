"""Grid expansion: a spec becomes one trial config per (model, dataset, optimiser, seed).

The run id is derived from (study, cell, seed) alone, so a retried or resumed
trial maps to the same run and the same files in the store.
"""
from __future__ import annotations

import hashlib
from itertools import product

from study.spec import StudySpec


def make_run_id(study: str, model: str, dataset: str, optimizer: str, seed: int) -> str:
    """Readable, stable run id: ``<model>-<dataset>-<optimizer>-s<seed>-<hash>``.

    The hash covers the study name too, so two studies writing to one store
    never share a run id.
    """
    key = f"{study}|{model}|{dataset}|{optimizer}|{seed}".encode()
    return f"{model}-{dataset}-{optimizer}-s{seed}-{hashlib.sha1(key).hexdigest()[:8]}"


def expand(spec: StudySpec, store: str) -> list[dict]:
    """Trial configs (plain dicts, as Ray Tune passes them) in a fixed order.

    ``store`` is the resolved store location every trial writes to.
    """
    trials = []
    for model, dataset, optimizer, seed in product(spec.models, spec.datasets, spec.optimizers, spec.seeds):
        cell = spec.cell_settings(model, dataset.name, optimizer)
        opt = cell["optimizer"].model_dump()
        opt["label"] = optimizer.cell_label
        trials.append({
            "run_id": make_run_id(spec.name, model, dataset.name, optimizer.cell_label, seed),
            "study": spec.name,
            "store": store,
            "model": model,
            "dataset": dataset.model_dump(),
            "optimizer": opt,
            "seed": seed,
            "train": cell["train"].model_dump(),
            "capture": cell["capture"].model_dump(),
            "analysis": cell["analysis"].model_dump(),
            "use_gpu": spec.resources.gpus_per_trial > 0,
        })
    return trials
