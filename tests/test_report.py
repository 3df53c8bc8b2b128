"""The HTML study report over a synthetic in-memory store, and over a generated store analysed with its own
settings (the threshold lines, captions and plateau markers follow them)."""
from __future__ import annotations

import base64
import csv
import json
import re
import shutil
import subprocess
import sys

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from dynstudy.analysis.kernels.params import PLATEAU_POINTS
from dynstudy.analysis.pipeline.analyze import analyze
from dynstudy.analysis.pipeline.catalog import open_catalog
from dynstudy.analysis.pipeline.table_read import split_by_run
from dynstudy.analysis.report import build as report
from dynstudy.analysis.report import data as rd
from dynstudy.analysis.report import html
from dynstudy.analysis.report.conclusions import claims_section
from dynstudy.store_contract.schemas import TABLES
from tests.store_factory import make_store

MODELS = ("resnet18", "vgg16_bn")
DATASETS = ("cifar10", "cifar100")
SEEDS = (0, 1, 2)
EPOCHS = 6
EVIL = "<script>alert(1)</script>"
STATES = ("Partial Integration", "Transitional", "Metastable High-Integration")


def _table(name: str, rows: list[dict]) -> pa.Table:
    schema = TABLES[name]
    return pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows], schema=schema)


def synthetic_tables(seed: int = 0) -> dict:
    """Plausible rows for every table but activations: 2 models x 2 datasets x 3 seeds x 6 epochs."""
    rng = np.random.default_rng(seed)
    runs, train, caps, summary, controls = [], [], [], [], []
    for mi, model in enumerate(MODELS):
        for di, dataset in enumerate(DATASETS):
            for s in SEEDS:
                rid = f"{model}-{dataset}-sgd-s{s}"
                status = "diverged" if (mi, di, s) == (1, 1, 2) else "finished"
                runs.append({"run_id": rid, "study": f"demo {EVIL}", "model": model, "dataset": dataset,
                             "optimizer": "sgd", "seed": s, "status": status, "stop_reason": "max_epochs",
                             "epochs_completed": EPOCHS, "config": "{}", "versions": "{}", "device": "cpu"})
                top = 0.9 - 0.3 * di + 0.02 * rng.standard_normal()
                acc = top * (1 - np.exp(-np.arange(1, EPOCHS + 1) / 1.5))
                for e in range(1, EPOCHS + 1):
                    train.append({"run_id": rid, "epoch": e, "step": e * 100, "train_loss": 2.0 / e,
                                  "train_acc": acc[e - 1] + 0.02, "val_loss": 2.2 / e, "val_acc": acc[e - 1],
                                  "lr": 0.1, "epoch_time_s": 10.0, "capture_time_s": 1.0})
                h_raw = 0.55 + 0.1 * di + 0.04 * rng.standard_normal(EPOCHS + 1)
                h_eff = np.exp(-(h_raw - 0.7) ** 2 / (2 * 0.15 ** 2))
                meta = 0.05 + 0.01 * rng.standard_normal(EPOCHS + 1)
                z = lambda x: (x - x.mean()) / x.std(ddof=1)  # noqa: E731
                psi = 0.5 * z(h_eff[1:]) + 0.5 * z(meta[1:])
                vol = [np.nan, np.nan] + [float(np.std(psi[i - 2:i + 1], ddof=1)) for i in range(2, EPOCHS)]
                for e in range(EPOCHS + 1):
                    later = e >= 1
                    caps.append({"run_id": rid, "capture": e, "epoch": e, "step": e * 100, "h_raw": h_raw[e],
                                 "h_eff": h_eff[e], "metastability": meta[e], "synchrony": 0.3, "n_channels": 128,
                                 "n_valid": 128, "hz": z(h_eff[1:])[e - 1] if later else None,
                                 "mz": z(meta[1:])[e - 1] if later else None, "psi": psi[e - 1] if later else None,
                                 "volatility": vol[e - 1] if later and np.isfinite(vol[e - 1]) else None})
                    for control, shift in (("noise", -0.05), ("order", 0.1)):
                        ch = h_raw[e] + shift + 0.02 * rng.standard_normal()
                        controls.append({"run_id": rid, "capture": e, "epoch": e, "control": control, "h_raw": ch,
                                         "h_eff": float(np.exp(-(ch - 0.7) ** 2 / 0.045)), "metastability": 0.04,
                                         "synchrony": 0.3})
                noise = [c["h_raw"] for c in controls if c["run_id"] == rid and c["control"] == "noise"]
                order = [c["h_raw"] for c in controls if c["run_id"] == rid and c["control"] == "order"]
                summary.append({"run_id": rid, "study": f"demo {EVIL}", "model": model, "dataset": dataset,
                                "optimizer": "sgd", "seed": s, "status": status, "n_epochs": EPOCHS,
                                "h_raw_mean": float(h_raw[1:].mean()), "h_eff_mean": float(h_eff[1:].mean()),
                                "metastability_mean": float(meta[1:].mean()), "synchrony_mean": 0.3,
                                "psi_mean": 0.0, "psi_std": float(psi.std(ddof=1)),
                                "r_hz_mz": float(np.corrcoef(h_eff[1:], meta[1:])[0, 1]), "r_psi_acc": 0.1,
                                "state": STATES[(mi + di + s) % 3] if s < 2 else EVIL,
                                "trigger_epoch": 4 if s != 1 else None, "best_val_acc": float(acc.max()),
                                "best_epoch": EPOCHS, "final_val_acc": float(acc[-1]),
                                "noise_h_raw_mean": float(np.mean(noise)), "order_h_raw_mean": float(np.mean(order)),
                                "init_h_raw": float(h_raw[0])})
    from dynstudy.analysis.stats import stopping
    from dynstudy.analysis.stats.variability import cell_variability
    curves = stopping.run_curves(split_by_run(pa.Table.from_pylist(train), ("epoch",)),
                                 split_by_run(pa.Table.from_pylist([c for c in caps if c["epoch"] >= 1]), ("epoch",)),
                                 {})
    stops = stopping.replay(summary, curves)
    return {"runs": runs, "train_metrics": train, "capture_metrics": caps, "run_summary": summary,
            "cell_variability": cell_variability(summary), "controls": controls, "stopping": stops,
            "stopping_summary": stopping.summary(stops)}


