"""The paper's architectures and probe sizes through the real capture path, and one paper-shaped study.

- every paper architecture captured on a few CIFAR-shaped images: the real
  stage names, each stage hooked once, the real channel counts; and again at
  its paper probe size (slow: about 2 minutes for the nine on 2 CPU cores,
  with images at the smallest side each takes);
- the paper preset's per-model probe sizes pass the check that runs before
  Ray starts (CIFAR's 10,000 validation images, every model's stage widths);
- a ResNet-18 with the CIFAR stem on generated files in the CIFAR-10 pickle
  layout, probe 2048 and 32 channels per stage, 2 epochs on a subset, through
  capture, analysis and the report (about 2 minutes on 2 CPU cores).
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from dynstudy.analysis.pipeline.analyze import analyze
from dynstudy.analysis.pipeline.catalog import open_catalog
from dynstudy.analysis.report.build import write_report
from dynstudy.jobs.capture.fit_check import check_trials_fit
from dynstudy.jobs.capture.probe import ActivationProbe
from dynstudy.jobs.models.zoo import build_model, model_info
from dynstudy.study.grid import expand
from dynstudy.study.orchestrate import run_study
from dynstudy.study.spec import load_spec, parse_spec
from tests.cifar_files import write_cifar10

PAPER_WIDTHS = {
    "resnet18": (64, 128, 256, 512), "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048), "resnet101": (256, 512, 1024, 2048), "resnet152": (256, 512, 1024, 2048),
    "densenet121": (256, 512, 1024, 1024), "mobilenet_v2": (32, 64, 160, 320), "vgg16_bn": (64, 128, 256, 512),
    "vit_b_16": (768, 768, 768, 768),
}
RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")
PAPER_STAGES = {  # SPEC, "The paper protocol" 2: the stages the authors hooked, by the module names of the models
    "resnet18": RESNET_STAGES, "resnet34": RESNET_STAGES, "resnet50": RESNET_STAGES, "resnet101": RESNET_STAGES,
    "resnet152": RESNET_STAGES, "densenet121": tuple(f"denseblock{i}" for i in range(1, 5)),
    "mobilenet_v2": ("features.4", "features.7", "features.14", "features.17"),
    "vgg16_bn": ("features.6", "features.13", "features.23", "features.33"),
    "vit_b_16": ("blocks.0", "blocks.3", "blocks.6", "blocks.9"),  # encoder blocks 1, 4, 7, 10
}
SPEC_PROBES = {"resnet18": 2048, "densenet121": 4096, "resnet50": 4096, "resnet101": 4096, "vgg16_bn": 4096,
               "vit_b_16": 256}  # SPEC, "The paper protocol" 1 (the others' sizes are dynstudy's choice)


@pytest.mark.parametrize("name", list(PAPER_WIDTHS))
def test_paper_architecture_capture(name):
    torch.manual_seed(0)
    info = model_info(name)
    model = build_model(name, 10, 3, info.input_size or 32, "stock")
    n = 3
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    probe = ActivationProbe(model, name, x, torch.arange(n), (0.5,) * 3, (0.25,) * 3, 32, seed=0,
                            input_size=info.input_size)
    calls = {stage: 0 for stage, _ in probe.stages}
    hooks = [m.register_forward_hook(lambda *_a, s=s: calls.__setitem__(s, calls[s] + 1)) for s, m in probe.stages]
    signals = probe.capture(0)
    for h in hooks:
        h.remove()
    assert [s.stage for s in signals] == list(info.stage_names) == list(PAPER_STAGES[name])
    assert info.paper_probe_size == SPEC_PROBES.get(name, info.paper_probe_size)
    assert set(calls.values()) == {1}  # each stage fires once per forward (one batch of 3)
    for sig, width in zip(signals, PAPER_WIDTHS[name]):
        assert sig.values.shape == (n, 32) and sig.values.dtype == np.float32 and np.isfinite(sig.values).all()
        assert len(set(sig.channels.tolist())) == 32 and sig.channels.max() < width
    full = ActivationProbe(model, name, x, torch.arange(n), (0.5,) * 3, (0.25,) * 3, None, seed=0,
                           input_size=info.input_size).capture(0)
    assert tuple(s.values.shape[1] for s in full) == PAPER_WIDTHS[name]


#: The smallest image side each architecture takes (the stock stems' poolings), to keep a paper-sized probe cheap on a
#: CPU; ViT-B/16's probe is resized to its 224 x 224 input whatever the side.
SMALLEST_SIDE = {"densenet121": 32, "vgg16_bn": 32}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PAPER_WIDTHS))
def test_paper_architecture_capture_at_its_paper_probe_size(name):
    """Every paper architecture captured at its paper probe size (2048 or 4096 images; 256 for ViT-B/16): one row
    per probe image and stage, the probe's labels, the real stage names; about 100 s for all nine on 2 CPU cores."""
    torch.manual_seed(0)
    info = model_info(name)
    n = info.paper_probe_size
    side = SMALLEST_SIDE.get(name, 8)
    model = build_model(name, 10, 3, info.input_size or 32, "stock")
    x = torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8)
    labels = torch.arange(n) % 10
    probe = ActivationProbe(model, name, x, labels, (0.5,) * 3, (0.25,) * 3, 32, seed=0, input_size=info.input_size)
    signals = probe.capture(0)
    assert n == SPEC_PROBES.get(name, n) and [s.stage for s in signals] == list(PAPER_STAGES[name])
    assert np.array_equal(probe.labels, labels.numpy())
    for sig, width in zip(signals, PAPER_WIDTHS[name]):
        assert sig.values.shape == (n, 32) and np.isfinite(sig.values).all() and sig.channels.max() < width
        assert (sig.values.std(axis=0) > 0).mean() > 0.5  # most channels vary over the probe (an untrained
        # network has some dead ReLU channels at an 8 x 8 input's 1 x 1 last stage)


