"""The capture recorder: the probe protocol and the store's writes, for any training loop.

A :class:`Recorder` measures a network that the caller trains: a plain PyTorch loop, a Lightning module
(:mod:`dynstudy.jobs.capture.lightning`), a Hugging Face Trainer (:mod:`dynstudy.jobs.capture.hf`), or
dynstudy's own trainer (:class:`dynstudy.jobs.trial.trainer.Trial`), which is built on it::

    rec = dynstudy.Recorder("store", run_id="r0", model=model, probe=(images, labels), seed=0,
                            config={"lr": 0.1})
    rec.capture(epoch=0)                                   # the untrained network
    for epoch in range(1, epochs + 1):
        ...                                                # train; rec.capture(step=s) for the temporal protocol
        rec.capture(epoch=epoch)
        rec.log(epoch=epoch, train_loss=..., val_loss=..., val_acc=..., lr=...)
        torch.save({"model": model.state_dict(), ..., "recorder": rec.state_dict()}, "ckpt.pt")
    rec.finish()

It writes the tables the built-in trainer writes (``runs``, ``activations``, ``train_metrics``) with the same
probe protocol (:class:`dynstudy.jobs.capture.probe.ActivationProbe`: eval mode restored afterwards, no
gradients, pooled stages, the channel draw from the seed, long format) through the same background writer
and atomic files, so ``dynstudy analyze``, ``sql``, ``status`` and ``report`` read its store unchanged.

Exactly once: :meth:`Recorder.state_dict` waits until every capture and metric so far is on the store
before it returns the state the caller checkpoints; a recorder given that state back
(:meth:`Recorder.load_state_dict`, before its first capture) deletes what an interrupted process wrote
after it (captures numbered from the state's next one, epochs after its last logged one, hidden
temporaries), so the captures the resumed loop makes again are there once, under the same numbers.
A recorder that started writing and is closed or garbage-collected without :meth:`Recorder.finish`
(the process ending included), or that finishes without a capture, marks its run ``failed`` and says why.
"""
from __future__ import annotations

import json
import math
import platform
import socket
import time
import weakref
from datetime import datetime, timezone
from functools import partial
from typing import NamedTuple

import numpy as np
import torch

from dynstudy.analysis.kernels.params import AnalysisParams
from dynstudy.jobs.capture.async_writer import AsyncWriter
from dynstudy.jobs.capture.fit_check import capture_problem
from dynstudy.jobs.capture.online import OnlineDynamics
from dynstudy.jobs.capture.probe import (
    ActivationProbe,
    DeviceCapture,
    capture_columns,
    captures_to_host,
    signals_finite,
)
from dynstudy.jobs.capture.settings import CAPTURE_DEFAULTS, probe_length_problem, settings_problem
from dynstudy.jobs.models.stages import Stage, StageError, check_stages, resolution_levels, spread
from dynstudy.jobs.models.tv_compat import ensure_torchvision
from dynstudy.store_contract.files import (
    read_run_row,
    remove_files_from,
    remove_run_files,
    remove_write_leftovers,
    resolve_store,
    run_folder_problem,
    write_rows,
)
from dynstudy.store_contract.schemas import TRAIN_METRICS, config_identity

#: The values :meth:`Recorder.log` takes (the train_metrics columns besides run_id, epoch and step).
LOGGED = tuple(n for n in TRAIN_METRICS.names if n not in ("run_id", "epoch", "step"))
#: A run's stop reason when :meth:`Recorder.finish` is given none.
DEFAULT_STOP_REASONS = {"finished": "max_epochs", "diverged": "diverged", "failed": "error"}
#: The error a run's row holds when its recorder was closed without finish().
NOT_FINISHED = ("RecorderError: the recorder was closed (or garbage-collected, or its process ended) without "
                "finish(); call rec.finish() when training ends")
#: The error a run's row holds when it finished without a capture.
NO_CAPTURE = ("RecorderError: the run finished without any capture; call rec.capture(epoch=...) at least once "
              "(rec.capture(epoch=0) captures the untrained network)")


