"""The report at scale: bands instead of a line per run, the data the cell pages carry, the bulk read of the
per-run tables, and (slow) a generated store of 1,000 runs whose main page stays small and opens in Chromium."""
from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from dynstudy.analysis.pipeline.analyze import analyze
from dynstudy.analysis.pipeline.catalog import open_catalog
from dynstudy.analysis.pipeline.report_catalog import report_catalog
from dynstudy.analysis.report import build as report
from dynstudy.analysis.report.bands import MAX_TRACED_RUNS, QUANTILES, quantile_bands
from dynstudy.analysis.report.temporal import temporal_section
from tests.store_factory import make_store
from tests.test_report import EPOCHS, cell_pages, make_con, page_data, page_figures, synthetic_tables, values

SEEDS = MAX_TRACED_RUNS + 3


def test_quantile_bands_are_numpys_quantiles_of_the_runs_with_a_value():
    rng = np.random.default_rng(3)
    series = []
    for _ in range(40):
        x = np.sort(rng.choice(12, size=rng.integers(1, 12), replace=False)).astype(float)
        y = rng.standard_normal(len(x))
        y[rng.random(len(x)) < 0.1] = np.nan  # a missing value is not a value
        series.append((x, y))
    xs, q, n = quantile_bands(series)
    assert xs.tolist() == sorted({v for x, y in series for v, w in zip(x, y) if np.isfinite(w)})
    for j, epoch in enumerate(xs):
        at = [w for x, y in series for v, w in zip(x, y) if v == epoch and np.isfinite(w)]
        assert n[j] == len(at)
        assert q[:, j] == pytest.approx(np.quantile(at, QUANTILES))
    empty = quantile_bands([(np.array([1.0]), np.array([np.nan]))])
    assert len(empty[0]) == 0 and empty[1].shape == (len(QUANTILES), 0)


def many_seeds() -> dict:
    """The synthetic tables with :data:`SEEDS` seeds in every cell: more than a cell draws a line for."""
    tables = {k: [] for k in ("runs", "train_metrics", "capture_metrics", "run_summary", "controls")}
    for batch in range(0, SEEDS, 3):
        more = synthetic_tables(seed=batch)
        for name in tables:
            for row in more[name]:
                head, tail = row["run_id"].rsplit("-s", 1)
                row = dict(row, run_id=f"{head}-b{batch}-s{tail}")
                if "seed" in row:
                    row["seed"] += batch
                tables[name].append(row)
    from dynstudy.analysis.stats.variability import cell_variability
    tables["cell_variability"] = cell_variability(tables["run_summary"])
    return tables


@pytest.fixture(scope="module")
def banded(tmp_path_factory):
    tables = many_seeds()
    path = report.write_report(make_con(tables), tmp_path_factory.mktemp("banded") / "r.html")
    return tables, path, path.read_text(encoding="utf-8")


def test_a_cell_of_many_runs_is_drawn_as_bands(banded):
    tables, path, page = banded
    fig = page_figures(page)["fig-trajectory-0"]
    assert not any(t.get("legendgroup", "").startswith("resnet18") for t in fig["data"])  # no line per run
    assert {t["name"] for t in fig["data"] if t.get("showlegend", True) and t.get("name")} >= {
        "median", "50% of runs", "90% of runs"}
    # the H_eff panel's median at each epoch: the median over the cell's runs of their H_eff at it
    median = next(t for t in fig["data"] if t.get("meta", [None])[:2] == ["h_eff", "median"])
    cell = {r["run_id"] for r in tables["runs"] if (r["model"], r["dataset"]) == ("resnet18", "cifar10")}
    assert len(cell) > MAX_TRACED_RUNS
    for epoch, got in zip(values(median["x"]), values(median["y"])):
        at = [c["h_eff"] for c in tables["capture_metrics"] if c["run_id"] in cell and c["epoch"] == epoch]
        assert got == pytest.approx(np.median(at))
    # every annotation says something (one without a text shows plotly.js's placeholder, "new text")
    assert all(a.get("text") for f in page_figures(page).values() for a in f["layout"].get("annotations", []))
    caption = next(c for c in re.findall(r"<figcaption>(.*?)</figcaption>", page) if c.startswith("Trajectories"))
    assert "as their distribution" in caption and "it fired in" in caption
    # the controls chart: no dot per seed for these cells, their median with its 50% and 90% whiskers
    controls = page_figures(page)["fig-controls"]
    assert not any(t["name"].endswith(": seeds") and len(values(t["y"])) for t in controls["data"])
    whiskers = [t for t in controls["data"] if t["name"].endswith("% of seeds")]
    assert len(whiskers) == 2 * 4  # signal, noise, order, init
    # every run still has its section and its data on its cell's page
    pages = cell_pages(path)
    assert sum(len(page_data(p)["runs"]) for p in pages.values()) == len(tables["runs"])


