"""A Hugging Face ``transformers.TrainerCallback`` that records a ``Trainer.train`` through a
:class:`~dynstudy.jobs.capture.recorder.Recorder`.

Needs the ``hf`` extra (``pip install 'dynstudy[hf]'``)::

    from dynstudy.jobs.capture.hf import RecorderTrainerCallback
    args = TrainingArguments("out", eval_strategy="epoch", save_strategy="epoch", ...)
    trainer = Trainer(model, args, train_dataset=..., eval_dataset=..., compute_metrics=accuracy,
                      callbacks=[RecorderTrainerCallback("store", run_id="r0", probe=(x, y), stages=[...])])
    trainer.train()                                  # or trainer.train(resume_from_checkpoint=True)

The recorder captures the model (the probe images go in as its first argument, ``pixel_values`` for a vision
model): the untrained network when training begins, every ``every_n_steps`` optimiser steps when given, and
after each epoch's evaluation (``eval_strategy="epoch"``), where it also logs the epoch: train_loss (the
Trainer's last logged ``loss``), val_loss (``eval_loss``), val_acc (``eval_accuracy``: a ``compute_metrics``
that returns ``accuracy``), lr. Its state for that step is then saved under
``<output_dir>/dynstudy-recorder/``, before the Trainer's checkpoint of the step, and a training resumed from
a checkpoint restores it, so every capture is there once. The end of training finishes the run.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from dynstudy.jobs.models.tv_compat import ensure_torchvision

ensure_torchvision()  # transformers may import torchvision

from transformers import TrainerCallback  # noqa: E402

from dynstudy.jobs.capture.recorder import Recorder  # noqa: E402


class RecorderTrainerCallback(TrainerCallback):
    """Records a Hugging Face Trainer's training into a dynstudy store.

    Parameters
    ----------
    store, run_id, probe, stages, seed, config : as for :class:`~dynstudy.jobs.capture.recorder.Recorder`; the
        model is the Trainer's.
    every_n_steps : a step capture every that many optimiser steps (None: none).
    **recorder_kw : the recorder's other keywords (model_name, dataset, optimizer, capture, analysis, ...).
    """

    def __init__(self, store: str, run_id: str, probe, stages=None, seed: int = 0, config: dict | None = None, *,
                 every_n_steps: int | None = None, **recorder_kw):
        self.args = dict(store=store, run_id=run_id, probe=probe, stages=stages, seed=seed, config=config,
                         **recorder_kw)
        self.every_n_steps = every_n_steps
        self.recorder: Recorder | None = None
        self.train_loss: float | None = None
        self.lr: float | None = None

    def state_path(self, output_dir: str, step: int) -> Path:
        """Where the recorder's state at optimiser step ``step`` is kept."""
        return Path(output_dir) / "dynstudy-recorder" / f"{self.args['run_id']}-step{step:08d}.pt"

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if str(args.eval_strategy) not in ("epoch", "IntervalStrategy.EPOCH"):
            raise ValueError(f"RecorderTrainerCallback records each epoch after its evaluation: set "
                             f"TrainingArguments(eval_strategy='epoch') (got {args.eval_strategy!r})")
        self.recorder = Recorder(model=model, **self.args)
        if state.global_step == 0:
            self.recorder.capture(epoch=0)
            return
        path = self.state_path(args.output_dir, state.global_step)
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: the checkpoint at step {state.global_step} was saved without "
                                    "the recorder's state; resume from the checkpoint before it")
        self.recorder.load_state_dict(torch.load(path, weights_only=False))

    def on_step_end(self, args, state, control, **kwargs):
        step = state.global_step
        if self.every_n_steps and step % self.every_n_steps == 0 and step > self.recorder.last_step_captured:
            self.recorder.capture(step=step)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.train_loss, self.lr = float(logs["loss"]), logs.get("learning_rate")

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        metrics, epoch = metrics or {}, round(state.epoch or 0)
        if epoch <= self.recorder.last_captured_epoch:
            return
        self.recorder.capture(epoch=epoch, step=state.global_step)
        self.recorder.log(epoch=epoch, step=state.global_step, train_loss=self.train_loss, lr=self.lr,
                          val_loss=metrics.get("eval_loss"), val_acc=metrics.get("eval_accuracy"))
        path = self.state_path(args.output_dir, state.global_step)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.recorder.state_dict(), tmp)  # the store holds everything up to here
        os.replace(tmp, path)

    def on_train_end(self, args, state, control, **kwargs):
        stopped = state.max_steps and state.global_step < state.max_steps
        self.recorder.finish("finished", "early_stopping" if stopped else "max_epochs")
