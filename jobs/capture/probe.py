"""Activation capture: the paper protocol's signal of one network state.

At every capture the same probe images (the first P validation images, in
their fixed order) go through the model in eval mode without gradients.
Forward hooks on the stage modules (four by default) pool each stage output
to [P, C_stage] on the model's device (over space for image-shaped outputs,
over tokens for token-shaped ones: :func:`dynstudy.jobs.models.stages.pool_stage_output`); a fixed subset of K channels
per stage (drawn once per run from the seed, or re-drawn per capture as the authors did) is kept, and one transfer per
capture brings every stage's [P, K] to the host (:meth:`ActivationProbe.capture_device` leaves them on the device, as
the trainer does with step captures until the epoch's end).

A capture every N optimiser steps (the temporal protocol) is smaller: the
first P_t probe images (``capture.step_probe_size``) and the metric channels
only (ranks < ``channels_per_stage``), so a run can afford hundreds of them.

The result is written in long format (one row per stage, channel, sample) by
:func:`capture_columns`; the analysis layer builds the pseudo-time series
and, over the captures of a run, the temporal ones.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from dynstudy.jobs.data.augment import resize_batch
from dynstudy.jobs.data.in_memory import norm_tensors, normalize_with
from dynstudy.jobs.models.stages import find_modules, pool_stage_output
from dynstudy.jobs.models.zoo import zoo_stages


@dataclass
class StageSignal:
    """One stage's pooled activations at one capture."""

    stage: str
    channels: np.ndarray  # int [S], indices into the stage's output channels, in draw order
    values: np.ndarray    # float32 [P, S]


def draw_channels(n_channels: int, k: int | None, seed: int, stage_index: int,
                  capture: int | None = None) -> np.ndarray:
    """The first ``k`` channels of a random order of ``n_channels``, fixed by the seed.

    The position in the returned array is the channel's *rank*: the metrics
    use ranks < ``channels_per_stage``, and storing more (``k`` larger) keeps
    extra channels for the channel-draw control. ``k=None`` or ``k >=
    n_channels`` returns every channel (still in draw order). With
    ``capture`` given the order also depends on the capture (re-drawing).
    """
    key = [seed, stage_index] if capture is None else [seed, stage_index, capture]
    order = np.random.default_rng(key).permutation(n_channels)
    return order if k is None else order[:k]


class ActivationProbe:
    """Captures the stage signals of ``model`` on a fixed probe set.

    Parameters
    ----------
    model : the network.
    stages : a zoo model's name (its four stages), or the :class:`dynstudy.jobs.models.stages.Stage` list to capture.
    probe_x : tensor [P, ...], the probe images in fixed order: uint8 images normalised with ``mean`` and ``std``,
        or (``mean`` None) the model's input as it is.
    probe_y : int tensor or array [P], their labels.
    mean, std : per-channel normalisation of uint8 images, as in training (None: ``probe_x`` is the model's input).
    channels_per_stage : channels kept per stage (None: all), in draw order.
    seed : the run's seed (fixes the channel subset).
    redraw : re-draw the subset at every capture instead.
    batch_size : probe images per forward pass.
    input_size : resize the probe to this side (models with a fixed input, e.g. ViT-B/16 at 224).
    """

    def __init__(self, model, stages, probe_x, probe_y, mean, std, channels_per_stage, seed,
                 redraw=False, batch_size=256, input_size=None):
        self.model = model
        found = find_modules(model, zoo_stages(stages) if isinstance(stages, str) else stages)
        self.stages = [(stage.name, module) for stage, module in found]
        self.layouts = {stage.name: stage.layout for stage, _ in found}
        self.probe_x = probe_x
        self.labels = torch.as_tensor(probe_y).cpu().numpy().astype(np.int32)
        self.mean, self.std = mean, std
        self.k = channels_per_stage
        self.seed = seed
        self.redraw = redraw
        self.batch_size = batch_size
        self.input_size = input_size
        self._norm: dict = {}   # device -> (mean, std) tensors
        self._index: dict = {}  # (stage, width, k, capture, device) -> channel index tensor

    def model_input(self, xb: torch.Tensor) -> torch.Tensor:
        """Probe images as the model takes them (on their device): normalised, then resized to ``input_size``."""
        if self.mean is not None:
            if xb.device not in self._norm:
                self._norm[xb.device] = norm_tensors(self.mean, self.std, xb.device)
            xb = normalize_with(xb, *self._norm[xb.device])
        return resize_batch(xb, self.input_size)

    @torch.no_grad()
    def capture(self, capture_index: int, n_samples: int | None = None, n_channels: int | None = None
                ) -> list[StageSignal]:
        """Pooled, channel-subsampled stage outputs; restores the train/eval mode.

        ``n_samples``: only the first that many probe images (a step
        capture); ``n_channels``: only the first that many channels of the
        run's draw per stage (its metric channels). One device-to-host
        transfer brings every stage's values.
        """
        return self.capture_device(capture_index, n_samples, n_channels).to_host()

    @torch.no_grad()
    def capture_device(self, capture_index: int, n_samples: int | None = None, n_channels: int | None = None
                       ) -> "DeviceCapture":
        """:meth:`capture`, left on the model's device: pooling and channel selection happen there."""
        probe_x = self.probe_x if n_samples is None else self.probe_x[:n_samples]
        device = next(self.model.parameters()).device
        pooled: dict[str, list[torch.Tensor]] = {name: [] for name, _ in self.stages}
        hooks = [
            module.register_forward_hook(lambda _m, _i, out, name=name: pooled[name].append(
                pool_stage_output(out, self.layouts[name]).float()))
            for name, module in self.stages
        ]
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(probe_x), self.batch_size):
                xb = probe_x[start:start + self.batch_size].to(device, non_blocking=True)
                self.model(self.model_input(xb))
        finally:
            for h in hooks:
                h.remove()
            self.model.train(was_training)
        parts, channels = [], []
        for i, (name, _) in enumerate(self.stages):
            full = torch.cat(pooled[name])  # [P, C_stage] on device
            idx = draw_channels(full.shape[1], self.k, self.seed, i, capture_index if self.redraw else None)
            idx = idx if n_channels is None else idx[:n_channels]
            key = (i, full.shape[1], len(idx), capture_index if self.redraw else None, full.device)
            if key not in self._index:  # the draw is fixed per run: its index tensor is moved once
                self._index = {k: v for k, v in self._index.items() if k[3] is None}  # re-drawn ones are not kept
                self._index[key] = torch.as_tensor(idx, device=full.device)
            parts.append(full[:, self._index[key]])
            channels.append(idx)
        return DeviceCapture([name for name, _ in self.stages], channels, torch.cat(parts, dim=1))


