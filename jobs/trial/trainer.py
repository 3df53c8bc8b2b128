"""One trial: train one model on one dataset with one seed, capturing signals.

:class:`Trial` is one run. What it trains with (data, network, optimiser,
schedule, probe, writer) is built from its trial config when it is made;
where its loop stands (epoch, step, capture number, best validation loss and
accuracy, early-stopping count, online-dynamics history) is its state, and
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
epoch); the Parquet writes go to a background thread
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

import json
import math
import platform
import random
import socket
import time
from collections.abc import Callable
from datetime import datetime, timezone
from functools import partial
from typing import NamedTuple

import numpy as np
import torch

from dynstudy.jobs.capture.async_writer import AsyncWriter
from dynstudy.jobs.capture.fit_check import capture_problem
from dynstudy.jobs.capture.online import OnlineDynamics, OnlineStop
from dynstudy.jobs.capture.probe import (
    ActivationProbe,
    DeviceCapture,
    capture_columns,
    captures_to_host,
    signals_finite,
)
from dynstudy.jobs.data.device_data import dataset, device_dataset
from dynstudy.jobs.models.registry import ModelDef, build, stage_widths
from dynstudy.jobs.trial import compile_cache, faults
from dynstudy.jobs.trial.config import check_config
from dynstudy.jobs.trial.loop import EpochStats, evaluate, train_epoch
from dynstudy.store_contract.files import read_run_row, remove_run_files, remove_write_leftovers, write_rows
from dynstudy.store_contract.schemas import TRAIN_METRICS, config_identity


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


def software_versions() -> dict:
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__}


def _now():
    return datetime.now(timezone.utc)


def count_attempt(store: str, run_id: str, config: dict) -> int:
    """This start's number: one more than the run's row says, if that row has the same settings."""
    old = read_run_row(store, run_id)
    if old is None or config_identity(old["config"] or "{}") != config_identity(config):
        return 1
    return (old.get("attempts") or 1) + 1


def check_fits(config: dict, data, image_size: int) -> None:
    """Refuse a probe or a channel count larger than the dataset or a stage offers (never shrink silently)."""
    widths = stage_widths(ModelDef.of(config), data.in_chans, image_size, config["train"]["stem"])
    problem = capture_problem(config["capture"], data.name, len(data.val.y), widths)
    if problem:
        raise ValueError(problem)


class StepCapture(NamedTuple):
    """An every-N-step capture, on the device until its epoch's end."""

    capture: DeviceCapture
    index: int  # the capture's number
    epoch: int
    step: int


def steps_columns(captures: list[StepCapture], labels: np.ndarray, run_id: str) -> dict:
    """The columns of an epoch's step captures, one transfer for all."""
    signals = captures_to_host([c.capture for c in captures])
    parts = [capture_columns(sig, labels, run_id, c.index, c.epoch, c.step, "step")
             for sig, c in zip(signals, captures)]
    return {k: np.concatenate([c[k] for c in parts]) for k in parts[0]}


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


def make_probe(config: dict, net: Network, data, ddata) -> ActivationProbe:
    """The probe set of the trial: the first ``capture.probe_size`` validation images, on the device."""
    cap = config["capture"]
    stored = cap["store_channels"]
    keep = None if stored == "all" else (stored or cap["channels_per_stage"])  # null: the metric channels
    n = cap["probe_size"]
    return ActivationProbe(net.model, net.stages, ddata.val.x[:n], data.val.y[:n], data.mean, data.std, keep,
                           config["seed"], redraw=cap["redraw_channels"], batch_size=cap["batch_size"],
                           input_size=net.input_size)


def run_row(config: dict, device: torch.device) -> dict:
    """The runs-table columns a start fixes (:meth:`Trial.run_columns` adds status, counts and times)."""
    return {"run_id": [config["run_id"]], "study": [config["study"]], "model": [config["model"]],
            "dataset": [config["dataset"]["name"]], "optimizer": [config["optimizer"]["label"]],
            "seed": [config["seed"]], "config": [json.dumps(config, sort_keys=True)],
            "versions": [json.dumps(software_versions())], "device": [str(device)],
            "hostname": [socket.gethostname()], "started_at": [_now()]}


