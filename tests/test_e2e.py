"""A tiny study end to end through Ray Tune: spec -> trials -> signal files -> tables -> report."""
from __future__ import annotations

import io
import math

import pytest

from dynstudy.analysis.pipeline.analyze import analyze
from dynstudy.analysis.pipeline.catalog import open_catalog
from dynstudy.analysis.stats.variability import SEED_METRICS, TEMPORAL_METRICS
from dynstudy.study.cli import main
from dynstudy.study.orchestrate import run_study
from dynstudy.study.spec import parse_spec

EPOCHS, PROBE, K, STORED, STAGES = 3, 64, 8, 16, 4
SPEC = {
    "name": "e2e",
    "models": ["tiny_cnn"],
    "datasets": [{"name": "digits"}, {"name": "synthetic", "n_train": 256, "n_val": 96}],
    "optimizers": [{"name": "sgd", "lr": 0.05}],
    "seeds": [0, 1],
    "train": {"epochs": EPOCHS, "batch_size": 64, "early_stopping_patience": None},
    "capture": {"probe_size": PROBE, "channels_per_stage": K, "store_channels": STORED},
    "resources": {"cpus_per_trial": 1, "max_failures": 0},
}
N_RUNS, N_CAPTURES = 4, EPOCHS + 1


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store")
    out = io.StringIO()
    summary = run_study(parse_spec(SPEC), store=str(path), num_cpus=2, out=out)
    assert summary == {"store": str(path), "runs": N_RUNS, "failed": 0, "diverged": 0, "finished": N_RUNS,
                       "unfinished": [], "skipped": 0}, out.getvalue()
    assert "epoch 3" in out.getvalue()  # progress lines were printed
    result = analyze(str(path), out=io.StringIO())
    assert result["analysed"] == N_RUNS and not result["failed"]
    return path


def _one(con, sql):
    return con.execute(sql).fetchone()


@pytest.mark.slow
def test_worker_tables(store):
    con = open_catalog(str(store))
    assert _one(con, "SELECT count(*), count(DISTINCT run_id), min(status), max(status), max(epochs_completed) FROM "
                     "runs") \
        == (N_RUNS, N_RUNS, "finished", "finished", EPOCHS)
    n, runs, caps, stages, nan = _one(con, """SELECT count(*), count(DISTINCT run_id), count(DISTINCT capture),
        count(DISTINCT stage), count(*) FILTER (NOT isfinite(value)) FROM activations""")
    assert n == N_RUNS * N_CAPTURES * STAGES * STORED * PROBE
    assert (runs, caps, stages, nan) == (N_RUNS, N_CAPTURES, STAGES, 0)
    # exactly one row per (run, capture, stage, channel, sample)
    distinct = "SELECT DISTINCT run_id, capture, stage, channel, sample FROM activations"
    assert _one(con, f"SELECT count(*) FROM ({distinct})")[0] == n
    # the probe set is the same images, in the same order, at every capture
    assert _one(con, "SELECT count(DISTINCT label_list) FROM (SELECT run_id, capture, list(label ORDER BY sample) "
                     "AS label_list "
                     "FROM activations WHERE stage = 'stage1' AND channel = (SELECT min(channel) FROM activations "
                     "WHERE stage = 'stage1') "
                     "GROUP BY ALL) GROUP BY run_id ORDER BY 1 DESC LIMIT 1")[0] == 1
    # the channel subset is fixed per run: STORED channels per stage, ranks 0..STORED-1
    assert _one(con, "SELECT min(c), max(c), max(r) FROM (SELECT run_id, stage, count(DISTINCT channel) AS c, "
                     "max(rank) AS r FROM activations GROUP BY ALL)") == (STORED, STORED, STORED - 1)
    rows, bad = _one(con, """SELECT count(*), count(*) FILTER (NOT (isfinite(train_loss) AND val_acc BETWEEN 0 AND 1
        AND lr > 0 AND epoch BETWEEN 1 AND 3)) FROM train_metrics""")
    assert (rows, bad) == (N_RUNS * EPOCHS, 0)
    # digits is real and learnable: a tiny CNN beats chance (10%) by far in 3 epochs
    assert _one(con, "SELECT min(val_acc) FROM train_metrics WHERE epoch = 3 AND run_id LIKE '%digits%'")[0] > 0.5


