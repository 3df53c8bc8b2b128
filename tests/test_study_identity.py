"""One run never holds two settings: what `dynstudy run` does with a store that already has the study.

The decisions are made before Ray starts, so these tests need no Ray: the
store's runs rows are written as a finished trial writes them. The trainer
tests (no Ray either) check that a fresh start leaves nothing of an earlier
attempt, counts attempts, and refuses a probe or channel count the data or
model cannot give.
"""
from __future__ import annotations

import io
import json

import pytest

from dynstudy.jobs.trial.session import LocalSession
from dynstudy.jobs.trial.trainer import run_trial
from dynstudy.store_contract.files import read_run_row, write_rows
from dynstudy.study.cli import main
from dynstudy.study.grid import expand
from dynstudy.study.identity import plan_study
from dynstudy.study.orchestrate import run_study, study_summary
from dynstudy.study.preflight import PreflightError
from dynstudy.study.spec import SpecError, load_spec
from tests.test_trainer import trial


def _finish(store, spec, status="finished", drop=()):
    """Write the runs rows a finished study of ``spec`` leaves, plus an epoch file per run.

    ``drop``: (section, field) pairs left out of the stored config, as an older dynstudy wrote it.
    """
    for t in expand(spec, str(store)):
        t = json.loads(json.dumps(t))
        for section, name in drop:
            del t[section][name]
        write_rows(str(store), "runs", t["run_id"], "run", {
            "run_id": [t["run_id"]], "study": [spec.name], "model": [t["model"]], "dataset": [t["dataset"]["name"]],
            "optimizer": ["sgd"], "seed": [t["seed"]], "status": [status], "epochs_completed": [3],
            "config": [json.dumps(t, sort_keys=True)], "attempts": [1]})
        write_rows(str(store), "train_metrics", t["run_id"], "epoch=000003", {"run_id": [t["run_id"]], "epoch": [3]})


def _smoke(**patch):
    spec = load_spec("smoke")
    for section, values in patch.items():
        spec = spec.model_copy(update={section: getattr(spec, section).model_copy(update=values)})
    return spec


def test_rerunning_a_finished_study_trains_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # would fail if Ray were reached
    _finish(tmp_path, _smoke())
    out = io.StringIO()
    summary = run_study(_smoke(), store=str(tmp_path), out=out)
    assert "2 runs already finished; --resume continues unfinished runs, --replace retrains" in out.getvalue()
    assert summary == {"store": str(tmp_path), "runs": 2, "failed": 0, "diverged": 0, "finished": 2,
                       "unfinished": [], "skipped": 2}


