"""The model zoo, each model with the paper protocol's four capture stages.

Stages (SPEC): ResNet ``layer1..layer4``; DenseNet-121 ``denseblock1..4``;
VGG-16-BN ``features[6, 13, 23, 33]``; MobileNetV2 ``features[4, 7, 14, 17]``;
ViT encoder blocks 1, 4, 7, 10 (timm ``blocks[0, 3, 6, 9]``, the same
computation as torchvision's ``encoder.layers[0, 3, 6, 9]`` that the authors
hooked), pooled as they did: the mean over all tokens, the CLS token included.
A torchvision ViT-B/16 state dict (the authors' weights) loads into
``vit_b_16`` as a local ``pretrained`` file. The two tiny CNNs train in
seconds on CPU for demos and tests; every stage has at least 32 channels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dynstudy.jobs.models.names import MODEL_NAMES
from dynstudy.jobs.models.stages import Stage, check_stages, find_modules, pool_stage_output
from dynstudy.jobs.models.tv_compat import ensure_torchvision

ensure_torchvision()
import torchvision  # noqa: E402

__all__ = ["MODEL_NAMES", "ModelInfo", "build_model", "model_info", "pool_stage_output", "stage_modules",
           "stage_widths", "zoo_stages"]
STEMS = ("stock", "cifar")
TINY_WIDTHS = (32, 48, 64, 96)


@dataclass(frozen=True)
class ModelInfo:
    """What the protocol needs to know about a model."""

    name: str
    family: str
    stage_names: tuple[str, str, str, str]
    input_size: int | None = None      # required input side (None: any)
    paper_probe_size: int = 2048
    paper_smooth_window: int = 5
    paper_lr: float = 0.1
    paper_weight_decay: float = 5e-4


_RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")
_INFO = {
    "tiny_cnn": ModelInfo("tiny_cnn", "tiny", ("stage1", "stage2", "stage3", "stage4"), paper_probe_size=256),
    "tiny_resnet": ModelInfo("tiny_resnet", "tiny", ("stage1", "stage2", "stage3", "stage4"), paper_probe_size=256),
    "resnet18": ModelInfo("resnet18", "resnet", _RESNET_STAGES),
    "resnet34": ModelInfo("resnet34", "resnet", _RESNET_STAGES),
    "resnet50": ModelInfo("resnet50", "resnet", _RESNET_STAGES, paper_probe_size=4096),
    "resnet101": ModelInfo("resnet101", "resnet", _RESNET_STAGES, paper_probe_size=4096),
    "resnet152": ModelInfo("resnet152", "resnet", _RESNET_STAGES, paper_probe_size=4096),
    "densenet121": ModelInfo("densenet121", "densenet", ("denseblock1", "denseblock2", "denseblock3", "denseblock4"),
                             paper_probe_size=4096, paper_smooth_window=15, paper_weight_decay=1e-4),
    "mobilenet_v2": ModelInfo("mobilenet_v2", "mobilenet", ("features.4", "features.7", "features.14", "features.17")),
    "vgg16_bn": ModelInfo("vgg16_bn", "vgg", ("features.6", "features.13", "features.23", "features.33"),
                          paper_probe_size=4096, paper_smooth_window=15, paper_lr=0.01),
    "vit_b_16": ModelInfo("vit_b_16", "vit", ("blocks.0", "blocks.3", "blocks.6", "blocks.9"), input_size=224,
                          paper_probe_size=256, paper_lr=1e-4, paper_weight_decay=1e-4),
    "vit_tiny": ModelInfo("vit_tiny", "vit", ("blocks.0", "blocks.3", "blocks.6", "blocks.9"),
                          paper_probe_size=256, paper_lr=1e-4, paper_weight_decay=1e-4),
}


def model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name``; ValueError lists the known names."""
    if name not in _INFO:
        raise ValueError(f"model {name!r} is unknown; allowed: {', '.join(MODEL_NAMES)}")
    return _INFO[name]


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class TinyCNN(nn.Module):
    """Four conv-BN-ReLU stages (32, 48, 64, 96 channels), stride 2 after the first."""

    def __init__(self, num_classes: int, in_chans: int = 3, widths=TINY_WIDTHS):
        super().__init__()
        chans = (in_chans,) + tuple(widths)
        self.stage1 = _conv_bn(chans[0], chans[1])
        self.stage2 = _conv_bn(chans[1], chans[2], 2)
        self.stage3 = _conv_bn(chans[2], chans[3], 2)
        self.stage4 = _conv_bn(chans[3], chans[4], 2)
        self.head = nn.Linear(chans[4], num_classes)

    def forward(self, x):
        x = self.stage4(self.stage3(self.stage2(self.stage1(x))))
        return self.head(x.mean(dim=(2, 3)))


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(_conv_bn(cin, cout, stride), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cout))
        self.skip = nn.Identity() if cin == cout and stride == 1 else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        return torch.relu(self.body(x) + self.skip(x))