def make_con(tables: dict) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with one table per entry of ``tables``."""
    con = duckdb.connect()
    for name, rows in tables.items():
        arrow = _table(name, rows)
        con.register("_tmp", arrow)
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM _tmp")
        con.unregister("_tmp")
    return con


def figures(page: str) -> list[dict]:
    """The plotly figure of every <div class="plot">, parsed from the script that draws it."""
    ids = re.findall(r'<div class="plot" id="([^"]+)"', page)
    specs = re.findall(r"<script>\(function\(\)\{var f=(.*?);Plotly\.newPlot\(\"([^\"]+)\"", page)
    assert [i for _, i in specs] == ids and len(set(ids)) == len(ids)
    return [json.loads(spec) for spec, _ in specs]


def values(array) -> list:
    """A trace's array as a list: plotly writes numpy arrays as {"dtype", "bdata" (base64)}."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def cell_pages(path) -> dict:
    """File name -> text of every cell page in the report's folder (``<stem>_runs/`` beside ``path``)."""
    folder = path.parent / f"{path.stem}_runs"
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(folder.glob("cell-*.html"))}


def page_data(page: str) -> dict:
    """The JSON block a cell page draws its runs' figures from."""
    found = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    return json.loads(found.group(1))


def result_figures(page: str) -> list[dict]:
    """The figures of sections 2-4 (not the per-run training curves of section 6)."""
    return [f for f, i in zip(figures(page), re.findall(r'<div class="plot" id="([^"]+)"', page))
            if not i.startswith("fig-run-") and i != "stopping-pareto"]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    tables = synthetic_tables()
    out = tmp_path_factory.mktemp("rep") / "study.html"
    path = report.write_report(make_con(tables), out, title="Demo <b>study</b>")
    return tables, path, path.read_text(encoding="utf-8")


