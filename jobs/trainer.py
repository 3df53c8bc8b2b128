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

Measured on this 2-core CPU (``bench/bench_capture.py``): a probe of 2048
images through ResNet-18 costs about 1% of a 50,000-image CIFAR epoch.

Every write is idempotent per (run, epoch/capture), and the checkpoint comes
after the epoch's files, so a trial killed at any point and resumed from its
last checkpoint rewrites at most one epoch and never duplicates a row.

``run_trial`` takes a plain dict (what Ray Tune passes) and a ``session`` that
restores and saves checkpoints: :class:`jobs.session.TuneSession` inside Ray
Tune, :class:`jobs.session.LocalSession` without Ray.
"""
from __future__ import annotations

import json
import math
import platform
import random
import socket
import time
from datetime import datetime, timezone
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from jobs import faults
from jobs.augment import augment_batch, resize_batch
from jobs.capture import ActivationProbe, capture_columns, signals_finite
from jobs.data import iterate_batches, load_dataset, normalize
from jobs.fit_check import capture_problem
from jobs.registry import ModelDef, build, stage_widths
from jobs.online import OnlineDynamics
from store_contract.files import read_run_row, remove_run_files, write_rows
from store_contract.schemas import TRAIN_METRICS, config_identity


@lru_cache(maxsize=4)
def _dataset(name, root, download, n_train, n_val, image_size):
    """Datasets are loaded once per worker process and shared by its trials."""
    return load_dataset(name, root, download=download, image_size=image_size, n_train=n_train, n_val=n_val)


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


@torch.no_grad()
def evaluate(model, split, mean, std, batch_size, device, size=None, amp=False) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (0..1) over a split, in eval mode."""
    model.eval()
    loss_sum, correct = 0.0, 0
    for xb, yb in iterate_batches(split, batch_size, shuffle=False, generator=None):
        xb, yb = xb.to(device), yb.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(resize_batch(normalize(xb, mean, std), size)).float()
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    model.train()
    n = len(split.y)
    return loss_sum / n, correct / n


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


