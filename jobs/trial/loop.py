"""One training epoch and one evaluation on device-resident batches, without a host sync per step.

Each step's loss and number of correct predictions are stored in device
tensors; the host reads them once at the end of the epoch (or evaluation)
and sums them in the order the per-step ``.item()`` calls used to, so the
train and validation loss and accuracy are bit for bit what they were.

Divergence: a non-finite loss still ends the run, and the store still looks
as if training had stopped at that step. The check reads the stored losses
every :data:`DIVERGENCE_CHECK_STEPS` steps and at the end of the epoch
instead of at every step, so a diverged trial may take up to that many
further steps (on weights that are already lost) before it stops; the epoch
reports the first non-finite step (:attr:`EpochStats.diverged_at`) and the
trainer drops what was captured after it.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: Steps between two reads of the epoch's losses for a non-finite value (each read is one host sync).
DIVERGENCE_CHECK_STEPS = 25


@dataclass
class EpochStats:
    """An epoch's training totals, over the steps before any non-finite loss."""

    loss_sum: float   # sum over steps of loss * batch size
    correct: int
    seen: int
    diverged_at: int | None  # index (0-based, in this epoch) of the first step with a non-finite loss


def _first_nonfinite(losses: torch.Tensor) -> int | None:
    bad = ~torch.isfinite(losses)
    return int(bad.nonzero()[0, 0]) if bool(bad.any()) else None


def train_epoch(forward: Callable, optimizer: torch.optim.Optimizer, batches: Iterable, n_batches: int,
                device: torch.device, amp: bool, after_step: Callable[[], None],
                check_every: int | None = None) -> EpochStats:
    """Train over ``batches`` (``n_batches`` of them); ``after_step()`` runs after each optimiser step.

    ``check_every``: steps between divergence checks (default :data:`DIVERGENCE_CHECK_STEPS`).
    """
    check_every = check_every or DIVERGENCE_CHECK_STEPS
    losses = torch.zeros(n_batches, device=device)
    correct = torch.zeros(n_batches, dtype=torch.int64, device=device)
    sizes: list[int] = []
    for i, (x, y) in enumerate(batches):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = forward(x)
            loss = F.cross_entropy(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses[i] = loss.detach()
        correct[i] = (logits.argmax(1) == y).sum()
        sizes.append(len(y))
        after_step()
        if (i + 1) % check_every == 0 and _first_nonfinite(losses[:i + 1]) is not None:
            break
    done = len(sizes)
    host_losses, host_correct = _to_host(losses[:done], correct[:done])
    bad = next((j for j, v in enumerate(host_losses) if not math.isfinite(v)), None)
    keep = done if bad is None else bad
    loss_sum, n_correct = 0.0, 0
    for j in range(keep):
        loss_sum += host_losses[j] * sizes[j]
        n_correct += host_correct[j]
    return EpochStats(loss_sum, n_correct, sum(sizes[:keep]), bad)


@torch.no_grad()
def evaluate(forward: Callable, model: torch.nn.Module, batches: Iterable, n: int, device: torch.device,
             amp: bool = False) -> tuple[float, float]:
    """Mean cross-entropy and accuracy (0..1) over ``n`` images, in eval mode."""
    model.eval()
    losses, correct = [], []
    try:
        for x, y in batches:
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                logits = forward(x).float()
            losses.append(F.cross_entropy(logits, y, reduction="sum"))
            correct.append((logits.argmax(1) == y).sum())
    finally:
        model.train()
    host_losses, host_correct = _to_host(torch.stack(losses), torch.stack(correct))
    loss_sum = 0.0
    for v in host_losses:
        loss_sum += v
    return loss_sum / n, sum(host_correct) / n


def _to_host(values: torch.Tensor, counts: torch.Tensor) -> tuple[list[float], list[int]]:
    """float32 values and integer counts in one transfer (float32 -> float64 is exact: ``.item()``'s floats)."""
    if len(values) == 0:
        return [], []
    host = torch.stack([values.double(), counts.double()]).cpu().tolist()
    return host[0], [int(c) for c in host[1]]