def test_full_report_figures(full):
    tables, path, page = full
    assert path.exists() and path.suffix == ".html"
    assert page.count("<script>") == page.count("</script>") and "Plotly.newPlot" in page
    assert page.index("plotly.js v") < page.index("Plotly.newPlot")  # the library is inlined before its first use
    assert "https://cdn" not in page.split("Plotly.newPlot", 1)[1]  # nothing fetched at view time
    figs = result_figures(page)
    # 4 cells -> 4 trajectory figures, plus the H-M plane and the controls chart; the runs' figures are on the
    # cells' pages, a training figure and a trajectory figure per run, drawn from the data each page carries
    assert len(figs) == len(MODELS) * len(DATASETS) + 2 and len(figures(page)) == len(figs) + 1  # + the Pareto
    pages = cell_pages(path)
    assert len(pages) == len(MODELS) * len(DATASETS)
    for kind in ("training", "trajectory"):
        assert sum(p.count(f'data-figure="{kind}"') for p in pages.values()) == len(tables["runs"])
    assert set().union(*(page_data(p)["runs"] for p in pages.values())) == {r["run_id"] for r in tables["runs"]}
    for fig in figs:
        assert any(len(values(t.get("y", []))) and "run " in t.get("hovertemplate", "") for t in fig["data"])
        assert fig["layout"]["height"] >= 250
    pareto = figures(page)[-1]  # every rule and setting the stopping table holds, one marker each
    n_settings = len({(r["rule"], r["setting"]) for r in tables["stopping"]})
    assert sum(len(values(t["y"])) for t in pareto["data"]) == n_settings
    traj = figs[0]
    # one legend entry per seed; every trace of a run (every panel, trigger lines) in that run's group
    legend = [t for t in traj["data"] if t.get("showlegend", True) and t.get("name")]
    assert len(legend) == len(SEEDS)
    assert {t["legendgroup"] for t in traj["data"] if "legendgroup" in t} == {t["legendgroup"] for t in legend}
    hover = next(t for t in traj["data"] if "customdata" in t)
    assert "seed %{customdata[1]}" in hover["hovertemplate"] and "epoch %{x}" in hover["hovertemplate"]
    rid, seed = hover["customdata"][0]
    assert any(r["run_id"] == rid and str(r["seed"]) == seed for r in tables["runs"])
    assert hover["meta"] == "Integration H_eff"  # the first panel: its points are the run's H_eff per epoch
    want = [(c["epoch"], c["h_eff"]) for c in tables["capture_metrics"] if c["run_id"] == rid]
    assert values(hover["x"]) == [e for e, _ in want] and values(hover["y"]) == pytest.approx([v for _, v in want])
    # the controls chart: a seed dot per run and control, each hovering its run id
    controls = figs[-1]
    dots = [t for t in controls["data"] if t["name"].endswith(": seeds")]
    assert sum(len(values(t["y"])) for t in dots if t["legendgroup"] == "signal") == len(tables["runs"])


def test_full_report_content(full):
    tables, _, page = full
    for row in tables["runs"]:
        assert row["run_id"] in page
    assert EVIL not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "Demo &lt;b&gt;study&lt;/b&gt;" in page
    assert "Not analysed yet" not in page
    assert 'id="stopping-pareto"' in page and page.index('id="sensitivity"') < page.index('id="stopping"')
    assert "finished: 11" in page and "diverged: 1" in page
    assert "i.i.d. Gaussian features" in page
    heads = [page.index(h) for h in ("1. Cell metrics", "2. Trajectories", "3. The H-M plane", "4. Metrics beside",
                                     "5. Runs")]
    assert heads == sorted(heads)
    # one cell's H_eff line: mean ± std [t-interval] with the values of cell_variability
    row = next(r for r in tables["cell_variability"] if r["metric"] == "h_eff_mean")
    assert f"{row['mean']:.3g} ± {row['std']:.3g}" in page
    assert row["n_seeds"] >= 2 and f"[{row['ci_low']:.3g}, {row['ci_high']:.3g}]" in page
    prose = re.sub(r"<script>.*?</script>", "", page, flags=re.S)
    assert "bootstrap" not in prose and "t-interval" in prose


