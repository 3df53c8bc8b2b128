"""Any model by name: timm and torchvision architectures of many families at small sizes, and a user builder.

For each: the stages chosen (or named) are hooked exactly once per forward
pass, the capture has the right shapes and channel counts, and one training
step gives every parameter a gradient. Then the checks that refuse bad
names and bad stages before Ray starts.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dynstudy.jobs.capture.fit_check import check_trials_fit
from dynstudy.jobs.capture.probe import ActivationProbe
from dynstudy.jobs.models.registry import ModelDef, build, check_model_names, stage_widths
from dynstudy.jobs.models.stages import StageError, check_stages, resolution_levels, spread

TINY_VIT = {"img_size": 32, "patch_size": 4, "depth": 4}
TINY_SWIN = {"img_size": 32, "window_size": 4, "depths": (1, 1, 1, 1), "embed_dim": 24, "num_heads": (1, 1, 1, 1)}


class UserNet(nn.Module):
    """A user's own network: a stem, three conv stages, a shared ReLU (used three times) and an unused module."""

    def __init__(self, num_classes: int, in_chans: int, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.down1 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width))
        self.down2 = nn.Sequential(nn.Conv2d(2 * width, 4 * width, 3, 2, 1), nn.BatchNorm2d(4 * width))
        self.down3 = nn.Sequential(nn.Conv2d(4 * width, 8 * width, 3, 2, 1), nn.BatchNorm2d(8 * width))
        self.act = nn.ReLU()
        self.unused = nn.Identity()
        self.head = nn.Linear(8 * width, num_classes)

    def forward(self, x):
        x = self.act(self.down3(self.act(self.down2(self.act(self.down1(self.stem(x)))))))
        return self.head(x.mean(dim=(2, 3)))


def build_user_net(num_classes, in_chans, width=16):
    """The builder a spec names as ``tests.test_model_sources:build_user_net``: the network and its stages."""
    return UserNet(num_classes, in_chans, width), ["stem", "down1", "down2", "down3"]


def build_user_net_unnamed(num_classes, in_chans, image_size):
    """A builder that names no stages: the resolution rule chooses them."""
    assert image_size == 32
    return UserNet(num_classes, in_chans)


# (model, kwargs, expected stage paths, channels of each)
CASES = [
    ("timm/resnet18", {}, ["layer1", "layer2", "layer3", "layer4"], [64, 128, 256, 512]),
    ("timm/convnext_atto", {}, ["stages.0", "stages.1", "stages.2", "stages.3"], [40, 80, 160, 320]),
    ("timm/efficientnet_b0", {}, ["blocks.1", "blocks.2", "blocks.4", "blocks.6"], [24, 40, 112, 320]),
    ("timm/mobilenetv3_small_050", {}, ["blocks.0", "blocks.1", "blocks.3", "blocks.5"], [8, 16, 24, 288]),
    ("timm/regnetx_002", {}, ["s1", "s2", "s3", "s4"], [24, 56, 152, 368]),
    ("timm/densenet121", {}, ["features.denseblock1", "features.denseblock2", "features.denseblock3",
                              "features.norm5"], [256, 512, 1024, 1024]),
    ("timm/vit_tiny_patch16_224", TINY_VIT, ["blocks.0", "blocks.1", "blocks.2", "blocks.3"], [192] * 4),
    ("timm/deit_tiny_patch16_224", {**TINY_VIT, "depth": 6}, ["blocks.1", "blocks.2", "blocks.4", "blocks.5"],
     [192] * 4),
    ("timm/swin_tiny_patch4_window7_224", TINY_SWIN, ["layers.0", "layers.1", "layers.2", "layers.3"],
     [24, 48, 96, 192]),
    ("timm/mixer_s32_224", {"img_size": 64}, ["blocks.1", "blocks.3", "blocks.5", "blocks.7"], [512] * 4),
    ("torchvision/resnet18", {}, ["layer1", "layer2", "layer3", "layer4"], [64, 128, 256, 512]),
    ("torchvision/mobilenet_v3_small", {}, ["features.1", "features.3", "features.8", "features.12"],
     [16, 24, 48, 576]),
    ("torchvision/regnet_y_400mf", {}, [f"trunk_output.block{i}" for i in range(1, 5)], [48, 104, 208, 440]),
    ("torchvision/shufflenet_v2_x0_5", {}, ["maxpool", "stage2", "stage3", "conv5"], [24, 48, 96, 1024]),
    ("tests.test_model_sources:build_user_net", {"width": 8}, ["stem", "down1", "down2", "down3"],
     [8, 16, 32, 64]),
    ("tests.test_model_sources:build_user_net_unnamed", {}, ["stem", "down1", "down2", "down3"],
     [16, 32, 64, 128]),
]


