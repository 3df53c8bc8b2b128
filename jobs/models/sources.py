"""Models from outside the zoo: timm and torchvision by name, and the user's own builder.

Each source builds a freshly initialised network for ``num_classes`` and
``in_chans`` and says which stages it has by default and whether it needs a
fixed input side:

* ``timm/<name>``: ``timm.create_model(name, pretrained=False, **kwargs)``;
  stages from the model's ``feature_info`` (four feature levels spread over
  them, the last included: :func:`dynstudy.jobs.models.stages.spread`); a fixed input size
  from timm's input config of the built model (ViT, DeiT, Swin, MLP-Mixer
  ...: the probe and training batches are resized to it).
* ``torchvision/<name>``: ``torchvision.models.get_model(name, weights=None, **kwargs)``;
  stages by family where torchvision's modules name them (ResNet, ResNeXt,
  Wide ResNet: ``layer1..4``; DenseNet: ``features.denseblock1..4``; ViT:
  four encoder layers spread as for timm; Swin: ``features.1, 3, 5, 7``,
  channels last), otherwise the outputs where the spatial resolution drops
  (:func:`dynstudy.jobs.models.stages.resolution_levels`, on a 224x224 input); ViT needs
  its ``image_size`` (224).
* ``module.path:function``: ``function(num_classes=..., in_chans=..., [image_size=...], **kwargs)``
  returns the network, or ``(network, [stage module names])``; without
  stages, the resolution rule on the data's input size.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from torch import nn

from dynstudy.jobs.models.names import ModelRef, close_matches
from dynstudy.jobs.models.stages import Stage, StageError, resolution_levels, spread
from dynstudy.jobs.models.tv_compat import ensure_torchvision
from dynstudy.jobs.user_code import import_function

ensure_torchvision()
import torchvision  # noqa: E402

#: Input side the torchvision rule traces at (torchvision's classification models are made for 224).
TRACE_SIZE = 224
#: torchvision families whose stages are named, by name prefix.
_TV_NAMED = {"resnet": ("layer1", "layer2", "layer3", "layer4"), "resnext": ("layer1", "layer2", "layer3", "layer4"),
             "wide_resnet": ("layer1", "layer2", "layer3", "layer4"),
             "densenet": tuple(f"features.denseblock{i}" for i in range(1, 5)),
             "swin": ("features.1", "features.3", "features.5", "features.7")}
#: torchvision models with auxiliary heads: built without them, so a training step returns plain logits.
_TV_NO_AUX = {"googlenet": {"aux_logits": False, "init_weights": True},
              "inception_v3": {"aux_logits": False, "init_weights": True}}


class ModelNameError(ValueError):
    """A model name that names nothing; the message lists close names."""


@dataclass
class Source:
    """A built network and what capture needs to know about it.

    Attributes
    ----------
    module : the network, freshly initialised.
    stages : its default capture stages (empty: choose by the resolution rule).
    input_size : the input side it requires (None: any).
    layout : ``NHWC`` when its 4-d stage outputs keep channels last; None: ``[B, C, H, W]``.
    """

    module: nn.Module
    stages: tuple[str, ...]
    input_size: int | None
    layout: str | None = None


def timm_names() -> list[str]:
    """Every architecture timm knows."""
    import timm

    return timm.list_models()


def torchvision_names() -> list[str]:
    """torchvision's classification models (not detection, segmentation, video or quantized ones)."""
    return torchvision.models.list_models(module=torchvision.models)


def check_model_ref(ref: ModelRef, label: str) -> None:
    """Raise :class:`ModelNameError` when ``ref`` names no timm or torchvision model or no importable builder.

    Parameters
    ----------
    ref : the parsed name.
    label : how the name appears in the spec, for the message.
    """
    if ref.kind in ("timm", "torchvision"):
        known = timm_names() if ref.kind == "timm" else torchvision_names()
        arch = ref.target.split(".", 1)[0] if ref.kind == "timm" else ref.target  # timm's name.pretrained_tag
        if arch not in known:
            near = [f"{ref.kind}/{n}" for n in close_matches(ref.target, known)]
            hint = f"close matches: {', '.join(near)}" if near else f"see {ref.kind}'s list_models()"
            raise ModelNameError(f"model {label!r}: {ref.kind} has no model {ref.target!r}; {hint}")
    elif ref.kind == "user":
        _user_function(ref, label)


def _user_function(ref: ModelRef, label: str):
    """The builder ``module.path:function`` names; ModelNameError says why it cannot be had."""
    return import_function(ref.module, ref.function, f"model {label!r}", ModelNameError)


def _layout(model: nn.Module) -> str | None:
    """``NHWC`` for a model that declares channels-last outputs (timm's ``output_fmt``: Swin, MambaOut, ...)."""
    return "NHWC" if str(getattr(model, "output_fmt", "")) in ("NHWC", "Format.NHWC") else None


def _timm(name: str, num_classes: int, in_chans: int, kwargs: dict, pretrained: str | None) -> Source:
    import timm

    args = {"num_classes": num_classes, "in_chans": in_chans, **kwargs}
    if pretrained == "hub":
        model = timm.create_model(name, pretrained=True, **args)
    elif pretrained:
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(pretrained)}, **args)
    else:
        model = timm.create_model(name, pretrained=False, **args)
    levels = [f["module"] for f in getattr(model, "feature_info", None) or [] if f.get("module")]
    return Source(model, tuple(levels[i] for i in spread(len(levels))), _timm_fixed_size(model, kwargs), _layout(model))