def run_trial(config: dict, session) -> dict:
    """Train one run as ``config`` describes; return its final metrics.

    ``config`` keys: run_id, study, store, model, dataset (dict), optimizer
    (dict), seed, train (dict), capture (dict); see :mod:`study.grid`.
    """
    run_id, store, seed = config["run_id"], config["store"], config["seed"]
    train, cap = config["train"], config["capture"]
    torch.set_num_threads(train.get("threads", 1))
    device = torch.device("cuda" if torch.cuda.is_available() and config.get("use_gpu") else "cpu")
    ds_cfg = config["dataset"]
    data = _dataset(ds_cfg["name"], ds_cfg.get("root"), ds_cfg.get("download", False),
                    ds_cfg.get("n_train"), ds_cfg.get("n_val"), ds_cfg.get("image_size"))

    gen = seed_everything(seed)
    built = build(ModelDef.of(config), data.num_classes, in_chans=data.in_chans, image_size=data.image_size,
                  stem=train.get("stem", "stock"), pretrained=train.get("pretrained"))
    size = built.input_size if built.input_size and built.input_size != data.image_size else None
    model = built.module.to(device)
    amp = device.type == "cuda" and train.get("amp", True)
    if amp:
        model = model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model.parameters(), config["optimizer"])
    scheduler = make_scheduler(optimizer, train)
    stored = cap.get("store_channels")
    probe = ActivationProbe(model, built.stages, data.val.x[:cap["probe_size"]], data.val.y[:cap["probe_size"]],
                            data.mean, data.std, None if stored == "all" else (stored or cap["channels_per_stage"]), seed,
                            redraw=cap.get("redraw_channels", False), batch_size=cap.get("batch_size", 256),
                            input_size=size)
    run_row = {"run_id": [run_id], "study": [config["study"]], "model": [config["model"]],
               "dataset": [ds_cfg["name"]], "optimizer": [config["optimizer"].get("label") or config["optimizer"]["name"]],
               "seed": [seed], "config": [json.dumps(config, sort_keys=True)],
               "versions": [json.dumps(software_versions())], "device": [str(device)],
               "hostname": [socket.gethostname()], "started_at": [_now()]}

    def write_run(status, stop_reason=None, epochs=0, error=None):
        write_rows(store, "runs", run_id, "run", {**run_row, "status": [status], "stop_reason": [stop_reason],
                                                   "epochs_completed": [epochs], "updated_at": [_now()], "error": [error],
                                                   "attempts": [attempts]})

    capture_on = cap.get("enabled", True)
    every = cap.get("every_n_steps")
    online = OnlineDynamics(cap["channels_per_stage"], config.get("analysis") or {})

    steps_buffer = []  # this epoch's every-N-step captures (column dicts), written by flush_steps

    def capture(kind):
        """Capture the probe set now, as capture number counters['capture']; return (seconds, finite)."""
        if not capture_on:
            return 0.0, True
        t0 = time.perf_counter()
        index = counters["capture"]
        if kind == "step":  # the temporal protocol's capture: the step probe and the metric channels only
            n = cap.get("step_probe_size", 64)
            signals = probe.capture(index, n_samples=n, n_channels=cap["channels_per_stage"])
            steps_buffer.append(capture_columns(signals, probe.labels[:n], run_id, index, epoch, step, kind))
        else:
            signals = probe.capture(index)
            write_rows(store, "activations", run_id, f"capture={index:06d}",
                       capture_columns(signals, probe.labels, run_id, index, epoch, step, kind))
        counters["capture"] += 1
        if kind == "epoch":
            online.add(signals, probe.labels)
        return time.perf_counter() - t0, signals_finite(signals)

    def flush_steps():
        """Write the epoch's step captures as one file ``steps=FIRST-LAST`` (capture numbers); return seconds.

        A trial that dies before this loses them with the epoch, which its
        resume from the last checkpoint trains again under the same numbers.
        """
        if not steps_buffer:
            return 0.0
        t0 = time.perf_counter()
        first, last = steps_buffer[0]["capture"][0], steps_buffer[-1]["capture"][0]
        write_rows(store, "activations", run_id, f"steps={first:06d}-{last:06d}",
                   {k: np.concatenate([c[k] for c in steps_buffer]) for k in steps_buffer[0]})
        steps_buffer.clear()
        return time.perf_counter() - t0

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
            raise
        capture("init")
    else:
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

    status, stop_reason, metrics = "finished", "max_epochs", {}
    model.train()
    try:
        while epoch < train["epochs"]:
            epoch += 1
            t0 = time.perf_counter()
            loss_sum, correct, seen, diverged, capture_time = 0.0, 0, 0, False, 0.0
            for xb, yb in iterate_batches(data.train, train["batch_size"], shuffle=True, generator=gen):
                xb, yb = xb.to(device), yb.to(device)
                x = resize_batch(augment_batch(normalize(xb, data.mean, data.std), data.augment, gen), size)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                    logits = model(x)
                    loss = F.cross_entropy(logits.float(), yb)
                if not torch.isfinite(loss):
                    diverged = True
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                faults.maybe_inject(epoch=epoch, step=step, run_id=run_id)
                loss_sum += loss.item() * len(yb)
                correct += (logits.argmax(1) == yb).sum().item()
                seen += len(yb)
                if every and step % every == 0:
                    capture_time += capture("step")[0]
            capture_time += flush_steps()
            epoch_time = time.perf_counter() - t0 - capture_time
            if diverged:  # a non-finite loss inside the epoch: the epoch was not completed
                status, stop_reason, epoch = "diverged", "diverged", epoch - 1
                break
            val_loss, val_acc = evaluate(model, data.val, data.mean, data.std, train["batch_size"], device, size, amp)
            lr = optimizer.param_groups[0]["lr"]
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                scheduler.step(val_loss)
            elif scheduler is not None:
                scheduler.step()
            seconds, finite = capture("epoch")
            capture_time += seconds
            dyn = online.summary(val_acc)
            metrics = {"epoch": epoch, "step": step, "train_loss": loss_sum / max(seen, 1), "train_acc": correct / max(seen, 1),
                       "val_loss": val_loss, "val_acc": val_acc, "lr": lr, "epoch_time_s": epoch_time,
                       "capture_time_s": capture_time, **dyn}
            write_rows(store, "train_metrics", run_id, f"epoch={epoch:06d}",
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
            session.report({**metrics, "run_id": run_id, "best_val_acc": best["val_acc"], "last": done}, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "generator": gen.get_state(), "torch_rng": torch.get_rng_state(), "numpy_rng": np.random.get_state(),
                "python_rng": random.getstate(), "epoch": epoch, "step": step, "best": best, "counters": counters,
                "online": online.history})
            if done:
                break
    except Exception as err:  # recorded, then re-raised so that Ray Tune retries from the checkpoint
        write_run("failed", "error", epochs=epoch, error=f"{type(err).__name__}: {err}"[:2000])
        raise
    final = {**metrics, "run_id": run_id, "status": status, "stop_reason": stop_reason, "best_val_acc": best["val_acc"]}
    if status != "finished":
        write_run(status, stop_reason, epochs=epoch)
        session.report({**final, "last": True}, None)
    return final