@dataclass
class DeviceCapture:
    """One capture's selected channels of every stage, side by side, on the model's device."""

    stages: list[str]
    channels: list[np.ndarray]  # per stage, in draw order
    values: torch.Tensor        # [P, sum of the stages' channel counts]

    def to_host(self, values: np.ndarray | None = None) -> list[StageSignal]:
        """The :class:`StageSignal` list; ``values``: this capture's values already on the host."""
        host = self.values.cpu().numpy() if values is None else values
        host = host.astype(np.float32, copy=False)
        out, start = [], 0
        for stage, idx in zip(self.stages, self.channels):
            out.append(StageSignal(stage, idx, host[:, start:start + len(idx)]))
            start += len(idx)
        return out


def captures_to_host(captures: list[DeviceCapture]) -> list[list[StageSignal]]:
    """Many captures of the same shape (an epoch's step captures) moved to the host in one transfer."""
    if not captures:
        return []
    host = torch.stack([c.values for c in captures]).cpu().numpy()
    return [c.to_host(host[i]) for i, c in enumerate(captures)]


def capture_columns(signals: list[StageSignal], labels: np.ndarray, run_id: str, capture: int,
                    epoch: int, step: int, kind: str) -> dict:
    """Long-format columns of the ``activations`` table for one capture."""
    parts = {k: [] for k in ("stage", "channel", "rank", "sample", "label", "value")}
    for sig in signals:
        p, k = sig.values.shape
        # channel-major order: all samples of channel 0, then channel 1, ...
        parts["stage"].append(np.full(p * k, sig.stage, dtype=object))
        parts["channel"].append(np.repeat(sig.channels.astype(np.int32), p))
        parts["rank"].append(np.repeat(np.arange(k, dtype=np.int32), p))
        parts["sample"].append(np.tile(np.arange(p, dtype=np.int32), k))
        parts["label"].append(np.tile(labels, k))
        parts["value"].append(sig.values.T.reshape(-1))
    cols = {k: np.concatenate(v) for k, v in parts.items()}
    n = len(cols["value"])
    cols["run_id"] = np.full(n, run_id, dtype=object)
    cols["capture"] = np.full(n, capture, dtype=np.int32)
    cols["epoch"] = np.full(n, epoch, dtype=np.int32)
    cols["step"] = np.full(n, step, dtype=np.int64)
    cols["kind"] = np.full(n, kind, dtype=object)
    return cols


def signals_finite(signals: list[StageSignal]) -> bool:
    return all(np.isfinite(s.values).all() for s in signals)
