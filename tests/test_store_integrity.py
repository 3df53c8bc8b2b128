"""The store never lies: foreign files, odd paths, analysis currency from content, gaps, read-only SQL.

Stores are written in the workers' own format by tests/store_factory.py (no
Ray, no torch), then damaged the ways a user, a crash or a backup tool would.
"""
from __future__ import annotations

import io
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dynstudy.analysis.kernels import dynamics
from dynstudy.analysis.pipeline.analyze import analyze
from dynstudy.analysis.pipeline.catalog import open_catalog, unreadable_files
from dynstudy.analysis.run import inventory
from dynstudy.study.cli import main
from tests.reference_capture import capture_arrays
from tests.store_factory import make_store, write_capture, write_epoch, write_run_row

ODD = "st [x]*? 'q\""  # spaces, brackets, glob characters and both quotes


def _tables(store, tables=("capture_metrics", "controls", "window_sensitivity", "run_summary",
                           "cell_variability", "claims", "sensitivity")) -> dict:
    """Every analysis table's rows, sorted, without the digest (which names the files' versions)."""
    con = open_catalog(str(store))
    out = {}
    for t in tables:
        cols = [c[0] for c in con.execute(f"DESCRIBE {t}").fetchall() if c[0] != "input_digest"]
        out[t] = sorted(map(repr, con.execute(f"SELECT {', '.join(cols)} FROM {t}").fetchall()))
    return out


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "store"
    ids = make_store(path)
    return path, ids


def _forced_copy(store, tmp_path):
    clean = tmp_path / "forced"
    shutil.copytree(store, clean)
    analyze(str(clean), force=True, out=io.StringIO())
    return _tables(clean)


# ---------------------------------------------------------------------- foreign files and odd paths

def test_foreign_files_are_listed_and_stop_nothing(store, tmp_path, capsys):
    path, ids = store
    analyze(str(path), out=io.StringIO())
    pq.write_table(pa.table({"run_id": ["x"], "junk": [1]}), path / "runs" / "backup.parquet")  # at a table root
    (path / "activations" / f"run_id={ids[0]}" / "notes.txt").write_text("not parquet")
    pq.write_table(pa.table({"junk": ["x"]}), path / "train_metrics" / f"run_id={ids[1]}" / "epoch=000099.parquet")
    shutil.copy(path / "train_metrics" / f"run_id={ids[2]}" / "epoch=000001.parquet",
                path / "train_metrics" / f"run_id={ids[3]}" / "epoch=000042.parquet")  # another run's rows
    (path / "claims" / "old.parquet").write_bytes((path / "claims" / "part.parquet").read_bytes())
    con = open_catalog(str(path))
    got = {p.replace(str(path), "S"): why for _, p, why in unreadable_files(con)}
    assert got == {
        "S/runs/backup.parquet": "not a file of this table's layout (expected run_id=<id>/run.parquet)",
        f"S/activations/run_id={ids[0]}/notes.txt":
            "not a file of this table's layout (expected run_id=<id>/capture=NNNNNN.parquet or "
            "run_id=<id>/steps=NNNNNN-NNNNNN.parquet)",
        f"S/train_metrics/run_id={ids[1]}/epoch=000099.parquet":
            "foreign schema: no column run_id, epoch, val_acc (a train_metrics file has run_id, epoch, val_acc)",
        f"S/train_metrics/run_id={ids[3]}/epoch=000042.parquet":
            f"holds rows of run {ids[2]!r}, not of its folder's run {ids[3]!r}",
        "S/claims/old.parquet": "not a file of this table's layout (expected part.parquet)",
    }
    assert con.execute("SELECT count(*) FROM runs").fetchone()[0] == len(ids)
    commands = (["status"], ["sql", "SELECT count(*) AS n FROM train_metrics"],
                ["report", "--out", str(tmp_path / "r.html")])
    for argv in commands:
        assert main([argv[0], "--store", str(path), *argv[1:]]) == 0
    assert "36" in capsys.readouterr().out  # 6 runs x 6 epochs, the foreign files not counted
    out = io.StringIO()
    result = analyze(str(path), out=out)
    # the damaged epoch files stand where a run's inputs should be: those two runs are skipped, named
    assert sorted(result["failed"]) == sorted([ids[1], ids[3]])
    assert "not a Parquet" not in out.getvalue() and "backup.parquet" in out.getvalue()
    assert result["current"] == len(ids) - 2
    html = (tmp_path / "r.html").read_text()
    assert "Files in the store that do not belong (5)" in html


