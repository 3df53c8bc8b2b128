"""Saved checkpoints of a training run: found in a folder, put in training order, read as weights and records.

Three kinds are read (:func:`read_checkpoint`):

- a file saved by plain ``torch.save`` (``.pt``, ``.pth``, ``.bin``): a bare state dict, or a dict holding it
  under ``model`` or ``state_dict``; numbers saved beside it under train_metrics names (``val_acc``, ...),
  the optimiser's lr (``optimizer``) and ``global_step`` (or ``step``) are its records;
- a PyTorch Lightning ``.ckpt``: ``state_dict`` (keys with the LightningModule's prefix, e.g. ``model.``),
  ``epoch`` (0-based: the epoch in progress), ``global_step``, the first optimiser's lr and the score of a
  ``ModelCheckpoint`` that monitors ``val_loss`` or ``val_acc``;
- a Hugging Face ``save_pretrained`` / ``Trainer`` checkpoint folder: ``model.safetensors`` (or its shards) or
  ``pytorch_model.bin``, with ``trainer_state.json`` (``epoch``, ``global_step``, ``log_history``) when the
  Trainer saved it.

:func:`ordered_checkpoints` puts a folder's checkpoints in training order from their names, and refuses names
it cannot order before anything is read. :func:`fit_state` matches a state dict to a model, refusing with the
first mismatched key.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

#: File suffixes that hold a checkpoint.
CHECKPOINT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors")
#: The weight files of a Hugging Face checkpoint folder, in the order they are looked for.
HF_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
#: train_metrics columns a checkpoint's own records may hold.
RECORD_NAMES = ("train_loss", "train_acc", "val_loss", "val_acc", "lr")
#: Hugging Face log_history names -> train_metrics columns.
HF_LOG_NAMES = {"eval_loss": "val_loss", "eval_accuracy": "val_acc", "loss": "train_loss", "learning_rate": "lr"}
_NUMBER = re.compile(r"(epoch|step|checkpoint)[=_-]*(\d+)", re.IGNORECASE)
ORDER_FIX = "give the training order explicitly with --order FILE1,FILE2,... (names inside the folder)"


class CheckpointError(ValueError):
    """A checkpoint folder, file or state that cannot be used: the message names the file and the fix."""


@dataclass
class Checkpoint:
    """One saved state of the run, as read.

    Attributes
    ----------
    path : the file or folder.
    state : the model's weights (keys as saved).
    epoch : the epochs completed at the save, where the checkpoint says so (None: it does not).
    step : the optimiser steps completed, where known.
    records : train_metrics values the checkpoint itself holds (a subset of :data:`RECORD_NAMES`).
    """

    path: Path
    state: dict
    epoch: int | None = None
    step: int | None = None
    records: dict = field(default_factory=dict)


def is_checkpoint(path: Path) -> bool:
    """A file with a checkpoint suffix, or a folder holding Hugging Face weights."""
    if path.is_dir():
        return any((path / name).exists() for name in HF_WEIGHTS)
    return path.suffix in CHECKPOINT_SUFFIXES


def name_number(name: str) -> tuple[str, int] | None:
    """("epoch", n) or ("step", n) from a checkpoint's name (``epoch=3-step=40.ckpt``: epoch 3;
    ``checkpoint-1200``: step 1200); None when the name holds neither."""
    found = {k.lower(): int(v) for k, v in _NUMBER.findall(name)}
    if "epoch" in found:
        return "epoch", found["epoch"]
    if "step" in found or "checkpoint" in found:
        return "step", found.get("step", found.get("checkpoint"))
    return None


def ordered_checkpoints(folder: str | Path, order: list[str] | None = None) -> list[Path]:
    """The checkpoints of ``folder`` in training order: ``order`` (names inside the folder), else by the epoch or
    step in their names.

    Raises
    ------
    CheckpointError
        The folder holds no checkpoint; a name in ``order`` is not there; names without an epoch or step, names
        that mix epochs and steps, or two with one number (each list names the files and says ``--order``).
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise CheckpointError(f"--checkpoints {str(folder)!r} is not a folder; give the folder the checkpoints are in")
    if order:
        paths = [root / name for name in order]
        absent = [p.name for p in paths if not p.exists()]
        if absent:
            raise CheckpointError(f"--order names {', '.join(absent)}, not in {root}; give names of files or folders "
                                  "inside --checkpoints")
        if len(set(paths)) != len(paths):
            raise CheckpointError(f"--order names a checkpoint twice ({', '.join(order)}); name each once")
        return paths
    found = sorted(p for p in root.iterdir() if is_checkpoint(p))
    if not found:
        raise CheckpointError(f"{root} holds no checkpoint ({', '.join(CHECKPOINT_SUFFIXES)} files, or folders with "
                              f"{' or '.join(HF_WEIGHTS)}); point --checkpoints at the folder they are in")
    numbers = {p: name_number(p.name) for p in found}
    unparsed = [p.name for p, n in numbers.items() if n is None]
    if unparsed:
        raise CheckpointError(f"cannot tell the training order of {', '.join(unparsed)} (no epoch or step in the "
                              f"name, such as epoch=3.ckpt, ckpt_epoch_003.pt or checkpoint-1200); {ORDER_FIX}")
    kinds = {n[0] for n in numbers.values()}
    if len(kinds) > 1:
        raise CheckpointError(f"the names of {', '.join(p.name for p in found)} mix epochs and steps, so their order "
                              f"is ambiguous; {ORDER_FIX}")
    by_number: dict[int, list[str]] = {}
    for p, (_, n) in numbers.items():
        by_number.setdefault(n, []).append(p.name)
    clashes = [names for names in by_number.values() if len(names) > 1]
    if clashes:
        raise CheckpointError(f"{' and '.join(clashes[0])} carry the same {kinds.pop()} number, so their order is "
                              f"ambiguous; {ORDER_FIX}")
    return sorted(found, key=lambda p: numbers[p][1])