def test_full_report_csv_tables(full):
    tables, path, _ = full
    folder = path.parent / "study_tables"
    expected = {"cell_variability.csv": len(tables["cell_variability"]), "runs.csv": len(tables["runs"]),
                "controls_by_run.csv": len(tables["runs"]),
                "controls_by_cell.csv": len(MODELS) * len(DATASETS) * 4,
                "stopping_summary.csv": len(tables["stopping_summary"])}
    assert sorted(p.name for p in folder.iterdir()) == sorted(expected)
    for name, n in expected.items():
        with open(folder / name, newline="") as f:
            rows = list(csv.DictReader(f))
        assert len(rows) == n, name
    with open(folder / "runs.csv", newline="") as f:
        runs = {r["run_id"]: r for r in csv.DictReader(f)}
    # plateau: first epoch within 0.5 points of the best (accuracy rises to epoch 6)
    for row in tables["runs"]:
        acc = [t["val_acc"] * 100 for t in tables["train_metrics"] if t["run_id"] == row["run_id"]]
        want = 1 + next(i for i, a in enumerate(acc) if a >= max(acc) - 0.5)
        assert int(runs[row["run_id"]]["plateau_epoch"]) == want


def test_unanalysed_store_renders(tmp_path):
    tables = synthetic_tables()
    con = make_con({k: tables[k] for k in ("runs", "train_metrics")})
    csv_dir = tmp_path / "csv"
    path = report.write_report(con, tmp_path / "r.html", csv_dir=csv_dir)
    page = path.read_text(encoding="utf-8")
    assert page.count("Not analysed yet") >= 4
    assert "cell_variability" in page and "dynstudy analyze" in page
    assert len(result_figures(page)) == 1  # accuracy-only trajectories: all 4 cells in one grid figure
    for row in tables["runs"]:
        assert row["run_id"] in page
    assert sorted(p.name for p in csv_dir.iterdir()) == ["runs.csv"]


def test_empty_and_missing_control_tables(tmp_path):
    tables = synthetic_tables()
    tables["controls"] = []
    for row in tables["run_summary"]:
        row["noise_h_raw_mean"] = row["order_h_raw_mean"] = None
    page = report.write_report(make_con(tables), tmp_path / "r.html").read_text(encoding="utf-8")
    assert "no noise and order controls here" in page and "Not analysed yet" in page
    assert "controls (0 rows)" not in page and "missing or empty: controls" in page
    assert len(result_figures(page)) == len(MODELS) * len(DATASETS) + 2


def test_empty_store(tmp_path):
    page = report.write_report(duckdb.connect(), tmp_path / "r.html").read_text(encoding="utf-8")
    assert not figures(page) and page.count("Not analysed yet") == 6  # the stopping section among them


def test_control_fallback_from_tables():
    tables = synthetic_tables()
    index = rd.run_index(tables["runs"], [])
    per_run = rd.control_values(index, tables["capture_metrics"], tables["controls"])
    rid = tables["runs"][0]["run_id"]
    summary = next(r for r in tables["run_summary"] if r["run_id"] == rid)
    for key, col in (("signal", "h_raw_mean"), ("noise", "noise_h_raw_mean"), ("order", "order_h_raw_mean"),
                     ("init", "init_h_raw")):
        assert per_run[rid][key] == pytest.approx(summary[col])


def test_helpers():
    stored = {"a": (np.array([1, 2, 3, 4]), np.array([0.5, 0.796, 0.8, 0.79])), "b": (np.array([]), np.array([]))}
    assert rd.plateau_epochs(stored, 100.0, 0.5) == {"a": 2, "b": None}
    assert rd.plateau_epochs({"a": (stored["a"][0], stored["a"][1] * 100)}, 1.0, 0.5) == {"a": 2}  # stored in %
    assert rd.plateau_epochs(stored, 100.0, 1.0)["a"] == 2 and rd.plateau_epochs(stored, 100.0, 0.3)["a"] == 3
    assert rd.plateau_points([]) == (0.5, False) and rd.plateau_points([{"plateau_points": 2.0}]) == (2.0, True)
    assert rd.accuracy_scale([{"val_acc": 0.9}]) == 100.0
    assert rd.accuracy_scale([{"val_acc": 91.0}]) == 1.0
    cells = {(f"m{i}", "d", "o"): [] for i in range(23)}
    groups = report.trajectory_groups(cells)
    assert len(groups) <= report.MAX_TRAJECTORY_FIGURES and sum(map(len, groups)) == 23
    assert len(report.trajectory_groups({k: [] for k in list(cells)[:4]})) == 4
    assert [len(g) for g in report.trajectory_groups(cells, 12)] == [12, 11]


