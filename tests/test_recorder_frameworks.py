"""The Lightning and Hugging Face callbacks train the examples' digits CNN for 2 epochs on the CPU with the real
frameworks, into one store that analyze and the report read; the Lightning fit crashes in epoch 2 and resumes
from its epoch-1 checkpoint, the HF run is resumed from its first checkpoint: every capture is there once."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import duckdb
import pytest

import dynstudy
from dynstudy.store_contract.files import read_run_row

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
sys.path.insert(0, str(EXAMPLES))  # the examples import the digits CNN from plain_loop.py


def captures(store, run_id):
    return duckdb.connect().sql(
        f"SELECT capture, kind, epoch, step, count(*) FROM read_parquet("
        f"'{store}/activations/run_id={run_id}/*.parquet', hive_partitioning=false) GROUP BY ALL ORDER BY capture"
    ).fetchall()


#: init, the step captures at steps 4, 8, 12 (12 steps an epoch), epoch 1, then the same for epoch 2
KINDS = ["init", "step", "step", "step", "epoch", "step", "step", "step", "epoch"]


def crash_in_epoch_2(monkeypatch, module_class) -> None:
    """Make the module's training step raise at global step 17, once."""
    real = module_class.training_step

    def step(self, batch, batch_idx):
        if self.trainer.global_step == 17:
            raise RuntimeError("crash at step 17")
        return real(self, batch, batch_idx)

    monkeypatch.setattr(module_class, "training_step", step)


def test_lightning_and_hf_runs_are_analysed_and_reported(tmp_path, monkeypatch):
    pytest.importorskip("dynstudy.jobs.capture.lightning")  # the lightning and hf extras (CI installs them)
    pytest.importorskip("dynstudy.jobs.capture.hf")
    import hf_digits
    import lightning_digits

    store = str(tmp_path / "store")
    crash_in_epoch_2(monkeypatch, lightning_digits.DigitsModule)
    with pytest.raises(RuntimeError, match="crash at step 17"):  # two step captures of epoch 2 pending
        lightning_digits.main(store, str(tmp_path / "pl"), run_id="lightning-s0")
    assert read_run_row(store, "lightning-s0")["status"] == "failed"
    monkeypatch.undo()
    lightning_digits.main(store, str(tmp_path / "pl"), run_id="lightning-s0", resume=True)
    assert read_run_row(store, "lightning-s0")["attempts"] == 2
    hf_digits.main(store, str(tmp_path / "hf"), run_id="hf-s0")
    for run_id in ("lightning-s0", "hf-s0"):
        row = read_run_row(store, run_id)
        assert (row["status"], row["stop_reason"], row["epochs_completed"]) == ("finished", "max_epochs", 2)
        assert [c[1] for c in captures(store, run_id)] == KINDS, run_id
        metrics = duckdb.connect().sql(f"SELECT epoch, train_loss, val_loss, val_acc, lr FROM read_parquet("
                                       f"'{store}/train_metrics/run_id={run_id}/*.parquet') ORDER BY 1").fetchall()
        assert [m[0] for m in metrics] == [1, 2] and all(v is not None for m in metrics for v in m), run_id
    assert dynstudy.analyze(store, out=open(os.devnull, "w"))["analysed"] == 2
    from dynstudy.analysis.pipeline.catalog import open_catalog

    page = dynstudy.write_report(open_catalog(store), tmp_path / "report.html").read_text()
    assert "lightning-s0" in page or "digits_cnn" in page

    # the HF run, resumed from its epoch-1 checkpoint, records the same captures once
    before = captures(store, "hf-s0")
    shutil.rmtree(tmp_path / "hf" / "checkpoint-24")
    hf_digits.main(store, str(tmp_path / "hf"), run_id="hf-s0", resume=True)
    assert captures(store, "hf-s0") == before
    assert read_run_row(store, "hf-s0")["attempts"] == 2
