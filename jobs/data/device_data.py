"""Device-resident data: each split as uint8 on the training device, batches made there.

A worker process loads a dataset once (:func:`dataset`) and copies it to its
training device once (:func:`device_dataset`); every trial the process runs
shares both. An epoch's batches are then indexed, flipped, cropped,
normalised (and resized for fixed-input models) on the device: no
DataLoader and no per-step host-device copy.

The random numbers are those of the host path they replace, drawn in the
same order from the run's (CPU) ``torch.Generator``: first the epoch's
permutation (``torch.randperm``), then per batch its flip draws and, for
``flip_crop``, its crop offsets (:mod:`dynstudy.jobs.data.augment`). They are drawn at the
start of the epoch and moved to the device in one transfer, so on CPU the
batches are bit for bit those of :func:`dynstudy.jobs.data.in_memory.iterate_batches` followed
by :func:`dynstudy.jobs.data.augment.augment_batch`. Flips and crops move pixels only, so
applying them to the uint8 images before normalising gives the same floats
as applying them after.
"""
from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import torch

from dynstudy.jobs.data.augment import AUGMENTS, apply_crop, apply_flip, crop_offsets, flip_mask, resize_batch
from dynstudy.jobs.data.in_memory import DatasetBundle, Split, load_dataset, norm_tensors, normalize_with


@lru_cache(maxsize=4)
def dataset(name, root, download, n_train, n_val, image_size) -> DatasetBundle:
    """A dataset, loaded once per worker process (host memory) and shared by its trials."""
    return load_dataset(name, root, download=download, image_size=image_size, n_train=n_train, n_val=n_val)


@lru_cache(maxsize=4)
def device_dataset(name, root, download, n_train, n_val, image_size, device: str) -> "DeviceData":
    """:func:`dataset` on ``device``, copied there once per worker process and shared by its trials."""
    return DeviceData(dataset(name, root, download, n_train, n_val, image_size), torch.device(device))


def draw_epoch(n: int, batch_size: int, augment: str, generator: torch.Generator) -> torch.Tensor:
    """An epoch's random numbers, in the host path's order, packed in one int64 tensor on the generator's device.

    Layout: the permutation [n], then the flip flags [n] (0/1), then the crop
    offsets [n, 2] flattened (``flip_crop`` only).
    """
    if augment not in AUGMENTS:
        raise ValueError(f"augment kind={augment!r} is unknown; use one of {AUGMENTS}")
    order = torch.randperm(n, generator=generator, device=generator.device)
    flips, crops = [], []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        if augment != "none":
            flips.append(flip_mask(b, generator, generator.device).long())
        if augment == "flip_crop":
            crops.append(crop_offsets(b, generator, generator.device).reshape(-1))
    return torch.cat([order, *flips, *crops])


class DeviceData:
    """A :class:`dynstudy.jobs.data.in_memory.DatasetBundle`'s splits on ``device``, with its normalisation there.

    Attributes: ``bundle`` (the host data: names, sizes, statistics),
    ``train`` and ``val`` (:class:`dynstudy.jobs.data.in_memory.Split` on ``device``), ``device``.
    """

    def __init__(self, bundle: DatasetBundle, device: torch.device):
        self.bundle, self.device = bundle, device
        self.train = Split(bundle.train.x.to(device), bundle.train.y.to(device))
        self.val = Split(bundle.val.x.to(device), bundle.val.y.to(device))
        self.m, self.s = norm_tensors(bundle.mean, bundle.std, device)

    def prepare(self, xb: torch.Tensor, size: int | None, channels_last: bool) -> torch.Tensor:
        """uint8 batch on the device -> normalised float32, resized to ``size``, channels_last if asked."""
        x = resize_batch(normalize_with(xb, self.m, self.s), size)
        return x.contiguous(memory_format=torch.channels_last) if channels_last else x

    def train_batches(self, batch_size: int, generator: torch.Generator, size: int | None = None,
                      channels_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One epoch of shuffled, augmented ``(x, y)`` training batches, made on the device."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive integer")
        n, augment = len(self.train), self.bundle.augment
        draws = draw_epoch(n, batch_size, augment, generator).to(self.device)  # the epoch's one transfer
        order = draws[:n]
        flips = draws[n:2 * n].bool() if augment != "none" else None
        crops = draws[2 * n:].view(n, 2) if augment == "flip_crop" else None
        for start in range(0, n, batch_size):
            idx = order[start:start + batch_size]
            xb = self.train.x[idx]
            if flips is not None:
                xb = apply_flip(xb, flips[start:start + batch_size])
            if crops is not None:
                xb = apply_crop(xb, crops[start:start + batch_size])
            yield self.prepare(xb, size, channels_last), self.train.y[idx]

    def val_batches(self, batch_size: int, size: int | None = None,
                    channels_last: bool = False) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The validation split in its order, normalised, on the device."""
        for start in range(0, len(self.val), batch_size):
            yield (self.prepare(self.val.x[start:start + batch_size], size, channels_last),
                   self.val.y[start:start + batch_size])