def test_temporal_bands_for_a_cell_of_many_runs():
    runs, metrics, controls = [], [], []
    rng = np.random.default_rng(0)
    for s in range(SEEDS):
        rid = f"r{s}"
        runs.append({"run_id": rid, "seed": s, "temporal_trigger_step": 40 if s % 2 else None})
        for w in range(5):
            metrics.append({"run_id": rid, "window": w, "start_step": 10 * w, "end_step": 10 * w + 20, "end_epoch": 1,
                            "h_eff": rng.random(), "metastability": rng.random(), "psi": rng.standard_normal(),
                            "volatility": rng.random(), "nonstationary": False})
            for name in ("shuffled", "phase_randomised"):
                controls.append({"run_id": rid, "control": name, "window": w, "h_eff": 0.5, "metastability": 0.1,
                                 "h_raw": 0.5})
    section = temporal_section({("m", "d", "o"): runs}, metrics, controls)
    fig = page_figures(section)["fig-temporal-0"]
    median = next(t for t in fig["data"] if t.get("meta", [None])[:2] == ["psi", "median"])
    assert values(median["x"]) == [20, 30, 40, 50, 60]
    want = [np.median([m["psi"] for m in metrics if m["window"] == w]) for w in range(5)]
    assert values(median["y"]) == pytest.approx(want)
    assert any(t.get("name", "").startswith("time-shuffled surrogate") for t in fig["data"])
    assert f"it fired in {SEEDS // 2} of {SEEDS} runs" in section


@pytest.fixture(scope="module")
def analysed_store(tmp_path_factory):
    store = tmp_path_factory.mktemp("bulk") / "store"
    ids = make_store(store, seeds=(0, 1), epochs=EPOCHS, datasets=("digits",))
    analyze(str(store), workers=1, out=open("/dev/null", "w"))
    return store, ids


def test_the_bulk_read_is_the_catalogs_rows_and_keeps_stray_files_out(analysed_store, tmp_path, monkeypatch):
    from dynstudy.analysis.pipeline import table_read as source

    monkeypatch.setattr(source, "FILES_PER_QUERY", 2)  # a table in several queries
    store, _ = analysed_store
    copy = tmp_path / "store"
    shutil.copytree(store, copy)
    (copy / "train_metrics" / "stray.parquet").write_bytes(b"not parquet")
    (copy / "activations" / "stray.parquet").write_bytes(b"not parquet")  # a table the report has no view of
    bulk, views = report_catalog(str(copy)), open_catalog(str(copy))
    for table in ("train_metrics", "capture_metrics", "controls", "window_sensitivity"):
        query = f"SELECT * FROM {table} ORDER BY ALL"
        assert bulk.execute(query).fetchall() == views.execute(query).fetchall(), table
    stray = [r for r in bulk.execute("SELECT path FROM unreadable_files").fetchall() if "stray" in r[0]]
    assert len(stray) == 2