class TinyResNet(nn.Module):
    """A 3x3 stem and four residual stages of one basic block each (32, 48, 64, 96)."""

    def __init__(self, num_classes: int, in_chans: int = 3, widths=TINY_WIDTHS):
        super().__init__()
        self.stem = _conv_bn(in_chans, widths[0])
        self.stage1 = _Basic(widths[0], widths[0], 1)
        self.stage2 = _Basic(widths[0], widths[1], 2)
        self.stage3 = _Basic(widths[1], widths[2], 2)
        self.stage4 = _Basic(widths[2], widths[3], 2)
        self.head = nn.Linear(widths[3], num_classes)

    def forward(self, x):
        x = self.stage4(self.stage3(self.stage2(self.stage1(self.stem(x)))))
        return self.head(x.mean(dim=(2, 3)))


def _replace_first_conv(conv: nn.Conv2d, in_chans: int, kernel: int | None = None, stride: int | None = None,
                        padding: int | None = None) -> nn.Conv2d:
    return nn.Conv2d(in_chans, conv.out_channels, kernel or conv.kernel_size, stride or conv.stride,
                     conv.padding if padding is None else padding, bias=conv.bias is not None)


def _torchvision_model(name: str, num_classes: int, in_chans: int, stem: str) -> nn.Module:
    tv = torchvision.models
    model = getattr(tv, name)(weights=None, num_classes=num_classes)
    cifar = stem == "cifar"
    if name.startswith("resnet"):
        if cifar or in_chans != 3:
            model.conv1 = _replace_first_conv(model.conv1, in_chans, *((3, 1, 1) if cifar else ()))
        if cifar:
            model.maxpool = nn.Identity()
    elif name == "densenet121":
        if cifar or in_chans != 3:
            model.features.conv0 = _replace_first_conv(model.features.conv0, in_chans, *((3, 1, 1) if cifar else ()))
        if cifar:
            model.features.pool0 = nn.Identity()
    elif name == "mobilenet_v2":
        first = model.features[0][0]
        if cifar or in_chans != 3:
            model.features[0][0] = _replace_first_conv(first, in_chans, None, 1 if cifar else None)
    elif name == "vgg16_bn":
        if in_chans != 3:
            model.features[0] = _replace_first_conv(model.features[0], in_chans)
    return model


def _timm_model(name: str, num_classes: int, in_chans: int, image_size: int, pretrained: str | None) -> nn.Module:
    import timm

    kwargs = {"num_classes": num_classes, "in_chans": in_chans}
    if name == "vit_b_16":
        arch = "vit_base_patch16_224"
    else:  # vit_tiny: 10+ blocks on small images, for tests and CPU studies
        arch = "vit_tiny_patch16_224"
        kwargs.update(img_size=image_size, patch_size=4 if image_size <= 64 else 16, depth=10)
    if pretrained == "hub":
        try:
            return timm.create_model(arch, pretrained=True, **kwargs)
        except Exception as err:  # offline: huggingface_hub raises various errors
            raise RuntimeError(f"could not fetch {arch} weights from the hub ({err}); on an offline machine pass a "
                               "local weights file as train.pretrained") from None
    if pretrained:
        try:
            state = _read_state(pretrained)
        except Exception:  # not a torch file (.safetensors, .npz): timm reads it
            state = {}
        if isinstance(state, dict) and any(str(k).startswith("encoder.layers.") for k in state):  # torchvision's ViT
            model = timm.create_model(arch, pretrained=False, **kwargs)
            load_local_weights(model, pretrained, torchvision_vit_to_timm(state))
            return model
        return timm.create_model(arch, pretrained=True, pretrained_cfg_overlay={"file": str(pretrained)}, **kwargs)
    return timm.create_model(arch, pretrained=False, **kwargs)


def torchvision_vit_to_timm(state: dict) -> dict:
    """A torchvision ``VisionTransformer`` state dict with timm ``VisionTransformer`` names.

    torchvision's ``encoder.layers.encoder_layer_i`` is timm's ``blocks.i``
    (pre-norm attention and MLP, LayerNorm eps 1e-6, exact GELU), so the
    converted model computes the same block outputs; ``heads.head`` becomes ``head``.
    """
    fixed = {"class_token": "cls_token", "conv_proj.weight": "patch_embed.proj.weight",
             "conv_proj.bias": "patch_embed.proj.bias", "encoder.pos_embedding": "pos_embed",
             "encoder.ln.weight": "norm.weight", "encoder.ln.bias": "norm.bias",
             "heads.head.weight": "head.weight", "heads.head.bias": "head.bias"}
    parts = {"ln_1": "norm1", "self_attention.in_proj_weight": "attn.qkv.weight",
             "self_attention.in_proj_bias": "attn.qkv.bias", "self_attention.out_proj": "attn.proj", "ln_2": "norm2",
             "mlp.0": "mlp.fc1", "mlp.3": "mlp.fc2"}
    out = {}
    for key, value in state.items():
        if key in fixed:
            out[fixed[key]] = value
        elif key.startswith("encoder.layers.encoder_layer_"):
            index, rest = key.removeprefix("encoder.layers.encoder_layer_").split(".", 1)
            for old, new in parts.items():
                if rest == old or rest.startswith(old + "."):
                    rest = new + rest[len(old):]
                    break
            out[f"blocks.{index}.{rest}"] = value
        else:
            out[key] = value
    return out


