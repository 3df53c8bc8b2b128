"""Grid expansion: a spec becomes one trial config per (model, dataset, optimiser, seed).

The run id is derived from (study, cell, seed) alone, so a retried or resumed
trial maps to the same run and the same files in the store.
"""
from __future__ import annotations

import hashlib
from itertools import product

from dynstudy.jobs.models.names import model_slug
from dynstudy.study.spec import StudySpec


def make_run_id(study: str, model: str, dataset: str, optimizer: str, seed: int) -> str:
    """Readable, stable run id: ``<model>-<dataset>-<optimizer>-s<seed>-<hash>``.

    The hash covers the study name too, so two studies writing to one store
    never share a run id. ``model`` is the cell's label; characters a path
    or a run id cannot hold show as ``_`` (``timm/convnext_atto`` ->
    ``timm_convnext_atto``), and the hash keeps the label as it is.
    """
    key = f"{study}|{model}|{dataset}|{optimizer}|{seed}".encode()
    return f"{model_slug(model)}-{dataset}-{optimizer}-s{seed}-{hashlib.sha1(key).hexdigest()[:8]}"


def model_fields(spec: StudySpec, model, dataset: str) -> dict:
    """The trial-config keys of one cell's model: ``model`` (its label) and, only where they apply,
    ``model_name``, ``model_kwargs`` and ``stages`` (so the zoo's trial configs are what they always were)."""
    out = {"model": model.cell_label}
    if model.label is not None and model.label != model.name:
        out["model_name"] = model.name
    if model.kwargs:
        out["model_kwargs"] = dict(model.kwargs)
    stages = spec.cell_stages(model, dataset)
    if stages is not None:
        out["stages"] = list(stages)
    return out


def expand(spec: StudySpec, store: str) -> list[dict]:
    """Trial configs (plain dicts, as Ray Tune passes them) in a fixed order.

    ``store`` is the resolved store location every trial writes to.
    """
    trials = []
    for model, dataset, optimizer, seed in product(spec.models, spec.datasets, spec.optimizers, spec.seeds):
        cell = spec.cell_settings(model.cell_label, dataset.name, optimizer)
        opt = cell["optimizer"].model_dump()
        opt["label"] = optimizer.cell_label
        trials.append({
            "run_id": make_run_id(spec.name, model.cell_label, dataset.name, optimizer.cell_label, seed),
            "study": spec.name,
            "store": store,
            **model_fields(spec, model, dataset.name),
            "dataset": dataset.model_dump(),
            "optimizer": opt,
            "seed": seed,
            "train": cell["train"].model_dump(),
            "capture": cell["capture"].model_dump(),
            "analysis": cell["analysis"].model_dump(),
            "use_gpu": spec.resources.gpus_per_trial > 0,
        })
    return trials
