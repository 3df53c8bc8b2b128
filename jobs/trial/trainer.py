"""One trial: train one model on one dataset with one seed, capturing signals.

The loop a reader can hold in their head::

    restore checkpoint (or seed everything and capture the untrained net: capture 0)
    for epoch in 1..max_epochs:
        train one epoch over shuffled, augmented batches (capturing every N steps if asked:
            the step probe, kept in memory and written as one file at the epoch's end)
        validate; step the LR schedule; capture the probe set (kind "epoch")
        compute H_eff, M and the Psi-volatility trigger online from that capture
        write train_metrics + activations for this epoch, then checkpoint
        stop on early-stopping patience, max epochs, the volatility rule (opt-in) or divergence

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
from datetime import datetime, timezone
from functools import partial

import numpy as np
import torch

from dynstudy.jobs.capture.async_writer import AsyncWriter
from dynstudy.jobs.capture.fit_check import capture_problem
from dynstudy.jobs.capture.online import OnlineDynamics
from dynstudy.jobs.capture.probe import ActivationProbe, capture_columns, captures_to_host, signals_finite
from dynstudy.jobs.data.device_data import dataset, device_dataset
from dynstudy.jobs.models.registry import ModelDef, build, stage_widths
from dynstudy.jobs.trial import compile_cache, faults
from dynstudy.jobs.trial.loop import evaluate, train_epoch
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
    widths = stage_widths(ModelDef.of(config), data.in_chans, image_size, config["train"].get("stem", "stock"))
    problem = capture_problem(config["capture"], data.name, len(data.val.y), widths)
    if problem:
        raise ValueError(problem)


def steps_columns(captures: list, labels: np.ndarray, run_id: str) -> dict:
    """The columns of an epoch's step captures (``(DeviceCapture, index, epoch, step)``), one transfer for all."""
    signals = captures_to_host([c[0] for c in captures])
    parts = [capture_columns(sig, labels, run_id, index, epoch, step, "step")
             for sig, (_, index, epoch, step) in zip(signals, captures)]
    return {k: np.concatenate([c[k] for c in parts]) for k in parts[0]}