def _read_state(path: str) -> dict:
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    return state


def load_local_weights(model: nn.Module, path: str, state: dict | None = None) -> None:
    """Load a state dict (``state``, else the file at ``path``), skipping tensors whose shapes differ (a new
    classifier head)."""
    state = _read_state(path) if state is None else state
    own = model.state_dict()
    kept = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = sorted(set(state) - set(kept))
    missing = sorted(set(own) - set(kept))
    if not kept:
        raise ValueError(f"weights file {path!r} shares no tensor with this model; is it for another architecture?")
    model.load_state_dict(kept, strict=False)
    heads = ("fc.", "classifier", "head")
    if [k for k in missing if not k.startswith(heads) and "num_batches_tracked" not in k]:
        raise ValueError(f"weights file {path!r} lacks {len(missing)} tensors of this model, e.g. {missing[:3]}")
    del skipped  # a replaced classifier head is expected


def build_model(name: str, num_classes: int, in_chans: int = 3, image_size: int = 32, stem: str = "stock",
                pretrained: str | None = None) -> nn.Module:
    """A freshly initialised (or pretrained) model of the zoo.

    Parameters
    ----------
    name : one of :data:`MODEL_NAMES`.
    num_classes, in_chans : classifier outputs and input channels.
    image_size : input side (used by ``vit_tiny``; ``vit_b_16`` needs 224).
    stem : ``"stock"`` keeps the published architecture (as the paper trained
        it); ``"cifar"`` uses a 3x3 stride-1 stem without max-pool for small images.
    pretrained : None (random init), a local weights file, or ``"hub"``.
    """
    info = model_info(name)
    if stem not in STEMS:
        raise ValueError(f"stem {stem!r} is unknown; allowed: {', '.join(STEMS)}")
    if num_classes < 1 or in_chans < 1:
        raise ValueError(f"num_classes={num_classes} and in_chans={in_chans} must be positive")
    if pretrained not in (None, "hub") and not Path(pretrained).is_file():
        raise FileNotFoundError(f"pretrained weights file {pretrained!r} not found")
    if info.family == "vit":
        if stem == "cifar":
            raise ValueError(f"stem='cifar' does not apply to {name}; use stem='stock'")
        return _timm_model(name, num_classes, in_chans, image_size, pretrained)
    if info.family == "tiny":
        model = (TinyCNN if name == "tiny_cnn" else TinyResNet)(num_classes, in_chans)
    else:
        if pretrained == "hub":
            model = getattr(torchvision.models, name)(weights="DEFAULT")
            model = reset_head(model, num_classes)
            if stem == "cifar" or in_chans != 3:
                raise ValueError("hub weights are for the stock RGB stem; use stem='stock' and 3 channels")
            return model
        model = _torchvision_model(name, num_classes, in_chans, stem)
    if pretrained:
        load_local_weights(model, pretrained)
    return model


def reset_head(model: nn.Module, num_classes: int) -> nn.Module:
    """Give a pretrained classifier ``num_classes`` outputs: its last ``nn.Linear`` under ``fc``, ``classifier``,
    ``head`` or ``heads`` is replaced; ValueError when the model has none of them."""
    for attr in ("fc", "classifier", "head", "heads"):
        head = getattr(model, attr, None)
        if isinstance(head, nn.Linear):
            setattr(model, attr, nn.Linear(head.in_features, num_classes))
            return model
        if isinstance(head, nn.Sequential) and isinstance(head[-1], nn.Linear):
            head[-1] = nn.Linear(head[-1].in_features, num_classes)
            return model
    raise ValueError(f"cannot find the classifier of this {type(model).__name__} to give it {num_classes} outputs; "
                     "train from scratch (pretrained: null) or give a local weights file")


def zoo_stages(name: str) -> tuple[Stage, ...]:
    """The paper protocol's four stages of a zoo model (DenseNet's blocks live under ``features``)."""
    info = model_info(name)
    return tuple(Stage(s, f"features.{s}" if info.family == "densenet" else s) for s in info.stage_names)


def stage_modules(model: nn.Module, name: str) -> list[tuple[str, nn.Module]]:
    """The four capture stages of a zoo ``model`` as (stage name, module), in depth order."""
    return [(stage.name, module) for stage, module in find_modules(model, zoo_stages(name))]


def stage_widths(name: str, in_chans: int = 3, image_size: int = 32, stem: str = "stock") -> list[tuple[str, int]]:
    """(stage, channels of its pooled output) of each stage of a zoo model, from a forward pass on a dummy input."""
    size = model_info(name).input_size or image_size
    model = build_model(name, 10, in_chans, size, stem)
    return check_stages(model, zoo_stages(name), torch.zeros(1, in_chans, size, size))
