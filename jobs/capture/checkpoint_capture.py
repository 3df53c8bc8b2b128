"""A run's trajectory from its saved checkpoints: each loaded in training order and captured by the
:class:`~dynstudy.jobs.capture.recorder.Recorder` (``dynstudy capture --checkpoints DIR``).

The network is the named dynstudy model (:func:`dynstudy.jobs.models.registry.build`: zoo, ``timm/``,
``torchvision/`` or ``module:function``) for the named dataset's classes and channels, or (``--model hf``) the
Hugging Face image classifier the first checkpoint folder's ``config.json`` describes; the probe is the
dataset's first P validation images in their fixed order, as the trainer takes them. Every checkpoint is read
and matched to the model before anything is written (:func:`plan_checkpoints`), then each is loaded and
captured in order, and logged with the records it holds (:mod:`dynstudy.jobs.capture.checkpoint_files`).

Epoch numbers: the epochs completed that each checkpoint states (a Lightning checkpoint's ``epoch`` + 1; a
Hugging Face Trainer checkpoint's epoch, rounded up: the epoch it falls in; a plain file's ``epoch`` in its
name, 0 being the untrained network) when every checkpoint states one and they increase; otherwise the
checkpoints are epochs 1, 2, ... in training order. ``runs.config`` records which (``epoch_numbering``) and
each checkpoint's file, epoch and step.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from dynstudy.jobs.capture.checkpoint_files import (
    Checkpoint,
    CheckpointError,
    fit_state,
    name_number,
    ordered_checkpoints,
    read_checkpoint,
)
from dynstudy.jobs.capture.recorder import Recorder
from dynstudy.jobs.capture.settings import CAPTURE_DEFAULTS
from dynstudy.jobs.data.in_memory import load_dataset
from dynstudy.jobs.models import zoo
from dynstudy.jobs.models.registry import BuiltModel, ModelDef, build
from dynstudy.jobs.models.stages import Stage
from dynstudy.store_contract.files import run_folder_problem

#: ``--model`` for a Hugging Face checkpoint's own architecture (its ``config.json``), built with transformers.
HF_MODEL = "hf"


@dataclass(frozen=True)
class CaptureRequest:
    """What ``dynstudy capture`` was asked for (see its ``--help``)."""

    checkpoints: str
    model: str
    dataset: str
    store: str
    run_id: str | None = None
    seed: int = 0
    probe_size: int | None = None
    channels_per_stage: int = 32
    order: tuple[str, ...] | None = None
    optimizer: str = "unknown"
    data_root: str | None = None
    stem: str = "stock"
    stages: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Planned:
    """One checkpoint as it will be captured."""

    path: Path
    epoch: int
    step: int | None
    records: dict


def default_run_id(req: CaptureRequest) -> str:
    """``ckpt-<folder name>-s<seed>``, the folder's name made safe for a run id."""
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(req.checkpoints).expanduser().resolve().name)
    return f"ckpt-{name.strip('.') or 'run'}-s{req.seed}"


def stated_epoch(ckpt: Checkpoint) -> int | None:
    """The epochs completed a checkpoint states: its content's, else an epoch in its name."""
    if ckpt.epoch is not None:
        return ckpt.epoch
    named = name_number(ckpt.path.name)
    return named[1] if named and named[0] == "epoch" else None


def plan_checkpoints(model: torch.nn.Module, paths: list[Path]) -> tuple[list[Planned], str]:
    """Read every checkpoint and match it to ``model`` (CheckpointError on the first that does not fit);
    return each one's epoch, step and records, and the numbering used (``checkpoints`` or ``in order``)."""
    read, previous_step = [], -1
    for path in paths:
        ckpt = read_checkpoint(path, previous_step)
        fit_state(model, ckpt.state, path)
        read.append((path, stated_epoch(ckpt), ckpt.step, ckpt.records))
        previous_step = ckpt.step if ckpt.step is not None else previous_step
    epochs = [r[1] for r in read]
    stated = None not in epochs and all(b > a for a, b in zip(epochs, epochs[1:])) and min(epochs) >= 0
    numbering = "checkpoints" if stated else "in order"
    return [Planned(p, e if stated else i + 1, s, rec) for i, (p, e, s, rec) in enumerate(read)], numbering


def probe_size_for(req: CaptureRequest) -> int:
    """The probe's size: ``--probe-size``, else the paper protocol's for a zoo model, else the capture default."""
    if req.probe_size is not None:
        return req.probe_size
    if req.model in zoo.MODEL_NAMES:
        return zoo.model_info(req.model).paper_probe_size
    return CAPTURE_DEFAULTS["probe_size"]