def run_trial(config: dict, session) -> dict:
    """Train one run as ``config`` describes; return its final metrics.

    ``config`` keys: run_id, study, store, model, dataset (dict), optimizer
    (dict), seed, train (dict), capture (dict); see :mod:`dynstudy.study.grid`.
    """
    run_id, store, seed = config["run_id"], config["store"], config["seed"]
    train, cap = config["train"], config["capture"]
    torch.set_num_threads(train.get("threads", 1))
    device = torch.device("cuda" if torch.cuda.is_available() and config.get("use_gpu") else "cpu")
    ds_cfg = config["dataset"]
    ds_key = (ds_cfg["name"], ds_cfg.get("root"), ds_cfg.get("download", False),
              ds_cfg.get("n_train"), ds_cfg.get("n_val"), ds_cfg.get("image_size"))
    data = dataset(*ds_key)
    ddata = device_dataset(*ds_key, str(device))

    gen = seed_everything(seed)
    md, stem = ModelDef.of(config), train.get("stem", "stock")
    built = build(md, data.num_classes, in_chans=data.in_chans, image_size=data.image_size,
                  stem=stem, pretrained=train.get("pretrained"))
    size = built.input_size if built.input_size and built.input_size != data.image_size else None
    model = built.module.to(device)
    amp = device.type == "cuda" and train.get("amp", True)
    if amp:
        model = model.to(memory_format=torch.channels_last)
    forward = model
    if train.get("compile", False):
        shape = (md.key, stem, train.get("pretrained"), data.num_classes, data.in_chans, size or data.image_size,
                 str(device), amp)
        model, forward = compile_cache.compiled(shape, model)
    optimizer = make_optimizer(model.parameters(), config["optimizer"])
    scheduler = make_scheduler(optimizer, train)
    stored = cap.get("store_channels")
    keep = None if stored == "all" else (stored or cap["channels_per_stage"])
    probe = ActivationProbe(model, built.stages, ddata.val.x[:cap["probe_size"]], data.val.y[:cap["probe_size"]],
                            data.mean, data.std, keep, seed,
                            redraw=cap.get("redraw_channels", False), batch_size=cap.get("batch_size", 256),
                            input_size=size)
    run_row = {"run_id": [run_id], "study": [config["study"]], "model": [config["model"]],
               "dataset": [ds_cfg["name"]],
               "optimizer": [config["optimizer"].get("label") or config["optimizer"]["name"]],
               "seed": [seed], "config": [json.dumps(config, sort_keys=True)],
               "versions": [json.dumps(software_versions())], "device": [str(device)],
               "hostname": [socket.gethostname()], "started_at": [_now()]}
    writer = AsyncWriter(store)

    def run_columns(status, stop_reason, epochs, error):
        return {**run_row, "status": [status], "stop_reason": [stop_reason], "epochs_completed": [epochs],
                "updated_at": [_now()], "error": [error], "attempts": [attempts]}

    def write_run(status, stop_reason=None, epochs=0, error=None):
        writer.submit("runs", run_id, "run", run_columns(status, stop_reason, epochs, error))

    capture_on = cap.get("enabled", True)
    every = cap.get("every_n_steps")
    online = OnlineDynamics.from_config(config)

    steps_buffer = []  # this epoch's every-N-step captures, on the device: (DeviceCapture, index, epoch, step)

    def capture(kind):
        """Capture the probe set now, as capture number counters['capture']; return (seconds, finite)."""
        if not capture_on:
            return 0.0, True
        t0 = time.perf_counter()
        index = counters["capture"]
        finite = True
        if kind == "step":  # the temporal protocol's capture: the step probe and the metric channels only
            steps_buffer.append((probe.capture_device(index, n_samples=cap.get("step_probe_size", 64),
                                                      n_channels=cap["channels_per_stage"]), index, epoch, step))
        else:
            signals = probe.capture(index)  # one transfer; the columns are built and written by the writer
            writer.submit("activations", run_id, f"capture={index:06d}",
                          partial(capture_columns, signals, probe.labels, run_id, index, epoch, step, kind))
            finite = signals_finite(signals)
            if kind == "epoch":
                online.add(signals, probe.labels)
        counters["capture"] += 1
        return time.perf_counter() - t0, finite

    def flush_steps():
        """Queue the epoch's step captures as one file ``steps=FIRST-LAST`` (capture numbers); return seconds.

        A trial that dies before its next checkpoint loses them with the
        epoch, which its resume from the last checkpoint trains again under
        the same numbers.
        """
        if not steps_buffer:
            return 0.0
        t0 = time.perf_counter()
        first, last = steps_buffer[0][1], steps_buffer[-1][1]
        n = cap.get("step_probe_size", 64)
        writer.submit("activations", run_id, f"steps={first:06d}-{last:06d}",
                      partial(steps_columns, list(steps_buffer), probe.labels[:n], run_id))
        steps_buffer.clear()
        return time.perf_counter() - t0

    def after_step():
        nonlocal step, capture_time
        step += 1
        faults.maybe_inject(epoch=epoch, step=step, run_id=run_id)
        if every and step % every == 0:
            capture_time += capture("step")[0]

    try:
        state = session.restore()
        attempts = count_attempt(store, run_id, config)
        if state is None:
            epoch, step, counters = 0, 0, {"capture": 0}
            best = {"val_loss": math.inf, "val_acc": -1.0, "epoch": 0, "bad_epochs": 0}
            remove_run_files(store, run_id)  # a fresh start: nothing an earlier attempt wrote survives
            write_run("running")
            try:
                check_fits(config, data, size or data.image_size)
            except ValueError as err:
                write_run("failed", "error", error=f"{type(err).__name__}: {err}")
                writer.flush()
                raise
            capture("init")
        else:
            remove_write_leftovers(store, run_id)  # what the earlier attempt was writing when it died
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None:
                scheduler.load_state_dict(state["scheduler"])
            gen.set_state(state["generator"])
            torch.set_rng_state(state["torch_rng"])
            np.random.set_state(state["numpy_rng"])
            random.setstate(state["python_rng"])
            epoch, step, best, counters = state["epoch"], state["step"], state["best"], state["counters"]
            online.history = state["online"]
            write_run("running", epochs=epoch)
    except BaseException:
        writer.close(raise_errors=False)
        raise

    status, stop_reason, metrics = "finished", "max_epochs", {}
    n_batches = -(-len(ddata.train) // train["batch_size"])
    model.train()
    try:
        while epoch < train["epochs"]:
            epoch += 1
            t0 = time.perf_counter()
            capture_time, first_step = 0.0, step
            stats = train_epoch(forward, optimizer, ddata.train_batches(train["batch_size"], gen, size, amp),
                                n_batches, device, amp, after_step)
            if stats.diverged_at is not None:  # training stopped at that step: what came after it is dropped
                step = first_step + stats.diverged_at
                steps_buffer[:] = [c for c in steps_buffer if c[3] <= step]
            capture_time += flush_steps()
            epoch_time = time.perf_counter() - t0 - capture_time
            if stats.diverged_at is not None:  # a non-finite loss inside the epoch: the epoch was not completed
                status, stop_reason, epoch = "diverged", "diverged", epoch - 1
                break
            val_loss, val_acc = evaluate(forward, model, ddata.val_batches(train["batch_size"], size, amp),
                                         len(ddata.val), device, amp)
            lr = optimizer.param_groups[0]["lr"]
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(val_loss)
            elif scheduler is not None:
                scheduler.step()
            seconds, finite = capture("epoch")
            capture_time += seconds
            dyn = online.summary(val_acc)
            metrics = {"epoch": epoch, "step": step, "train_loss": stats.loss_sum / max(stats.seen, 1),
                       "train_acc": stats.correct / max(stats.seen, 1), "val_loss": val_loss, "val_acc": val_acc,
                       "lr": lr, "epoch_time_s": epoch_time, "capture_time_s": capture_time, **dyn}
            writer.submit("train_metrics", run_id, f"epoch={epoch:06d}",
                          {"run_id": [run_id], **{k: [v] for k, v in metrics.items() if k in TRAIN_METRICS.names}})
            if val_loss < best["val_loss"]:
                best.update(val_loss=val_loss, bad_epochs=0)
            else:
                best["bad_epochs"] += 1
            if val_acc > best["val_acc"]:
                best.update(val_acc=val_acc, epoch=epoch)
            if not (math.isfinite(val_loss) and finite):
                status, stop_reason = "diverged", "diverged"
                break
            patience = train.get("early_stopping_patience")
            done = epoch >= train["epochs"] or (patience is not None and best["bad_epochs"] >= patience)
            if patience is not None and best["bad_epochs"] >= patience:
                stop_reason = "early_stopping"
            if train.get("volatility_stopping") and dyn["volatility_trigger"] is not None:
                done, stop_reason = True, "volatility"
            # the final status is written before the last report: Tune may end the
            # trial as soon as it has the last result
            write_run("finished" if done else "running", stop_reason if done else None, epochs=epoch)
            writer.flush()  # the epoch's files are on the store before its checkpoint is
            session.report({**metrics, "run_id": run_id, "best_val_acc": best["val_acc"], "last": done}, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "generator": gen.get_state(), "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
                "python_rng": random.getstate(), "epoch": epoch, "step": step, "best": best, "counters": counters,
                "online": online.history})
            if done:
                break
        final = {**metrics, "run_id": run_id, "status": status, "stop_reason": stop_reason,
                 "best_val_acc": best["val_acc"]}
        if status != "finished":
            write_run(status, stop_reason, epochs=epoch)
            writer.flush()
            session.report({**final, "last": True}, None)
        writer.close()
    except Exception as err:  # recorded, then re-raised so that Ray Tune retries from the checkpoint
        writer.close(raise_errors=False)  # what was queued lands; a writer's own error is already ``err``
        write_rows(store, "runs", run_id, "run", run_columns("failed", "error", epoch,
                                                             f"{type(err).__name__}: {err}"[:2000]))
        raise
    except BaseException:
        writer.close(raise_errors=False)
        raise
    return final