def test_store_path_with_glob_characters_and_quotes(tmp_path, capsys):
    path = tmp_path / ODD
    ids = make_store(path, seeds=(0, 1), datasets=("digits",))
    result = analyze(str(path), out=io.StringIO())
    assert result["analysed"] == len(ids) and not result["failed"]
    for argv in (["status"], ["sql", "SELECT count(*) FROM run_summary"], ["analyze"],
                 ["report", "--out", str(tmp_path / "r.html")]):
        assert main([argv[0], "--store", str(path), *argv[1:]]) == 0, argv
    assert "0 runs analysed, 2 already current" in capsys.readouterr().out


# ---------------------------------------------------------------------- currency from content

def test_a_rewritten_or_restored_file_is_reanalysed_whatever_its_clock(store, tmp_path):
    path, ids = store
    analyze(str(path), out=io.StringIO())
    target = path / "train_metrics" / f"run_id={ids[0]}" / "epoch=000003.parquet"
    backup = target.read_bytes()
    write_epoch(path, ids[0], 3, np.random.default_rng(99))  # a new version of the file...
    old = os.stat(path / "run_summary" / f"run_id={ids[0]}" / "part.parquet").st_mtime - 3600
    os.utime(target, (old, old))                              # ...that looks older than the analysis
    again = analyze(str(path), out=io.StringIO())
    assert again["analysed"] == 1 and again["current"] == len(ids) - 1
    target.write_bytes(backup)                                # restored from a backup, mtime now
    os.utime(target, (old, old))
    assert analyze(str(path), out=io.StringIO())["analysed"] == 1
    assert _tables(path) == _forced_copy(path, tmp_path)


def test_analysis_overlapping_a_running_study_converges(store, tmp_path):
    path, ids = store
    run = ids[0]
    # the run is still training: captures 0..6, epochs 1..6 written, epochs_completed says 5
    write_run_row(path, run, 0, "digits", 8, status="running", done=5)
    write_capture(path, run, 7, 7, np.random.default_rng(7))  # epoch 7's capture is written before its epoch file
    first = analyze(str(path), out=io.StringIO())
    assert first["analysed"] == len(ids) and not first["incomplete"]
    # training goes on, then finishes
    write_epoch(path, run, 7, np.random.default_rng(7))
    write_capture(path, run, 8, 8, np.random.default_rng(8))
    write_epoch(path, run, 8, np.random.default_rng(8))
    write_run_row(path, run, 0, "digits", 8, status="finished", done=8)
    out = io.StringIO()
    second = analyze(str(path), out=out)
    assert second["analysed"] == 1 and second["current"] == len(ids) - 1, out.getvalue()
    con = open_catalog(str(path))
    assert con.execute("SELECT n_epochs, reason FROM run_summary WHERE run_id = ?", [run]).fetchone() == (8, None)
    assert _tables(path) == _forced_copy(path, tmp_path)


def test_outputs_mixed_from_two_analyses_are_redone(store, tmp_path):
    """Two analyses of one run that read different inputs leave files with different digests: redone."""
    path, ids = store
    analyze(str(path), out=io.StringIO())
    stale = (path / "capture_metrics" / f"run_id={ids[0]}" / "part.parquet").read_bytes()
    write_epoch(path, ids[0], 2, np.random.default_rng(5))
    analyze(str(path), out=io.StringIO())
    (path / "capture_metrics" / f"run_id={ids[0]}" / "part.parquet").write_bytes(stale)  # the slower writer lands last
    assert analyze(str(path), out=io.StringIO())["analysed"] == 1
    assert _tables(path) == _forced_copy(path, tmp_path)


