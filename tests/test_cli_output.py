"""The CLI scripts well: machine-readable SQL output, --version, presets --show, report location, status, progress."""
from __future__ import annotations

import csv
import io
import json

import pyarrow.parquet as pq
import pytest
import yaml

from dynstudy.analysis.pipeline.analyze import analyze
from dynstudy.analysis.pipeline.catalog import open_catalog
from dynstudy.study.cli import main
from dynstudy.study.progress import ProgressLog
from tests.store_factory import make_store, write_run_row

QUERY = "SELECT run_id, capture, h_raw, reason FROM capture_metrics ORDER BY run_id, capture"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store")
    make_store(path, seeds=(0, 1), datasets=("digits",))
    analyze(str(path), out=io.StringIO())
    return path


def test_sql_formats_keep_every_row_at_full_precision(store, tmp_path, capsys):
    want = open_catalog(str(store)).execute(QUERY).fetchall()
    assert len(want) == 14
    assert main(["sql", "--store", str(store), "--format", "csv", QUERY]) == 0
    got = list(csv.reader(io.StringIO(capsys.readouterr().out)))
    assert got[0] == ["run_id", "capture", "h_raw", "reason"]
    assert [(r[0], int(r[1]), float(r[2]), r[3] or None) for r in got[1:]] == want  # exact floats
    assert main(["sql", "--store", str(store), "--format", "json", "--output", str(tmp_path / "r.json"), QUERY]) == 0
    assert [tuple(d.values()) for d in json.loads((tmp_path / "r.json").read_text())] == want
    out = str(tmp_path / "r.parquet")
    assert main(["sql", "--store", str(store), "--format", "parquet", "--output", out, QUERY]) == 0
    assert [tuple(d.values()) for d in pq.read_table(tmp_path / "r.parquet").to_pylist()] == want
    assert main(["sql", "--store", str(store), "--limit", "5", QUERY]) == 0
    out, err = capsys.readouterr()
    assert len(out.strip().splitlines()) == 2 + 5
    assert err.startswith("dynstudy sql: more than 5 rows; only 5 shown")


def test_sql_format_errors(store, capsys):
    assert main(["sql", "--store", str(store), "--format", "parquet", "SELECT 1"]) == 2
    assert "--format parquet writes a file: give --output FILE" in capsys.readouterr().err
    assert main(["sql", "--store", str(store), "--format", "csv", "SELECT 1; SELECT 2"]) == 2
    assert capsys.readouterr().err == "dynstudy sql: --format csv writes one result; give one query\n"
    # temporal_metrics' "window" is an SQL keyword: an unquoted use gets the fix, a quoted one works
    assert main(["sql", "--store", str(store), "SELECT window, h_raw FROM temporal_metrics"]) == 2
    assert capsys.readouterr().err.endswith('; window is an SQL keyword: quote the column, "window"\n')
    assert main(["sql", "--store", str(store), 'SELECT "window", h_raw FROM temporal_metrics']) == 0


def test_version_and_presets_show(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("dynstudy 0.1.0")
    assert main(["presets", "--show", "paper"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["name"] == "paper"  # only the YAML: redirectable
    assert main(["presets", "--show", "nope"]) == 2
    assert capsys.readouterr().err == "dynstudy presets: no preset 'nope'; presets: demo, paper, smoke\n"


def test_report_goes_where_run_puts_it_and_status_shows_running_runs(store, capsys):
    assert main(["report", "--store", str(store)]) == 0
    assert capsys.readouterr().out == f"report: {store / 'report.html'}\n" and (store / "report.html").exists()
    write_run_row(store, "tiny_cnn-digits-sgd-s1-made", 1, "digits", 6, status="running", done=4, attempts=2)
    assert main(["status", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "running (1):" in out
    row = [line for line in out.splitlines() if line.startswith("tiny_cnn-digits-sgd-s1-made")][0].split()
    assert row[:5] == ["tiny_cnn-digits-sgd-s1-made", "4", "/", "6", "2"]


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress_after_a_resume_counts_only_the_work_left():
    """Epochs a resumed run completed before count as done; the time left rests on this invocation's pace."""
    clock, out = Clock(), io.StringIO()
    log = ProgressLog({"a": 10, "b": 10}, "verbose", out, clock, start={"a": 8})
    clock.t += 30  # Ray starting, say: no epoch yet
    log.epoch("b", 1, 0.5, 1.0)
    log.epoch("a", 9, 0.5, 1.0)
    # 10 of 20 epochs done, 2 trained in 30 s: 10 left take 150 s
    assert out.getvalue().splitlines()[-1].startswith("[   30.0s] 0/2 runs done, 10/20 epochs, ETA 2m 30s")


def test_progress_lines_by_verbosity():
    clock, out = Clock(), io.StringIO()
    log = ProgressLog({"a": 10, "b": 10}, "events", out, clock)
    for e in range(1, 11):
        clock.t += 1
        log.epoch("a", e, 0.5, 1.0)
    log.complete("a")
    for e in range(1, 4):
        clock.t += 1
        log.epoch("b", e, 0.5, 1.0)
    log.complete("b")  # early stop: its 7 remaining epochs leave the total
    lines = out.getvalue().splitlines()
    # a tenth of the 20 epochs at every other epoch of run a (5 lines), a's completion, 60% at b's 2nd epoch,
    # b's completion
    assert len(lines) == 8 and lines[6].endswith("12/20 epochs, ETA 8s: 60% of the epochs")
    assert lines[0] == "[    2.0s] 0/2 runs done, 2/20 epochs, ETA 18s: 10% of the epochs"
    assert lines[-1] == "[   13.0s] 2/2 runs done, 13/13 epochs, ETA 0s: b: complete after 3 epochs"
    verbose, quiet = io.StringIO(), io.StringIO()
    for stream, mode in ((verbose, "verbose"), (quiet, "quiet")):
        log = ProgressLog({"a": 3}, mode, stream, Clock())
        for e in (1, 2, 3):
            log.epoch("a", e, 0.5, 1.0)
        log.recover("a")
    assert verbose.getvalue().count("a: epoch") == 3 and "retrying" in verbose.getvalue() and quiet.getvalue() == ""