def _number(value) -> float | None:
    """A finite float from a record value (a tensor or a number), else None."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(float(value)):
        return float(value)
    return None


def optimizer_lr(state) -> float | None:
    """The first parameter group's lr of an optimiser state dict, when it is one."""
    try:
        return _number(state["param_groups"][0]["lr"])
    except (KeyError, IndexError, TypeError):
        return None


def _weights(saved, path: Path) -> dict:
    """The tensors of a saved state dict: the dict itself or its ``model`` / ``state_dict`` entry."""
    for key in ("state_dict", "model"):
        if isinstance(saved, dict) and isinstance(saved.get(key), dict):
            saved = saved[key]
            break
    if not isinstance(saved, dict) or not saved or not all(isinstance(v, torch.Tensor) for v in saved.values()):
        raise CheckpointError(f"{path} holds no state dict (a dict of tensors, bare or under 'model' or "
                              "'state_dict'); save model.state_dict() (or give --order without this file)")
    return saved


def read_lightning(saved: dict, path: Path) -> Checkpoint:
    """A Lightning checkpoint: weights, epochs completed (its 0-based ``epoch`` + 1), step, lr, monitored score."""
    records = {}
    lr = optimizer_lr((saved.get("optimizer_states") or [None])[0])
    if lr is not None:
        records["lr"] = lr
    for key, value in (saved.get("callbacks") or {}).items():
        if str(key).startswith("ModelCheckpoint") and isinstance(value, dict) and value.get("monitor") in RECORD_NAMES:
            score = _number(value.get("current_score"))
            if score is not None:
                records[value["monitor"]] = score
    epoch = saved.get("epoch")
    return Checkpoint(path, _weights(saved, path), None if epoch is None else int(epoch) + 1,
                      saved.get("global_step"), records)


