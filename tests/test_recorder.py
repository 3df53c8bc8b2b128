"""dynstudy.Recorder on a plain PyTorch loop: exactly-once resume after SIGKILL, bad input refused before
training, runs that end without finish() or without a capture marked failed."""
from __future__ import annotations

import gc
import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
import torch
from torch import nn

import dynstudy
from dynstudy.jobs.capture.recorder import NO_CAPTURE, NOT_FINISHED, RecorderError
from dynstudy.store_contract.files import read_run_row

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "plain_loop.py"


def load_example(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


plain = load_example(EXAMPLE)


def rows(store, table, order):
    """Every row of ``table`` but its timings, in ``order``."""
    rel = duckdb.connect().sql(f"SELECT * FROM read_parquet('{store}/{table}/**/*.parquet', "
                               f"hive_partitioning=false) ORDER BY {order}")
    cols = [c for c in rel.columns if c not in ("epoch_time_s", "capture_time_s", "updated_at", "started_at")]
    return [tuple(r[rel.columns.index(c)] for c in cols) for r in rel.fetchall()]


def files(store):
    return sorted(str(p.relative_to(store)) for p in Path(store).rglob("*") if p.is_file())


@pytest.mark.slow  # a Python start with torch, a slowed epoch and two runs: 7-10 s on 2 loaded cores
def test_plain_loop_killed_mid_epoch_resumes_exactly(tmp_path):
    """SIGKILL inside epoch 3 (step captures pending), rerun from the epoch-2 checkpoint: the store equals a
    clean run's, row for row and file for file."""
    clean = plain.main(str(tmp_path / "clean"), epochs=4, checkpoint=str(tmp_path / "clean.pt"))
    # init, 4 epochs, a step capture every 4 of 48 steps
    assert clean["status"] == "finished" and clean["captures"] == 1 + 4 + 12
    store, ckpt = tmp_path / "killed", tmp_path / "killed.pt"
    args = [sys.executable, str(EXAMPLE), "--store", str(store), "--epochs", "4", "--checkpoint", str(ckpt)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args + ["--step-delay", "0.05"], stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    for line in proc.stdout:
        if line.startswith("epoch 3 step 30"):  # epoch 3 runs steps 25-36; step 28's capture is pending
            proc.send_signal(signal.SIGKILL)
            break
    assert proc.wait(60) == -signal.SIGKILL
    assert torch.load(ckpt, weights_only=False)["epoch"] == 2
    assert read_run_row(str(store), "digits-s0")["status"] == "running"
    assert plain.main(str(store), epochs=4, checkpoint=str(ckpt))["status"] == "finished"  # the rerun
    for table, order in (("activations", "capture, stage, rank, sample"), ("train_metrics", "epoch")):
        assert rows(store, table, order) == rows(tmp_path / "clean", table, order), table
    assert files(store) == files(tmp_path / "clean")  # no stale capture, no hidden temporary
    row = read_run_row(str(store), "digits-s0")
    assert (row["status"], row["epochs_completed"], row["attempts"]) == ("finished", 4, 2)


def test_a_store_the_recorder_wrote_is_analysed_and_reported(tmp_path):
    from dynstudy.analysis.pipeline.catalog import open_catalog

    plain.main(str(tmp_path / "s"), epochs=3, checkpoint=str(tmp_path / "ck.pt"), step_every=None)
    counts = dynstudy.analyze(str(tmp_path / "s"), out=open(os.devnull, "w"))
    assert counts["analysed"] == 1
    page = dynstudy.write_report(open_catalog(str(tmp_path / "s")), tmp_path / "report.html")
    assert "digits_cnn" in page.read_text()


class TwoStage(nn.Module):
    def __init__(self, width: int = 8):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(width, width, 3, stride=2, padding=1), nn.ReLU())
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.features(x).mean(dim=(2, 3)))


def probe(n=64):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


