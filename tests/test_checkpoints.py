"""The checkpoints ``--resume`` continues from (dynstudy.study.checkpoints): the newest whole one, kept safe."""
from __future__ import annotations

import io

import torch

from dynstudy.jobs.trial.session import TuneSession
from dynstudy.store_contract.files import filesystem
from dynstudy.study.checkpoints import (
    clear_trial_folders,
    forget_kept,
    is_whole,
    keep_for_resume,
    newest_checkpoint,
    resume_folder,
)


def save(path, epoch: int, cut: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    torch.save({"epoch": epoch}, buf)
    data = buf.getvalue()
    path.write_bytes(data[:len(data) - cut])


def test_the_newest_whole_checkpoint_is_kept_and_a_cut_one_passed_over(tmp_path):
    exp = str(tmp_path / "_tune" / "study")
    run = tmp_path / "_tune" / "study" / "r1"
    save(run / "checkpoint_000000" / "state.pt", 1)
    save(run / "checkpoint_000001" / "state.pt", 2)
    save(run / "checkpoint_000002" / "state.pt", 3, cut=40)  # a copy a kill cut short
    (run / "checkpoint_000003").mkdir()  # a folder Tune made but never filled
    assert newest_checkpoint(exp, "r1") == f"{exp}/r1/checkpoint_000001/state.pt"
    assert newest_checkpoint(exp, "r2") is None
    kept = keep_for_resume(exp, ["r1", "r2"])
    assert kept == {"r1": f"{resume_folder(exp)}/r1.pt"}
    assert torch.load(kept["r1"], weights_only=False) == {"epoch": 2}
    assert not list((tmp_path / "_tune").rglob(".*.tmp"))
    clear_trial_folders(exp, ["r1"])  # Tune's folder goes, the kept file stays and serves the next --resume too
    assert not run.exists()
    assert keep_for_resume(exp, ["r1"]) == kept
    forget_kept(exp, ["r1"])
    assert keep_for_resume(exp, ["r1"]) == {}


def test_is_whole_refuses_truncated_and_foreign_files(tmp_path):
    save(tmp_path / "a.pt", 1)
    save(tmp_path / "b.pt", 1, cut=1)
    (tmp_path / "c.pt").write_bytes(b"not a zip")
    fs, _ = filesystem(str(tmp_path))
    assert [is_whole(fs, str(tmp_path / n)) for n in ("a.pt", "b.pt", "c.pt", "d.pt")] == [True, False, False, False]


def test_a_tune_session_restores_the_kept_checkpoint_when_tune_holds_none(tmp_path, monkeypatch):
    from ray import tune

    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    save(tmp_path / "kept.pt", 4)
    assert TuneSession(str(tmp_path / "kept.pt")).restore() == {"epoch": 4}
    assert TuneSession().restore() is None
