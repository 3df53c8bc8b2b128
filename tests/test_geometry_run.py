"""A run's geometry through ``dynstudy analyze``: one row per (capture, stage), drift against planted structure,
the noise control at its floor, and the rows equal to the kernels applied by hand."""
from __future__ import annotations

import csv
import io

import duckdb
import numpy as np
import pytest

from dynstudy.analysis.kernels import geometry
from dynstudy.analysis.pipeline.analyze import analyze
from dynstudy.store_contract.files import write_rows
from tests.store_factory import STAGES, write_epoch, write_run_row

PROBE, WIDTH, EPOCHS = 48, 6, 4


def planted_capture(run_id: str, capture: int, base: np.ndarray, rng) -> dict:
    """Every stage: the representation ``base`` [PROBE, WIDTH] plus a little noise."""
    cols = {k: [] for k in ("stage", "channel", "rank", "sample", "label", "value")}
    for stage in STAGES:
        X = base + 0.01 * rng.standard_normal(base.shape)
        for ch in range(WIDTH):
            cols["stage"] += [stage] * PROBE
            cols["channel"] += [ch] * PROBE
            cols["rank"] += [ch] * PROBE
            cols["sample"] += list(range(PROBE))
            cols["label"] += list(np.arange(PROBE) % 4)
            cols["value"] += list(X[:, ch].astype(np.float32))
    n = len(cols["value"])
    kind = "init" if capture == 0 else "epoch"
    return {"run_id": [run_id] * n, "capture": [capture] * n, "kind": [kind] * n, "epoch": [capture] * n,
            "step": [10 * capture] * n, **cols}


@pytest.fixture(scope="module")
def geometry_store(tmp_path_factory):
    """Four runs of one cell: ``still`` keeps its representation up to noise, ``fresh`` draws a new one
    at every capture (no relation between captures), and two ``twin`` seeds keep the representation ``still``
    has (seeds that agree)."""
    store = str(tmp_path_factory.mktemp("geo") / "store")
    rng = np.random.default_rng(0)
    shared = rng.standard_normal((PROBE, WIDTH)) * np.arange(1, WIDTH + 1)
    for seed, name in enumerate(("still", "fresh", "twin", "twin")):
        run_id = f"tiny_cnn-digits-sgd-s{seed}-{name}"
        base = shared if name in ("still", "twin") else rng.standard_normal((PROBE, WIDTH)) * np.arange(1, WIDTH + 1)
        for capture in range(EPOCHS + 1):
            if name == "fresh":
                base = rng.standard_normal((PROBE, WIDTH)) * np.arange(1, WIDTH + 1)
            write_rows(store, "activations", run_id, f"capture={capture:06d}",
                       planted_capture(run_id, capture, base, rng))
            if capture:
                write_epoch(store, run_id, capture, rng)
        write_run_row(store, run_id, seed, "digits", EPOCHS, probe=PROBE)
    analyze(store, out=io.StringIO(), workers=1)
    return store


def rows(store, where=""):
    return duckdb.sql(f"SELECT * FROM read_parquet('{store}/geometry_metrics/**/*.parquet') {where} "
                      f"ORDER BY run_id, capture, stage").df()


def test_one_row_per_capture_and_stage_with_drift_against_planted_structure(geometry_store):
    df = rows(geometry_store)
    assert len(df) == 4 * (EPOCHS + 1) * len(STAGES)
    assert (df["width"] == WIDTH).all() and (df["n_samples"] == PROBE).all()
    assert df[df.capture == 0]["cka_prev"].isna().all()
    still, fresh = df[df.run_id.str.contains("still|twin")], df[df.run_id.str.endswith("fresh")]
    assert (still[still.capture > 0]["cka_prev"] > 0.99).all() and (still["cka_init"] > 0.99).all()
    assert (fresh[fresh.capture > 0]["cka_prev"].abs() < 0.4).all()
    assert np.allclose(df[df.capture == EPOCHS]["cka_final"], 1.0)
    assert (df["noise_cka"].abs() < 0.4).all()  # independent noise: near 0 at n = 48 (debiased)
    assert ((df["effective_rank"] >= 1) & (df["effective_rank"] <= WIDTH)).all()


