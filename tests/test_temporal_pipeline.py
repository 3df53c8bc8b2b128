"""The temporal protocol through `dynstudy analyze`: a store with every-N-step captures, its tables and claims."""
from __future__ import annotations

import numpy as np
import pyarrow.dataset as pads
import pytest

from dynstudy.analysis.kernels import temporal as tp
from dynstudy.analysis.pipeline.analyze import analyze
from dynstudy.analysis.pipeline.catalog import open_catalog
from dynstudy.analysis.run.capture_plan import DEFAULT_PARAMS
from tests.store_factory import STAGES, STEP_PROBE, STEPS_PER_EPOCH, K, make_store

EPOCHS = 12
ANALYSIS = {"temporal_window": 40, "temporal_stride": 20}


def rows(con, sql: str, *args) -> list[dict]:
    cur = con.execute(sql, list(args))
    cols = [d[0] for d in cur.description]
    return [dict(zip(cols, r)) for r in cur.fetchall()]


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    store = tmp_path_factory.mktemp("temporal") / "store"
    ids = make_store(store, seeds=(0, 1, 2), epochs=EPOCHS, every=1, analysis=ANALYSIS)
    analyze(str(store), workers=1, out=open("/dev/null", "w"))
    return store, ids, open_catalog(str(store))


def test_tables_have_a_row_per_window_and_control(analysed):
    store, ids, con = analysed
    n_points = 1 + EPOCHS * STEPS_PER_EPOCH  # init, then one per step (the epoch capture shares the last step)
    n_windows = (n_points - 40) // 20 + 1
    assert n_windows == 5
    per_run = rows(con, "SELECT run_id, count(*) AS n, min(\"window\") AS lo, max(\"window\") AS hi FROM "
                        "temporal_metrics "
                        "GROUP BY run_id ORDER BY run_id")
    assert [(r["run_id"], r["n"], r["lo"], r["hi"]) for r in per_run] == [(i, n_windows + 1, -1, n_windows - 1)
                                                                            for i in sorted(ids)]
    controls = rows(con, "SELECT control, count(*) AS n FROM temporal_controls GROUP BY control ORDER BY control")
    assert controls == [{"control": c, "n": len(ids) * (n_windows + 1)} for c in sorted(tp.CONTROLS)]
    whole = rows(con, "SELECT * FROM temporal_metrics WHERE \"window\" = -1 ORDER BY run_id")
    assert all((w["start_step"], w["end_step"], w["n_points"]) == (0, EPOCHS * STEPS_PER_EPOCH, n_points)
               for w in whole)
    first = rows(con, "SELECT * FROM temporal_metrics WHERE \"window\" = 1 ORDER BY run_id")[0]
    assert (first["start_step"], first["end_step"], first["start_epoch"], first["end_epoch"]) == (20, 59, 2, 6)
    summary = rows(con, "SELECT * FROM run_summary ORDER BY run_id")
    for s, w in zip(summary, whole):
        assert s["temporal_h_raw"] == w["h_raw"] and s["temporal_metastability"] == w["metastability"]
        assert s["temporal_n_points"] == n_points and s["temporal_state"] is not None


def test_values_are_the_kernels_on_series_read_independently(analysed):
    """Re-read one run's activations with pyarrow, build its series by hand and recompute its tables."""
    store, ids, con = analysed
    run_id = sorted(ids)[0]
    t = pads.dataset(str(store / "activations" / f"run_id={run_id}"), format="parquet").to_table().to_pandas()
    t = t[(t["sample"] < STEP_PROBE) & (t["rank"] < K)]
    means = t.groupby(["capture", "stage", "rank"])["value"].apply(lambda v: v.astype(np.float64).mean())
    caps = sorted(t["capture"].unique())
    X = np.array([[means[(c, s, r)] for c in caps] for s in STAGES for r in range(K)])
    meta = t.groupby("capture")[["epoch", "step"]].first().loc[caps]
    series = tp.temporal_series(meta["step"].to_numpy(), meta["epoch"].to_numpy(), np.array(caps), X)
    params = {**DEFAULT_PARAMS, **ANALYSIS}
    want, want_controls, _ = tp.temporal_tables(series, params, seed=0)
    got = rows(con, "SELECT * FROM temporal_metrics WHERE run_id = ? ORDER BY \"window\"", run_id)
    assert len(got) == len(want)
    for g, w in zip(got, sorted(want, key=lambda r: r["window"])):
        for key in ("start_step", "end_step", "n_points", "h_raw", "h_eff", "metastability", "synchrony"):
            assert g[key] == pytest.approx(w[key], rel=1e-12, abs=1e-12), key