class RecorderError(RuntimeError):
    """A recorder used out of order: the message names the call and the fix."""


class CaptureResult(NamedTuple):
    """What one :meth:`Recorder.capture` did."""

    index: int | None  # the capture's number (None: capture.enabled is false, nothing captured)
    seconds: float     # time spent capturing
    finite: bool       # every captured value is finite (step captures stay on the device: True)


class StepCapture(NamedTuple):
    """A step capture, on the device until it is written with the others of its epoch."""

    capture: DeviceCapture
    index: int  # the capture's number
    epoch: int
    step: int


def steps_columns(captures: list[StepCapture], labels: np.ndarray, run_id: str) -> dict:
    """The columns of several step captures, one transfer for all."""
    signals = captures_to_host([c.capture for c in captures])
    parts = [capture_columns(sig, labels, run_id, c.index, c.epoch, c.step, "step")
             for sig, c in zip(signals, captures)]
    return {k: np.concatenate([c[k] for c in parts]) for k in parts[0]}


def software_versions() -> dict:
    """The versions a run's row records."""
    ensure_torchvision()
    import torchvision

    return {"python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": np.__version__}


def _now():
    return datetime.now(timezone.utc)


def run_row(config: dict, device: torch.device) -> dict:
    """The runs-table columns a start fixes (:class:`RunRecord` adds status, counts and times)."""
    return {"run_id": [config["run_id"]], "study": [config["study"]], "model": [config["model"]],
            "dataset": [config["dataset"]["name"]], "optimizer": [config["optimizer"]["label"]],
            "seed": [config["seed"]], "config": [json.dumps(config, sort_keys=True)],
            "versions": [json.dumps(software_versions())], "device": [str(device)],
            "hostname": [socket.gethostname()], "started_at": [_now()]}


def count_attempt(store: str, run_id: str, config: dict) -> int:
    """This start's number: one more than the run's row says, if that row has the same settings."""
    old = read_run_row(store, run_id)
    if old is None or config_identity(old["config"] or "{}") != config_identity(config):
        return 1
    return (old.get("attempts") or 1) + 1


class RunRecord:
    """The run's row as this start writes it: the columns fixed at the start, and what changes.

    Attributes
    ----------
    epochs_completed : int
        The last epoch logged.
    attempts : int
        This start's number (from the run's row, not the checkpoint).
    recorded : str or None
        The status the row holds from this start (None: none written yet).
    """

    def __init__(self, fixed: dict):
        self.fixed = fixed
        self.epochs_completed = 0
        self.attempts = 1
        self.recorded: str | None = None

    def columns(self, status: str, stop_reason: str | None = None, error: str | None = None) -> dict:
        """The row with ``status``, the epochs completed and this start's number."""
        return {**self.fixed, "status": [status], "stop_reason": [stop_reason],
                "epochs_completed": [self.epochs_completed], "updated_at": [_now()], "error": [error],
                "attempts": [self.attempts]}


def mark_not_finished(writer: AsyncWriter, record: RunRecord, store: str, run_id: str) -> None:
    """A started recorder's end without finish(): what was queued lands, the row says failed and why."""
    writer.close(raise_errors=False)
    if record.recorded == "running":
        write_rows(store, "runs", run_id, "run", record.columns("failed", "error", NOT_FINISHED))
        record.recorded = "failed"


def probe_tensors(probe) -> tuple[torch.Tensor, torch.Tensor]:
    """The (images, labels) of a recorder's ``probe``; ValueError naming what does not fit."""
    if not isinstance(probe, (tuple, list)) or len(probe) != 2:
        raise ValueError("probe must be (images, labels): the first P validation images in a fixed order and "
                         "their integer labels")
    images, labels = torch.as_tensor(probe[0]), torch.as_tensor(probe[1])
    if labels.dim() != 1 or labels.is_floating_point() or len(labels) != len(images) or images.dim() < 2:
        raise ValueError(f"probe: images of shape {tuple(images.shape)} and labels of shape {tuple(labels.shape)} "
                         f"({labels.dtype}); give images [P, ...] and integer labels [P], one per image")
    return images, labels


