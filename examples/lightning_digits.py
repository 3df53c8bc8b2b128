"""Bring your own training loop: a PyTorch Lightning fit recorded by dynstudy's ``RecorderCallback``.

The digits CNN of ``plain_loop.py`` as a LightningModule, 2 epochs on the CPU (``pip install
'dynstudy[lightning]'``)::

    python examples/lightning_digits.py --store demo-store --checkpoints lightning-ckpt
    python examples/lightning_digits.py --store demo-store --checkpoints lightning-ckpt --resume   # after a crash
    dynstudy analyze --store demo-store && dynstudy report --store demo-store
"""
# ruff: noqa: E402, I001  (dynstudy's callback module is imported first: it readies torchvision for CPU torch)
from __future__ import annotations

import argparse

from dynstudy.jobs.capture.lightning import RecorderCallback  # before Lightning: it readies torchvision

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from plain_loop import BATCH, LR, PROBE, digits, make_model
from pytorch_lightning.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset


class DigitsModule(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = make_model()

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR, momentum=0.9)


def main(store: str, checkpoints: str, run_id: str = "lightning-s0", epochs: int = 2, seed: int = 0,
         resume: bool = False) -> None:
    """Fit (or with ``resume`` go on from ``checkpoints/last.ckpt``), checkpointing every epoch into ``checkpoints``."""
    pl.seed_everything(seed, verbose=False)
    torch.set_num_threads(1)
    (xt, yt), (xv, yv) = digits()
    callback = RecorderCallback(store, run_id=run_id, probe=(xv[:PROBE], yv[:PROBE]),
                                stages=["net.block1", "net.block2", "net.block3"], seed=seed,
                                config={"lr": LR, "batch_size": BATCH, "epochs": epochs}, every_n_steps=4,
                                model_name="digits_cnn", dataset="digits", optimizer="sgd",
                                capture={"channels_per_stage": 8, "step_probe_size": 32}, analysis={"min_scale": 8})
    every_epoch = ModelCheckpoint(dirpath=checkpoints, save_last=True, save_top_k=-1)
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, callbacks=[callback, every_epoch],
                         logger=False, enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(DigitsModule(), DataLoader(TensorDataset(xt, yt), batch_size=BATCH, shuffle=True),
                DataLoader(TensorDataset(xv, yv), batch_size=BATCH), ckpt_path="last" if resume else None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="demo-store")
    parser.add_argument("--checkpoints", default="lightning-ckpt")
    parser.add_argument("--run-id", default="lightning-s0")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="go on from the last checkpoint in --checkpoints")
    args = parser.parse_args()
    main(args.store, args.checkpoints, args.run_id, args.epochs, resume=args.resume)
