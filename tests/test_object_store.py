"""A store on S3, end to end, against a local S3 server (moto) that the tests start on loopback.

Endpoint and credentials come the standard AWS way (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_REGION); nothing is
downloaded at run time (no DuckDB extension: the catalog reads through
pyarrow's S3 filesystem).
"""
from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import fs as pafs

import dynstudy.store_contract.files as files_mod
from dynstudy.analysis.pipeline.analyze import analyze
from dynstudy.analysis.pipeline.catalog import open_catalog
from dynstudy.jobs.trial import faults
from dynstudy.store_contract.files import filesystem, write_rows
from dynstudy.store_contract.scan import scan_store
from dynstudy.study.cli import main
from dynstudy.study.orchestrate import run_study
from dynstudy.study.spec import load_spec
from tests.moto_server import s3_bucket
from tests.store_factory import SMOKE_CHANNELS, make_store

ROOT = Path(__file__).resolve().parent.parent
KEYS = "r.seed, a.capture, a.stage, a.rank, a.sample"


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on loopback and the AWS variables that point at it; stopped by pid."""
    with s3_bucket("dynstudy-test") as uri:
        yield uri


def _keys(uri: str) -> list[str]:
    fs, inner = filesystem(uri)
    return sorted(i.path[len(inner) + 1:] for i in fs.get_file_info(pafs.FileSelector(inner, recursive=True,
                                                                                        allow_not_found=True))
                  if i.type == pafs.FileType.File)


def test_analyze_sql_status_report_on_s3(s3, tmp_path, capsys, monkeypatch):
    # a HOME of its own, to see that no ~/.duckdb appears (not for the Ray tests: Ray keeps its token under HOME)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    store = f"{s3}/made"
    ids = make_store(store, seeds=(0, 1), datasets=("digits",))
    result = analyze(store, out=io.StringIO())
    assert result["analysed"] == 2 and not result["failed"]
    assert analyze(store, out=io.StringIO())["current"] == 2  # currency from content works on S3 too
    con = open_catalog(store)
    assert con.execute("SELECT count(*), count(DISTINCT run_id) FROM capture_metrics").fetchone() == (14, 2)
    assert main(["sql", "--store", store, "SELECT run_id, n_epochs FROM run_summary ORDER BY run_id"]) == 0
    out = capsys.readouterr().out
    assert all(i in out for i in ids) and "6" in out
    assert main(["sql", "--store", store, "SELECT * FROM read_text('/etc/passwd')"]) == 2
    assert "file system operations are disabled" in capsys.readouterr().err
    assert main(["status", "--store", store]) == 0
    assert main(["report", "--store", store, "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").stat().st_size > 10_000
    assert not (Path(os.environ["HOME"]) / ".duckdb").exists()
    pq.write_table(pa.table({"junk": [1]}), "dynstudy-test/made/runs/backup.parquet", filesystem=filesystem(store)[0])
    assert [p for _, p, _ in scan_store(store).foreign] == [f"{store}/runs/backup.parquet"]


def test_a_filter_on_run_id_opens_only_that_runs_files(s3):
    """The filter reaches pyarrow as a partition filter: the other runs' objects are not even read (here: gone)."""
    store = f"{s3}/pushdown"
    ids = make_store(store, seeds=(0, 1, 2), datasets=("digits",))
    want = open_catalog(store, run_id=ids[0]).execute("SELECT count(*) FROM activations").fetchone()[0]
    con = open_catalog(store)  # not queried before the deletions: pyarrow would keep the footers it had read
    fs, inner = filesystem(store)
    for other in ids[1:]:
        fs.delete_dir(f"{inner}/activations/run_id={other}")
    assert con.execute("SELECT count(*) FROM activations WHERE run_id = ?", [ids[0]]).fetchone()[0] == want > 0
    with pytest.raises(Exception, match="run_id=" + ids[1]):
        con.execute("SELECT count(*) FROM activations").fetchone()


