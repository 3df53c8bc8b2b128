"""Any model a spec names, built with its capture stages: the zoo, timm, torchvision or the user's builder.

A trial config names its model by ``model`` (the cell's label, as the
``runs`` table shows it) and, where they apply, ``model_name`` (the model
the label stands for, when the spec gave a ``label``), ``model_kwargs`` (the
builder's keyword arguments) and ``stages`` (module names the spec chose).
The zoo's twelve models without those keys are built exactly as before.

:func:`build` returns the network with its stages and the input side it
needs; :func:`stage_widths` checks, on one dummy forward pass, that every
stage exists, fires once and gives an image- or token-shaped output, and
returns each stage's channel count; :func:`check_model_names` refuses names
that name nothing, with close matches, before Ray starts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from dynstudy.jobs.models import zoo as models
from dynstudy.jobs.models.names import parse_model_ref
from dynstudy.jobs.models.sources import ModelNameError, build_source, check_model_ref, default_stages
from dynstudy.jobs.models.stages import Stage, StageError, check_stages


@dataclass(frozen=True)
class ModelDef:
    """What a trial config says about its model.

    Attributes
    ----------
    label : the cell's model label (``runs.model``).
    name : the model: a zoo name, ``timm/<name>``, ``torchvision/<name>`` or ``module.path:function``.
    kwargs : keyword arguments for the builder (timm, torchvision and user models).
    stages : module names to capture, as the spec chose them (None: the model's default).
    """

    label: str
    name: str
    kwargs: dict = field(default_factory=dict)
    stages: tuple[str, ...] | None = None

    @classmethod
    def of(cls, config: dict) -> "ModelDef":
        """The model of a trial config (see the module docstring)."""
        stages = config.get("stages")
        return cls(config["model"], config.get("model_name") or config["model"], dict(config.get("model_kwargs") or {}),
                   tuple(stages) if stages is not None else None)

    @property
    def key(self) -> tuple:
        """Hashable identity of the definition (for caching stage widths)."""
        return self.name, tuple(sorted((k, repr(v)) for k, v in self.kwargs.items())), self.stages


@dataclass
class BuiltModel:
    """A network ready to train and capture.

    Attributes
    ----------
    module : the network.
    stages : its capture stages, in depth order.
    input_size : the side its inputs must have (None: the data's own).
    """

    module: nn.Module
    stages: tuple[Stage, ...]
    input_size: int | None


def build(md: ModelDef, num_classes: int, in_chans: int = 3, image_size: int = 32, stem: str = "stock",
          pretrained: str | None = None) -> BuiltModel:
    """Build the model of ``md`` with its stages.

    Parameters
    ----------
    md : the model definition (:meth:`ModelDef.of` a trial config).
    num_classes, in_chans : classifier outputs and input channels.
    image_size : the data's input side.
    stem : ``stock`` or (zoo ResNets, DenseNet, MobileNetV2) ``cifar``.
    pretrained : None, a local weights file, or ``"hub"``.
    """
    ref = parse_model_ref(md.name)
    if ref.kind == "zoo":
        if md.kwargs:
            raise ValueError(f"model {md.label!r}: kwargs apply to timm/, torchvision/ and module:function models, "
                             f"not the zoo's {md.name}; drop them or name e.g. timm/{md.name}")
        info = models.model_info(md.name)
        module = models.build_model(md.name, num_classes, in_chans, image_size, stem, pretrained)
        stages = models.zoo_stages(md.name) if md.stages is None else tuple(Stage(p, p) for p in md.stages)
        return BuiltModel(module, stages, info.input_size)
    if stem != "stock":
        raise ValueError(f"model {md.label!r}: train.stem={stem!r} applies to the zoo's ResNets, DenseNet-121 and "
                         "MobileNetV2; use stem: stock (and a model or kwargs made for small images)")
    source = build_source(ref, md.label, num_classes, in_chans, image_size, md.kwargs, pretrained)
    if pretrained and pretrained != "hub" and ref.kind != "timm":
        models.load_local_weights(source.module, pretrained)
    side = source.input_size or image_size
    if md.stages is not None:
        stages = tuple(Stage(p, p, source.layout) for p in md.stages)
    else:
        stages = default_stages(source, ref, in_chans, side)
    return BuiltModel(source.module, stages, source.input_size)


def stage_widths(md: ModelDef, in_chans: int = 3, image_size: int = 32, stem: str = "stock") -> list[tuple[str, int]]:
    """(stage, channels of its pooled output) of each stage, from one forward pass of a fresh model on a dummy input.

    Raises
    ------
    ValueError
        Naming the model and the fix when it cannot be built, its forward
        pass fails at this input, or a stage does not exist, does not fire
        exactly once or gives no image- or token-shaped tensor.
    """
    if md.stages is None and not md.kwargs and md.name in models.MODEL_NAMES:
        return models.stage_widths(md.name, in_chans, image_size, stem)  # exactly as before
    built = build(md, 10, in_chans, image_size, stem)
    side = built.input_size or image_size
    try:
        return check_stages(built.module, built.stages, torch.zeros(1, in_chans, side, side))
    except StageError as err:
        chosen = "as the spec names them" if md.stages is not None else "as chosen by default"
        raise StageError(f"model {md.label!r} ({chosen}): {err}") from None
    except Exception as err:  # the model's own forward fails on this input
        raise ValueError(f"model {md.label!r} fails on a {in_chans}x{side}x{side} input ({type(err).__name__}: "
                         f"{str(err)[:300]}); give kwargs that fit this data (e.g. img_size), or another model"
                         ) from None


def check_model_names(trials: list[dict]) -> None:
    """Raise ValueError naming every model of ``trials`` that names no timm/torchvision model or builder.

    Cheap (a look-up, or importing the user's module); runs before anything is built.
    """
    problems = {}
    for md in {ModelDef.of(t).name: ModelDef.of(t) for t in trials}.values():
        try:
            check_model_ref(parse_model_ref(md.name), md.name)
        except (ModelNameError, ValueError) as err:
            problems[md.name] = str(err)
    if problems:
        raise ValueError("invalid study spec: models: " + "; ".join(problems.values()))