def _channels(out: torch.Tensor, nhwc: bool) -> int:
    """The channel count of a raw stage output, read independently of the pooling code."""
    return out.shape[-1] if out.dim() == 3 or nhwc else out.shape[1]


@pytest.mark.parametrize("name, kwargs, paths, widths", CASES, ids=[c[0] for c in CASES])
def test_stages_hook_once_capture_right_and_every_parameter_learns(name, kwargs, paths, widths):
    torch.manual_seed(0)
    md = ModelDef(name, name, kwargs)
    built = build(md, num_classes=10, in_chans=3, image_size=32)
    assert [s.path for s in built.stages] == paths
    model, side = built.module, built.input_size or 32
    nhwc = built.stages[0].layout == "NHWC"
    modules = dict(model.named_modules())
    raw = {p: [] for p in paths}
    hooks = [modules[p].register_forward_hook(lambda _m, _i, out, p=p: raw[p].append(out)) for p in paths]
    model.train()
    x = torch.randn(2, 3, side, side)
    logits = model(x)
    for h in hooks:
        h.remove()
    assert logits.shape == (2, 10)
    assert {p: len(outs) for p, outs in raw.items()} == {p: 1 for p in paths}  # each stage fires exactly once
    assert [_channels(raw[p][0], nhwc) for p in paths] == widths
    F.cross_entropy(logits, torch.tensor([0, 1])).backward()
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not
                                                                               torch.isfinite(p.grad).all())]
    assert not no_grad, f"{name}: no finite gradient for {no_grad[:5]}"
    # the capture path: 32x32 uint8 probe images, resized to a fixed input where the model has one
    n, k = 3, min(widths)
    probe_x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    signals = ActivationProbe(model, built.stages, probe_x, torch.arange(n), (0.5,) * 3, (0.25,) * 3, k, seed=0,
                              input_size=built.input_size).capture(0)
    assert [s.stage for s in signals] == paths
    for sig, width in zip(signals, widths):
        assert sig.values.shape == (n, k) and sig.values.dtype == np.float32 and np.isfinite(sig.values).all()
        assert sig.channels.max() < width and len(set(sig.channels.tolist())) == k
    assert [w for _, w in stage_widths(md, 3, 32)] == widths


def test_token_outputs_are_pooled_over_all_tokens_and_channels_last_over_space():
    torch.manual_seed(1)
    for name, kwargs in (("timm/vit_tiny_patch16_224", TINY_VIT), ("timm/swin_tiny_patch4_window7_224", TINY_SWIN)):
        built = build(ModelDef(name, name, kwargs), 10, image_size=32)
        stage = built.stages[1]
        module = built.module.get_submodule(stage.path)
        raw = []
        h = module.register_forward_hook(lambda _m, _i, out: raw.append(out))
        probe = ActivationProbe(built.module, [stage], torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8),
                                torch.arange(2), (0.5,) * 3, (0.25,) * 3, None, seed=0, input_size=built.input_size)
        sig = probe.capture(0)[0]
        h.remove()
        out = raw[0]
        if name.startswith("timm/vit"):  # [B, 1 + 8x8 tokens, 192]: the mean over every token, CLS included
            assert out.shape == (2, 65, 192) and stage.layout is None
            want = out.mean(dim=1)
        else:  # Swin keeps channels last: [B, H, W, C]
            assert out.shape == (2, 4, 4, 48) and stage.layout == "NHWC"
            want = out.mean(dim=(1, 2))
        assert np.allclose(sig.values, want[:, torch.as_tensor(sig.channels)].numpy(), atol=1e-6)


def test_fixed_input_sizes_come_from_the_model_config():
    assert build(ModelDef("v", "timm/vit_tiny_patch16_224"), 10, image_size=32).input_size == 224
    assert build(ModelDef("v", "timm/vit_tiny_patch16_224", TINY_VIT), 10, image_size=32).input_size == 32
    assert build(ModelDef("c", "timm/convnext_atto"), 10, image_size=32).input_size is None
    assert build(ModelDef("z", "vit_b_16"), 10, image_size=32).input_size == 224  # the zoo, as before


def test_fixed_input_sizes_on_a_timm_without_input_config(monkeypatch):
    """Older timm has no get_model_input_config: the pretrained config and an img_size kwarg say the same."""
    import timm.models

    monkeypatch.delattr(timm.models, "get_model_input_config")
    assert build(ModelDef("v", "timm/vit_tiny_patch16_224"), 10, image_size=32).input_size == 224
    assert build(ModelDef("v", "timm/vit_tiny_patch16_224", TINY_VIT), 10, image_size=32).input_size == 32
    assert build(ModelDef("c", "timm/convnext_atto"), 10, image_size=32).input_size is None