def resolve_stages(model: torch.nn.Module, stages, example: torch.Tensor) -> tuple[Stage, ...]:
    """The stages to capture: those named (module paths or :class:`Stage`), or by default four of the model's
    feature levels (:func:`dynstudy.jobs.models.stages.resolution_levels` on ``example``)."""
    if stages is None:
        with torch.no_grad():
            levels = resolution_levels(model, example)
        paths = [levels[i] for i in spread(len(levels))]
        if not paths:
            raise StageError("the model has no feature levels to capture by default (modules whose image-shaped "
                             "output lowers the resolution); name them with stages=[...] (module names of "
                             "model.named_modules())")
        return tuple(Stage(p, p) for p in paths)
    if isinstance(stages, str) or not list(stages):
        raise StageError(f"stages={stages!r}: give a list of module names of model.named_modules(), or None")
    return tuple(s if isinstance(s, Stage) else Stage(str(s), str(s)) for s in stages)


def capture_section(probe_size: int, capture: dict | None) -> dict:
    """A recorder's complete capture settings: ``capture`` over :data:`CAPTURE_DEFAULTS`, the probe's size."""
    given = dict(capture or {})
    unknown = sorted(set(given) - set(CAPTURE_DEFAULTS))
    if unknown:
        raise ValueError(f"capture settings {unknown} are not capture settings; known: {', '.join(CAPTURE_DEFAULTS)}")
    if given.get("probe_size", probe_size) != probe_size:
        raise ValueError(f"capture.probe_size={given['probe_size']} but the probe holds {probe_size} images; leave "
                         "probe_size out (the probe sets it)")
    step_size = min(CAPTURE_DEFAULTS["step_probe_size"], probe_size)  # a default, never a request shrunk
    cap = {**CAPTURE_DEFAULTS, "step_probe_size": step_size, **given, "probe_size": probe_size}
    problem = settings_problem(cap, step_captures=False)
    if problem:
        raise ValueError(problem)
    return cap


def settings_diff(old: dict, new: dict) -> list[str]:
    """The keys (``section.key`` inside sections) whose values differ between two configs."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{key}.{k}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        elif a != b:
            out.append(key)
    return out


def finished_problem(store: str, config: dict) -> str | None:
    """Why ``config``'s run cannot be recorded in ``store``: its run id finished there with other settings."""
    old = read_run_row(store, config["run_id"])
    if old is None or old["status"] != "finished":
        return None
    differ = settings_diff(config_identity(old["config"] or "{}"), config_identity(config))
    if not differ:
        return None
    return (f"run {config['run_id']!r} already finished in {store} with other settings (differing: "
            f"{', '.join(differ)}); give this run another run_id, or delete the old run's files to record it again")


def model_device(model: torch.nn.Module) -> torch.device:
    """The device of ``model``'s parameters."""
    try:
        return next(model.parameters()).device
    except StopIteration:
        raise ValueError("model has no parameters; give the network being trained") from None