def test_outputs_of_an_older_analysis_are_redone_with_every_column(store, tmp_path, monkeypatch):
    """Outputs of an earlier analysis version, or outputs that lack a contract column (such as the
    non-stationarity flags) under the current digest, are not current: ``analyze`` recomputes them."""
    path, ids = store
    monkeypatch.setattr(inventory, "ANALYSIS_VERSION", "analysis-older")
    analyze(str(path), out=io.StringIO())
    monkeypatch.undo()
    assert analyze(str(path), out=io.StringIO())["analysed"] == len(ids)  # another version: every run redone
    assert analyze(str(path), out=io.StringIO())["analysed"] == 0
    for table, gone in (("capture_metrics", ["nonstationary"]),
                        ("run_summary", ["nonstationary", "n_nonstationary", "h_eff_saturated"])):
        f = path / table / f"run_id={ids[0]}" / "part.parquet"
        pq.write_table(pq.read_table(f).drop_columns(gone), f)  # same digest in its metadata, columns missing
    assert open_catalog(str(path)).execute(  # the run's flags read as unknown until it is redone
        "SELECT count(*) FROM capture_metrics WHERE nonstationary IS NULL AND h_raw IS NOT NULL").fetchone()[0] > 0
    again = analyze(str(path), out=io.StringIO())
    assert again["analysed"] == 1 and again["current"] == len(ids) - 1
    con = open_catalog(str(path))
    assert con.execute("SELECT count(*) FROM capture_metrics WHERE (nonstationary IS NULL) <> (h_raw IS NULL) "
                       "OR nonstationary <> (h_raw > 1)").fetchone()[0] == 0
    assert _tables(path) == _forced_copy(path, tmp_path)


# ---------------------------------------------------------------------- gaps

def test_a_missing_capture_or_epoch_file_is_named_and_kept_out(store, tmp_path, capsys):
    path, ids = store
    analyze(str(path), out=io.StringIO())
    (path / "activations" / f"run_id={ids[0]}" / "capture=000002.parquet").unlink()
    (path / "train_metrics" / f"run_id={ids[1]}" / "epoch=000006.parquet").unlink()
    out = io.StringIO()
    result = analyze(str(path), out=out)
    assert result["incomplete"] == {
        ids[0]: "capture file(s) 2 missing (captures present: 0-1, 3-6)",
        ids[1]: "epoch file(s) 6 missing (runs says 6 epochs completed)",
    }
    assert f"{ids[0]}: 6 captures, INCOMPLETE: capture file(s) 2 missing" in out.getvalue()
    con = open_catalog(str(path))
    rows = dict(con.execute("SELECT run_id, reason FROM run_summary WHERE reason IS NOT NULL").fetchall())
    assert rows == result["incomplete"]
    assert con.execute("SELECT count(*) FROM run_summary WHERE reason IS NOT NULL AND "
                       "(state IS NOT NULL OR h_eff_mean IS NOT NULL OR best_val_acc IS NOT NULL)").fetchone()[0] == 0
    assert dict(con.execute("SELECT dataset, max(n_seeds) FROM cell_variability WHERE metric = 'h_eff_mean' "
                            "GROUP BY 1").fetchall()) == {"digits": 1, "synthetic": 3}
    assert con.execute("SELECT max(n) FROM claims WHERE claim = 'state stable across seeds' AND dataset = 'digits'"
                       ).fetchone()[0] == 1
    # the claims say which runs they dropped, and why
    dropped = con.execute("SELECT n_runs, n_dropped, dropped FROM claims WHERE claim = 'state stable across seeds' "
                          "AND dataset = 'digits'").fetchone()
    assert dropped == (3, 2, "1 incomplete (capture file(s) 2 missing (captures present: 0-1, 3-6)); "
                             "1 incomplete (epoch file(s) 6 missing (runs says 6 epochs completed))")
    # named again by the next analyze, which has nothing to redo
    again = io.StringIO()
    assert analyze(str(path), out=again)["current"] == len(ids)
    assert "2 run(s) incomplete, kept out of the cross-run tables" in again.getvalue()
    assert main(["report", "--store", str(path), "--out", str(tmp_path / "r.html")]) == 0
    assert "Incomplete runs (2)" in (tmp_path / "r.html").read_text()