def test_analysis_report_imports_neither_torch_nor_ray():
    code = ("import sys, dynstudy.analysis.report.build; bad = [m for m in ('torch', 'ray', 'matplotlib.pyplot') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_contents_link_every_section(full):
    from dynstudy.analysis.report.build import CONTENTS

    _, _, page = full
    for anchor, _ in CONTENTS:
        assert f'href="#{anchor}"' in page and f'id="{anchor}"' in page, anchor
    positions = [page.index(f'id="{a}"') for a, _ in CONTENTS]
    assert positions == sorted(positions)  # the contents list follows the page's order


def test_a_section_per_run(tmp_path):
    tables = synthetic_tables()
    first = tables["runs"][0]
    first.update({"config": '{"lr": 0.05, "model": "resnet18", "note": "<b>x</b>"}', "attempts": 2,
                  "versions": '{"torch": "2.13.0", "ray": "2.60.0"}', "hostname": "node-7",
                  "stop_reason": "early_stopping", "error": None})
    path = report.write_report(make_con(tables), tmp_path / "r.html")
    main = path.read_text(encoding="utf-8")
    pages = cell_pages(path)
    from dynstudy.analysis.report.runs import run_anchor

    for row in tables["runs"]:
        anchor = run_anchor(row["run_id"])
        holding = [name for name, p in pages.items() if f'id="{anchor}"' in p]
        assert len(holding) == 1 and pages[holding[0]].count(f'id="{anchor}"') == 1
        assert f'href="#{anchor}"' in pages[holding[0]]  # its cell page's run table links to it
        assert f'href="r_runs/{holding[0]}"' in main  # and the main page links to that cell page
    page = next(p for p in pages.values() if f'id="{run_anchor(first["run_id"])}"' in p)
    assert 'src="plotly.min.js"' in page and "plotly.js v" not in page  # the folder's one copy, not inlined
    assert (path.parent / "r_runs" / "plotly.min.js").read_text(encoding="utf-8").count("plotly.js v") >= 1
    section = page[page.index(f'id="{run_anchor(first["run_id"])}"'):]
    section = section[:section.index("</section>")]
    assert "torch 2.13.0" in section and "ray 2.60.0" in section and "node-7" in section
    assert "early_stopping" in section and "<th>attempts</th><td>2</td>" in section
    assert '&quot;lr&quot;: 0.05' in section and "&lt;b&gt;x&lt;/b&gt;" in section  # pretty-printed, escaped
    assert "epoch time 10 s mean per epoch, 60 s in all" in section
    # its training figure: the page's template filled with the run's loss, accuracy (in %), lr and times
    data = page_data(page)
    assert {t["name"] for t in data["training"]["data"]} == {"train loss", "val loss", "train acc", "val acc", "lr",
                                                             "epoch time", "capture time"}
    run = data["runs"][first["run_id"]]
    acc = [t["val_acc"] * 100 for t in tables["train_metrics"] if t["run_id"] == first["run_id"]]
    assert run["train"]["val_acc"] == [list(range(1, EPOCHS + 1)), pytest.approx(acc, rel=1e-5)]
    assert run["train"]["lr"][1] == pytest.approx([0.1] * EPOCHS)
    # the run table's Psi column is its spread, not its mean (Psi is z-scored: its mean is 0 by construction)
    assert "<th>Psi std</th>" in page and "Psi mean" not in page


STUDY_EPOCHS = 12
#: A study's analysis section: a threshold and patience other than the defaults (0.35, 3), a temporal protocol.
ANALYSIS = {"vol_threshold": 0.2, "vol_patience": 2, "temporal_window": 40, "temporal_stride": 20}


def page_figures(page: str) -> dict:
    """div id -> plotly figure of every plot of the page."""
    return dict(zip(re.findall(r'<div class="plot" id="([^"]+)"', page), figures(page)))


def captions(page: str) -> list[str]:
    return re.findall(r"<figcaption>(.*?)</figcaption>", page)


def hlines(fig: dict) -> list[float]:
    """The y of every horizontal reference line (a shape spanning its panel's width)."""
    return [s["y0"] for s in fig["layout"].get("shapes", [])
            if s.get("type") == "line" and s["y0"] == s["y1"] and str(s.get("xref", "")).endswith("domain")]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """One cell, three seeds, every-step captures; analysed at the default plateau points and reported."""
    root = tmp_path_factory.mktemp("settings")
    store = root / "store"
    make_store(store, seeds=(0, 1, 2), epochs=STUDY_EPOCHS, datasets=("digits",), every=1, analysis=ANALYSIS)
    analyze(str(store), workers=1, out=open("/dev/null", "w"))
    page = report.write_report(open_catalog(str(store)), root / "r.html").read_text(encoding="utf-8")
    return store, page


def test_threshold_lines_and_captions_follow_the_runs_settings(study):
    _, page = study
    figs = page_figures(page)
    drawn = {i: hlines(f) for i, f in figs.items() if i.startswith(("fig-trajectory-", "fig-temporal-"))}
    assert set(drawn) == {"fig-trajectory-0", "fig-temporal-0"}
    assert all(ys == [0.2] for ys in drawn.values()), drawn  # the volatility panel's threshold, nothing at 0.35
    assert not any(0.35 in hlines(f) for f in figs.values())
    trajectory = next(c for c in captions(page) if c.startswith("Trajectories:"))
    assert "below 0.2 for 2 consecutive epochs" in trajectory
    temporal = next(c for c in captions(page) if c.startswith("Temporal metrics:"))
    assert "below 0.2 for 2 consecutive windows" in temporal
    assert "below 0.35" not in page and "3 consecutive" not in page
    # the volatility panel's axis reaches the threshold
    vol = figs["fig-trajectory-0"]["layout"]["yaxis4"]
    assert vol["range"][1] >= 0.2


def star_epochs(fig: dict) -> set[tuple[str, float]]:
    """(legend group, epoch) of every plateau star of a trajectory figure."""
    return {(t["legendgroup"], x) for t in fig["data"] if t.get("marker", {}).get("symbol") == "star"
            for x in values(t["x"])}


def report_plateaus(store, out) -> tuple[dict, str]:
    page = report.write_report(open_catalog(str(store)), out).read_text(encoding="utf-8")
    with open(out.parent / f"{out.stem}_tables" / "runs.csv", newline="") as f:
        table = {r["run_id"]: int(r["plateau_epoch"]) for r in csv.DictReader(f)}
    stars = star_epochs(page_figures(page)["fig-trajectory-0"])
    assert stars == {(rid, float(e)) for rid, e in table.items()}  # the figure's stars are the table's epochs
    return table, page


def expected_plateaus(store, points: float) -> dict:
    """First epoch within ``points`` percentage points of the best val_acc, from train_metrics read directly."""
    con = open_catalog(str(store))
    rows = con.execute("SELECT run_id, epoch, val_acc FROM train_metrics ORDER BY run_id, epoch").fetchall()
    out = {}
    for rid in sorted({r[0] for r in rows}):
        acc = np.array([r[2] for r in rows if r[0] == rid])
        epochs = [r[1] for r in rows if r[0] == rid]
        out[rid] = epochs[int(np.flatnonzero(acc >= acc.max() - points / 100)[0])]
    return out


def test_plateau_points_of_analyze_move_the_report_markers(study, tmp_path):
    store, _ = study
    table, page = report_plateaus(store, tmp_path / "default.html")
    assert table == expected_plateaus(store, PLATEAU_POINTS)
    assert f"within {PLATEAU_POINTS:g} percentage points" in page and "as its claims table records them" in page
    moved = tmp_path / "store"
    shutil.copytree(store, moved)
    analyze(str(moved), workers=1, plateau_points=15.0, out=open("/dev/null", "w"))
    points = {r[0] for r in open_catalog(str(moved)).execute("SELECT plateau_points FROM claims").fetchall()}
    assert points == {15.0}
    wide, page = report_plateaus(moved, tmp_path / "wide.html")
    assert wide == expected_plateaus(moved, 15.0)
    assert all(wide[rid] < table[rid] for rid in table)  # 15 points reach the plateau earlier than 0.5
    assert "within 15 percentage points" in page and f"within {PLATEAU_POINTS:g} percentage" not in page


def test_a_store_without_recorded_plateau_points_says_it_draws_the_default(tmp_path):
    tables = synthetic_tables()
    tables["claims"] = [{"claim": "state stable across seeds", "model": "resnet18", "optimizer": "sgd",
                         "dataset": "cifar10", "n": 3, "verdict": "untested", "plateau_points": 2.0}]
    con = make_con(tables)
    con.execute("ALTER TABLE claims DROP COLUMN plateau_points")  # a claims table written before the column
    page = report.write_report(con, tmp_path / "r.html").read_text(encoding="utf-8")
    assert f"within {PLATEAU_POINTS:g} percentage points" in page
    assert "the default points: this store's claims table does not record" in page


def test_runs_with_different_settings_in_one_figure(tmp_path):
    """A cell whose seeds ran with different thresholds: a line per threshold, named, and the caption says so."""
    tables = synthetic_tables()
    for row in tables["runs"]:
        if row["seed"] == 2:
            row["config"] = json.dumps({"analysis": {"vol_threshold": 0.4, "h_opt": 0.6}})
    tables["runs"][1]["config"] = "not json"  # unreadable: the defaults, said to be so
    page = report.write_report(make_con(tables), tmp_path / "r.html").read_text(encoding="utf-8")
    figs = page_figures(page)
    first = figs["fig-trajectory-0"]
    assert sorted(hlines(first)) == [0.35, 0.4]
    notes = [a["text"] for a in first["layout"]["annotations"] if a.get("text", "").startswith("threshold =")]
    assert sorted(notes) == ["threshold = 0.35: seed 0, seed 1", "threshold = 0.4: seed 2"]
    caption = next(c for c in captions(page) if c.startswith("Trajectories: resnet18 · cifar10"))
    assert "the runs&#x27; settings differ" in caption and "below 0.4 for 3 consecutive epochs" in caption
    assert "defaults: the run&#x27;s config does not say" in caption and tables["runs"][1]["run_id"] in caption
    assert sorted(hlines(figs["fig-controls"])) == [0.6, 0.7]
    control_caption = next(c for c in captions(page) if c.startswith("H_raw per cell"))
    assert "H_opt = 0.6" in control_caption and "H_opt = 0.7" in control_caption


def test_a_missing_value_renders_the_same_everywhere():
    for missing in (None, float("nan"), float("inf"), "x"):
        assert html.num(missing) == html.MISSING
        assert html.num_cell(missing) == f"<td class=num>{html.MISSING}</td>"
        assert html.mean_std([missing]) == html.MISSING
    assert html.num_cell(0.25) == '<td class=num data-v="0.25">0.25</td>' and html.num(1234.0) == "1234"
    assert html.text_cell(None) == html.text_cell("") == f"<td>{html.MISSING}</td>"
    assert html.text("<b>") == "&lt;b&gt;" and html.mean_std([1.0, 3.0]) == "2 ± 1.4"
    row = {"claim": "c", "model": "m", "optimizer": "o", "dataset": "d", "n": 0, "effect_size": None,
           "effect_name": "hedges_g", "p_value": float("nan"), "verdict": "untested", "detail": None}
    tds = re.findall(r"<td>(.*?)</td>", claims_section([row], "rule"))
    # claim, model, optimizer, dataset, n, effect, difference, p, p adj, verdict, dropped runs, detail
    assert tds == ["c", "m", "o", "d", "0", html.MISSING, html.MISSING, html.MISSING, html.MISSING,
                   '<span class="muted">untested</span>', html.MISSING, html.MISSING]