def test_cross_run_tables_cover_the_temporal_metrics(analysed):
    _, ids, con = analysed
    metrics = {r["metric"] for r in rows(con, "SELECT DISTINCT metric FROM cell_variability")}
    assert {"temporal_h_raw", "temporal_h_eff", "temporal_metastability", "temporal_trigger_step"} <= metrics
    n = rows(con, "SELECT n_seeds FROM cell_variability WHERE metric = 'temporal_h_raw'")
    assert [r["n_seeds"] for r in n] == [3, 3]
    claims = {r["claim"] for r in rows(con, "SELECT claim FROM claims")}
    assert {"temporal: integration separates datasets", "temporal: state stable across seeds",
            "temporal: volatility trigger precedes accuracy plateau (steps)"} <= claims
    assert "integration separates datasets" in claims  # the pseudo-time claims stay


def test_a_store_without_step_captures_has_no_temporal_rows(tmp_path):
    store = tmp_path / "store"
    make_store(store, seeds=(0, 1), epochs=4, datasets=("digits",))
    analyze(str(store), workers=1, out=open("/dev/null", "w"))
    con = open_catalog(str(store))
    assert rows(con, "SELECT count(*) AS n FROM temporal_metrics") == [{"n": 0}]
    assert all(r["temporal_h_raw"] is None for r in rows(con, "SELECT temporal_h_raw FROM run_summary"))
    metrics = {r["metric"] for r in rows(con, "SELECT DISTINCT metric FROM cell_variability")}
    assert not any(m.startswith("temporal_") for m in metrics)
    assert not any(r["claim"].startswith("temporal") for r in rows(con, "SELECT claim FROM claims"))


def test_a_missing_steps_file_is_a_named_gap(tmp_path):
    store = tmp_path / "store"
    (run_id,) = make_store(store, seeds=(0,), epochs=3, datasets=("digits",), every=2, analysis=ANALYSIS)
    folder = store / "activations" / f"run_id={run_id}"
    names = sorted(p.name for p in folder.iterdir())
    # init, then per epoch 5 step captures in one file and the epoch's capture
    assert names == ["capture=000000.parquet", "capture=000006.parquet", "capture=000012.parquet",
                     "capture=000018.parquet", "steps=000001-000005.parquet", "steps=000007-000011.parquet",
                     "steps=000013-000017.parquet"]
    (folder / "steps=000007-000011.parquet").unlink()
    result = analyze(str(store), workers=1, out=open("/dev/null", "w"))
    assert result["incomplete"] == {run_id: "capture file(s) 7-11 missing (captures present: 0-6, 12-18)"}
    con = open_catalog(str(store))
    assert rows(con, "SELECT count(*) AS n FROM temporal_metrics") == [{"n": 0}]


