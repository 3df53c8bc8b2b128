"""Bring your own training loop: a plain PyTorch loop measured by ``dynstudy.Recorder``.

Trains a small CNN on scikit-learn's digits (8x8 images, shipped with scikit-learn: nothing is downloaded) and
checkpoints every epoch with the recorder's state. Run the same command again after a crash (a kill included)
and it goes on from the last checkpoint; the store then holds every capture once, as an uninterrupted run's.

    python examples/plain_loop.py --store demo-store --run-id digits-s0 --epochs 4
    dynstudy analyze --store demo-store && dynstudy report --store demo-store
"""
from __future__ import annotations

import argparse
import os
import time
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import dynstudy

BATCH, LR, PROBE = 128, 0.05, 128


def digits() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """(train, validation) images [N, 1, 8, 8] in 0..1 and labels; the first 360 of a fixed shuffle validate."""
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    x, y = x[order], y[order]
    return (x[360:], y[360:]), (x[:360], y[:360])


def block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def make_model() -> nn.Module:
    """A CNN whose three blocks are the capture stages (8x8, 4x4, 2x2 feature maps)."""
    return nn.Sequential(OrderedDict(block1=block(1, 16, 1), block2=block(16, 32, 2), block3=block(32, 32, 2),
                                     pool=nn.AdaptiveAvgPool2d(1), flat=nn.Flatten(), head=nn.Linear(32, 10)))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    model.eval()
    logits = model(x)
    model.train()
    return F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()


def save(path: Path, state: dict) -> None:
    """Write a checkpoint whole or not at all."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def main(store: str, run_id: str = "digits-s0", epochs: int = 4, checkpoint: str = "digits-ckpt.pt", seed: int = 0,
         step_every: int | None = 4, step_delay: float = 0.0) -> dict:
    """Train (or resume from ``checkpoint``) and record the run into ``store``; return the recorder's final row.

    ``step_every``: a step capture every that many optimiser steps (the temporal protocol; None: none).
    ``step_delay``: seconds to wait after each step (stands in for a slow data pipeline).
    """
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    (xt, yt), (xv, yv) = digits()
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    order = torch.Generator().manual_seed(seed)
    rec = dynstudy.Recorder(store, run_id=run_id, model=model, probe=(xv[:PROBE], yv[:PROBE]),
                            stages=["block1", "block2", "block3"], seed=seed,
                            config={"lr": LR, "batch_size": BATCH, "epochs": epochs, "step_every": step_every},
                            model_name="digits_cnn", dataset="digits", optimizer="sgd",
                            capture={"channels_per_stage": 8, "step_probe_size": 32}, analysis={"min_scale": 8})
    ckpt, start, step = Path(checkpoint), 1, 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        order.set_state(state["order"])
        rec.load_state_dict(state["recorder"])  # drops what was recorded after this checkpoint
        start, step = state["epoch"] + 1, state["step"]
    else:
        rec.capture(epoch=0)  # the untrained network
    for epoch in range(start, epochs + 1):
        total = 0.0
        for idx in torch.randperm(len(yt), generator=order).split(BATCH):
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            total += loss.item() * len(idx)
            if step_every and step % step_every == 0:
                rec.capture(step=step)
            print(f"epoch {epoch} step {step}", flush=True)
            time.sleep(step_delay)
        val_loss, val_acc = evaluate(model, xv, yv)
        rec.capture(epoch=epoch, step=step)
        rec.log(epoch=epoch, train_loss=total / len(yt), val_loss=val_loss, val_acc=val_acc,
                lr=opt.param_groups[0]["lr"])
        save(ckpt, {"model": model.state_dict(), "optimizer": opt.state_dict(), "order": order.get_state(),
                    "epoch": epoch, "step": step, "recorder": rec.state_dict()})
    return rec.finish()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="demo-store")
    parser.add_argument("--run-id", default="digits-s0")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--checkpoint", default="digits-ckpt.pt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--step-delay", type=float, default=0.0)
    args = parser.parse_args()
    print(main(args.store, args.run_id, args.epochs, args.checkpoint, args.seed, step_delay=args.step_delay))
