"""One trial without Ray: determinism, exact resume after faults, divergence, capture options."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from dynstudy.jobs.trial import faults
from dynstudy.jobs.trial.config import missing_fields
from dynstudy.jobs.trial.session import LocalSession
from dynstudy.jobs.trial.trainer import run_trial
from dynstudy.study.grid import expand
from dynstudy.study.spec import parse_spec

ROOT = Path(__file__).resolve().parent.parent


#: The sections of the tiny run the tests train; ``trial(..., section={...})`` patches them.
TINY = {
    "dataset": {"name": "digits", "n_train": 256, "n_val": 64},
    "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4},
    "train": {"epochs": 3, "batch_size": 64, "scheduler": "plateau", "plateau_patience": 5, "plateau_factor": 0.5,
              "early_stopping_patience": None},
    "capture": {"probe_size": 64, "channels_per_stage": 8},
    "analysis": {"min_scale": 8},
}


def trial(store, run_id="r0", seed=0, **over):
    """The complete trial config :func:`dynstudy.study.grid.expand` writes for the tiny run, as run ``run_id``."""
    assert set(over) <= set(TINY), f"trial() patches the sections {sorted(TINY)}"
    sections = {key: {**value, **over.get(key, {})} for key, value in TINY.items()}
    spec = parse_spec({"name": "t", "models": ["tiny_cnn"], "datasets": [sections.pop("dataset")],
                       "optimizers": [sections.pop("optimizer")], "seeds": [seed], **sections})
    (cfg,) = expand(spec, str(store))
    return {**cfg, "run_id": run_id}


def rows(store, table, order):
    con = duckdb.connect()
    rel = con.sql(f"SELECT * EXCLUDE (run_id) FROM read_parquet('{store}/{table}/**/*.parquet', "
                  f"hive_partitioning=false) ORDER BY {order}")
    cols = [c for c in rel.columns if c not in ("epoch_time_s", "capture_time_s", "updated_at", "started_at")]
    return [tuple(r[rel.columns.index(c)] for c in cols) for r in rel.fetchall()]


ACT_ORDER = "capture, stage, rank, sample"


def test_same_seed_same_run_and_other_seed_differs(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        run_trial(trial(tmp_path / name, seed=seed), LocalSession(tmp_path / f"ck_{name}"))
    a, b, c = (rows(tmp_path / n, "train_metrics", "epoch") for n in "abc")
    assert a == b and a != c
    assert rows(tmp_path / "a", "activations", ACT_ORDER) == rows(tmp_path / "b", "activations", ACT_ORDER)


def test_resume_after_exception_is_exact(tmp_path, monkeypatch):
    run_trial(trial(tmp_path / "clean"), LocalSession(tmp_path / "ck_clean"))
    monkeypatch.setenv(faults.ENV, "epoch=2,times=1,mode=exception")
    session = LocalSession(tmp_path / "ck")
    with pytest.raises(faults.InjectedFault):
        run_trial(trial(tmp_path / "faulty"), session)
    status = rows(tmp_path / "faulty", "runs", "status")[0]
    assert "failed" in status and any("InjectedFault" in str(v) for v in status)
    final = run_trial(trial(tmp_path / "faulty"), session)  # resumes from the end of epoch 1
    assert final["status"] == "finished"
    for table, order in (("activations", ACT_ORDER), ("train_metrics", "epoch")):
        assert rows(tmp_path / "faulty", table, order) == rows(tmp_path / "clean", table, order), table


def test_resume_after_hard_exit_is_exact(tmp_path):
    """A killed process (os._exit mid-epoch) loses nothing and duplicates nothing."""
    run_trial(trial(tmp_path / "clean"), LocalSession(tmp_path / "ck_clean"))
    script = ("import json, sys; from dynstudy.jobs.trial.session import LocalSession; "
              "from dynstudy.jobs.trial.trainer import run_trial; "
              "run_trial(json.loads(sys.argv[1]), LocalSession(sys.argv[2]))")
    env = {**os.environ, faults.ENV: "epoch=3,times=1,mode=exit", "DYNSTUDY_FAULT_DIR": str(tmp_path / "marks")}
    args = [sys.executable, "-c", script, json.dumps(trial(tmp_path / "killed")), str(tmp_path / "ck")]
    first = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)
    assert first.returncode == 17, first.stderr
    assert len(rows(tmp_path / "killed", "train_metrics", "epoch")) == 2  # epochs 1-2 were written
    second = subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    for table, order in (("activations", ACT_ORDER), ("train_metrics", "epoch")):
        assert rows(tmp_path / "killed", table, order) == rows(tmp_path / "clean", table, order), table
    assert [r for r in rows(tmp_path / "killed", "runs", "status") if "finished" in r]


def test_divergence_ends_the_run_and_keeps_what_was_written(tmp_path):
    final = run_trial(trial(tmp_path, optimizer={"lr": 1e8}), LocalSession(tmp_path / "ck"))
    assert final["status"] == "diverged"
    con = duckdb.connect()
    status, reason = con.sql(f"SELECT status, stop_reason FROM '{tmp_path}/runs/**/*.parquet'").fetchall()[0]
    assert (status, reason) == ("diverged", "diverged")
    assert con.sql(f"SELECT min(capture) FROM '{tmp_path}/activations/**/*.parquet'").fetchall()[0][0] == 0


def test_capture_options(tmp_path):
    cfg = trial(tmp_path, capture={"every_n_steps": 2, "store_channels": "all", "step_probe_size": 16},
                train={"epochs": 2})
    run_trial(cfg, LocalSession(tmp_path / "ck"))
    con = duckdb.connect()
    acts = f"read_parquet('{tmp_path}/activations/**/*.parquet')"
    kinds = dict(con.sql(f"SELECT kind, count(DISTINCT capture) FROM {acts} GROUP BY kind").fetchall())
    assert kinds == {"init": 1, "epoch": 2, "step": 2 * (256 // 64 // 2)}  # 4 steps per epoch, one capture per 2
    caps = [r[0] for r in con.sql(f"SELECT DISTINCT capture FROM {acts} ORDER BY 1").fetchall()]
    assert caps == list(range(len(caps)))
    # every channel is stored (tiny_cnn: 32, 48, 64, 96), each once, ranked in the run's draw order
    per_stage = con.sql(f"SELECT stage, count(DISTINCT channel), max(rank) FROM {acts} GROUP BY 1 ORDER BY 1"
                        ).fetchall()
    assert per_stage == [("stage1", 32, 31), ("stage2", 48, 47), ("stage3", 64, 63), ("stage4", 96, 95)]
    # step captures: the first 16 probe images and the 8 metric channels per stage, one file per epoch
    shape = con.sql(f"SELECT count(DISTINCT sample), max(sample), count(DISTINCT stage || rank), max(rank), "
                    f"count(*) FROM {acts} WHERE kind = 'step' GROUP BY capture").fetchall()
    assert set(shape) == {(16, 15, 4 * 8, 7, 16 * 4 * 8)}
    files = sorted(p.name for p in (tmp_path / "activations" / "run_id=r0").iterdir())
    assert files == ["capture=000000.parquet", "capture=000003.parquet", "capture=000006.parquet",
                     "steps=000001-000002.parquet", "steps=000004-000005.parquet"]
    # a step capture holds the same values as the epoch's capture of the same network state would
    epoch_steps = con.sql(f"SELECT DISTINCT kind, step, capture FROM {acts} ORDER BY capture").fetchall()
    assert [k for k, _, _ in epoch_steps] == ["init", "step", "step", "epoch", "step", "step", "epoch"]
    same = con.sql(f"SELECT a.value = b.value FROM {acts} a JOIN {acts} b USING (stage, rank, sample) "
                   "WHERE a.capture = 2 AND b.capture = 3").fetchall()
    assert len(same) == 16 * 4 * 8 and all(v for (v,) in same)  # capture 2 is at the epoch's last step


def test_online_metrics_and_volatility_stopping(tmp_path):
    session = LocalSession(tmp_path / "ck")
    cfg = trial(tmp_path, train={"epochs": 8, "volatility_stopping": True},
                analysis={"min_scale": 8, "vol_threshold": 100.0})
    final = run_trial(cfg, session)
    # window 3 gives the first volatility at epoch 3; 3 epochs below the threshold -> fires at epoch 5
    assert final["stop_reason"] == "volatility" and final["epoch"] == 5
    assert [r["volatility_trigger"] for r in session.reports] == [None] * 4 + [5]
    assert all(0 <= r["h_eff"] <= 1 for r in session.reports)


def test_a_config_without_a_field_is_refused_before_anything_is_built(tmp_path):
    cfg = trial(tmp_path / "s")
    del cfg["train"]["epochs"], cfg["capture"]["enabled"], cfg["use_gpu"]
    with pytest.raises(ValueError, match=r"^trial config lacks use_gpu, train\.epochs, capture\.enabled; configs "
                                         r"come from dynstudy\.study\.grid\.expand$"):
        run_trial(cfg, LocalSession(tmp_path / "ck"))
    assert not (tmp_path / "s").exists()


def test_the_fields_a_trial_reads_are_the_ones_grid_expand_writes(tmp_path):
    assert missing_fields(trial(tmp_path)) == []


@pytest.mark.parametrize("over, reason", [({"train": {"epochs": 3}}, "max_epochs"),
                                          ({"train": {"epochs": 8, "volatility_stopping": True},
                                            "analysis": {"min_scale": 8, "vol_threshold": 100.0}}, "volatility")],
                         ids=["max_epochs", "volatility"])
def test_a_trial_restored_from_its_last_checkpoint_records_its_end_and_trains_no_more(tmp_path, over, reason):
    """Ray Tune restarts a trial from its final checkpoint when the driver died before the experiment state
    recorded the trial's end: the restored start writes the run's final row and trains no further epoch."""
    run_trial(trial(tmp_path / "clean", **over), LocalSession(tmp_path / "ck_clean"))
    session = LocalSession(tmp_path / "ck")
    run_trial(trial(tmp_path / "store", **over), session)
    reports = len(session.reports)
    final = run_trial(trial(tmp_path / "store", **over), session)  # the restart from the last checkpoint
    assert len(session.reports) == reports and final["status"] == "finished"
    clean_run = rows(tmp_path / "clean", "runs", "status")[0]
    (run,) = rows(tmp_path / "store", "runs", "status")
    con = duckdb.connect()
    got = con.sql(f"SELECT status, stop_reason, epochs_completed, attempts FROM read_parquet("
                  f"'{tmp_path / 'store'}/runs/**/*.parquet')").fetchall()
    want = con.sql(f"SELECT status, stop_reason, epochs_completed, attempts FROM read_parquet("
                   f"'{tmp_path / 'clean'}/runs/**/*.parquet')").fetchall()
    assert got == [(*want[0][:3], 2)]  # finished as the clean run, one more attempt
    assert want[0][1] == reason
    assert len(run) == len(clean_run)
    for table, order in (("train_metrics", "epoch"), ("activations", ACT_ORDER)):
        assert rows(tmp_path / "store", table, order) == rows(tmp_path / "clean", table, order)


def test_a_checkpoint_without_the_recorders_section_resumes_exactly(tmp_path):
    """A checkpoint whose recorder fields sit at its top level (as before the Recorder) continues the run."""
    import torch

    run_trial(trial(tmp_path / "clean"), LocalSession(tmp_path / "ck_clean"))
    cfg = trial(tmp_path / "old", train={"epochs": 2})
    run_trial(cfg, LocalSession(tmp_path / "ck"))
    state = torch.load(tmp_path / "ck" / "state.pt", weights_only=False)
    rec = state.pop("recorder")
    state.update({k: rec[k] for k in ("next_capture", "online")}, status=None, stop_reason=None)
    torch.save(state, tmp_path / "ck" / "state.pt")
    final = run_trial(trial(tmp_path / "old"), LocalSession(tmp_path / "ck"))  # epoch 3 on top of the old state
    assert final["status"] == "finished"
    for table, order in (("activations", ACT_ORDER), ("train_metrics", "epoch")):
        assert rows(tmp_path / "old", table, order) == rows(tmp_path / "clean", table, order), table