def test_a_field_an_older_dynstudy_did_not_write_counts_as_its_default(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    _finish(tmp_path, _smoke(), drop=[("analysis", "compat"), ("train", "threads")])
    out = io.StringIO()
    assert run_study(_smoke(), store=str(tmp_path), out=out)["skipped"] == 2
    assert "2 runs already finished" in out.getvalue()
    with pytest.raises(SpecError, match=r'analysis.compat: \(absent\) -> "authors"'):
        run_study(_smoke(analysis={"compat": "authors", "smooth_window": 15}, train={"epochs": 4}),
                  store=str(tmp_path), out=io.StringIO())


def test_changed_analysis_settings_keep_the_signals(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # nothing to train: Ray is never reached
    _finish(tmp_path, _smoke())
    out = io.StringIO()
    summary = run_study(_smoke(analysis={"smooth_window": 15}), store=str(tmp_path), out=out)
    assert summary["skipped"] == 2 and summary["finished"] == 2
    assert ("2 run(s) change only analysis settings (analysis.smooth_window: 5 -> 15): their signals are kept "
            "and `dynstudy analyze` recomputes their tables") in out.getvalue()
    for t in expand(_smoke(), str(tmp_path)):
        assert json.loads(read_run_row(str(tmp_path), t["run_id"])["config"])["analysis"]["smooth_window"] == 15
    stopping = _smoke(train={"volatility_stopping": True})
    _finish(tmp_path / "v", stopping)
    with pytest.raises(SpecError, match="analysis.vol_threshold: 0.35 -> 0.2"):  # it stopped training: a new run
        run_study(_smoke(train={"volatility_stopping": True}, analysis={"vol_threshold": 0.2}),
                  store=str(tmp_path / "v"), out=io.StringIO())


def test_a_changed_spec_is_refused_naming_runs_and_fields(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    _finish(tmp_path, _smoke())
    files = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet"))
    changed = _smoke(train={"epochs": 2}, capture={"probe_size": 64})
    with pytest.raises(SpecError) as err:
        run_study(changed, store=str(tmp_path), out=io.StringIO())
    text = str(err.value)
    ids = [t["run_id"] for t in expand(changed, str(tmp_path))]
    assert text.startswith("2 run(s) of this study already in the store were trained with other settings")
    for run_id in ids:
        assert f"  - {run_id}: capture.probe_size: 128 -> 64; train.epochs: 3 -> 2" in text
    assert text.endswith("rerun with --replace to remove their old files and retrain them, or give the study "
                         "another name")
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.parquet")) == files  # nothing touched
    with pytest.raises(SpecError, match="give one of them"):
        run_study(changed, store=str(tmp_path), resume=True, replace=True, out=io.StringIO())


def test_replace_removes_nothing_when_a_check_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    monkeypatch.setenv("DYNSTUDY_RAY_CONNECT_TIMEOUT_S", "0.5")
    _finish(tmp_path, _smoke())
    files = sorted(tmp_path.rglob("*.parquet"))
    out = io.StringIO()
    with pytest.raises(PreflightError, match=r"^RAY_ADDRESS=127.0.0.1:1: nothing answers at 127.0.0.1:1 after 0.5 s"):
        run_study(_smoke(train={"epochs": 2}), store=str(tmp_path), replace=True, out=out)
    assert "--replace" not in out.getvalue() and sorted(tmp_path.rglob("*.parquet")) == files


def test_an_unfinished_run_is_trained_again_and_the_changed_one_named(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    monkeypatch.setenv("DYNSTUDY_RAY_CONNECT_TIMEOUT_S", "0.5")
    _finish(tmp_path, _smoke(), status="failed")
    out = io.StringIO()
    with pytest.raises(PreflightError):  # it gets as far as connecting: there is work to do
        run_study(_smoke(), store=str(tmp_path), out=out)
    assert "2 unfinished run(s) start again from scratch (--resume continues them from their last checkpoint)" \
        in out.getvalue()


def test_checks_before_ray_starts(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DYNSTUDY_INJECT_FAULT", "epoch=abc")
    assert main(["run", "smoke", "--store", str(tmp_path / "s")]) == 2
    assert "DYNSTUDY_INJECT_FAULT: epoch='abc' must be a non-negative integer" in capsys.readouterr().err
    monkeypatch.delenv("DYNSTUDY_INJECT_FAULT")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["run", "smoke", "--store", str(blocker / "store")]) == 2
    assert f"store {blocker / 'store'} is not writable" in capsys.readouterr().err
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    monkeypatch.setenv("DYNSTUDY_RAY_CONNECT_TIMEOUT_S", "0.5")
    assert main(["run", "smoke", "--store", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dynstudy run: RAY_ADDRESS=127.0.0.1:1: nothing answers") and err.count("\n") == 1


# ---------------------------------------------------------------------- inside the trial

def test_a_fresh_start_leaves_nothing_of_an_earlier_attempt(tmp_path):
    store = tmp_path / "s"
    cfg = trial(store, train={"epochs": 3})
    run_trial(cfg, LocalSession(tmp_path / "ck1"))
    assert read_run_row(str(store), "r0")["attempts"] == 1
    write_rows(str(store), "activations", "r0", "capture=000009", {"run_id": ["r0"], "capture": [9]})
    shorter = trial(store, train={"epochs": 2})
    run_trial(shorter, LocalSession(tmp_path / "ck2"))  # no checkpoint: from scratch
    names = sorted(p.name for p in store.rglob("*.parquet"))
    assert names == ["capture=000000.parquet", "capture=000001.parquet", "capture=000002.parquet",
                     "epoch=000001.parquet", "epoch=000002.parquet", "run.parquet"]
    assert read_run_row(str(store), "r0")["attempts"] == 1  # other settings: a new run, not a retry
    run_trial(shorter, LocalSession(tmp_path / "ck3"))
    assert read_run_row(str(store), "r0")["attempts"] == 2  # the same run started again


@pytest.mark.parametrize("capture, message", [
    ({"probe_size": 100000}, "capture.probe_size=100000 but digits has 64 validation images; "
                             "set capture.probe_size <= 64 (or dataset n_val higher)"),
    ({"channels_per_stage": 1000}, "capture.channels_per_stage=1000 but stage(s) stage1 (32 channels), stage2 "
                                   "(48 channels), stage3 (64 channels), stage4 (96 channels) have fewer; set "
                                   "capture.channels_per_stage <= 32 (the narrowest stage's width), or name wider "
                                   "stages "
                                   "(stages: [...] of the model entry or an override)"),
    ({"store_channels": 40}, "capture.store_channels=40 but stage(s) stage1 (32 channels) have fewer; set "
                             "capture.store_channels <= 32 or 'all', or name wider stages (stages: [...] of the "
                             "model entry or an override)"),
])
def test_a_probe_or_channel_count_the_run_cannot_have_is_refused(tmp_path, capture, message):
    store = tmp_path / "s"
    with pytest.raises(ValueError) as err:
        run_trial(trial(store, capture=capture), LocalSession(tmp_path / "ck"))
    assert str(err.value) == message
    row = read_run_row(str(store), "r0")
    assert (row["status"], row["error"]) == ("failed", f"ValueError: {message}")
    assert not list(store.rglob("capture=*"))  # refused before capture 0


def test_a_capture_the_data_or_model_cannot_give_is_refused_before_ray(tmp_path, monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # never reached
    with pytest.raises(ValueError) as err:
        run_study(_smoke(capture={"probe_size": 100000}), store=str(tmp_path), out=io.StringIO())
    assert str(err.value) == ("invalid study spec: tiny_cnn x digits: capture.probe_size=100000 but digits has 360 "
                              "validation images; set capture.probe_size <= 360 (or dataset n_val higher)")
    with pytest.raises(ValueError, match=r"tiny_cnn x digits: capture.channels_per_stage=1000 but stage\(s\) stage1 "
                                         r"\(32 channels\).* set capture.channels_per_stage <= 32"):
        run_study(_smoke(capture={"channels_per_stage": 1000}), store=str(tmp_path), out=io.StringIO())
    assert not list(tmp_path.rglob("*.parquet"))


def test_the_study_summary_counts_what_the_store_holds(tmp_path):
    """A run whose row was left ``running`` (its trial ended without recording it) is counted as unfinished, by
    name, never as finished: the summary reads the store, not what Ray Tune reported."""
    spec = _smoke()
    _finish(tmp_path, spec)
    trials = expand(spec, str(tmp_path))
    stale = trials[1]["run_id"]
    row = read_run_row(str(tmp_path), stale)
    write_rows(str(tmp_path), "runs", stale, "run", {k: [v] for k, v in {**row, "status": "running"}.items()})
    summary = study_summary(str(tmp_path), trials, [])
    assert (summary["finished"], summary["unfinished"], summary["failed"]) == (1, [stale], 0)


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_with_every_epoch_written_but_a_running_row_is_repaired_and_said(tmp_path, monkeypatch, resume):
    """A row a killed driver left saying running, of a run whose every epoch up to train.epochs is in the store,
    is repaired to finished by a plain re-run and by --resume alike, and nothing is trained."""
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # would fail if Ray were reached
    _finish(tmp_path, _smoke(), status="running")
    for t in expand(_smoke(), str(tmp_path)):
        for epoch in (1, 2):
            write_rows(str(tmp_path), "train_metrics", t["run_id"], f"epoch={epoch:06d}",
                       {"run_id": [t["run_id"]], "epoch": [epoch]})
    out = io.StringIO()
    summary = run_study(_smoke(), store=str(tmp_path), resume=resume, out=out)
    assert "repaired 2 run(s) whose row said running although every epoch up to train.epochs is in the store" \
        in out.getvalue()
    assert summary["finished"] == 2 and summary["unfinished"] == []
    row = read_run_row(str(tmp_path), expand(_smoke(), str(tmp_path))[0]["run_id"])
    assert (row["status"], row["stop_reason"], row["epochs_completed"]) == ("finished", "max_epochs", 3)


def test_a_running_row_with_an_epoch_missing_is_not_repaired(tmp_path):
    _finish(tmp_path, _smoke(), status="running")  # epoch 3's file only: epochs 1 and 2 are missing
    plan = plan_study(expand(_smoke(), str(tmp_path)), str(tmp_path))
    assert len(plan.unfinished) == 2 and plan.stale == []
