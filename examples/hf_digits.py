"""Bring your own training loop: a Hugging Face Trainer recorded by dynstudy's ``RecorderTrainerCallback``.

The digits CNN of ``plain_loop.py`` behind the Trainer's model interface (``forward(pixel_values, labels)``
returning the loss and logits), 2 epochs on the CPU (``pip install 'dynstudy[hf]'``)::

    python examples/hf_digits.py --store demo-store --output hf-out
    dynstudy analyze --store demo-store && dynstudy report --store demo-store
"""
# ruff: noqa: E402, I001  (dynstudy's callback module is imported first: it readies torchvision for CPU torch)
from __future__ import annotations

import argparse

from dynstudy.jobs.capture.hf import RecorderTrainerCallback  # before transformers: it readies torchvision

import numpy as np
import torch
import torch.nn.functional as F
from plain_loop import BATCH, LR, PROBE, digits, make_model
from torch import nn
from transformers import Trainer, TrainingArguments


class DigitsClassifier(nn.Module):
    """The digits CNN as a Trainer model: a dict of loss and logits."""

    def __init__(self):
        super().__init__()
        self.net = make_model()

    def forward(self, pixel_values, labels=None):
        logits = self.net(pixel_values)
        return {"loss": F.cross_entropy(logits, labels), "logits": logits} if labels is not None else {"logits": logits}


class Pairs(torch.utils.data.Dataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def accuracy(pred) -> dict:
    return {"accuracy": float((np.argmax(pred.predictions, axis=1) == pred.label_ids).mean())}


def main(store: str, output_dir: str, run_id: str = "hf-s0", epochs: int = 2, seed: int = 0,
         resume: bool = False) -> None:
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    (xt, yt), (xv, yv) = digits()
    callback = RecorderTrainerCallback(store, run_id=run_id, probe=(xv[:PROBE], yv[:PROBE]),
                                       stages=["net.block1", "net.block2", "net.block3"], seed=seed,
                                       config={"lr": LR, "batch_size": BATCH, "epochs": epochs}, every_n_steps=4,
                                       model_name="digits_cnn", dataset="digits", optimizer="adamw",
                                       capture={"channels_per_stage": 8, "step_probe_size": 32},
                                       analysis={"min_scale": 8})
    args = TrainingArguments(output_dir, num_train_epochs=epochs, per_device_train_batch_size=BATCH,
                             per_device_eval_batch_size=BATCH, learning_rate=1e-2, eval_strategy="epoch",
                             save_strategy="epoch", logging_strategy="epoch", report_to="none", use_cpu=True,
                             seed=seed, disable_tqdm=True, dataloader_num_workers=0)
    trainer = Trainer(DigitsClassifier(), args, train_dataset=Pairs(xt, yt), eval_dataset=Pairs(xv, yv),
                      compute_metrics=accuracy, callbacks=[callback])
    trainer.train(resume_from_checkpoint=resume or None)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="demo-store")
    parser.add_argument("--output", default="hf-out")
    parser.add_argument("--run-id", default="hf-s0")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--resume", action="store_true", help="go on from the newest checkpoint in --output")
    args = parser.parse_args()
    main(args.store, args.output, args.run_id, args.epochs, resume=args.resume)