def test_the_paper_preset_fits_its_data_and_models():
    trials = expand(load_spec("paper"), "/unused")
    probes = {(t["model"], t["dataset"]["name"]): t["capture"]["probe_size"] for t in trials}
    assert probes == {(m, d): model_info(m).paper_probe_size for m in PAPER_WIDTHS for d in ("cifar10", "cifar100")}
    check_trials_fit(trials)  # raises if a probe or channel count does not fit


@pytest.mark.slow
def test_a_paper_shaped_study_through_capture_analysis_and_report(tmp_path):
    write_cifar10(tmp_path / "data", per_batch=64, n_test=2048)  # 320 training images, 2048 for validation
    spec = parse_spec({
        "name": "paper-shaped", "models": ["resnet18"], "seeds": [0],
        "datasets": [{"name": "cifar10", "root": str(tmp_path / "data"), "n_train": 256}],
        "train": {"epochs": 2, "batch_size": 128, "stem": "stock", "early_stopping_patience": None, "threads": 2},
        "capture": {"probe_size": 2048, "channels_per_stage": 32},
        "resources": {"cpus_per_trial": 2, "max_failures": 0},
    })
    store = tmp_path / "store"
    out = io.StringIO()
    assert run_study(spec, store=str(store), num_cpus=2, out=out)["finished"] == 1, out.getvalue()
    assert analyze(str(store), out=io.StringIO())["analysed"] == 1
    con = open_catalog(str(store))
    assert con.execute("SELECT count(*), count(DISTINCT capture), count(DISTINCT sample), max(sample) FROM activations"
                       ).fetchone() == (3 * 4 * 32 * 2048, 3, 2048, 2047)
    widths = dict(con.execute("SELECT stage, max(channel) FROM activations GROUP BY 1").fetchall())
    assert set(widths) == {"layer1", "layer2", "layer3", "layer4"}
    assert all(widths[s] < w for s, w in zip(("layer1", "layer2", "layer3", "layer4"), PAPER_WIDTHS["resnet18"]))
    rows = con.execute("SELECT capture, n_channels, n_valid, h_raw FROM capture_metrics ORDER BY capture").fetchall()
    # the stock stem leaves layer4 at 1 x 1 on 32 x 32 images: a few ReLU channels are dead (constant), not valid
    assert [r[:2] for r in rows] == [(0, 128), (1, 128), (2, 128)] and all(r[2] >= 96 for r in rows)
    assert all(np.isfinite(r[3]) for r in rows)
    assert con.execute("SELECT n_epochs, reason FROM run_summary").fetchone() == (2, None)
    html = write_report(con, tmp_path / "report.html")
    assert html.stat().st_size > 10_000