def test_rows_are_the_kernels_applied_to_the_stored_channels(geometry_store):
    df = rows(geometry_store, "WHERE run_id LIKE '%fresh' AND stage = 'stage2'")
    acts = duckdb.sql(f"SELECT capture, rank, sample, value FROM read_parquet('{geometry_store}/activations/**/*"
                      f".parquet') WHERE run_id LIKE '%fresh' AND stage = 'stage2' ORDER BY capture, rank, sample"
                      ).fetchnumpy()
    X = {c: acts["value"][acts["capture"] == c].reshape(WIDTH, PROBE).T for c in range(EPOCHS + 1)}
    for c in range(1, EPOCHS + 1):
        row = df[df.capture == c].iloc[0]
        own = geometry.stage_geometry(X[c])
        assert row["effective_rank"] == pytest.approx(own["effective_rank"], rel=1e-5)
        assert row["participation_ratio"] == pytest.approx(own["participation_ratio"], rel=1e-5)
        assert row["activation_variance"] == pytest.approx(X[c].var(axis=0).mean(), rel=1e-5)
        assert row["cka_prev"] == pytest.approx(geometry.linear_cka(X[c - 1], X[c]), abs=1e-5)
        assert row["cka_init"] == pytest.approx(geometry.linear_cka(X[0], X[c]), abs=1e-5)
        assert row["cka_final"] == pytest.approx(geometry.linear_cka(X[EPOCHS], X[c]), abs=1e-5)


def test_seed_agreement_is_every_pair_at_every_epoch_with_its_control(geometry_store):
    df = duckdb.sql(f"SELECT * FROM read_parquet('{geometry_store}/seed_agreement/*.parquet')").df()
    assert len(df) == 6 * EPOCHS * len(STAGES)  # 4 seeds: 6 pairs
    assert set(df.epoch) == set(range(1, EPOCHS + 1)) and (df.seed_a < df.seed_b).all()
    fresh = df.run_a.str.endswith("fresh") | df.run_b.str.endswith("fresh")
    assert (df[~fresh].cka > 0.99).all()
    assert (df[fresh].cka.abs() < 0.4).all()
    assert (df.shuffled_cka.abs() < 0.4).all()  # different images: the agreement is gone


def test_seed_agreement_rows_are_the_kernel_on_the_stored_channels(geometry_store):
    row = duckdb.sql(f"SELECT * FROM read_parquet('{geometry_store}/seed_agreement/*.parquet') WHERE epoch = 2 "
                     f"AND stage = 'stage3' AND seed_a = 1 AND seed_b = 2").df().iloc[0]
    acts = duckdb.sql(f"SELECT run_id, rank, sample, value FROM read_parquet('{geometry_store}/activations/**/*"
                      f".parquet') WHERE epoch = 2 AND kind = 'epoch' AND stage = 'stage3' ORDER BY run_id, rank, "
                      f"sample").fetchnumpy()
    X = {r: acts["value"][acts["run_id"] == r].reshape(WIDTH, PROBE).T for r in (row.run_a, row.run_b)}
    assert row.cka == pytest.approx(geometry.linear_cka(X[row.run_a], X[row.run_b]), abs=1e-5)


def test_the_report_draws_each_cells_geometry_and_agreement(geometry_store, tmp_path):
    from dynstudy.analysis.pipeline.report_catalog import report_catalog
    from dynstudy.analysis.report.build import write_report

    out = write_report(report_catalog(geometry_store), tmp_path / "report.html")
    html = out.read_text()
    assert 'id="geometry"' in html and "fig-geometry-0" in html and "fig-agreement-0" in html
    assert "drift settles" in html.lower()
    summary = (tmp_path / "report_tables" / "seed_agreement_by_epoch.csv").read_text().splitlines()
    assert len(summary) == 1 + EPOCHS * len(STAGES)  # one row per (stage, epoch) of the one cell
    tests = list(csv.DictReader((tmp_path / "report_tables" / "seed_agreement_tests.csv").open()))
    assert [t["stage"] for t in tests] == list(STAGES) and {t["epoch"] for t in tests} == {str(EPOCHS)}
    assert all(t["n_seeds"] == "4" and t["verdict"] in ("beyond", "within") for t in tests)
    assert "beyond the shuffled-probe control" in html


