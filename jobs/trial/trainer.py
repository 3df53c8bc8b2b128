"""One trial: train one model on one dataset with one seed, capturing signals.

:class:`Trial` is one run. What it trains with (data, network, optimiser,
schedule) and what records it (a :class:`dynstudy.jobs.capture.recorder.Recorder`:
the probe, the writer, the run's row) are built from its trial config when it is made;
where its loop stands (epoch, step, best validation loss and accuracy,
early-stopping count; the recorder's capture number and online-dynamics history) is its state, and
:meth:`Trial.state_dict` (that state with the network's, optimiser's,
schedule's and random generators' states) is its checkpoint.
:meth:`Trial.run` reads top to bottom::

    start: restore the checkpoint (load_state_dict), or start afresh: clear the
           run's files, check that the capture fits, capture the untrained net (capture 0)
    for epoch in (checkpoint's epoch + 1)..train.epochs:
        train one epoch over shuffled, augmented batches (capturing every N steps if asked:
            the step probe, kept on the device and written as one file at the epoch's end)
        validate; step the LR schedule; capture the probe set (kind "epoch")
        compute H_eff, M and the Psi-volatility trigger online from that capture
        write train_metrics for this epoch, then report it with the checkpoint
        stop on the volatility rule (opt-in), early-stopping patience, max epochs or divergence
    finish: the run's final row; the final metrics

The fast path (``bench/bench_gpu.py`` measures it): the data live on the
training device (:mod:`dynstudy.jobs.data.device_data`), batches are shuffled and
augmented there, per-step loss and accuracy stay on the device until the
epoch's end (:mod:`dynstudy.jobs.trial.loop`), bf16 autocast and channels_last on CUDA,
``train.compile`` compiles once per process and model shape
(:mod:`dynstudy.jobs.trial.compile_cache`). A capture's probe forward runs in the trial and
its pooled channels come to the host in one transfer (step captures: one per
epoch); the Parquet writes go to the recorder's background thread
(:mod:`dynstudy.jobs.capture.async_writer`).

Every write is idempotent per (run, epoch/capture), and the writer is
flushed before each checkpoint is reported, so the checkpoint comes after
the epoch's files: a trial killed at any point (writes still queued
included) and resumed from its last checkpoint rewrites at most one epoch
and never duplicates a row.

The trial reads its config's sections as :func:`dynstudy.study.grid.expand`
writes them, complete; :func:`dynstudy.jobs.trial.config.check_config` refuses
a config that lacks a field before anything is built.

``run_trial`` takes a plain dict (what Ray Tune passes) and a ``session`` that
restores and saves checkpoints: :class:`dynstudy.jobs.trial.session.TuneSession` inside Ray
Tune, :class:`dynstudy.jobs.trial.session.LocalSession` without Ray.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
import torch

from dynstudy.jobs.capture.online import OnlineStop
from dynstudy.jobs.capture.recorder import Recorder
from dynstudy.jobs.data.device_data import dataset, device_dataset
from dynstudy.jobs.models.registry import ModelDef, build
from dynstudy.jobs.trial import compile_cache, faults
from dynstudy.jobs.trial.config import check_config
from dynstudy.jobs.trial.loop import EpochStats, evaluate, train_epoch


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return the generator that orders the data."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def make_optimizer(params, opt: dict) -> torch.optim.Optimizer:
    if opt["name"] == "sgd":
        return torch.optim.SGD(params, lr=opt["lr"], momentum=opt["momentum"], weight_decay=opt["weight_decay"])
    if opt["name"] == "adam":
        return torch.optim.Adam(params, lr=opt["lr"], weight_decay=opt["weight_decay"])
    if opt["name"] == "adamw":
        return torch.optim.AdamW(params, lr=opt["lr"], weight_decay=opt["weight_decay"])
    raise ValueError(f"optimizer.name={opt['name']!r}; allowed: sgd, adam, adamw")


def make_scheduler(optimizer, train: dict):
    if train["scheduler"] == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", patience=train["plateau_patience"], factor=train["plateau_factor"])
    if train["scheduler"] == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=train["epochs"])
    return None


class Network(NamedTuple):
    """A trial's network, as built for its device."""

    model: torch.nn.Module  # the module: its parameters, state_dict and train/eval mode
    forward: Callable  # what the batches go through (the compiled module under train.compile)
    stages: tuple  # its capture stages
    input_size: int | None  # the side its inputs are resized to (None: the data's own)
    amp: bool  # bf16 autocast and channels_last