@pytest.mark.slow
def test_analysis_tables(store):
    con = open_catalog(str(store))
    n, finite = _one(con, "SELECT count(*), count(*) FILTER (isfinite(h_raw) AND h_eff BETWEEN 0 AND 1 "
                          "AND metastability >= 0 AND synchrony BETWEEN 0 AND 1 AND n_channels = 32) FROM "
                          "capture_metrics")
    assert n == finite == N_RUNS * N_CAPTURES
    # Psi is defined on trained epochs only; epoch 0 is the init control
    assert _one(con, "SELECT count(*) FROM capture_metrics WHERE epoch = 0 AND psi IS NOT NULL")[0] == 0
    assert _one(con, "SELECT count(*) FROM capture_metrics WHERE epoch >= 1 AND isfinite(psi)")[0] == N_RUNS * EPOCHS
    assert _one(con, "SELECT count(*), count(DISTINCT run_id) FROM run_summary") == (N_RUNS, N_RUNS)
    cols = [c[0] for c in con.execute("DESCRIBE run_summary").fetchall()]
    for row in con.execute("SELECT * FROM run_summary").fetchall():
        r = dict(zip(cols, row))
        for key in ("h_eff_mean", "h_raw_mean", "metastability_mean", "psi_std", "best_val_acc",
                    "noise_h_raw_mean", "order_h_raw_mean", "init_h_raw"):
            assert r[key] is not None and math.isfinite(r[key]), (key, r)
        assert r["n_epochs"] == EPOCHS and r["best_epoch"] in (1, 2, 3)
    assert dict(con.execute("SELECT control, count(*) FROM controls GROUP BY 1").fetchall()) == {
        "noise": N_RUNS * N_CAPTURES, "order": N_RUNS * N_CAPTURES, "channel_draw": N_RUNS * EPOCHS}
    assert _one(con, "SELECT bool_and(spread > 0) FROM controls WHERE control = 'channel_draw'")[0]
    cells = 2  # tiny_cnn x {digits, synthetic} x sgd
    # no every-N-step captures here: no temporal metrics
    assert _one(con, "SELECT count(*) FROM cell_variability")[0] == cells * (len(SEED_METRICS) - len(TEMPORAL_METRICS))
    # 3 epochs are too few for the volatility rule (window 3 + patience 3): no trigger, so no seeds for it; nor
    # does the representation settle (CKA with the previous epoch at or above 0.98 to the end) in 3 epochs everywhere
    seeds = ("SELECT min(n_seeds), max(n_seeds) FROM cell_variability WHERE metric NOT IN ('trigger_epoch', "
             "'drift_settle_epoch')")
    assert _one(con, seeds) == (2, 2)
    assert _one(con, "SELECT max(n_seeds) FROM cell_variability WHERE metric = 'trigger_epoch'")[0] == 0
    # claims: integration (2 variants, 1 dataset pair), trigger and state (one row per cell each); a saturated
    # H_eff test adds its stand-in on H_raw
    own = "claim NOT LIKE '% (on H_raw)'"
    assert dict(con.execute(f"SELECT claim, count(*) FROM claims WHERE {own} GROUP BY 1").fetchall()) == {
        "integration separates datasets": 1, "integration separates datasets beyond noise": 1,
        "volatility trigger precedes accuracy plateau": cells, "state stable across seeds": cells}
    n_claims = _one(con, f"SELECT count(*) FROM claims WHERE {own}")[0]
    per_setting = con.execute(f"SELECT count(*) FROM sensitivity WHERE {own} GROUP BY parameter, value").fetchall()
    assert sorted(per_setting) == [(n_claims,)] * 16  # 4 + 3 + 3 + 3 + 3 settings
    assert _one(con, "SELECT count(*) FROM sensitivity WHERE flipped AND ((parameter = 'h_opt' AND value = 0.7) "
                     "OR (parameter = 'smooth_window' AND value = 5))")[0] == 0
    assert _one(con, "SELECT count(*) FROM window_sensitivity")[0] == N_RUNS * EPOCHS * 3
    lo_ok = _one(con, "SELECT bool_and(ci_low <= mean AND mean <= ci_high) FROM cell_variability "
                      "WHERE metric = 'h_eff_mean'")[0]
    assert lo_ok