def test_a_runs_series_in_its_cell_page_are_the_stores(analysed_store, tmp_path):
    store, ids = analysed_store
    from dynstudy.study.cli import main

    assert main(["report", "--store", str(store), "--out", str(tmp_path / "r.html")]) == 0
    data = {}
    for p in cell_pages(tmp_path / "r.html").values():
        data.update(page_data(p)["runs"])
    assert set(data) == set(ids)
    con = open_catalog(str(store))
    for rid in ids:
        rows = con.execute("SELECT epoch, val_loss, val_acc FROM train_metrics WHERE run_id = ? ORDER BY epoch",
                           [rid]).fetchall()
        assert data[rid]["train"]["val_loss"] == [[r[0] for r in rows], pytest.approx([r[1] for r in rows], rel=1e-5)]
        assert data[rid]["series"]["trajectory"]["val_acc"][1] == pytest.approx([r[2] * 100 for r in rows], rel=1e-5)
        caps = con.execute("SELECT epoch, h_eff FROM capture_metrics WHERE run_id = ? AND kind != 'step' "
                           "AND h_eff IS NOT NULL ORDER BY epoch", [rid]).fetchall()
        assert data[rid]["series"]["trajectory"]["h_eff"] == [[r[0] for r in caps],
                                                              pytest.approx([r[1] for r in caps], rel=1e-5)]


#: The slow test's store: 1,000 runs of bench/bench_scale.py's generator, fewer and smaller captures.
SLOW_RUNS, SLOW_CAPTURES, SLOW_CHANNELS, SLOW_SAMPLES = 1000, 4, 16, 128
#: Bound of the main page's size (the issue's at 10,000 runs; bench/bench_report.py measures its load time).
MAX_MAIN_MB = 20


@pytest.mark.slow
def test_a_thousand_runs(tmp_path):
    from dynstudy.study.cli import main
    from tests.test_report_browser import BROWSERS, check_folder_links, console_errors, open_in_browser

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
    import bench_scale

    store = tmp_path / "store"
    bench_scale.generate(store, SLOW_RUNS, SLOW_CAPTURES, SLOW_CHANNELS, SLOW_SAMPLES)
    assert main(["analyze", "--store", str(store)]) == 0
    out = tmp_path / "report" / "study.html"
    assert main(["report", "--store", str(store), "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert out.stat().st_size < MAX_MAIN_MB * 1e6
    # cells and the cross-run sections first, the runs by link: no run section on the main page
    heads = [page.index(f'id="{a}"') for a in ("glance", "claims", "cells", "trajectories", "hm", "controls", "runs")]
    assert heads == sorted(heads) and 'class="run"' not in page
    pages = cell_pages(out)
    assert len(pages) == 10 and all(f'href="study_runs/{name}"' in page for name in pages)
    assert sum(len(page_data(p)["runs"]) for p in pages.values()) == SLOW_RUNS
    check_folder_links(out)
    moved = tmp_path / "elsewhere"
    shutil.copytree(out.parent, moved)  # relative links: the copy works as well
    check_folder_links(moved / "study.html")
    browser = next((p for p in map(shutil.which, BROWSERS) if p), None)
    if browser is None:
        pytest.skip("Chromium not found: install it (Debian: apt-get install chromium) to open the report")
    probe, stderr = open_in_browser(browser, moved / "study.html", tmp_path)
    assert probe["errors"] == [] and console_errors(stderr) == []
    assert probe["plots"] == probe["drawn"] and probe["links"] == 0
    first = sorted((moved / "study_runs").glob("cell-*.html"))[0]
    run = re.findall(r'<section class="run" id="([^"]+)"', first.read_text(encoding="utf-8"))[-1]
    probe, stderr = open_in_browser(browser, first, tmp_path, run)
    # its training curves, its metrics over its cell's bands and its fluctuation functions
    assert probe["errors"] == [] and console_errors(stderr) == [] and probe["target"] == 3