def test_a_failed_upload_leaves_the_old_object_and_nothing_visible(s3, monkeypatch):
    store = f"{s3}/atomic"
    path = write_rows(store, "train_metrics", "r1", "epoch=000001", {"run_id": ["r1"], "epoch": [1], "val_acc": [0.5]})
    before = _keys(store)

    def broken(table, sink, **kw):
        sink.write(b"PAR1 half a file")
        raise OSError("connection reset")

    monkeypatch.setattr(files_mod.pq, "write_table", broken)
    with pytest.raises(OSError, match="connection reset"):
        write_rows(store, "train_metrics", "r1", "epoch=000001", {"run_id": ["r1"], "epoch": [1], "val_acc": [0.9]})
    monkeypatch.undo()
    assert _keys(store) == before == ["train_metrics/run_id=r1/epoch=000001.parquet"]
    fs, inner = filesystem(path)
    assert pq.read_table(inner, filesystem=fs).column("val_acc").to_pylist() == [0.5]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_resumed_run_removes_the_temporaries_of_writes_killed_midway(s3, tmp_path, where):
    store = str(tmp_path / "store") if where == "local" else f"{s3}/leftovers"
    kept = write_rows(store, "train_metrics", "r1", "epoch=000001", {"run_id": ["r1"], "epoch": [1], "val_acc": [0.5]})
    fs, inner = filesystem(kept)
    folder = inner.rsplit("/", 1)[0]
    for leftover in (".epoch=000002.parquet.0123abcd.tmp", ".run.parquet.4567ef01.tmp"):
        with fs.open_output_stream(f"{folder}/{leftover}") as sink:
            sink.write(b"PAR1 half a file")
    assert files_mod.remove_write_leftovers(store, "r1") == 2 and files_mod.remove_write_leftovers(store, "r2") == 0
    assert [i.base_name for i in fs.get_file_info(pafs.FileSelector(folder))] == ["epoch=000001.parquet"]


KILLED_UPLOAD = textwrap.dedent("""
    import sys, time
    import numpy as np
    import dynstudy.store_contract.files as files
    real = files.filesystem

    class Slow:
        def __init__(self, stream): self.stream = stream
        def __enter__(self): return self
        def __exit__(self, *exc): self.stream.close()
        def write(self, data):
            half = len(data) // 2
            self.stream.write(data[:half])
            print("HALF", flush=True)
            time.sleep(120)  # killed here
            self.stream.write(data[half:])

    class SlowFS:
        def __init__(self, fs): self.fs = fs
        def open_output_stream(self, path): return Slow(self.fs.open_output_stream(path))
        def __getattr__(self, name): return getattr(self.fs, name)

    files.filesystem = lambda path: (SlowFS(real(path)[0]), real(path)[1])
    n = 4_000_000  # about 16 MB of float32: a multipart upload
    files.write_rows(sys.argv[1], "train_metrics", "r1", "epoch=000001",
                     {"run_id": ["r1"] * n, "epoch": np.ones(n, dtype=np.int32), "val_acc": np.random.rand(n)})
""")


