"""Batched, device-agnostic data augmentation for in-memory image batches.

Every function works on a whole batch ``[N, C, H, W]`` at once, on whatever
device the batch lives on (no per-image Python loop), for any dtype (uint8
images or already normalised float images). Randomness comes only from the
``torch.Generator`` passed in: random numbers are drawn on the generator's
device and moved to the batch's device, so a CPU generator seeded per run
drives a GPU batch reproducibly.
"""
from __future__ import annotations

import torch

AUGMENTS = ("none", "flip", "flip_crop")
CROP_PAD = 4


def _check(x: torch.Tensor, kind: str, generator: torch.Generator | None) -> None:
    if kind not in AUGMENTS:
        raise ValueError(f"augment kind={kind!r} is unknown; use one of {AUGMENTS}")
    if x.dim() != 4:
        raise ValueError(f"augment_batch: x must be [N, C, H, W], got shape {tuple(x.shape)}; "
                         "add a batch dimension with x.unsqueeze(0)")
    if kind != "none" and generator is None:
        raise ValueError(f"augment_batch(kind={kind!r}) needs a torch.Generator for its randomness; "
                         "pass generator=torch.Generator().manual_seed(seed)")


def flip_mask(n: int, generator: torch.Generator, device: torch.device | str) -> torch.Tensor:
    """Bool mask [n]: which images are flipped (p = 0.5 each), drawn from ``generator``."""
    draw = torch.rand(n, generator=generator, device=generator.device)
    return (draw < 0.5).to(device)


def apply_flip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Flip the images of ``x`` where ``mask`` [N] (bool, on ``x``'s device) is true."""
    return torch.where(mask[:, None, None, None], x.flip(3), x)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Flip each image horizontally with probability 0.5."""
    return apply_flip(x, flip_mask(x.shape[0], generator, x.device))


def reflect_index(size: int, pad: int, device: torch.device | str) -> torch.Tensor:
    """Source index of every position of a reflect-padded axis (numpy/torch 'reflect').

    Position ``p`` of the padded axis (length ``size + 2 * pad``) reads
    element ``reflect_index(size, pad)[p]`` of the original axis.
    """
    if pad >= size:
        raise ValueError(f"reflect padding pad={pad} needs an axis longer than pad, got size={size}")
    idx = torch.arange(-pad, size + pad, device=device)
    idx = idx.abs()
    return torch.where(idx > size - 1, 2 * (size - 1) - idx, idx)


def random_crop_reflect(x: torch.Tensor, generator: torch.Generator, pad: int = CROP_PAD) -> torch.Tensor:
    """Reflect-pad by ``pad`` and crop back to the original size at per-image offsets.

    Equivalent to ``F.pad(x, (pad,) * 4, mode="reflect")[i, :, oy:oy+H, ox:ox+W]``
    per image with ``oy, ox`` uniform in ``0..2*pad``, done with one gather.
    """
    return apply_crop(x, crop_offsets(x.shape[0], generator, x.device, pad), pad)


def crop_offsets(n: int, generator: torch.Generator, device: torch.device | str, pad: int = CROP_PAD) -> torch.Tensor:
    """Int [n, 2]: each image's (row, column) crop offset in ``0..2*pad``, drawn from ``generator``."""
    return torch.randint(0, 2 * pad + 1, (n, 2), generator=generator, device=generator.device).to(device)


def apply_crop(x: torch.Tensor, offsets: torch.Tensor, pad: int = CROP_PAD) -> torch.Tensor:
    """Reflect-pad ``x`` by ``pad`` and crop each image back at its ``offsets`` [N, 2] (one gather)."""
    n, _, h, w = x.shape
    rows_src = reflect_index(h, pad, x.device)
    cols_src = reflect_index(w, pad, x.device)
    rows = rows_src[offsets[:, :1] + torch.arange(h, device=x.device)]  # [N, H]
    cols = cols_src[offsets[:, 1:] + torch.arange(w, device=x.device)]  # [N, W]
    batch = torch.arange(n, device=x.device)[:, None, None]
    out = x[batch, :, rows[:, :, None], cols[:, None, :]]  # advanced dims first: [N, H, W, C]
    return out.permute(0, 3, 1, 2).contiguous()


def augment_batch(x: torch.Tensor, kind: str, generator: torch.Generator | None) -> torch.Tensor:
    """Augment a batch ``[N, C, H, W]`` on its own device.

    Parameters
    ----------
    x : torch.Tensor
        Image batch, any dtype, any device.
    kind : str
        ``"none"`` (identity, returns ``x`` itself), ``"flip"`` (random
        horizontal flip, p = 0.5 per image) or ``"flip_crop"`` (flip, then
        reflect-pad 4 and random crop back to the original size).
    generator : torch.Generator or None
        The only source of randomness; may live on another device than ``x``.
        Not needed for ``"none"``.

    Returns
    -------
    torch.Tensor
        Same shape, dtype and device as ``x``.
    """
    _check(x, kind, generator)
    if kind == "none" or x.shape[0] == 0:
        return x
    out = random_flip(x, generator)
    if kind == "flip_crop":
        out = random_crop_reflect(out, generator)
    return out


def resize_batch(x: torch.Tensor, size: int | None) -> torch.Tensor:
    """Bilinearly resize a float batch to ``size`` x ``size``; ``None`` keeps it.

    Used for models with a fixed input side (ViT-B/16 at 224 on 32x32 CIFAR),
    on the batch's device.
    """
    if size is None or (x.shape[-2] == size and x.shape[-1] == size):
        return x
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
