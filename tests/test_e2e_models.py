"""A tiny study through Ray Tune with a timm model and a user's own module, named in the spec, through analysis."""
from __future__ import annotations

import io

import pytest
from torch import nn

from dynstudy.analysis.pipeline.analyze import analyze
from dynstudy.analysis.pipeline.catalog import open_catalog
from dynstudy.study.orchestrate import run_study
from dynstudy.study.spec import parse_spec

EPOCHS, PROBE, K = 2, 64, 8


class SmallNet(nn.Module):
    """The user's network: four conv stages, each halving the resolution after the first."""

    def __init__(self, num_classes: int, in_chans: int, width: int):
        super().__init__()
        chans = [in_chans, width, 2 * width, 3 * width, 4 * width]
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(chans[i], chans[i + 1], 3, 1 if i == 0 else 2, 1), nn.BatchNorm2d(chans[i + 1]),
                          nn.ReLU()) for i in range(4))
        self.head = nn.Linear(chans[-1], num_classes)

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean(dim=(2, 3)))


def build_small_net(num_classes, in_chans, width=16):
    """``tests.test_e2e_models:build_small_net``: the network and the stages it names."""
    return SmallNet(num_classes, in_chans, width), [f"blocks.{i}" for i in range(4)]


SPEC = {
    "name": "e2e-models",
    "models": [{"name": "timm/vit_tiny_patch16_224", "label": "vit_t16",
                "kwargs": {"img_size": 16, "patch_size": 4, "depth": 4, "embed_dim": 48, "num_heads": 2}},
               {"name": "tests.test_e2e_models:build_small_net", "kwargs": {"width": 12}}],
    "datasets": [{"name": "synthetic", "n_train": 128, "n_val": PROBE}],
    "optimizers": [{"name": "adamw", "lr": 1e-3}],
    "seeds": [0],
    "train": {"epochs": EPOCHS, "batch_size": 64, "early_stopping_patience": None},
    "capture": {"probe_size": PROBE, "channels_per_stage": K},
    "resources": {"cpus_per_trial": 1, "max_failures": 0},
}


@pytest.mark.slow
def test_a_timm_model_and_a_user_module_through_ray_tune(tmp_path):
    out = io.StringIO()
    summary = run_study(parse_spec(SPEC), store=str(tmp_path), num_cpus=2, out=out)
    assert summary["finished"] == 2 and summary["failed"] == 0, out.getvalue()
    assert analyze(str(tmp_path), out=io.StringIO())["analysed"] == 2
    con = open_catalog(str(tmp_path))
    stages = dict(con.execute("SELECT r.model, list(DISTINCT a.stage ORDER BY a.stage) FROM activations a "
                              "JOIN runs r USING (run_id) GROUP BY 1").fetchall())
    assert stages == {"vit_t16": ["blocks.0", "blocks.1", "blocks.2", "blocks.3"],
                      "tests.test_e2e_models:build_small_net": [f"blocks.{i}" for i in range(4)]}
    per_capture = con.execute("SELECT count(*) FROM activations GROUP BY run_id, capture").fetchall()
    assert {n for (n,) in per_capture} == {4 * K * PROBE} and len(per_capture) == 2 * (EPOCHS + 1)
    widths = dict(con.execute("SELECT stage, max(channel) FROM activations JOIN runs USING (run_id) "
                              "WHERE model = 'vit_t16' GROUP BY 1").fetchall())
    assert max(widths.values()) < 48  # the token width the kwargs asked for
    rows = con.execute("SELECT model, n_epochs, reason FROM run_summary ORDER BY model").fetchall()
    assert rows == [("tests.test_e2e_models:build_small_net", EPOCHS, None), ("vit_t16", EPOCHS, None)]
    assert con.execute("SELECT count(*) FROM capture_metrics WHERE isfinite(h_raw) AND n_channels = 32"
                       ).fetchone()[0] == 2 * (EPOCHS + 1)