def test_an_epoch_capture_without_its_epoch_file_is_a_gap(store):
    path, ids = store
    write_run_row(path, ids[0], 0, "digits", 6, status="finished", done=5)
    (path / "train_metrics" / f"run_id={ids[0]}" / "epoch=000006.parquet").unlink()
    result = analyze(str(path), out=io.StringIO())
    assert result["incomplete"] == {ids[0]: "end-of-epoch captures for epochs 1-6 but train_metrics for epochs 1-5"}


# ---------------------------------------------------------------------- read-only SQL

def _tree(root) -> dict:
    return {os.path.join(d, f): (os.stat(os.path.join(d, f)).st_size, os.stat(os.path.join(d, f)).st_mtime_ns)
            for d, _, files in os.walk(root) for f in files}


WRITES = [
    "EXPLAIN ANALYZE COPY (SELECT 'x' AS junk) TO '{run}' (FORMAT parquet)",
    "COPY (SELECT 'x' AS junk) TO '{run}' (FORMAT parquet)",
    "EXPLAIN ANALYZE INSERT INTO unreadable_files VALUES ('a', 'b', 'c')",
    "EXPLAIN /* hidden */ ANALYZE CREATE TABLE t AS SELECT 1",
    "EXPLAIN (FORMAT json) COPY (SELECT 1) TO '{S}/x.csv'",
    "SELECT 1; COPY (SELECT 1) TO '{S}/y.csv'",
    "-- a comment\nEXPORT DATABASE '{S}/exp'",
    "INSTALL httpfs", "LOAD httpfs", "EXPLAIN ANALYZE INSTALL httpfs", "SET threads = 1", "RESET threads",
    "PRAGMA enable_profiling", "CALL pragma_version()", "ATTACH '{S}/x.db'", "DETACH memory", "CHECKPOINT",
    "DROP VIEW runs", "CREATE TABLE t AS SELECT 1", "UPDATE unreadable_files SET path = 'x'",
    "DELETE FROM unreadable_files", "PIVOT runs ON status USING count(*)", "USE memory",
    # DuckDB types a query whose WITH clause writes as a SELECT
    "WITH t AS (COPY (SELECT 'x' AS junk) TO '{run}' (FORMAT parquet)) SELECT 1",
    "EXPLAIN ANALYZE WITH t AS (COPY (SELECT 1) TO '{S}/cte.csv') SELECT 1",
    "SELECT 1; /* c */ WITH t AS (INSERT INTO unreadable_files VALUES ('a', 'b', 'c') RETURNING 1) SELECT 1",
    "WITH t AS (DELETE FROM unreadable_files RETURNING 1), u AS (UPDATE unreadable_files SET path = 'x' RETURNING 1) "
    "SELECT 1",
]
READS_OUTSIDE = ["SELECT * FROM read_text('/etc/passwd')", "SELECT * FROM read_parquet('http://127.0.0.1:9/x.parquet')",
                 "SELECT * FROM glob('/etc/*')", "SELECT * FROM read_csv('{S}/../outside.csv')",
                 "SELECT * FROM read_parquet('{S}/../outside/x.parquet')"]