def _timm_fixed_size(model: nn.Module, kwargs: dict) -> int | None:
    """The input side a timm model requires (None: any), from its input config as built (img_size kwargs count)."""
    try:
        from timm.models import get_model_input_config  # newer timm; older ones only have pretrained_cfg
    except ImportError:
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        if not cfg.get("fixed_input_size") or kwargs.get("dynamic_img_size"):
            return None
        size = kwargs.get("img_size") or cfg.get("input_size", (3, 224, 224))[-1]
        return int(size if isinstance(size, int) else size[-1])
    config = get_model_input_config(model)
    return int(config["input_size"][-1]) if config.get("fixed_input_size") else None


def _tv_family_stages(name: str, model: nn.Module) -> tuple[str, ...]:
    """The stages torchvision's module names give a family (empty: use the resolution rule)."""
    if name.startswith("vit_"):
        layers = [f"encoder.layers.{n}" for n, _ in model.encoder.layers.named_children()]
        return tuple(layers[i] for i in spread(len(layers)))
    for prefix, stages in _TV_NAMED.items():
        if name.startswith(prefix):
            return stages
    return ()


def _replace_input_conv(model: nn.Module, in_chans: int) -> None:
    """Give the first 3-channel convolution ``in_chans`` inputs (grayscale data on an RGB architecture)."""
    for path, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d) and conv.in_channels == 3:
            parent, _, attr = path.rpartition(".")
            owner = model.get_submodule(parent) if parent else model
            setattr(owner, attr, nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                                           conv.dilation, conv.groups, conv.bias is not None))
            return
    raise ValueError(f"found no 3-channel input convolution to give {in_chans} channels; use 3-channel data")


def _torchvision(name: str, num_classes: int, in_chans: int, kwargs: dict, pretrained: str | None) -> Source:
    from dynstudy.jobs.models.zoo import reset_head

    args = {**_TV_NO_AUX.get(name, {}), **kwargs}
    if pretrained == "hub":
        model = reset_head(torchvision.models.get_model(name, weights="DEFAULT", **args), num_classes)
    else:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **args)
    if in_chans != 3:
        _replace_input_conv(model, in_chans)
    size = getattr(model, "image_size", None) if name.startswith("vit_") else None
    return Source(model, _tv_family_stages(name, model), size, "NHWC" if name.startswith("swin") else None)


def _user(ref: ModelRef, label: str, num_classes: int, in_chans: int, image_size: int, kwargs: dict) -> Source:
    fn = _user_function(ref, label)
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    args = {"num_classes": num_classes, "in_chans": in_chans}
    if "image_size" in params or takes_any:
        args["image_size"] = image_size
    out = fn(**args, **kwargs)
    model, stages = (out if isinstance(out, tuple) and len(out) == 2 else (out, ()))
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {label!r}: {ref.target} returned a {type(model).__name__}; a builder returns an "
                         "nn.Module, or (nn.Module, [stage module names])")
    if isinstance(stages, str) or not all(isinstance(s, str) for s in stages):
        raise ValueError(f"model {label!r}: {ref.target} named its stages as {stages!r}; give a list of module names")
    size = getattr(model, "input_size", None)
    return Source(model, tuple(stages), size if isinstance(size, int) else None, _layout(model))


def build_source(ref: ModelRef, label: str, num_classes: int, in_chans: int, image_size: int, kwargs: dict,
                 pretrained: str | None = None) -> Source:
    """Build a timm, torchvision or user model as :class:`Source` (see the module docstring).

    Parameters
    ----------
    ref : the parsed name (kind ``timm``, ``torchvision`` or ``user``).
    label : the name as the spec gives it, for messages.
    num_classes, in_chans : classifier outputs and input channels.
    image_size : the data's input side (given to user builders that take ``image_size``).
    kwargs : the spec's ``kwargs`` for the builder.
    pretrained : None, a local weights file, or ``"hub"`` (timm and torchvision only).
    """
    check_model_ref(ref, label)
    try:
        if ref.kind == "timm":
            return _timm(ref.target, num_classes, in_chans, kwargs, pretrained)
        if ref.kind == "torchvision":
            return _torchvision(ref.target, num_classes, in_chans, kwargs, pretrained)
        if pretrained == "hub":
            raise ValueError(f"model {label!r}: train.pretrained='hub' is for timm and torchvision models; give a "
                             "local weights file")
        return _user(ref, label, num_classes, in_chans, image_size, kwargs)
    except TypeError as err:  # a kwarg the builder does not take
        raise ValueError(f"model {label!r} could not be built with kwargs {kwargs} ({err}); fix the model's kwargs"
                         ) from None


def default_stages(source: Source, ref: ModelRef, in_chans: int, image_size: int) -> tuple[Stage, ...]:
    """The stages a model gets when the spec names none: its own, else the resolution rule.

    The rule traces torchvision models at 224x224 (or their fixed size), so
    the choice does not depend on the data, and user models at the data's
    own size (``image_size``).
    """
    paths = source.stages
    if not paths:
        side = source.input_size or (TRACE_SIZE if ref.kind == "torchvision" else image_size)
        levels = resolution_levels(source.module, torch.zeros(1, in_chans, side, side), source.layout or "NCHW")
        paths = tuple(levels[i] for i in spread(len(levels)))
    if not paths:
        raise StageError(f"model {ref.target!r} has no feature levels to capture; name them with stages: [...]")
    return tuple(Stage(p, p, source.layout) for p in paths)