def make_recorder(req: CaptureRequest, run_id: str, planned: list[Planned], numbering: str, built: BuiltModel,
                  data, label: str) -> Recorder:
    """The run's recorder: the dataset's first P validation images, the model's stages, the run's settings."""
    n = probe_size_for(req)
    if n > len(data.val):
        raise ValueError(f"--probe-size {n}: {req.dataset} has {len(data.val)} validation images; give --probe-size "
                         f"{len(data.val)} or less")
    size = built.input_size if built.input_size and built.input_size != data.image_size else None
    config = {"checkpoints": str(Path(req.checkpoints).expanduser().resolve()), "epoch_numbering": numbering,
              "files": [{"name": p.path.name, "epoch": p.epoch, "step": p.step} for p in planned]}
    return Recorder(req.store, run_id, built.module, (data.val.x[:n], data.val.y[:n]), built.stages, req.seed,
                    config, study="checkpoints", model_name=label, dataset=req.dataset, optimizer=req.optimizer,
                    capture={"channels_per_stage": req.channels_per_stage}, mean=data.mean, std=data.std,
                    input_size=size)


def hf_model(first: Path) -> tuple[torch.nn.Module, str]:
    """The Hugging Face image classifier a checkpoint folder's ``config.json`` describes (built with
    ``AutoModelForImageClassification.from_config``, nothing downloaded) and its architecture's name."""
    if not (first / "config.json").is_file():
        raise CheckpointError(f"--model {HF_MODEL} builds the architecture a Hugging Face checkpoint folder's "
                              f"config.json names, and {first} has none; give the dynstudy model the weights are of")
    from dynstudy.jobs.models.tv_compat import ensure_torchvision

    ensure_torchvision()  # transformers may import torchvision
    try:
        from transformers import AutoConfig, AutoModelForImageClassification
    except ImportError:
        raise CheckpointError(f"--model {HF_MODEL} needs transformers, which this install lacks: pip install "
                              "'dynstudy[hf]'") from None

    config = AutoConfig.from_pretrained(first)
    return AutoModelForImageClassification.from_config(config), (config.architectures or [config.model_type])[0]


def network(req: CaptureRequest, first: Path, data) -> tuple[BuiltModel, str]:
    """The network the checkpoints load into, with its stages (``--stages``, else the model's), and its label."""
    stages = tuple(Stage(s, s) for s in req.stages) if req.stages else None
    if req.model == HF_MODEL:
        module, label = hf_model(first)
        return BuiltModel(module, stages, None), label  # no stages: the recorder's default feature levels
    built = build(ModelDef(req.model, req.model, stages=req.stages), data.num_classes, in_chans=data.in_chans,
                  image_size=data.image_size, stem=req.stem)
    return built, req.model


def capture_checkpoints(req: CaptureRequest) -> dict:
    """Capture every checkpoint of ``req.checkpoints`` in training order into one run; return the run's end
    (:meth:`Recorder.finish`) with its epochs and the train_metrics names found.

    Raises
    ------
    ValueError
        Before anything is written: names that cannot be ordered, a checkpoint that cannot be read or does not
        fit the model (the file and its first mismatched key), a run id or settings the recorder refuses.
    """
    run_id = req.run_id or default_run_id(req)
    problem = run_folder_problem(run_id)
    if problem:
        raise ValueError(f"--run-id: {problem}")
    paths = ordered_checkpoints(req.checkpoints, list(req.order) if req.order else None)
    data = load_dataset(req.dataset, req.data_root)
    torch.manual_seed(req.seed)
    built, label = network(req, paths[0], data)
    planned, numbering = plan_checkpoints(built.module, paths)
    rec = make_recorder(req, run_id, planned, numbering, built, data, label)
    try:
        for item in planned:
            built.module.load_state_dict(fit_state(built.module, read_checkpoint(item.path).state, item.path))
            rec.capture(epoch=item.epoch, step=item.step)
            if item.epoch > 0:
                rec.log(epoch=item.epoch, step=item.step, **item.records)
        end = rec.finish()
    except BaseException as err:
        rec.fail(f"{type(err).__name__}: {err}")
        raise
    names = sorted({k for p in planned for k in p.records})
    return {**end, "epochs": [p.epoch for p in planned], "numbering": numbering, "records": names}