def build_network(config: dict, data, device: torch.device) -> Network:
    """The trial's network on ``device`` (draws its initial weights from torch's global generator)."""
    train = config["train"]
    md = ModelDef.of(config)
    built = build(md, data.num_classes, in_chans=data.in_chans, image_size=data.image_size,
                  stem=train["stem"], pretrained=train["pretrained"])
    size = built.input_size if built.input_size and built.input_size != data.image_size else None
    amp = device.type == "cuda" and train["amp"]
    model = built.module.to(device)
    if amp:
        model = model.to(memory_format=torch.channels_last)
    forward = model
    if train["compile"]:
        shape = (md.key, train["stem"], train["pretrained"], data.num_classes, data.in_chans, size or data.image_size,
                 str(device), amp)
        model, forward = compile_cache.compiled(shape, model)
    return Network(model, forward, built.stages, size, amp)


def make_recorder(config: dict, net: Network, data, ddata) -> Recorder:
    """The trial's recorder: its probe set is the first ``capture.probe_size`` validation images, on the device."""
    n = config["capture"]["probe_size"]
    return Recorder.for_run(config, net.model, ddata.val.x[:n], data.val.y[:n], net.stages, mean=data.mean,
                            std=data.std, input_size=net.input_size)


class Trial:
    """One run: built from its trial config, trained by :meth:`run`, checkpointed by :meth:`state_dict`.

    What the run records (captures, metrics, its row) goes through its :class:`Recorder`.

    Parameters
    ----------
    config : a complete trial config (:mod:`dynstudy.jobs.trial.config` names the fields it must hold).
    session : restores and saves checkpoints (:mod:`dynstudy.jobs.trial.session`).

    Attributes
    ----------
    epoch : int
        The epoch the loop is in; between epochs, the epochs completed.
    step : int
        Optimiser steps taken.
    best_val_loss, best_val_acc : float
        The lowest validation loss and the highest validation accuracy so far.
    best_epoch : int
        The epoch of ``best_val_acc``.
    bad_epochs : int
        Epochs since the validation loss last fell (early stopping's count).
    recorder : Recorder
        Captures the probe set and writes the run's files and row; its state holds how the run ended (a
        checkpoint of the run's last epoch holds it, so a trial restored from it ends at once).
    metrics : dict
        The last completed epoch's metrics.
    epoch_capture_s : float
        Seconds this epoch has spent capturing.
    """

    def __init__(self, config: dict, session):
        check_config(config)
        self.config, self.session = config, session
        self.run_id = config["run_id"]
        torch.set_num_threads(config["train"]["threads"])
        self.device = torch.device("cuda" if torch.cuda.is_available() and config["use_gpu"] else "cpu")
        ds = config["dataset"]
        key = (ds["name"], ds["root"], ds["download"], ds["n_train"], ds["n_val"], ds["image_size"])
        self.data = dataset(*key)
        self.ddata = device_dataset(*key, str(self.device))
        self.generator = seed_everything(config["seed"])  # orders the batches; seeded before the weights are drawn
        self.net = build_network(config, self.data, self.device)
        self.optimizer = make_optimizer(self.net.model.parameters(), config["optimizer"])
        self.scheduler = make_scheduler(self.optimizer, config["train"])
        self.recorder = make_recorder(config, self.net, self.data, self.ddata)
        self.stop_check = OnlineStop.from_config(config)  # train.stop: the user's stopping rule, or None
        # where the loop stands: with the tensors', generators' and recorder's states, the checkpoint
        self.epoch, self.step = 0, 0
        self.best_val_loss, self.best_val_acc, self.best_epoch, self.bad_epochs = math.inf, -1.0, 0, 0
        self.metrics: dict = {}
        self.epoch_capture_s = 0.0

    @property
    def status(self) -> str | None:
        """How the run ended (None while it goes on)."""
        return self.recorder.status

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict:
        """Train from the checkpoint (or from the start) until the run stops; return its final metrics.

        A failure is recorded in the run's row and raised again, so that Ray
        Tune retries the trial from its last checkpoint.
        """
        try:
            self.start()
        except BaseException:
            self.recorder.release()
            raise
        self.net.model.train()
        try:
            while self.status is None and self.epoch < self.config["train"]["epochs"]:
                self.run_epoch()
            return self.finish()
        except Exception as err:
            self.recorder.fail(f"{type(err).__name__}: {err}")
            raise
        except BaseException:
            self.recorder.release()
            raise

    def start(self) -> None:
        """Resume from the session's checkpoint, or start afresh: check that the capture fits, capture the
        untrained network."""
        state = self.session.restore()
        if state is not None:
            self.load_state_dict(state)
        self.recorder.start()
        if state is None:
            problem = self.recorder.fit_problem()
            if problem:
                self.recorder.fail(f"ValueError: {problem}")
                raise ValueError(problem)
            self.recorder.capture(epoch=0)

    def run_epoch(self) -> None:
        """Train, validate and capture one epoch, write it and report it with the checkpoint (or stop the run)."""
        self.epoch += 1
        self.epoch_capture_s = 0.0
        t0 = time.perf_counter()
        stats = self.train_one_pass()
        train_s = time.perf_counter() - t0 - self.epoch_capture_s
        if stats.diverged_at is not None:  # a non-finite loss inside the epoch: the epoch was not completed
            self.epoch -= 1
            self.recorder.mark_end("diverged", "diverged")
            return
        lr = self.optimizer.param_groups[0]["lr"]
        val_loss, val_acc = self.validate()
        captured = self.recorder.capture(epoch=self.epoch, step=self.step)
        self.epoch_capture_s += captured.seconds
        logged = {"train_loss": stats.loss_sum / max(stats.seen, 1), "train_acc": stats.correct / max(stats.seen, 1),
                  "val_loss": val_loss, "val_acc": val_acc, "lr": lr, "epoch_time_s": train_s,
                  "capture_time_s": self.epoch_capture_s}
        online = self.recorder.log(epoch=self.epoch, step=self.step, **logged)
        self.metrics = {"epoch": self.epoch, "step": self.step, **logged, **online}
        self.update_best(val_loss, val_acc)
        if not (math.isfinite(val_loss) and captured.finite):
            self.recorder.mark_end("diverged", "diverged")
            return
        self.report_epoch(self.stop_rule())

    def train_one_pass(self) -> EpochStats:
        """One pass over the training batches, with its step captures; a divergence ends it at its step."""
        batch_size, first_step = self.config["train"]["batch_size"], self.step
        batches = self.ddata.train_batches(batch_size, self.generator, self.net.input_size, self.net.amp)
        stats = train_epoch(self.net.forward, self.optimizer, batches, -(-len(self.ddata.train) // batch_size),
                            self.device, self.net.amp, self.after_step)
        if stats.diverged_at is not None:  # training stopped at that step: what came after it is dropped
            self.step = first_step + stats.diverged_at
            self.recorder.discard_steps_after(self.step)
        return stats

    def after_step(self) -> None:
        """After each optimiser step: count it, fire a drill fault if one is set, capture if one is due."""
        self.step += 1
        faults.maybe_inject(epoch=self.epoch, step=self.step, run_id=self.run_id)
        every = self.config["capture"]["every_n_steps"]
        if every and self.step % every == 0:
            self.epoch_capture_s += self.recorder.capture(epoch=self.epoch, step=self.step, kind="step").seconds

    def validate(self) -> tuple[float, float]:
        """Validation loss and accuracy; the LR schedule steps on them."""
        batches = self.ddata.val_batches(self.config["train"]["batch_size"], self.net.input_size, self.net.amp)
        val_loss, val_acc = evaluate(self.net.forward, self.net.model, batches, len(self.ddata.val), self.device,
                                     self.net.amp)
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(val_loss)
        elif self.scheduler is not None:
            self.scheduler.step()
        return val_loss, val_acc

    def update_best(self, val_loss: float, val_acc: float) -> None:
        """The best validation loss (and early stopping's count of epochs without it) and accuracy so far."""
        if val_loss < self.best_val_loss:
            self.best_val_loss, self.bad_epochs = val_loss, 0
        else:
            self.bad_epochs += 1
        if val_acc > self.best_val_acc:
            self.best_val_acc, self.best_epoch = val_acc, self.epoch

    def stop_rule(self) -> str | None:
        """Why the run ends after this epoch: the volatility rule, early stopping or max epochs (None: it goes on)."""
        train = self.config["train"]
        patience = train["early_stopping_patience"]
        if train["volatility_stopping"] and self.metrics["volatility_trigger"] is not None:
            return "volatility"
        if self.stop_check is not None and self.stop_check.stops(
                self.epoch, self.metrics["val_loss"], self.metrics["val_acc"], self.metrics["h_eff"],
                self.metrics["metastability"]):
            return self.stop_check.rule
        if patience is not None and self.bad_epochs >= patience:
            return "early_stopping"
        if self.epoch >= train["epochs"]:
            return "max_epochs"
        return None

    def report_epoch(self, stop_reason: str | None) -> None:
        """Write the epoch's files and the run's row, then report the epoch with the checkpoint.

        The last epoch's checkpoint records that the run finished, and its row says so before the report: Tune
        may end the trial as soon as it has the report, or restore it from that checkpoint later.
        """
        if stop_reason is not None:
            self.recorder.mark_end("finished", stop_reason)
        state = self.state_dict()  # the recorder's state: once the epoch's files and the row are on the store
        self.session.report({**self.metrics, "run_id": self.run_id, "best_val_acc": self.best_val_acc,
                             "last": self.status is not None}, state)

    def finish(self) -> dict:
        """Record how the run ended where its row does not say it yet, close the writer; return the final
        metrics."""
        if self.status is None:  # the loop ran out of epochs without a stop rule (train.epochs lowered)
            self.recorder.mark_end("finished", "max_epochs")
        final = {**self.metrics, "run_id": self.run_id, "status": self.status,
                 "stop_reason": self.recorder.stop_reason, "best_val_acc": self.best_val_acc}
        self.recorder.finish()
        if self.status != "finished":
            self.session.report({**final, "last": True}, None)
        return final

    # ------------------------------------------------------------------ the checkpoint

    def state_dict(self) -> dict:
        """The checkpoint: all a resumed trial needs to go on exactly as this one would (the recorder's part
        made once its files are on the store)."""
        return {
            "model": self.net.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": {"batches": self.generator.get_state(), "torch": torch.get_rng_state(),
                    "numpy": np.random.get_state(), "python": random.getstate()},
            "epoch": self.epoch,
            "step": self.step,
            "best_val_loss": self.best_val_loss,
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "stop": self.stop_check.state_dict() if self.stop_check is not None else None,
            "recorder": self.recorder.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint :meth:`state_dict` made."""
        self.net.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"]
        self.generator.set_state(rng["batches"])
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.best_val_loss, self.best_val_acc = state["best_val_loss"], state["best_val_acc"]
        self.best_epoch, self.bad_epochs = state["best_epoch"], state["bad_epochs"]
        if self.stop_check is not None:
            self.stop_check.load_state_dict(state["stop"])
        self.recorder.load_state_dict(state["recorder"] if "recorder" in state else recorder_state(state, self.run_id))


def recorder_state(state: dict, run_id: str) -> dict:
    """The recorder's state in a trial checkpoint that holds its fields at the top level (one a dynstudy without
    :class:`Recorder` made), as :meth:`Recorder.state_dict` makes it."""
    return {"run_id": run_id, "next_capture": state["next_capture"], "epoch": state["epoch"], "step": state["step"],
            "last_captured_epoch": state["epoch"], "last_step_captured": state["step"], "online": state["online"],
            "status": state["status"], "stop_reason": state["stop_reason"]}


def run_trial(config: dict, session) -> dict:
    """Train one run as ``config`` describes; return its final metrics.

    Parameters
    ----------
    config : a trial config as :func:`dynstudy.study.grid.expand` writes it (run_id, study, store, model,
        seed, use_gpu and the dataset, optimizer, train, capture and analysis sections).
    session : restores and saves the trial's checkpoints (:mod:`dynstudy.jobs.trial.session`).
    """
    return Trial(config, session).run()