@pytest.mark.slow
def test_a_study_through_ray_tune_has_its_temporal_tables(tmp_path):
    """The trainer's step captures through Ray Tune and `dynstudy analyze`: every table's row count is the plan's."""
    import io

    from dynstudy.study.orchestrate import run_study
    from dynstudy.study.spec import parse_spec

    spec = parse_spec({
        "name": "temporal-e2e", "models": ["tiny_cnn"], "datasets": [{"name": "digits"}], "seeds": [0, 1],
        "optimizers": [{"name": "sgd", "lr": 0.05}],
        "train": {"epochs": 3, "batch_size": 128, "early_stopping_patience": None},
        "capture": {"probe_size": 64, "channels_per_stage": 8, "every_n_steps": 1, "step_probe_size": 32},
        "analysis": {"temporal_window": 16, "temporal_stride": 4, "min_scale": 4},
        "resources": {"cpus_per_trial": 1, "max_failures": 0}})
    out = io.StringIO()
    assert run_study(spec, store=str(tmp_path), num_cpus=2, out=out)["finished"] == 2, out.getvalue()
    assert not analyze(str(tmp_path), out=io.StringIO())["failed"]
    con = open_catalog(str(tmp_path))
    for run in rows(con, "SELECT run_id FROM runs"):
        rid = run["run_id"]
        steps = rows(con, "SELECT step FROM train_metrics WHERE run_id = ? ORDER BY epoch", rid)
        last = steps[-1]["step"]
        n_step_captures = last  # one per step
        kinds = rows(con, "SELECT kind, count(DISTINCT capture) AS n FROM activations WHERE run_id = ? "
                          "GROUP BY kind ORDER BY kind", rid)
        assert kinds == [{"kind": "epoch", "n": 3}, {"kind": "init", "n": 1}, {"kind": "step", "n": n_step_captures}]
        # one point per step with a capture: init, the step captures (the epoch captures share their last step)
        n_points = 1 + n_step_captures
        windows = (n_points - 16) // 4 + 1
        assert windows >= 5
        got = rows(con, "SELECT count(*) AS n, max(n_points) AS p, max(end_step) AS e FROM temporal_metrics "
                        "WHERE run_id = ?", rid)[0]
        assert (got["n"], got["p"], got["e"]) == (windows + 1, n_points, last)
        controls = rows(con, "SELECT count(*) AS n FROM temporal_controls WHERE run_id = ?", rid)
        assert controls[0]["n"] == len(tp.CONTROLS) * (windows + 1)
        summary = rows(con, "SELECT temporal_n_points, temporal_h_raw FROM run_summary WHERE run_id = ?", rid)[0]
        assert summary["temporal_n_points"] == n_points and 0 < summary["temporal_h_raw"] < 3


def test_flags_are_the_threshold_on_the_written_h_raw(analysed):
    """capture_metrics, temporal_metrics and run_summary carry the non-stationarity (and saturation) flags of
    the values beside them: null exactly where H_raw is."""
    _, ids, con = analysed
    for table in ("capture_metrics", "temporal_metrics"):
        bad = rows(con, f"SELECT * FROM {table} WHERE (nonstationary IS NULL) <> (h_raw IS NULL) "
                        "OR nonstationary <> (h_raw > 1)")
        assert not bad and rows(con, f"SELECT count(nonstationary) AS n FROM {table}")[0]["n"] > 0, table
    summary = rows(con, "SELECT * FROM run_summary ORDER BY run_id")
    assert len(summary) == len(ids)
    for s in summary:
        caps = rows(con, "SELECT h_raw FROM capture_metrics WHERE run_id = ? AND kind = 'epoch'", s["run_id"])
        windows = rows(con, "SELECT h_raw FROM temporal_metrics WHERE run_id = ? AND \"window\" >= 0", s["run_id"])
        assert s["n_nonstationary"] == sum(c["h_raw"] > 1 for c in caps)
        assert s["temporal_n_nonstationary"] == sum(w["h_raw"] > 1 for w in windows)
        for prefix, h in (("", s["h_raw_mean"]), ("temporal_", s["temporal_h_raw"])):
            assert s[f"{prefix}nonstationary"] is (h > 1)
            assert s[f"{prefix}h_eff_saturated"] is (abs(h - DEFAULT_PARAMS["h_opt"]) > 3 * DEFAULT_PARAMS["sigma_h"])