def test_an_upload_killed_midway_leaves_nothing_visible(s3, tmp_path):
    store = f"{s3}/killed"
    script = tmp_path / "upload.py"
    script.write_text(KILLED_UPLOAD)
    proc = subprocess.Popen([sys.executable, str(script), store], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline().strip() == "HALF"
        time.sleep(1)  # the first parts are on the server now
    finally:
        proc.kill()
        proc.wait()
    assert [k for k in _keys(store) if not k.rsplit("/", 1)[-1].startswith(".")] == []
    scan = scan_store(store)
    assert not scan.tables() and not scan.foreign


@pytest.mark.slow
def test_a_study_on_s3_fails_resumes_and_analyses(s3, tmp_path, monkeypatch, capsys):
    """docs/cluster.md's commands: smoke to s3:// with a hard exit at epoch 2 in every attempt (3 > the preset's
    max_failures 2), --resume, then analyze / sql / status / report; every row once, equal to a clean run's."""
    clean = tmp_path / "clean"
    assert run_study(load_spec("smoke"), store=str(clean), num_cpus=2, out=io.StringIO())["finished"] == 2
    monkeypatch.chdir(tmp_path)  # where `run` puts an object store's report: ./study-report.html
    store = f"{s3}/study"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cli = [sys.executable, "-m", "dynstudy.study.cli", "run", "smoke", "--store", store]
    first = subprocess.run(cli, env={**env, faults.ENV: "epoch=2,times=3,mode=exit"}, capture_output=True, text=True)
    assert first.returncode == 1 and "study smoke: 0 finished, 0 diverged, 2 failed" in first.stdout, first.stderr
    second = subprocess.run([*cli, "--resume"], env=env, capture_output=True, text=True)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "--resume: 2 of 2 unfinished run(s) continue from their last checkpoint" in second.stdout
    assert "2 finished, 0 diverged, 0 failed" in second.stdout and "report: " in second.stdout
    keys = _keys(store)
    assert any(k.startswith("_tune/smoke/experiment_state-") for k in keys)
    assert any("/checkpoint_" in k and k.endswith("state.pt") for k in keys)
    assert not [k for k in keys if k.startswith("_tune/smoke.resume/")]  # kept checkpoints go once runs finish
    assert not [k for k in keys if k.rsplit("/", 1)[-1].startswith(".") and not k.startswith("_tune")]
    query = (f"SELECT {KEYS}, a.value FROM activations a JOIN runs r USING (run_id) ORDER BY {KEYS}")
    got, want = open_catalog(store).execute(query).fetchall(), open_catalog(str(clean)).execute(query).fetchall()
    assert got == want and len(got) == 2 * 4 * SMOKE_CHANNELS * 128  # exactly once, bit-identical to a clean run
    assert main(["analyze", "--store", store]) == 0
    assert "analyze: 0 runs analysed, 2 already current" in capsys.readouterr().out
    assert main(["sql", "--store", store, "SELECT run_id, state FROM run_summary WHERE state IS NOT NULL"]) == 0
    assert capsys.readouterr().out.count("tiny_cnn-digits-sgd-s") == 2
    assert main(["status", "--store", store]) == 0
    assert "smoke  tiny_cnn  digits   sgd        2     2 " in capsys.readouterr().out
    assert main(["report", "--store", store, "--out", "report.html"]) == 0
    assert (tmp_path / "report.html").stat().st_size > 10_000 and (tmp_path / "study-report.html").exists()


@pytest.mark.slow
def test_analysis_as_ray_tasks_on_s3_writes_the_local_tables(s3, tmp_path):
    """The same store analysed on this machine and as Ray tasks reading from and writing to S3, temporal
    series included: every analysis table equal."""
    import tempfile

    import ray

    from tests.test_fast_path import assert_same_tables

    local, remote = tmp_path / "local", f"{s3}/tasks"
    ids = make_store(local, seeds=(0, 1), datasets=("digits",), epochs=4, every=1,
                     analysis={"temporal_window": 36, "temporal_stride": 4})
    make_store(remote, seeds=(0, 1), datasets=("digits",), epochs=4, every=1,
               analysis={"temporal_window": 36, "temporal_stride": 4})
    analyze(str(local), out=io.StringIO())
    # the tasks' workers inherit this process's AWS_* variables (a cluster's nodes need their own credentials)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=tempfile.mkdtemp(prefix="dynray-"))
    try:
        result = analyze(remote, address="auto", out=io.StringIO())
    finally:
        ray.shutdown()
    assert result["analysed"] == len(ids) and not result["failed"]
    mirror = tmp_path / "mirror"  # the S3 store's analysis tables, copied down to compare file by file
    fs, inner = filesystem(remote)
    for info in fs.get_file_info(pafs.FileSelector(inner, recursive=True)):
        if info.type == pafs.FileType.File and not info.base_name.startswith("."):
            target = mirror / info.path[len(inner) + 1:]
            target.parent.mkdir(parents=True, exist_ok=True)
            with fs.open_input_stream(info.path) as src:
                target.write_bytes(src.read())
    assert assert_same_tables(local, mirror) > 1000
