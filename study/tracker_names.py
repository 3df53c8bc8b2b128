"""What a run sends to an experiment tracker and under which names, live (:mod:`dynstudy.study.tracker_callbacks`)
and after the fact (:mod:`dynstudy.study.tracker_export`) alike.

Per epoch (the tracker's step is the epoch): the store's ``train_metrics`` columns (:data:`EPOCH_METRICS`) and the
trial's online dynamics (:data:`ONLINE_METRICS`); a missing value (no H_eff before enough captures, no trigger
yet) is not sent. Each run is named by its run id and tagged with its study, cell, model, dataset, optimizer and
seed (:func:`run_tags`); its full trial config goes as flat parameters (:func:`flat_params`). Only the standard
library and the store's schemas are imported here.
"""
from __future__ import annotations

import hashlib
import json
import math
import re

from dynstudy.store_contract.schemas import TRAIN_METRICS

#: Per-epoch values of the store's train_metrics a tracker receives (run_id, epoch and step are not values).
EPOCH_METRICS = tuple(n for n in TRAIN_METRICS.names if n not in ("run_id", "epoch", "step"))
#: The online dynamics a trial reports after every epoch (:mod:`dynstudy.jobs.capture.online`).
ONLINE_METRICS = ("h_eff", "metastability", "psi", "psi_volatility", "volatility_trigger")
#: Prefix of every tag and of the W&B config keys that say which run, cell and seed a tracker run is.
TAG_PREFIX = "dynstudy."
#: The identity fields of a run, in tag order.
IDENTITY = ("run_id", "study", "cell", "model", "dataset", "optimizer", "seed")
#: The trackers ``dynstudy export`` writes to.
EXPORT_TARGETS = ("mlflow", "wandb", "tensorboard")
#: Longest W&B run id.
WANDB_ID_LIMIT = 64
_WANDB_ID_RE = re.compile(r"[A-Za-z0-9_.-]+")


def epoch_values(result: dict, names=EPOCH_METRICS + ONLINE_METRICS) -> dict[str, float]:
    """The finite numeric values of ``names`` in ``result`` (a Tune result or a train_metrics row), as floats."""
    out = {}
    for name in names:
        v = result.get(name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            continue
        out[name] = float(v)
    return out


def cell_name(model: str, dataset: str, optimizer: str) -> str:
    """A cell as trackers group it: ``model/dataset/optimizer``."""
    return f"{model}/{dataset}/{optimizer}"


def run_identity(config: dict) -> dict:
    """run_id, study, cell, model, dataset, optimizer and seed of a trial config (``dynstudy.study.grid``) or a
    runs-table row (dataset and optimizer as names)."""
    dataset = config["dataset"]["name"] if isinstance(config["dataset"], dict) else config["dataset"]
    opt = config["optimizer"]
    optimizer = (opt.get("label") or opt["name"]) if isinstance(opt, dict) else opt
    return {"run_id": config["run_id"], "study": config["study"],
            "cell": cell_name(config["model"], dataset, optimizer), "model": config["model"], "dataset": dataset,
            "optimizer": optimizer, "seed": int(config["seed"])}


def run_tags(identity: dict) -> dict[str, str]:
    """``dynstudy.<field>`` -> value for every identity field: the tags a tracker run carries."""
    return {f"{TAG_PREFIX}{k}": str(identity[k]) for k in IDENTITY}


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """A trial config as flat parameters: nested keys joined by '.', lists and other values as JSON text."""
    out = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return out


def wandb_run_id(run_id: str) -> str:
    """The W&B run id of a dynstudy run: its run id where W&B takes it, else a cut run id with a digest."""
    if len(run_id) <= WANDB_ID_LIMIT and _WANDB_ID_RE.fullmatch(run_id):
        return run_id
    digest = hashlib.sha1(run_id.encode()).hexdigest()[:12]
    return f"{re.sub(r'[^A-Za-z0-9_.-]', '_', run_id)[:WANDB_ID_LIMIT - 13]}-{digest}"