def test_sql_cannot_write_or_reach_outside_the_store(store, tmp_path, monkeypatch, capsys):
    path, ids = store
    analyze(str(path), out=io.StringIO())
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "outside.csv").write_text("a\n1\n")
    (tmp_path / "outside").mkdir()
    pq.write_table(pa.table({"a": [1]}), tmp_path / "outside" / "x.parquet")
    before = _tree(tmp_path)
    run = f"{path}/runs/run_id={ids[0]}/run.parquet"
    for stmt in WRITES + READS_OUTSIDE:
        sql = stmt.format(S=path, run=run)
        assert main(["sql", "--store", str(path), sql]) == 2, sql
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("dynstudy sql"), (sql, err)
        if stmt in WRITES and "PIVOT" not in stmt:
            assert "is not allowed" in err, (sql, err)
    assert _tree(tmp_path) == before  # nothing written, nothing changed, no ~/.duckdb
    assert not (home / ".duckdb").exists()
    # queries still work, EXPLAIN of a query and multi-statement queries included
    for sql in ("SELECT count(*) FROM runs", "EXPLAIN SELECT * FROM run_summary", "EXPLAIN ANALYZE SELECT 1",
                "FROM runs SELECT run_id LIMIT 1; SELECT 2", "DESCRIBE runs", "SUMMARIZE run_summary",
                "SELECT current_setting('threads')", "-- a\nSELECT 1 AS copy; -- trailing comment\n"):
        assert main(["sql", "--store", str(path), sql]) == 0, sql
    assert _tree(tmp_path) == before


def test_sql_output_never_lands_in_the_store(store, tmp_path, capsys):
    path, ids = store
    run = f"{path}/runs/run_id={ids[0]}/run.parquet"
    before = _tree(path)
    assert main(["sql", "--store", str(path), "SELECT 'x' AS junk", "--format", "parquet", "--output", run]) == 2
    assert capsys.readouterr().err == (f"dynstudy sql: --output {run!r} is inside the store {str(path)!r}; dynstudy "
                                       "sql "
                                       "writes nothing into the store: give a path outside it\n")
    assert _tree(path) == before
    out = str(tmp_path / "a.csv")
    assert main(["sql", "--store", str(path), "SELECT 1 AS a", "--format", "csv", "--output", out]) == 0
    assert (tmp_path / "a.csv").read_text() == "a\n1\n"


def test_an_empty_store_is_named_not_a_traceback(tmp_path, capsys):
    assert main(["status", "--store", str(tmp_path)]) == 2
    assert capsys.readouterr().err == (f"dynstudy status: store {str(tmp_path)!r} has no runs yet; run a study "
                                       "first (dynstudy run)\n")
    assert main(["analyze", "--store", str(tmp_path)]) == 2
    assert "has no runs/activations tables yet; run a study first" in capsys.readouterr().err


def test_probe_size_sensitivity_uses_the_first_samples(tmp_path):
    """A 512-sample probe is also analysed on its first 256 samples; the sensitivity table varies the probe."""
    path = tmp_path / "store"
    make_store(path, seeds=(0, 1), datasets=("digits", "synthetic"), epochs=4, probe=512)
    analyze(str(path), out=io.StringIO())
    con = open_catalog(str(path))
    got = con.execute("SELECT probe_size, smooth_window, count(*) FROM window_sensitivity GROUP BY ALL ORDER BY ALL"
                      ).fetchall()
    assert got == [(256, 5, 16), (512, 1, 16), (512, 5, 16), (512, 15, 16)]  # 4 runs x 4 epochs each
    own = con.execute("SELECT w.h_raw, c.h_raw FROM window_sensitivity w JOIN capture_metrics c USING (run_id, "
                      "capture) "
                      "WHERE w.probe_size = 512 AND w.smooth_window = 5").fetchall()
    assert all(a == b for a, b in own)  # the run's own setting is the capture's metric itself
    probes = con.execute("SELECT DISTINCT value FROM sensitivity WHERE parameter = 'probe_size'").fetchall()
    assert {r[0] for r in probes} == {256.0, 512.0}
    run_id, capture, h256 = con.execute("SELECT run_id, capture, h_raw FROM window_sensitivity "
                                        "WHERE probe_size = 256 ORDER BY run_id, capture LIMIT 1").fetchone()
    acts, labels, _, _ = capture_arrays(con, run_id, capture)
    assert h256 == pytest.approx(dynamics.capture_metrics(acts[:256], labels[:256])["h_raw"], abs=1e-12)
