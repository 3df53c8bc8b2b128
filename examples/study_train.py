"""Bring your own training loop to a multi-seed study: the plain loop of ``plain_loop.py`` as a training function.

``study_digits.yaml`` names it (``train: {function: "study_train:main"}``); ``dynstudy run`` trains it once per
(cell, seed) under Ray Tune, with retries and ``--resume`` from the checkpoints it saves through ``trial``::

    cd examples && dynstudy run study_digits.yaml --store demo-store
    dynstudy analyze --store demo-store && dynstudy report --store demo-store
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from plain_loop import PROBE, digits, evaluate, make_model


def build(num_classes: int = 10, in_chans: int = 1):
    """The cell's model, as the spec's model entry names it (``study_train:build``)."""
    return make_model()


def main(trial) -> None:
    """Train one run: ``trial`` is a :class:`dynstudy.jobs.trial.user_function.TrialContext`."""
    cfg = trial.config
    torch.set_num_threads(cfg["train"]["threads"])
    torch.manual_seed(trial.seed)
    (xt, yt), (xv, yv) = digits()
    model = make_model()
    opt = torch.optim.SGD(model.parameters(), lr=cfg["optimizer"]["lr"], momentum=cfg["optimizer"]["momentum"])
    order = torch.Generator().manual_seed(trial.seed)
    rec = trial.recorder(model, probe=(xv[:PROBE], yv[:PROBE]))
    state = trial.restore()
    if state is None:
        rec.capture(epoch=0)
        start, step = 1, 0
    else:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        order.set_state(state["order"])
        start, step = state["epoch"] + 1, state["step"]
    for epoch in range(start, cfg["train"]["epochs"] + 1):
        total = 0.0
        for idx in torch.randperm(len(yt), generator=order).split(cfg["train"]["batch_size"]):
            loss = F.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            total += loss.item() * len(idx)
        val_loss, val_acc = evaluate(model, xv, yv)
        rec.capture(epoch=epoch, step=step)
        rec.log(epoch=epoch, train_loss=total / len(yt), val_loss=val_loss, val_acc=val_acc,
                lr=opt.param_groups[0]["lr"])
        trial.checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict(), "order": order.get_state(),
                          "epoch": epoch, "step": step})
    rec.finish()