@pytest.mark.slow
def test_analyze_is_incremental_and_idempotent(store):
    again = analyze(str(store), out=io.StringIO())
    assert again["analysed"] == 0 and again["current"] == N_RUNS
    query = "SELECT * EXCLUDE (run_id), run_id FROM capture_metrics ORDER BY run_id, capture"
    before = open_catalog(str(store)).execute(query).fetchall()
    forced = analyze(str(store), force=True, workers=2, out=io.StringIO())  # parallel workers, same numbers
    assert forced["analysed"] == N_RUNS
    con = open_catalog(str(store))
    assert _one(con, "SELECT count(*) FROM capture_metrics")[0] == N_RUNS * N_CAPTURES
    assert con.execute(query).fetchall() == before


@pytest.mark.slow
def test_cli_sql_report_status(store, tmp_path, capsys):
    assert main(["sql", "--store", str(store), "SELECT model, dataset, count(*) AS n FROM run_summary GROUP BY ALL "
                                               "ORDER BY ALL"]) == 0
    out = capsys.readouterr().out
    assert "tiny_cnn  digits" in out and "n" in out.splitlines()[0]
    target = tmp_path / "x.csv"
    assert main(["sql", "--store", str(store), f"COPY (SELECT 1) TO '{target}'"]) == 2
    assert "read-only: a COPY statement is not allowed" in capsys.readouterr().err
    assert not target.exists()
    for stmt, kind in [("ATTACH 'x.db'", "an ATTACH"), ("INSTALL httpfs", "a LOAD"), ("SET threads = 1", "a SET"),
                       ("SELECT 1; CREATE TABLE t AS SELECT 1", "a CREATE")]:
        assert main(["sql", "--store", str(store), stmt]) == 2
        err = capsys.readouterr().err
        assert f"read-only: {kind} statement is not allowed" in err and err.count("\n") == 1, err
    assert main(["sql", "--store", str(store), "SELECT * FROM no_such_table"]) == 2
    err = capsys.readouterr().err
    assert "Table with name no_such_table does not exist" in err and "tables in this store: activations" in err
    assert err.count("\n") == 1
    html = tmp_path / "r.html"
    assert main(["report", "--store", str(store), "--out", str(html)]) == 0
    assert html.stat().st_size > 10_000 and "Plotly.newPlot" in html.read_text()
    assert main(["status", "--store", str(store)]) == 0
    assert "finished" in capsys.readouterr().out


@pytest.mark.slow
def test_a_corrupt_file_is_named_and_only_its_run_skipped(store, tmp_path):
    import shutil

    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    victim = sorted((copy / "activations").glob("run_id=*/capture=000002.parquet"))[0]
    victim.write_bytes(victim.read_bytes()[:2000])  # truncated mid-write by something other than dynstudy
    out = io.StringIO()
    result = analyze(str(copy), force=True, out=out)
    bad_run = victim.parent.name.removeprefix("run_id=")
    assert list(result["failed"]) == [bad_run] and str(victim) in result["failed"][bad_run]
    assert result["analysed"] == N_RUNS - 1 and str(victim) in out.getvalue()
    con = open_catalog(str(copy))
    assert _one(con, "SELECT count(*) FROM unreadable_files")[0] == 1
    assert _one(con, "SELECT count(*) FROM cell_variability")[0] > 0
    assert main(["sql", "--store", str(copy), "SELECT count(*) FROM runs"]) == 0