def read_torch_file(path: Path) -> Checkpoint:
    """A ``torch.save`` file or a Lightning ``.ckpt`` (told apart by Lightning's version key)."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle of other objects, or not a torch file at all
        raise CheckpointError(f"{path} cannot be read as a torch checkpoint of tensors and numbers (torch.load with "
                              f"weights_only=True: {type(err).__name__}: {str(err)[:200]}); if it pickles other "
                              "objects and you trust it, re-save only its state dict (torch.save(state_dict, ...))"
                              ) from None
    if isinstance(saved, dict) and "pytorch-lightning_version" in saved:
        return read_lightning(saved, path)
    records, step = {}, None
    if isinstance(saved, dict) and not all(isinstance(v, torch.Tensor) for v in saved.values()):
        records = {k: v for k in RECORD_NAMES if (v := _number(saved.get(k))) is not None}
        if "lr" not in records and optimizer_lr(saved.get("optimizer")) is not None:
            records["lr"] = optimizer_lr(saved.get("optimizer"))
        step = _number(saved.get("global_step", saved.get("step")))
    return Checkpoint(path, _weights(saved, path), step=None if step is None else int(step), records=records)


def load_file(path: Path) -> dict:
    """The tensors of a ``.safetensors`` file."""
    try:
        from safetensors.torch import load_file as load_safetensors
    except ImportError:
        raise CheckpointError(f"{path} is a safetensors file and this install lacks safetensors: pip install "
                              "'dynstudy[hf]' (or pip install safetensors)") from None
    try:
        return load_safetensors(path)
    except Exception as err:  # a file cut short, or not safetensors at all
        raise CheckpointError(f"{path} cannot be read as safetensors ({type(err).__name__}: {str(err)[:200]}); "
                              "give whole checkpoint files") from None


def hf_weights(folder: Path) -> dict:
    """The tensors of a Hugging Face checkpoint folder (safetensors, its shards, or pytorch_model.bin)."""
    if (folder / "model.safetensors").exists():
        return load_file(folder / "model.safetensors")
    if (folder / "model.safetensors.index.json").exists():
        index = json.loads((folder / "model.safetensors.index.json").read_text())
        state = {}
        for shard in sorted(set(index["weight_map"].values())):
            state.update(load_file(folder / shard))
        return state
    return read_torch_file(folder / "pytorch_model.bin").state


def hf_records(log_history: list[dict], step: int, after: int) -> dict:
    """train_metrics values logged at optimiser steps in (``after``, ``step``]: the last of each name."""
    records = {}
    for entry in log_history:
        if after < entry.get("step", -1) <= step:
            for name, column in HF_LOG_NAMES.items():
                value = _number(entry.get(name))
                if value is not None:
                    records[column] = value
    return records


def read_hf_folder(folder: Path) -> tuple[Checkpoint, list[dict]]:
    """A Hugging Face checkpoint folder and its Trainer's log history (empty without ``trainer_state.json``);
    its epoch is the epoch the save falls in (the Trainer's fractional epoch, rounded up)."""
    state_file = folder / "trainer_state.json"
    trainer_state = json.loads(state_file.read_text()) if state_file.exists() else {}
    epoch, step = trainer_state.get("epoch"), trainer_state.get("global_step")
    ckpt = Checkpoint(folder, hf_weights(folder), None if epoch is None else math.ceil(round(epoch, 6)), step)
    return ckpt, trainer_state.get("log_history") or []


def read_checkpoint(path: Path, previous_step: int = -1) -> Checkpoint:
    """Read one checkpoint (a file or a Hugging Face folder); ``previous_step``: the step of the checkpoint
    before it, so a Trainer's records are those logged since."""
    if path.is_dir():
        ckpt, history = read_hf_folder(path)
        if ckpt.step is not None:
            ckpt.records = hf_records(history, ckpt.step, previous_step)
        return ckpt
    if path.suffix == ".safetensors":
        return Checkpoint(path, load_file(path))
    return read_torch_file(path)


def _key_prefixes(keys) -> list[str]:
    """The dotted prefixes of the first key (``model.net.fc.weight`` -> '', 'model.', 'model.net.', ...)."""
    parts = next(iter(keys)).split(".")
    return [".".join(parts[:i]) + "." if i else "" for i in range(len(parts))]


def fit_state(model: torch.nn.Module, state: dict, path: Path) -> dict:
    """``state`` with the prefix that makes its keys the model's removed (a Lightning module's ``model.``, a
    wrapper's ``net.``); CheckpointError naming the file and the first mismatched key when none does."""
    own = model.state_dict()
    if not state:
        raise CheckpointError(f"{path} holds no weights; point --checkpoints at a folder of saved model states")
    best = max(_key_prefixes(state), key=lambda p: sum(k[len(p):] in own for k in state if k.startswith(p)))
    stripped = {(k[len(best):] if k.startswith(best) else k): v for k, v in state.items()}
    for key in own:
        if key not in stripped:
            raise CheckpointError(f"{path} does not fit the model: missing key {key!r}; give the --model the "
                                  "checkpoint was trained as (and its --dataset's classes and channels)")
        if stripped[key].shape != own[key].shape:
            raise CheckpointError(f"{path} does not fit the model: key {key!r} has shape {tuple(stripped[key].shape)}"
                                  f", the model's {tuple(own[key].shape)}; give the --model and --dataset it was "
                                  "trained with")
    extra = [k for k in stripped if k not in own]
    if extra:
        raise CheckpointError(f"{path} does not fit the model: unexpected key {extra[0]!r}; give the --model the "
                              "checkpoint was trained as")
    return stripped