def test_a_timm_name_may_carry_a_pretrained_tag():
    check_model_names([_trial("timm/resnet18.a1_in1k")])


def test_spread_keeps_the_last_level():
    assert spread(5) == [1, 2, 3, 4] and spread(12) == [2, 5, 8, 11] and spread(4) == [0, 1, 2, 3]
    assert spread(8) == [1, 3, 5, 7] and spread(3) == [0, 1, 2]


def test_resolution_rule_skips_the_trunk():
    """MobileNetV2's trunk ``features`` spans five drops and is no level; each level is a whole block."""
    import torchvision

    model = torchvision.models.get_model("mobilenet_v2", weights=None, num_classes=10)
    levels = resolution_levels(model, torch.zeros(1, 3, 224, 224))
    assert levels == ["features.1", "features.3", "features.6", "features.13", "features.18"]


def _trial(model, stages=None, kwargs=None, capture=None, dataset="synthetic", label=None):
    t = {"model": label or model, "dataset": {"name": dataset}, "train": {"stem": "stock"},
         "capture": {"probe_size": 64, "channels_per_stage": 8, **(capture or {})}}
    if label:
        t["model_name"] = model
    if stages:
        t["stages"] = stages
    if kwargs:
        t["model_kwargs"] = kwargs
    return t


@pytest.mark.parametrize("name, words", [
    ("timm/convnxt_atto", ["timm has no model 'convnxt_atto'", "close matches: timm/convnext_atto"]),
    ("torchvision/resnet19", ["torchvision has no model 'resnet19'", "torchvision/resnet18"]),
    ("no_such_pkg.nets:build", ["cannot import 'no_such_pkg.nets'", "ModuleNotFoundError", "PYTHONPATH"]),
    ("tests.test_model_sources:build_usr_net", ["has no function 'build_usr_net'", "build_user_net"]),
])
def test_unknown_names_list_close_matches(name, words):
    with pytest.raises(ValueError) as err:
        check_model_names([_trial(name)])
    msg = str(err.value)
    assert msg.startswith("invalid study spec: models: ") and all(w in msg for w in words), msg


@pytest.mark.parametrize("stages, words", [
    (["layer1", "layer9"], ["stage 'layer9' is not a module", "close ones: layer4, layer3", "as the spec names them"]),
    (["layer1.0.relu"], ["'layer1.0.relu' fires 2 times", "runs exactly once"]),
    (["conv1", "fc"], ["stage 'fc'", "neither [B, C, H, W] nor [B, T, D]", "pick another module"]),
])
def test_bad_stages_are_named_with_the_fix(stages, words):
    with pytest.raises(ValueError) as err:
        check_trials_fit([_trial("torchvision/resnet18", stages)])
    msg = str(err.value)
    assert "torchvision/resnet18 x synthetic" in msg and all(w in msg for w in words), msg


def test_a_stage_that_never_fires_is_named():
    model = UserNet(10, 3)
    with pytest.raises(StageError, match="'unused' never fires"):
        check_stages(model, build(ModelDef("u", "tests.test_model_sources:build_user_net", {}, ("unused",)),
                                  10).stages, torch.zeros(1, 3, 32, 32))


def test_too_few_channels_name_the_stage_and_the_fixes():
    with pytest.raises(ValueError) as err:
        check_trials_fit([_trial("timm/mobilenetv3_small_050", capture={"channels_per_stage": 32})])
    msg = str(err.value)
    for w in ("blocks.0 (8 channels)", "blocks.1 (16 channels)", "set capture.channels_per_stage <= 8",
              "or name wider stages"):
        assert w in msg, msg
    check_trials_fit([_trial("timm/mobilenetv3_small_050", ["blocks.5"], capture={"channels_per_stage": 32})])


def test_a_forward_that_fails_on_the_data_is_named():
    with pytest.raises(ValueError, match=r"fails on a 1x8x8 input .*give kwargs that fit this data"):
        check_trials_fit([_trial("timm/swin_tiny_patch4_window7_224", kwargs={**TINY_SWIN, "img_size": 8,
                                                                                "in_chans": 3}, dataset="digits")])


def test_zoo_models_with_kwargs_or_a_cifar_stem_elsewhere_are_refused():
    with pytest.raises(ValueError, match="kwargs apply to timm/"):
        build(ModelDef("resnet18", "resnet18", {"width": 2}), 10)
    with pytest.raises(ValueError, match="train.stem='cifar' applies to the zoo"):
        build(ModelDef("t", "timm/resnet18"), 10, stem="cifar")
