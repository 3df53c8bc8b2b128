"""Studies through Ray Tune that fail and recover: injected faults, --resume, --replace, a full store.

`ray job submit` to a real 2-node cluster and a node lost mid-trial: tests/test_cluster.py.
"""
from __future__ import annotations

import io
import subprocess
from pathlib import Path

import duckdb
import pytest

from dynstudy.analysis.pipeline.analyze import analyze
from dynstudy.analysis.pipeline.catalog import open_catalog
from dynstudy.analysis.report.build import write_report
from dynstudy.jobs.trial import faults
from dynstudy.study.orchestrate import StudyError, run_study
from dynstudy.study.spec import SpecError, load_spec

ROOT = Path(__file__).resolve().parent.parent
KEYS = "r.seed, a.capture, a.stage, a.rank, a.sample"


def activations(store):
    """(seed, capture, stage, rank, sample, value) of a store, and whether each key is unique."""
    con = duckdb.connect()
    src = (f"read_parquet('{store}/activations/**/*.parquet') a JOIN "
           f"read_parquet('{store}/runs/**/*.parquet') r USING (run_id)")
    rows = con.sql(f"SELECT {KEYS}, a.value FROM {src} ORDER BY {KEYS}").fetchall()
    unique = con.sql(f"SELECT count(*) = count(DISTINCT ({KEYS})) FROM {src}").fetchall()[0][0]
    status = con.sql(f"SELECT list(DISTINCT status) FROM read_parquet('{store}/runs/**/*.parquet')").fetchall()[0][0]
    return rows, unique, status


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    store = tmp_path_factory.mktemp("clean")
    assert run_study(load_spec("smoke"), store=str(store), num_cpus=2, out=io.StringIO())["finished"] == 2
    return activations(store)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["exception", "exit"])
def test_injected_faults_recover_exactly_once(tmp_path, monkeypatch, clean, mode):
    monkeypatch.setenv(faults.ENV, f"epoch=2,times=1,mode={mode}")
    out = io.StringIO()
    summary = run_study(load_spec("smoke"), store=str(tmp_path), num_cpus=2, out=out)
    assert summary["finished"] == 2 and summary["failed"] == 0, out.getvalue()
    assert out.getvalue().count("retrying from its last checkpoint") == 2
    rows, unique, status = activations(tmp_path)
    assert unique and status == ["finished"]
    assert rows == clean[0]  # the same values a clean run of each seed gives
    con = duckdb.connect()
    attempts = con.sql(f"SELECT list(attempts) FROM read_parquet('{tmp_path}/runs/**/*.parquet')").fetchall()
    assert attempts[0][0] == [2, 2]
    analyze(str(tmp_path), out=io.StringIO())
    write_report(open_catalog(str(tmp_path)), tmp_path / "r.html")
    assert "Retried or resumed runs (2)" in (tmp_path / "r.html").read_text()


@pytest.mark.slow
def test_a_shorter_rerun_under_replace_leaves_no_stale_file(tmp_path):
    tmp_path = tmp_path / "st [x]*? 'q"  # a store path with glob characters and a quote trains and analyses too
    spec = load_spec("smoke")
    assert run_study(spec, store=str(tmp_path), num_cpus=2, out=io.StringIO())["finished"] == 2
    out = io.StringIO()
    again = run_study(spec, store=str(tmp_path), num_cpus=2, out=out)
    assert again["skipped"] == 2 and "2 runs already finished" in out.getvalue()
    shorter = spec.model_copy(update={"train": spec.train.model_copy(update={"epochs": 2})})
    with pytest.raises(SpecError, match="train.epochs: 3 -> 2"):
        run_study(shorter, store=str(tmp_path), num_cpus=2, out=io.StringIO())
    assert run_study(shorter, store=str(tmp_path), num_cpus=2, replace=True, out=io.StringIO())["finished"] == 2
    assert not list(tmp_path.rglob("capture=000003.parquet")) and not list(tmp_path.rglob("epoch=000003.parquet"))
    analyze(str(tmp_path), out=io.StringIO())
    con = open_catalog(str(tmp_path))
    assert con.execute("SELECT DISTINCT r.epochs_completed, s.n_epochs, s.reason FROM runs r JOIN run_summary s "
                       "USING (run_id)").fetchall() == [(2, 2, None)]


@pytest.mark.slow
def test_a_read_only_working_directory_trains_and_analyses(read_only_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(read_only_dir[0])  # nothing of a study is written to the working directory
    store = tmp_path / "store"
    out = io.StringIO()
    assert run_study(load_spec("smoke"), store=str(store), num_cpus=2, out=out)["finished"] == 2, out.getvalue()
    assert analyze(str(store), out=io.StringIO())["analysed"] == 2
    assert list(read_only_dir[0].iterdir()) == []


@pytest.mark.slow
def test_resume_continues_a_failed_study(tmp_path, monkeypatch, clean):
    spec = load_spec("smoke")
    spec = spec.model_copy(update={"resources": spec.resources.model_copy(update={"max_failures": 0})})
    monkeypatch.setenv(faults.ENV, "epoch=3,times=1,mode=exit")
    first = run_study(spec, store=str(tmp_path), num_cpus=2, out=io.StringIO())
    assert first["failed"] == 2
    assert activations(tmp_path)[2] == ["failed"]
    monkeypatch.delenv(faults.ENV)
    out = io.StringIO()
    second = run_study(spec, store=str(tmp_path), num_cpus=2, resume=True, out=out)
    assert "--resume: 2 of 2 unfinished run(s) continue from their last checkpoint" in out.getvalue()
    assert second["failed"] == 0
    rows, unique, status = activations(tmp_path)
    assert unique and status == ["finished"] and rows == clean[0]


@pytest.fixture
def small_disk(tmp_path):
    """A 2.6 MB tmpfs (the smoke study needs about 4 MB); skipped where mounting is not permitted."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2600k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


@pytest.mark.slow
def test_a_full_store_fails_cleanly_and_resume_completes(small_disk, clean):
    store = small_disk / "store"
    out = io.StringIO()
    try:
        first = run_study(load_spec("smoke"), store=str(store), num_cpus=2, out=out)
        assert first["failed"] > 0, out.getvalue()
    except StudyError as err:
        assert "`dynstudy run SPEC --resume` continues" in str(err)
    assert "retrying from its last checkpoint" in out.getvalue()
    # what each run's row says now depends on which write met the full disk first; resume sorts it out
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    out = io.StringIO()
    second = run_study(load_spec("smoke"), store=str(store), num_cpus=2, resume=True, out=out)
    assert second["failed"] == 0 and second["finished"] == 2, out.getvalue()
    rows, unique, status = activations(store)
    assert unique and status == ["finished"] and rows == clean[0]