def test_settle_lead_counts_only_runs_with_both_epochs():
    from dynstudy.analysis.report.geometry import leads

    runs = [{"run_id": "a", "trigger_epoch": 5, "drift_settle_epoch": 3},
            {"run_id": "b", "trigger_epoch": None, "drift_settle_epoch": 3},
            {"run_id": "c", "trigger_epoch": 2, "drift_settle_epoch": None}]
    got = leads(runs, {"a": 4, "b": 2, "c": 1})
    assert got["settle"]["n"] == 2 and got["settle"]["mean"] == 3
    assert got["trigger"]["n"] == 1 and got["trigger"]["mean"] == -2
    assert got["plateau"]["n"] == 2 and got["plateau"]["mean"] == 0


def test_run_summary_carries_the_geometry(geometry_store):
    got = {r[0].rsplit("-", 1)[1]: r[1:] for r in duckdb.sql(
        f"SELECT run_id, effective_rank_final, cka_init_final, drift_settle_epoch FROM "
        f"read_parquet('{geometry_store}/run_summary/**/*.parquet') ORDER BY run_id").fetchall()}
    for name in ("still", "twin"):
        assert got[name][2] == 1 and got[name][1] > 0.99
    assert got["fresh"][2] is None and abs(got["fresh"][1]) < 0.4
    cv = duckdb.sql(f"SELECT metric, n_seeds FROM read_parquet('{geometry_store}/cell_variability/*.parquet') "
                    f"WHERE metric IN ('effective_rank_final', 'cka_init_final', 'drift_settle_epoch')").fetchall()
    assert dict(cv) == {"effective_rank_final": 4, "cka_init_final": 4, "drift_settle_epoch": 3}


def test_a_cell_compares_its_first_seeds_only(geometry_store, monkeypatch):
    from dynstudy.analysis.pipeline import seed_agreement as sa
    from dynstudy.store_contract.scan import scan_store

    summaries = [{"run_id": r, "seed": s, "model": "tiny_cnn", "dataset": "digits", "optimizer": "sgd"}
                 for r, s in duckdb.sql(f"SELECT run_id, seed FROM read_parquet('{geometry_store}/runs/**/*.parquet')"
                                        ).fetchall()]
    monkeypatch.setattr(sa, "MAX_SEEDS", 3)
    rows = sa.seed_agreement(summaries, scan_store(geometry_store, ("activations",)))
    assert {(r["seed_a"], r["seed_b"]) for r in rows} == {(0, 1), (0, 2), (1, 2)}


def test_a_cell_of_many_runs_is_drawn_as_its_distribution(geometry_store):
    from dynstudy.analysis.report import geometry as report_geometry

    rows = duckdb.sql(f"SELECT * FROM read_parquet('{geometry_store}/geometry_metrics/**/*.parquet')").df()
    geometry = report_geometry.rows_by_run(rows.to_dict("records"))
    runs = [{"run_id": r, "seed": i} for i, r in enumerate(sorted(geometry))]
    fig = report_geometry.band_geometry_figure("cell", runs, geometry)
    medians = [t for t in fig.data if t.name == "median"]
    assert len(medians) == 2 * len(STAGES)  # drift and rank per stage
    still = [g["cka_prev"] for r in runs for g in geometry[r["run_id"]]
             if g["stage"] == "stage1" and g["epoch"] == 2]
    assert medians[0].y[list(medians[0].x).index(2)] == pytest.approx(np.median(still))