class Trial:
    """One run: built from its trial config, trained by :meth:`run`, checkpointed by :meth:`state_dict`.

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
    next_capture : int
        The number the next capture gets.
    best_val_loss, best_val_acc : float
        The lowest validation loss and the highest validation accuracy so far.
    best_epoch : int
        The epoch of ``best_val_acc``.
    bad_epochs : int
        Epochs since the validation loss last fell (early stopping's count).
    online : OnlineDynamics
        H_eff, M and accuracy of every epoch so far.
    attempts : int
        This start's number (from the run's row, not the checkpoint).
    status, stop_reason : str or None
        How the run ended (None while it goes on); a checkpoint of the run's last epoch holds them, so a trial
        restored from it ends at once instead of training on.
    recorded : str or None
        The status the run's row holds from this start (None: none written yet).
    metrics : dict
        The last completed epoch's metrics.
    epoch_capture_s : float
        Seconds this epoch has spent capturing.
    step_captures : list of StepCapture
        This epoch's step captures, written as one file at the epoch's end.
    """

    def __init__(self, config: dict, session):
        check_config(config)
        self.config, self.session = config, session
        self.run_id, self.store = config["run_id"], config["store"]
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
        self.probe = make_probe(config, self.net, self.data, self.ddata)
        self.online = OnlineDynamics.from_config(config)
        self.stop_check = OnlineStop.from_config(config)  # train.stop: the user's stopping rule, or None
        self.run_row = run_row(config, self.device)
        self.writer = AsyncWriter(self.store)
        # where the loop stands: with the tensors' and generators' states, the checkpoint
        self.epoch, self.step, self.next_capture = 0, 0, 0
        self.best_val_loss, self.best_val_acc, self.best_epoch, self.bad_epochs = math.inf, -1.0, 0, 0
        # this start
        self.attempts = 1
        self.status: str | None = None
        self.stop_reason: str | None = None
        self.recorded: str | None = None
        self.metrics: dict = {}
        # this epoch
        self.epoch_capture_s = 0.0
        self.step_captures: list[StepCapture] = []

    # ------------------------------------------------------------------ the loop

    def run(self) -> dict:
        """Train from the checkpoint (or from the start) until the run stops; return its final metrics.

        A failure is recorded in the run's row and raised again, so that Ray
        Tune retries the trial from its last checkpoint.
        """
        try:
            self.start()
        except BaseException:
            self.writer.close(raise_errors=False)
            raise
        self.net.model.train()
        try:
            while self.status is None and self.epoch < self.config["train"]["epochs"]:
                self.run_epoch()
            return self.finish()
        except Exception as err:
            self.writer.close(raise_errors=False)  # what was queued lands; a writer's own error is already ``err``
            write_rows(self.store, "runs", self.run_id, "run",
                       self.run_columns("failed", "error", f"{type(err).__name__}: {err}"[:2000]))
            raise
        except BaseException:
            self.writer.close(raise_errors=False)
            raise

    def start(self) -> None:
        """Resume from the session's checkpoint, or start afresh."""
        state = self.session.restore()
        self.attempts = count_attempt(self.store, self.run_id, self.config)
        if state is None:
            self.start_afresh()
        else:
            remove_write_leftovers(self.store, self.run_id)  # what the earlier attempt was writing when it died
            self.load_state_dict(state)
            if self.status is None:  # else the checkpoint is of the run's last epoch: finish() records its end
                self.write_run("running")

    def start_afresh(self) -> None:
        """Clear what an earlier attempt wrote, check that the capture fits, capture the untrained network."""
        remove_run_files(self.store, self.run_id)
        self.write_run("running")
        try:
            check_fits(self.config, self.data, self.net.input_size or self.data.image_size)
        except ValueError as err:
            self.write_run("failed", "error", error=f"{type(err).__name__}: {err}")
            self.writer.flush()
            raise
        self.capture("init")

    def run_epoch(self) -> None:
        """Train, validate and capture one epoch, write it and report it with the checkpoint (or stop the run)."""
        self.epoch += 1
        self.epoch_capture_s = 0.0
        t0 = time.perf_counter()
        stats = self.train_one_pass()
        train_s = time.perf_counter() - t0 - self.epoch_capture_s
        if stats.diverged_at is not None:  # a non-finite loss inside the epoch: the epoch was not completed
            self.epoch -= 1
            self.stop("diverged", "diverged")
            return
        lr = self.optimizer.param_groups[0]["lr"]
        val_loss, val_acc = self.validate()
        seconds, finite = self.capture("epoch")
        self.epoch_capture_s += seconds
        self.metrics = {"epoch": self.epoch, "step": self.step, "train_loss": stats.loss_sum / max(stats.seen, 1),
                        "train_acc": stats.correct / max(stats.seen, 1), "val_loss": val_loss, "val_acc": val_acc,
                        "lr": lr, "epoch_time_s": train_s, "capture_time_s": self.epoch_capture_s,
                        **self.online.summary(val_acc)}
        self.writer.submit("train_metrics", self.run_id, f"epoch={self.epoch:06d}",
                           {"run_id": [self.run_id],
                            **{k: [v] for k, v in self.metrics.items() if k in TRAIN_METRICS.names}})
        self.update_best(val_loss, val_acc)
        if not (math.isfinite(val_loss) and finite):
            self.stop("diverged", "diverged")
            return
        self.report_epoch(self.stop_rule())

    def train_one_pass(self) -> EpochStats:
        """One pass over the training batches; queue its step captures; a divergence ends it at its step."""
        batch_size, first_step = self.config["train"]["batch_size"], self.step
        batches = self.ddata.train_batches(batch_size, self.generator, self.net.input_size, self.net.amp)
        stats = train_epoch(self.net.forward, self.optimizer, batches, -(-len(self.ddata.train) // batch_size),
                            self.device, self.net.amp, self.after_step)
        if stats.diverged_at is not None:  # training stopped at that step: what came after it is dropped
            self.step = first_step + stats.diverged_at
            self.step_captures = [c for c in self.step_captures if c.step <= self.step]
        self.epoch_capture_s += self.flush_step_captures()
        return stats

    def after_step(self) -> None:
        """After each optimiser step: count it, fire a drill fault if one is set, capture if one is due."""
        self.step += 1
        faults.maybe_inject(epoch=self.epoch, step=self.step, run_id=self.run_id)
        every = self.config["capture"]["every_n_steps"]
        if every and self.step % every == 0:
            self.epoch_capture_s += self.capture_step()

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
        """Write the run's row, wait for the epoch's files, report the epoch with the checkpoint.

        The last epoch's checkpoint records that the run finished, and its row says so before the report: Tune
        may end the trial as soon as it has the report, or restore it from that checkpoint later.
        """
        if stop_reason is not None:
            self.stop("finished", stop_reason)
        self.write_run(self.status or "running", self.stop_reason)
        self.writer.flush()  # the epoch's files are on the store before its checkpoint is
        self.session.report({**self.metrics, "run_id": self.run_id, "best_val_acc": self.best_val_acc,
                             "last": self.status is not None}, self.state_dict())

    def stop(self, status: str, stop_reason: str) -> None:
        """End the loop: the run's final status and why."""
        self.status, self.stop_reason = status, stop_reason

    def finish(self) -> dict:
        """Record how the run ended where its row does not say it yet, close the writer; return the final
        metrics."""
        if self.status is None:  # the loop ran out of epochs without a stop rule (train.epochs lowered)
            self.stop("finished", "max_epochs")
        final = {**self.metrics, "run_id": self.run_id, "status": self.status, "stop_reason": self.stop_reason,
                 "best_val_acc": self.best_val_acc}
        if self.recorded != self.status:  # a divergence, or a start restored from the run's last checkpoint
            self.write_run(self.status, self.stop_reason)
            self.writer.flush()
        if self.status != "finished":
            self.session.report({**final, "last": True}, None)
        self.writer.close()
        return final

    # ------------------------------------------------------------------ captures

    def capture(self, kind: str) -> tuple[float, bool]:
        """Capture the probe set as capture ``next_capture`` (kind "init" or "epoch"); return (seconds, finite).

        The signals come to the host in one transfer; the writer builds their
        columns and writes them. An epoch's capture feeds the online metrics.
        """
        if not self.config["capture"]["enabled"]:
            return 0.0, True
        t0 = time.perf_counter()
        index = self.next_capture
        signals = self.probe.capture(index)
        self.writer.submit("activations", self.run_id, f"capture={index:06d}",
                           partial(capture_columns, signals, self.probe.labels, self.run_id, index, self.epoch,
                                   self.step, kind))
        finite = signals_finite(signals)
        if kind == "epoch":
            self.online.add(signals, self.probe.labels)
        self.next_capture += 1
        return time.perf_counter() - t0, finite

    def capture_step(self) -> float:
        """The temporal protocol's capture (the step probe, the metric channels only), kept on the device; seconds."""
        cap = self.config["capture"]
        if not cap["enabled"]:
            return 0.0
        t0 = time.perf_counter()
        index = self.next_capture
        signals = self.probe.capture_device(index, n_samples=cap["step_probe_size"],
                                            n_channels=cap["channels_per_stage"])
        self.step_captures.append(StepCapture(signals, index, self.epoch, self.step))
        self.next_capture += 1
        return time.perf_counter() - t0

    def flush_step_captures(self) -> float:
        """Queue the epoch's step captures as one file ``steps=FIRST-LAST`` (capture numbers); return seconds.

        A trial that dies before its next checkpoint loses them with the
        epoch, which its resume from the last checkpoint trains again under
        the same numbers.
        """
        if not self.step_captures:
            return 0.0
        t0 = time.perf_counter()
        first, last = self.step_captures[0].index, self.step_captures[-1].index
        n = self.config["capture"]["step_probe_size"]
        self.writer.submit("activations", self.run_id, f"steps={first:06d}-{last:06d}",
                           partial(steps_columns, self.step_captures, self.probe.labels[:n], self.run_id))
        self.step_captures = []
        return time.perf_counter() - t0

    # ------------------------------------------------------------------ the run's row

    def run_columns(self, status: str, stop_reason: str | None = None, error: str | None = None) -> dict:
        """The run's row as it stands: ``status``, epochs completed, this start's number."""
        return {**self.run_row, "status": [status], "stop_reason": [stop_reason], "epochs_completed": [self.epoch],
                "updated_at": [_now()], "error": [error], "attempts": [self.attempts]}

    def write_run(self, status: str, stop_reason: str | None = None, error: str | None = None) -> None:
        """Queue the run's row with ``status``; :attr:`recorded` remembers it."""
        self.writer.submit("runs", self.run_id, "run", self.run_columns(status, stop_reason, error))
        self.recorded = status

    # ------------------------------------------------------------------ the checkpoint

    def state_dict(self) -> dict:
        """The checkpoint: all a resumed trial needs to go on exactly as this one would."""
        return {
            "model": self.net.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": {"batches": self.generator.get_state(), "torch": torch.get_rng_state(),
                    "numpy": np.random.get_state(), "python": random.getstate()},
            "epoch": self.epoch,
            "step": self.step,
            "next_capture": self.next_capture,
            "best_val_loss": self.best_val_loss,
            "best_val_acc": self.best_val_acc,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "online": self.online.state_dict(),
            "stop": self.stop_check.state_dict() if self.stop_check is not None else None,
            "status": self.status,
            "stop_reason": self.stop_reason,
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
        self.epoch, self.step, self.next_capture = state["epoch"], state["step"], state["next_capture"]
        self.best_val_loss, self.best_val_acc = state["best_val_loss"], state["best_val_acc"]
        self.best_epoch, self.bad_epochs = state["best_epoch"], state["bad_epochs"]
        self.online.load_state_dict(state["online"])
        if self.stop_check is not None:
            self.stop_check.load_state_dict(state["stop"])
        self.status, self.stop_reason = state["status"], state["stop_reason"]


def run_trial(config: dict, session) -> dict:
    """Train one run as ``config`` describes; return its final metrics.

    Parameters
    ----------
    config : a trial config as :func:`dynstudy.study.grid.expand` writes it (run_id, study, store, model,
        seed, use_gpu and the dataset, optimizer, train, capture and analysis sections).
    session : restores and saves the trial's checkpoints (:mod:`dynstudy.jobs.trial.session`).
    """
    return Trial(config, session).run()
