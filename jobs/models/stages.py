"""Capture stages: which modules of a network are hooked, how their outputs are pooled, and the checks on them.

A stage is a module of the network (its dotted path in ``named_modules``)
whose output is captured at every probe. Its output is pooled to one value
per channel: image-shaped outputs are averaged over space (``NCHW`` over H
and W, ``NHWC`` over H and W too, for models that keep channels last such
as Swin), token-shaped ``[B, T, D]`` outputs (``NLC``: ViT, DeiT, MLP-Mixer)
are averaged over all T tokens, class and register tokens included, as the
authors did for ViT.

Stages are chosen by :func:`spread` (four of a model's feature levels, the
last included) or by :func:`resolution_levels` (the last module at each
spatial resolution), and always checked by :func:`check_stages`: every stage
must exist, fire exactly once per forward pass and give a tensor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from dynstudy.jobs.models.names import close_matches

#: Stages a model gets when it names none itself (the paper protocol's four).
N_STAGES = 4


class StageError(ValueError):
    """A stage that cannot be captured; the message names it and the fix."""


@dataclass(frozen=True)
class Stage:
    """One capture stage.

    Attributes
    ----------
    name : the ``stage`` value written to the activations table.
    path : the module's path in ``model.named_modules()``.
    layout : ``NHWC`` for a channels-last model's 4-d outputs; None: ``[B, C, H, W]`` (a 3-d output is tokens).
    """

    name: str
    path: str
    layout: str | None = None


def pool_stage_output(t: torch.Tensor, layout: str | None = None) -> torch.Tensor:
    """One value per channel: ``[B, C, H, W]`` / ``[B, H, W, C]`` -> ``[B, C]`` over space, ``[B, T, D]`` -> ``[B, D]``.

    Parameters
    ----------
    t : a stage's output.
    layout : ``NHWC`` for a channels-last 4-d output; otherwise (None, ``NCHW``)
        a 4-d output is ``[B, C, H, W]``. A 3-d output is always tokens.

    For a ViT block the T tokens are the CLS token and the patch tokens (197
    for ViT-B/16 at 224): the authors' ``output.mean(dim=1)``, CLS included.
    """
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"stage output is a {type(t).__name__}, not a tensor")
    if t.dim() == 4:
        return t.mean(dim=(1, 2)) if layout == "NHWC" else t.mean(dim=(2, 3))
    if t.dim() == 3:
        return t.mean(dim=1)
    raise ValueError(f"stage output of shape {tuple(t.shape)} is neither [B, C, H, W] nor [B, T, D]")


def spread(n_levels: int, k: int = N_STAGES) -> list[int]:
    """Indices of ``k`` levels spread evenly over ``n_levels``, the last included.

    Level ``ceil((i + 1) n / k) - 1`` for i = 0..k-1: of 5 levels (a ResNet's
    stem and four stages) levels 1-4, of 12 blocks (a ViT) blocks 2, 5, 8, 11.
    With ``n_levels <= k`` every level.
    """
    if n_levels <= k:
        return list(range(n_levels))
    return [math.ceil((i + 1) * n_levels / k) - 1 for i in range(k)]


def module_paths(model: nn.Module) -> dict[str, nn.Module]:
    """``named_modules`` without the root (whose path is '')."""
    return {path: m for path, m in model.named_modules() if path}


def find_modules(model: nn.Module, stages) -> list[tuple[Stage, nn.Module]]:
    """(stage, module) of each stage; StageError names a missing path and close ones."""
    modules = module_paths(model)
    out = []
    for stage in stages:
        if stage.path not in modules:
            near = close_matches(stage.path, modules, n=4)
            hint = (f"close ones: {', '.join(near)}" if near
                    else f"modules are named like {', '.join(list(modules)[:4])}")
            raise StageError(f"stage {stage.path!r} is not a module of this model ({hint}); set stages to module "
                             "names of model.named_modules()")
        out.append((stage, modules[stage.path]))
    return out


def _spatial(t, layout: str) -> tuple[int, int] | None:
    """(H, W) of a 4-d image-shaped output larger than 1x1; None for anything else."""
    if not isinstance(t, torch.Tensor) or t.dim() != 4:
        return None
    hw = tuple(t.shape[1:3]) if layout == "NHWC" else tuple(t.shape[2:4])
    return hw if hw != (1, 1) else None


def _hooked_eval_pass(model: nn.Module, x: torch.Tensor, hooks: list) -> None:
    """One forward pass of ``x`` in eval mode; then the ``hooks`` are removed and the train/eval mode restored."""
    was_training = model.training
    model.eval()
    try:
        model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)


def _drop(res_in, res_out) -> tuple | None:
    """(input, output) resolution of a module that lowers both sides; None when it does not."""
    if res_in is None or res_out is None or not (res_out[0] < res_in[0] and res_out[1] < res_in[1]):
        return None
    return res_in, res_out


@torch.no_grad()
def resolution_levels(model: nn.Module, x: torch.Tensor, layout: str = "NCHW") -> list[str]:
    """The outermost module to finish last at each spatial resolution, in the order the resolutions appear.

    A module qualifies when it runs once per forward pass, gives an
    image-shaped output and lowers the resolution at most one way inside
    (itself and its submodules together make at most one distinct
    input-to-output drop), so a ResNet's ``layer2`` (56 -> 28 in two places)
    qualifies and the trunk ``features`` of a VGG (five drops) does not. Of
    the qualifying modules only the outermost count (``layer2``, not its
    blocks); the stage of a resolution is the last of them at it. Global
    pools (``nn.AdaptiveAvgPool2d`` ...) and 1x1 outputs (squeeze-excite
    gates, pooled heads) are not feature maps and are left out.

    Parameters
    ----------
    model : the network (put in eval mode for the pass, then restored).
    x : a dummy input batch.
    layout : how 4-d outputs are laid out (``NHWC`` for channels-last models).
    """
    skip = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
    calls: dict[str, int] = {}
    res_out: dict[str, tuple | None] = {}
    drops: dict[str, tuple | None] = {}

    def hook(path):
        def fn(_m, inputs, out):
            calls[path] = calls.get(path, 0) + 1
            res_out[path] = _spatial(out, layout)
            drops[path] = _drop(_spatial(inputs[0] if inputs else None, layout), res_out[path])
        return fn

    modules = {p: m for p, m in module_paths(model).items() if not isinstance(m, skip)}
    _hooked_eval_pass(model, x, [m.register_forward_hook(hook(p)) for p, m in modules.items()])
    qualified = []
    for path in calls:  # in the order modules first finished
        if calls[path] != 1 or res_out[path] is None:
            continue
        inside = {drops[p] for p in calls if p == path or p.startswith(path + ".")} - {None}
        if len(inside) <= 1:
            qualified.append(path)
    outermost = [p for p in qualified if not any(p.startswith(q + ".") for q in qualified)]
    levels: dict[tuple, str] = {}
    for path in outermost:
        levels[res_out[path]] = path  # a later module at this resolution replaces an earlier one; order stays
    return list(levels.values())


@torch.no_grad()
def check_stages(model: nn.Module, stages, x: torch.Tensor) -> list[tuple[str, int]]:
    """(stage name, channels of its pooled output) of each stage, from one eval forward pass of ``x``.

    Raises
    ------
    StageError
        When a stage is not a module of the model, does not fire exactly once
        per forward pass (a module used twice, like a shared ReLU, or one the
        forward never calls), or gives an output that is not an image- or
        token-shaped tensor; each message names the stage and the fix.
    """
    found = find_modules(model, stages)
    seen: dict[str, list] = {s.name: [] for s, _ in found}
    _hooked_eval_pass(model, x, [m.register_forward_hook(lambda _m, _i, out, s=s: seen[s.name].append(out))
                                 for s, m in found])
    widths = []
    for stage, _ in found:
        outs = seen[stage.name]
        if len(outs) != 1:
            how = "never fires" if not outs else f"fires {len(outs)} times"
            raise StageError(f"stage {stage.path!r} {how} in one forward pass (a module reused inside the model, "
                             "or one the forward does not call); pick a module that runs exactly once, such as "
                             "the block that contains it")
        try:
            widths.append((stage.name, int(pool_stage_output(outs[0], stage.layout).shape[1])))
        except ValueError as err:
            raise StageError(f"stage {stage.path!r}: {err}; pick another module") from None
    return widths