class Recorder:
    """Captures a network that any loop trains, and writes what dynstudy analyses.

    Parameters
    ----------
    store : the store (a folder, or an s3:// / gs:// URI).
    run_id : the run's id: its folder in every table.
    model : the network being trained (an ``nn.Module``; stay on one device between captures).
    probe : (images, labels): the probe set, the same images at every capture, in a fixed order (the paper
        protocol's first P validation images), as ``model`` takes them; labels are integers.
    stages : module names of ``model.named_modules()`` to capture (or :class:`dynstudy.jobs.models.stages.Stage`);
        None: four of the model's feature levels, the last included.
    seed : the run's seed: fixes the channel draw, and is the run's seed in every table.
    config : the run's settings (JSON-able), stored in ``runs.config`` under ``user_config``; two recorders of
        one run id with other settings are two runs.
    study, model_name, dataset, optimizer : the run's study and cell, as the tables name them (model_name:
        the model's class name by default).
    capture : capture settings over :data:`dynstudy.jobs.capture.settings.CAPTURE_DEFAULTS`
        (channels_per_stage, store_channels, redraw_channels, step_probe_size, batch_size, enabled).
    analysis : the run's analysis settings (:class:`dynstudy.analysis.kernels.params.AnalysisParams`).
    mean, std : per-channel normalisation when the probe images are uint8 (None: they are the model's input).
    input_size : the side probe images are resized to, for a model with a fixed input size (None: their own).

    Raises
    ------
    ValueError
        Before anything is written, naming the fix: a stage the model lacks (with the closest module names),
        a probe too short for the analysis, more channels than a stage has, a run id that finished in the
        store with other settings, a probe or settings that do not fit.
    """

    def __init__(self, store: str, run_id: str, model: torch.nn.Module, probe, stages=None, seed: int = 0,
                 config: dict | None = None, *, study: str = "recorder", model_name: str | None = None,
                 dataset: str = "custom", optimizer: str = "custom", capture: dict | None = None,
                 analysis: dict | None = None, mean=None, std=None, input_size: int | None = None):
        problem = run_folder_problem(run_id)
        if problem:
            raise ValueError(f"run_id: {problem}")
        images, labels = probe_tensors(probe)
        run_config = {"run_id": run_id, "study": study, "store": resolve_store(store), "seed": int(seed),
                      "model": model_name or type(model).__name__, "dataset": {"name": dataset},
                      "optimizer": {"label": optimizer}, "capture": capture_section(len(images), capture),
                      "analysis": dict(analysis or {}), "user_config": config or {}}
        try:
            json.dumps(run_config)
        except TypeError as err:
            raise ValueError(f"config must hold JSON values only (numbers, strings, lists, dicts): {err}") from None
        AnalysisParams.from_config(run_config)  # names a key that is not a setting
        self._build(run_config, model, images, labels, stages, mean, std, input_size)
        problem = self.fit_problem() or finished_problem(self.store, run_config)
        if problem:
            raise ValueError(problem)

    @classmethod
    def for_run(cls, config: dict, model: torch.nn.Module, images, labels, stages, *, mean=None, std=None,
                input_size: int | None = None) -> "Recorder":
        """A recorder of a complete trial config (the built-in trainer's), unchecked: see :meth:`fit_problem`.

        Parameters
        ----------
        config : a trial config (run_id, study, store, model, seed, dataset.name, optimizer.label, the capture
            section and the analysis settings); it is the run's ``runs.config``.
        model, stages : the network and its capture stages (:class:`dynstudy.jobs.models.stages.Stage`).
        images, labels : the probe set.
        mean, std : normalisation of uint8 probe images.
        input_size : the side probe images are resized to (None: their own).
        """
        rec = cls.__new__(cls)
        rec._build(config, model, torch.as_tensor(images), torch.as_tensor(labels), stages, mean, std, input_size)
        return rec

    def _build(self, config: dict, model, images, labels, stages, mean, std, input_size) -> None:
        cap = config["capture"]
        self.config, self.store, self.run_id, self.model = config, config["store"], config["run_id"], model
        inputs = ActivationProbe(model, (), images, labels, mean, std, None, 0, input_size=input_size)  # no stages
        example = inputs.model_input(images[:1].to(model_device(model)))  # one probe image as the model takes it
        self.stages = resolve_stages(model, stages, example)
        stored = cap["store_channels"]
        keep = None if stored == "all" else (stored or cap["channels_per_stage"])  # None: the metric channels
        self.probe = ActivationProbe(model, self.stages, images, labels, mean, std, keep, config["seed"],
                                     redraw=cap["redraw_channels"], batch_size=cap["batch_size"],
                                     input_size=input_size)
        self.online = OnlineDynamics.from_config(config)
        self.record = RunRecord(run_row(config, model_device(model)))
        self.writer: AsyncWriter | None = None
        self._finalizer = None
        self._restored = False
        # what was recorded: with the online history, the state
        self.next_capture, self.epoch, self.step = 0, 0, 0
        self.last_captured_epoch, self.last_step_captured = -1, -1
        self.status: str | None = None
        self.stop_reason: str | None = None
        self.step_captures: list[StepCapture] = []
        self.logged: dict = {}  # the last epoch's logged values
        self.closed = False  # finished, failed, closed or released: nothing more is written

    # ------------------------------------------------------------------ checks

    def fit_problem(self) -> str | None:
        """Why the capture does not fit the model and probe (None: it does): a stage that does not fire exactly
        once or gives no image- or token-shaped output, more channels than a stage has, a probe shorter than
        the capture settings ask or than DFA needs."""
        cap = self.config["capture"]
        try:
            example = self.probe.model_input(self.probe.probe_x[:1].to(model_device(self.model)))
            widths = check_stages(self.model, self.stages, example)
        except StageError as err:
            return str(err)
        min_scale = AnalysisParams.from_config(self.config).min_scale
        return (capture_problem(cap, self.config["dataset"]["name"], len(self.probe.probe_x), widths)
                or probe_length_problem(cap["probe_size"], min_scale))

    # ------------------------------------------------------------------ the run's start and end

    def start(self) -> None:
        """Begin writing (the first capture, log or state_dict does it): clear an earlier attempt's files, or
        after :meth:`load_state_dict` what was written beyond the checkpoint; mark the run running."""
        if self.closed:
            raise RecorderError(f"the recorder of run {self.run_id!r} is closed (finished, failed or closed); it "
                                "records nothing more")
        if self.writer is not None:
            return
        self.record.attempts = count_attempt(self.store, self.run_id, self.config)
        if self._restored:
            remove_write_leftovers(self.store, self.run_id)  # what the earlier process was writing when it died
            remove_files_from(self.store, self.run_id, "activations", self.next_capture)
            remove_files_from(self.store, self.run_id, "train_metrics", self.epoch + 1)
        else:
            remove_run_files(self.store, self.run_id)
        self.writer = AsyncWriter(self.store)
        self._finalizer = weakref.finalize(self, mark_not_finished, self.writer, self.record, self.store,
                                           self.run_id)
        if self.status is None:  # else the state is of the run's end: finish() records it
            self.write_run("running")

    def mark_end(self, status: str, stop_reason: str | None = None) -> None:
        """Record how the run ends (its row says so from the next :meth:`state_dict` on); :meth:`finish` closes."""
        if status not in DEFAULT_STOP_REASONS:
            raise ValueError(f"status={status!r}; a run ends finished, diverged or failed")
        self.status, self.stop_reason = status, stop_reason or DEFAULT_STOP_REASONS[status]

    def finish(self, status: str = "finished", stop_reason: str | None = None) -> dict:
        """End the run: write what is pending and its final row, close the writer; return the final row's
        status, stop reason, epochs and captures.

        ``status``: finished, diverged or failed (ignored when :meth:`mark_end` said it already);
        ``stop_reason``: why (default: max_epochs, diverged, error). A run without any capture is marked
        failed with that reason, and :class:`RecorderError` raised.
        """
        self.start()
        if self.status is None:
            self.mark_end(status, stop_reason)
        if self.config["capture"]["enabled"] and self.next_capture == 0:
            self.fail(NO_CAPTURE)
            raise RecorderError(NO_CAPTURE.split(": ", 1)[1])
        self.flush_steps()
        if self.record.recorded != self.status:
            self.write_run(self.status, self.stop_reason)
        self._finalizer.detach()
        self.closed = True
        self.writer.close()
        return {"run_id": self.run_id, "status": self.status, "stop_reason": self.stop_reason,
                "epochs_completed": self.epoch, "captures": self.next_capture}

    def fail(self, error: str) -> None:
        """End the run as failed with ``error`` (the exception, as text): what was queued lands first. A recorder
        that has not begun writing, or is closed already, writes nothing."""
        if self.writer is None or self.closed:
            return
        self._finalizer.detach()
        self.closed = True
        self.writer.close(raise_errors=False)  # a writer's own error is already the failure
        write_rows(self.store, "runs", self.run_id, "run", self.record.columns("failed", "error", error[:2000]))
        self.record.recorded = "failed"

    def close(self) -> None:
        """End without :meth:`finish`: what was queued lands, and a started run is marked failed, saying so."""
        if self._finalizer is not None:
            self.closed = True
            self._finalizer()

    def release(self) -> None:
        """Stop the writer (what was queued lands) and leave the run's row as it is, for a process that goes
        down while its run resumes elsewhere from the last checkpoint."""
        if self.writer is not None:
            self._finalizer.detach()
            self.closed = True
            self.writer.close(raise_errors=False)

    def write_run(self, status: str, stop_reason: str | None = None, error: str | None = None) -> None:
        """Queue the run's row with ``status``."""
        self.writer.submit("runs", self.run_id, "run", self.record.columns(status, stop_reason, error))
        self.record.recorded = status

    # ------------------------------------------------------------------ captures and metrics

    def capture(self, epoch: int | None = None, step: int | None = None, kind: str | None = None
                ) -> CaptureResult:
        """Capture the probe set now, as the next capture.

        Parameters
        ----------
        epoch : the epochs completed (0: the untrained network, kind ``init``); epochs are captured in
            increasing order, each once. Alone or with ``step``: an epoch capture, the whole probe.
        step : the optimiser steps completed. Alone: a step capture (the temporal protocol: the first
            ``capture.step_probe_size`` probe images, the metric channels), kept on the device and written
            with the others at the next epoch capture, log or state_dict.
        kind : "step" to make a step capture labelled with ``epoch`` (the epoch in progress).
        """
        if epoch is None and step is None:
            raise ValueError("capture() needs epoch=... (an epoch capture) or step=... (a step capture)")
        self.start()
        if kind == "step" or epoch is None:
            return self._capture_step(self.epoch_in_progress() if epoch is None else epoch, step)
        if kind not in (None, "init", "epoch"):
            raise ValueError(f"kind={kind!r}; captures are init, epoch or step")
        if epoch <= self.last_captured_epoch:
            raise RecorderError(f"capture(epoch={epoch}): epoch {self.last_captured_epoch} is captured already; each "
                                "epoch is captured once, in increasing order (a resumed loop goes on after its "
                                "checkpoint's epoch)")
        self._set_step(step)
        self.last_captured_epoch = epoch
        if not self.config["capture"]["enabled"]:
            return CaptureResult(None, 0.0, True)
        t0 = time.perf_counter()
        self.flush_steps()
        index, kind = self.next_capture, ("init" if epoch == 0 else "epoch")
        signals = self.probe.capture(index)
        self.writer.submit("activations", self.run_id, f"capture={index:06d}",
                           partial(capture_columns, signals, self.probe.labels, self.run_id, index, epoch,
                                   self.step, kind))
        if kind == "epoch":
            self.online.add(signals, self.probe.labels)
        self.next_capture += 1
        return CaptureResult(index, time.perf_counter() - t0, signals_finite(signals))

    def epoch_in_progress(self) -> int:
        """The epoch a step capture now falls in: one after the last epoch captured or logged."""
        return max(self.last_captured_epoch, self.epoch) + 1

    def _capture_step(self, epoch: int, step: int | None) -> CaptureResult:
        cap = self.config["capture"]
        if step is None or step <= self.last_step_captured:
            raise RecorderError(f"capture(step={step}): a step capture needs the optimiser steps completed, larger "
                                f"than the last step captured ({self.last_step_captured})")
        problem = settings_problem(cap, step_captures=True)
        if problem:
            raise ValueError(problem)
        self._set_step(step)
        self.last_step_captured = step
        if not cap["enabled"]:
            return CaptureResult(None, 0.0, True)
        t0 = time.perf_counter()
        index = self.next_capture
        signals = self.probe.capture_device(index, n_samples=cap["step_probe_size"],
                                            n_channels=cap["channels_per_stage"])
        self.step_captures.append(StepCapture(signals, index, epoch, step))
        self.next_capture += 1
        return CaptureResult(index, time.perf_counter() - t0, True)

    def _set_step(self, step: int | None) -> None:
        if step is not None:
            if int(step) < 0:
                raise ValueError(f"step={step}: the optimiser steps completed, 0 or more")
            self.step = int(step)

    def discard_steps_after(self, step: int) -> None:
        """Drop the pending step captures after ``step`` (a divergence ended training at that step)."""
        self.step_captures = [c for c in self.step_captures if c.step <= step]

    def flush_steps(self) -> None:
        """Queue the pending step captures as one file ``steps=FIRST-LAST`` (their capture numbers).

        A process that dies before the next checkpoint loses them, and its resume from that checkpoint
        captures them again under the same numbers.
        """
        if not self.step_captures:
            return
        first, last = self.step_captures[0].index, self.step_captures[-1].index
        n = self.config["capture"]["step_probe_size"]
        self.writer.submit("activations", self.run_id, f"steps={first:06d}-{last:06d}",
                           partial(steps_columns, self.step_captures, self.probe.labels[:n], self.run_id))
        self.step_captures = []

    def log(self, epoch: int, step: int | None = None, **values) -> dict:
        """Write epoch ``epoch``'s train_metrics row; return the run's online metrics so far.

        Parameters
        ----------
        epoch : the epochs completed; logged in increasing order, each once.
        step : the optimiser steps completed (default: the last step given).
        **values : any of :data:`LOGGED` (train_loss, train_acc, val_loss, val_acc, lr, epoch_time_s,
            capture_time_s); a name that is not one is an error.

        Returns
        -------
        dict : h_eff, metastability (of the last epoch capture), psi_volatility and volatility_trigger.
        """
        unknown = sorted(set(values) - set(LOGGED))
        if unknown:
            raise ValueError(f"log(): {', '.join(unknown)} not a train_metrics column; log takes {', '.join(LOGGED)}")
        if epoch <= self.epoch:
            raise RecorderError(f"log(epoch={epoch}): epochs are logged from 1, in increasing order, each once (the "
                                f"last logged: {self.epoch})")
        self.start()
        self._set_step(step)
        self.flush_steps()
        self.epoch = self.record.epochs_completed = int(epoch)
        self.writer.submit("train_metrics", self.run_id, f"epoch={self.epoch:06d}",
                           {"run_id": [self.run_id], "epoch": [self.epoch], "step": [self.step],
                            **{k: [v] for k, v in values.items()}})
        self.logged = dict(values)
        val_acc = values.get("val_acc")
        return self.online.summary(math.nan if val_acc is None else val_acc)

    # ------------------------------------------------------------------ the checkpoint

    def state_dict(self) -> dict:
        """The recorder's part of a checkpoint, once everything recorded so far is on the store.

        The run's row is written (with its end, after :meth:`mark_end`) and every pending file waited for
        before this returns, so a checkpoint saved from it never runs ahead of the store.
        """
        self.start()
        self.flush_steps()
        self.write_run(self.status or "running", self.stop_reason)
        self.writer.flush()
        return {"run_id": self.run_id, "next_capture": self.next_capture, "epoch": self.epoch, "step": self.step,
                "last_captured_epoch": self.last_captured_epoch, "last_step_captured": self.last_step_captured,
                "online": self.online.state_dict(), "status": self.status, "stop_reason": self.stop_reason}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint :meth:`state_dict` made; before the first capture, log or state_dict."""
        if self.writer is not None:
            raise RecorderError("load_state_dict() after the recorder began writing; restore the checkpoint before "
                                "the first capture, log or state_dict")
        if state.get("run_id") != self.run_id:
            raise ValueError(f"the checkpoint's recorder state is of run {state.get('run_id')!r}, not {self.run_id!r}")
        self.next_capture, self.epoch, self.step = state["next_capture"], state["epoch"], state["step"]
        self.last_captured_epoch, self.last_step_captured = state["last_captured_epoch"], state["last_step_captured"]
        self.record.epochs_completed = self.epoch
        self.online.load_state_dict(state["online"])
        self.status, self.stop_reason = state["status"], state["stop_reason"]
        self._restored = True
