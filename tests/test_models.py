"""Cheap invariants over every model of the zoo (timm-style)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dynstudy.jobs.models.zoo import (
    MODEL_NAMES,
    build_model,
    model_info,
    pool_stage_output,
    stage_modules,
    stage_widths,
)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward_and_stage_hooks(name):
    torch.manual_seed(0)
    info = model_info(name)
    size = info.input_size or 32
    batch = 1 if size > 64 else 2
    model = build_model(name, num_classes=10, image_size=size)
    model.train()
    fired = {}
    hooks = [m.register_forward_hook(lambda _m, _i, out, s=s: fired.setdefault(s, []).append(pool_stage_output(out)))
             for s, m in stage_modules(model, name)]
    x = torch.randn(batch, 3, size, size)
    out = model(x)
    assert out.shape == (batch, 10) and torch.isfinite(out).all()
    F.cross_entropy(out, torch.arange(batch)).backward()
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{name}: {pname} got no finite gradient"
    for h in hooks:
        h.remove()
    assert list(fired) == list(info.stage_names)
    channels = [w for _, w in stage_widths(name, image_size=size)]
    for (stage, outs), c in zip(fired.items(), channels):
        assert len(outs) == 1, f"{stage} fired {len(outs)} times"
        assert outs[0].shape == (batch, c) and c >= 32


@pytest.mark.parametrize("name", ["tiny_cnn", "tiny_resnet"])
def test_tiny_models_on_8x8_grayscale(name):
    model = build_model(name, 10, in_chans=1, image_size=8)
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_cifar_stem_keeps_resolution():
    seen = {}
    for stem in ("stock", "cifar"):
        model = build_model("resnet18", 10, stem=stem).eval()
        (_, layer1), *_ = stage_modules(model, "resnet18")
        h = layer1.register_forward_hook(lambda _m, _i, out, s=stem: seen.__setitem__(s, out.shape[-1]))
        model(torch.randn(1, 3, 32, 32))
        h.remove()
    assert seen == {"stock": 8, "cifar": 32}


def test_grayscale_torchvision_model():
    assert build_model("resnet18", 10, in_chans=1)(torch.randn(2, 1, 32, 32)).shape == (2, 10)


def test_local_weights_round_trip(tmp_path):
    torch.manual_seed(1)
    src = build_model("resnet18", 10).eval()
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    dst = build_model("resnet18", 10, pretrained=str(path)).eval()
    x = torch.randn(2, 3, 32, 32)
    assert torch.equal(src(x), dst(x))
    # another head size: the backbone loads, the classifier is new
    other = build_model("resnet18", 100, pretrained=str(path))
    assert torch.equal(other.conv1.weight, src.conv1.weight)


def test_vit_weights_from_local_file(tmp_path):
    torch.manual_seed(2)
    src = build_model("vit_tiny", 10).eval()
    path = tmp_path / "vit.pth"
    torch.save(src.state_dict(), path)
    dst = build_model("vit_tiny", 10, pretrained=str(path)).eval()
    # timm loads the backbone from the file and starts a fresh classifier head
    s, d = src.state_dict(), dst.state_dict()
    backbone = [k for k in s if not k.startswith("head.")]
    assert len(backbone) > 100 and all(torch.equal(s[k], d[k]) for k in backbone)


@pytest.mark.parametrize("name, size, tokens, width", [("vit_tiny", 32, 1 + 8 * 8, 192),
                                                      ("vit_b_16", 224, 1 + 14 * 14, 768)])
def test_vit_stages_pool_all_tokens_cls_included(name, size, tokens, width):
    """Encoder blocks 1, 4, 7, 10 give [B, CLS + patches, D]; the pooled value is the mean over all of them."""
    torch.manual_seed(3)
    model = build_model(name, 10, image_size=size).eval()
    raw, pooled = {}, {}

    def keep(stage):
        def hook(_m, _i, out):
            raw[stage], pooled[stage] = out, pool_stage_output(out)  # returns None: the output is left as it is
        return hook

    hooks = [m.register_forward_hook(keep(s)) for s, m in stage_modules(model, name)]
    with torch.no_grad():
        model(torch.randn(2, 3, size, size))
    for h in hooks:
        h.remove()
    assert list(raw) == ["blocks.0", "blocks.3", "blocks.6", "blocks.9"]
    for stage, out in raw.items():
        assert out.shape == (2, tokens, width), stage
        manual = sum(out[:, t] for t in range(tokens)) / tokens  # token 0 is CLS
        assert torch.allclose(pooled[stage], manual, rtol=0, atol=1e-5), stage
        assert not torch.allclose(pooled[stage], out[:, 1:].mean(dim=1), rtol=0, atol=1e-5)  # CLS counts


def test_vit_b_16_blocks_compute_torchvision_encoder_layers(tmp_path):
    """The authors hooked torchvision's encoder.layers[0, 3, 6, 9]: with the same weights (a torchvision state
    dict loaded as a local file) timm's blocks[0, 3, 6, 9] give the same outputs, so the same pooled values."""
    import torchvision

    torch.manual_seed(4)
    tv = torchvision.models.vit_b_16(weights=None, num_classes=10).eval()
    path = tmp_path / "vit_b_16_torchvision.pth"
    torch.save(tv.state_dict(), path)
    ours = build_model("vit_b_16", 10, pretrained=str(path)).eval()
    want, got = {}, {}
    hooks = [tv.encoder.layers[i].register_forward_hook(lambda _m, _i, out, i=i: want.__setitem__(i, out.mean(dim=1)))
             for i in (0, 3, 6, 9)]
    hooks += [m.register_forward_hook(
                  lambda _m, _i, out, s=s: got.__setitem__(int(s.split(".")[1]), pool_stage_output(out)))
              for s, m in stage_modules(ours, "vit_b_16")]
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        logits_tv, logits_ours = tv(x), ours(x)
    for h in hooks:
        h.remove()
    assert sorted(got) == sorted(want) == [0, 3, 6, 9]
    for i in want:
        assert torch.allclose(got[i], want[i], rtol=0, atol=1e-4), i
    assert torch.allclose(logits_ours, logits_tv, rtol=0, atol=1e-4)


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="allowed: tiny_cnn"):
        build_model("resnet9000", 10)
    with pytest.raises(ValueError, match="stem 'wide' is unknown; allowed: stock, cifar"):
        build_model("resnet18", 10, stem="wide")
    with pytest.raises(ValueError, match="stem='cifar' does not apply"):
        build_model("vit_tiny", 10, stem="cifar")
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        build_model("resnet18", 10, pretrained=str(missing))
    with pytest.raises(ValueError, match="neither"):
        pool_stage_output(torch.zeros(2, 3))


def test_the_smoke_presets_stored_channels_are_tiny_cnns_stages():
    from dynstudy.jobs.models.zoo import stage_widths
    from dynstudy.study.spec import load_spec
    from tests.store_factory import SMOKE_CHANNELS

    spec = load_spec("smoke")
    assert spec.capture.store_channels == "all" and [m.name for m in spec.models] == ["tiny_cnn"]
    assert sum(w for _, w in stage_widths("tiny_cnn", 1, 8)) == SMOKE_CHANNELS