def recorder(store, **kw):
    args = dict(run_id="r0", model=TwoStage(), probe=probe(), stages=["features.1", "features.3"], seed=0,
                capture={"channels_per_stage": 4}, analysis={"min_scale": 8})
    return dynstudy.Recorder(str(store), **{**args, **kw})


@pytest.mark.parametrize("kw, message", [
    ({"stages": ["features.4"]}, r"stage 'features.4' is not a module of this model \(close ones: features.3, "),
    ({"probe": probe(12)}, r"capture.probe_size=12 is too short for DFA with analysis.min_scale=8: need at least 16"),
    ({"capture": {"channels_per_stage": 16}}, r"capture.channels_per_stage=16 but stage\(s\) features.1 \(8 "
                                              r"channels\), features.3 \(8 channels\) have fewer"),
    ({"capture": {"probe_sizes": 3}}, r"capture settings \['probe_sizes'\] are not capture settings"),
    ({"run_id": "a/b"}, r"run_id: run id 'a/b' cannot name a run's folder"),
    ({"config": {"lr": object()}}, r"config must hold JSON values only"),
])
def test_bad_input_is_refused_before_anything_is_written(tmp_path, kw, message):
    with pytest.raises(ValueError, match=message):
        recorder(tmp_path / "s", **kw)
    assert not (tmp_path / "s").exists()


def test_a_finished_run_id_with_other_settings_is_refused(tmp_path):
    rec = recorder(tmp_path, config={"lr": 0.1})
    rec.capture(epoch=0)
    rec.finish()
    with pytest.raises(ValueError, match=r"run 'r0' already finished in .* with other settings \(differing: "
                                         r"user_config.lr\); give this run another run_id"):
        recorder(tmp_path, config={"lr": 0.2})
    again = recorder(tmp_path, config={"lr": 0.1})  # the same settings: recorded again, one more attempt
    again.capture(epoch=0)
    again.finish()
    assert read_run_row(str(tmp_path), "r0")["attempts"] == 2


def test_a_run_without_capture_or_without_finish_is_marked_failed(tmp_path):
    rec = recorder(tmp_path / "a")
    rec.log(epoch=1, val_acc=0.5)
    with pytest.raises(RecorderError, match="the run finished without any capture"):
        rec.finish()
    row = read_run_row(str(tmp_path / "a"), "r0")
    assert (row["status"], row["error"]) == ("failed", NO_CAPTURE)
    rec = recorder(tmp_path / "b")
    rec.capture(epoch=0)
    del rec
    gc.collect()
    row = read_run_row(str(tmp_path / "b"), "r0")
    assert (row["status"], row["error"]) == ("failed", NOT_FINISHED)
    assert len(rows(tmp_path / "b", "activations", "capture, stage, rank, sample")) == 64 * 2 * 4


def test_captures_and_logs_go_forward_once(tmp_path):
    rec = recorder(tmp_path)
    model = rec.model
    model.train()
    rec.capture(epoch=0)
    assert model.training  # the probe pass restored train mode
    with pytest.raises(RecorderError, match=r"capture\(epoch=0\): epoch 0 is captured already"):
        rec.capture(epoch=0)
    rec.log(epoch=1, val_acc=0.1)
    with pytest.raises(RecorderError, match=r"log\(epoch=1\): epochs are logged from 1"):
        rec.log(epoch=1)
    with pytest.raises(ValueError, match="log\\(\\): accuracy not a train_metrics column"):
        rec.log(epoch=2, accuracy=1.0)
    state = rec.state_dict()
    with pytest.raises(RecorderError, match="load_state_dict\\(\\) after the recorder began writing"):
        rec.load_state_dict(state)
    rec.finish()


def test_default_stages_are_the_models_feature_levels(tmp_path):
    rec = recorder(tmp_path, model=plain.make_model(), stages=None)
    assert [s.path for s in rec.stages] == ["block1", "block2", "block3"]  # 8x8, 4x4, 2x2
    rec.close()
