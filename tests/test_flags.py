"""Non-stationarity and H_eff saturation flags: the kernels' rule, the tables' columns, the report's display.

A DFA exponent above ``dynamics.NONSTATIONARY_ALPHA`` (1) flags a drift; an H_raw beyond H_opt +/-
``dynamics.SATURATION_SIGMAS`` sigma_H flags a saturated H_eff. A flag whose H_raw is missing, or that a store
does not hold (an older analysis), is unknown: never False.
"""
from __future__ import annotations

import math
import re

import duckdb
import numpy as np
import pyarrow as pa
import pytest

from dynstudy.analysis.kernels import dynamics
from dynstudy.analysis.kernels import temporal as tp
from dynstudy.analysis.kernels.params import DEFAULTS
from dynstudy.analysis.report import build as report
from dynstudy.analysis.report.flags import NONSTATIONARY_TEXT, SATURATED_TEXT, flag_cell
from dynstudy.analysis.report.html import MISSING
from dynstudy.analysis.report.runs import run_anchor
from dynstudy.analysis.run.run_analysis import summarise_run
from dynstudy.store_contract.schemas import TABLES
from tests.test_report import EPOCHS, cell_pages, figures, make_con, synthetic_tables

PARAMS = DEFAULTS.as_dict()


# ---------------------------------------------------------------------- the rule

def test_the_threshold_is_one_and_nan_is_unknown():
    assert dynamics.NONSTATIONARY_ALPHA == 1.0 and dynamics.SATURATION_SIGMAS == 3.0
    assert dynamics.nonstationary([0.5, 1.0, np.nextafter(1.0, 2.0), 1.5, np.nan]).tolist() == [
        False, False, True, True, False]
    assert dynamics.known_flags([0.5, 1.5, np.nan, None], dynamics.nonstationary) == [False, True, None, None]
    # H_opt 0.7, sigma_H 0.15: the band is 0.25 .. 1.15; a wider sigma_H widens it
    assert dynamics.h_eff_saturated([0.2, 0.3, 1.1, 1.2]).tolist() == [True, False, False, True]
    assert dynamics.h_eff_saturated(1.2, 0.7, 0.3).tolist() is False
    assert dynamics.h_raw_flags(1.2) == (True, True) and dynamics.h_raw_flags(0.7) == (False, False)
    assert dynamics.h_raw_flags(float("nan")) == (None, None) and dynamics.h_raw_flags(None) == (None, None)
    # saturated means H_eff in the Gaussian's tail: below exp(-SATURATION_SIGMAS^2 / 2) at the band's edge
    edge = 0.7 + dynamics.SATURATION_SIGMAS * 0.15
    assert float(dynamics.integration(edge)) == pytest.approx(math.exp(-4.5))


def test_temporal_windows_of_a_drift_are_flagged():
    rng = np.random.default_rng(3)
    params = {**PARAMS, "temporal_window": 64, "temporal_stride": 32}
    n = 256
    steps = np.arange(n)
    for X, drift in ((np.cumsum(rng.standard_normal((8, n)), axis=1), True), (rng.standard_normal((8, n)), False)):
        rows, _, summary = tp.temporal_tables(tp.temporal_series(steps, steps // 32, steps, X), params, seed=1)
        assert all(r["nonstationary"] == (r["h_raw"] > 1) for r in rows)
        assert all(r["nonstationary"] is drift for r in rows), [r["h_raw"] for r in rows]
        assert summary["temporal_nonstationary"] is drift and summary["temporal_h_eff_saturated"] is drift
        assert summary["temporal_n_nonstationary"] == (len(rows) - 1 if drift else 0)


def test_run_summary_flags_use_the_runs_mean_and_settings():
    run = {"run_id": "r", "study": "s", "model": "m", "dataset": "d", "optimizer": "o", "seed": 0,
           "status": "finished"}
    h = [0.9, 1.2, 1.3, float("nan"), 1.1]
    caps = [{"kind": "epoch", "epoch": e + 1, "h_raw": v, "h_eff": float(dynamics.integration(v)),
             "metastability": 0.05 + 0.01 * e, "synchrony": 0.3} for e, v in enumerate(h)]
    s = summarise_run(run, caps, [], {}, PARAMS, None)
    assert s["h_raw_mean"] == pytest.approx(1.125) and s["n_nonstationary"] == 3
    assert s["nonstationary"] is True and s["h_eff_saturated"] is False  # 1.125 < 0.7 + 3 * 0.15
    wide = summarise_run(run, caps, [], {}, {**PARAMS, "h_opt": 0.5, "sigma_h": 0.2}, None)
    assert wide["h_eff_saturated"] is True  # 1.125 > 0.5 + 0.6
    gap = summarise_run(run, caps, [], {}, PARAMS, "capture 3 missing")
    assert gap["n_nonstationary"] == 3 and "nonstationary" not in gap and "h_eff_saturated" not in gap


# ---------------------------------------------------------------------- the report

def _flagged_tables() -> dict:
    """The report tests' synthetic store with flags: run 0 drifts, run 1 is saturated, run 2's flags unknown."""
    tables = synthetic_tables()
    ids = [r["run_id"] for r in tables["run_summary"]]
    for s in tables["run_summary"]:
        s.update(nonstationary=False, n_nonstationary=0, h_eff_saturated=False)
    tables["run_summary"][0].update(h_raw_mean=1.31, nonstationary=True, n_nonstationary=4, h_eff_saturated=True)
    tables["run_summary"][1].update(h_eff_saturated=True)
    tables["run_summary"][2].update(nonstationary=None, n_nonstationary=None, h_eff_saturated=None)
    for c in tables["capture_metrics"]:
        c["kind"] = "init" if c["epoch"] == 0 else "epoch"
        c["nonstationary"] = c["run_id"] == ids[0] and c["epoch"] in (2, 3, 5, 6)
    tables["temporal_metrics"] = [
        {"run_id": rid, "window": w, "start_step": 10 * w, "end_step": 10 * w + 9, "start_epoch": 1, "end_epoch": 2,
         "n_points": 10, "h_raw": 1.4 if (rid == ids[0] and w >= 1) else 0.6, "h_eff": 0.5, "metastability": 0.1,
         "synchrony": 0.3, "nonstationary": None if rid == ids[2] else (rid == ids[0] and w >= 1)}
        for rid in ids[:3] for w in (-1, 0, 1, 2)]
    for s in tables["run_summary"][:3]:
        s.update(temporal_h_raw=0.6, temporal_h_eff=0.5, temporal_metastability=0.1, temporal_n_points=40,
                 temporal_nonstationary=False, temporal_n_nonstationary=0, temporal_h_eff_saturated=False)
    tables["run_summary"][0].update(temporal_h_raw=1.4, temporal_nonstationary=True, temporal_n_nonstationary=2)
    tables["run_summary"][2].update(temporal_nonstationary=None, temporal_h_eff_saturated=None)
    tables["temporal_controls"] = []
    return tables


def _run_rows(page: str) -> dict:
    """run_id -> its run-table row's cells (HTML), from every run table of ``page`` (one per cell page)."""
    rows = {}
    for found in re.finditer('<table class="runs">', page):
        table = page[found.start():]
        table = table[:table.index("</table>")]
        for tr in re.findall(r"<tr>(.*?)</tr>", table)[1:]:
            cells = re.findall(r"<td[^>]*>(.*?)</td>", tr)
            rows[re.search(r'href="#([^"]+)"', tr).group(1)] = cells
    return rows


def _report(con, path) -> str:
    """The report's main page, then its cell pages (the run tables and sections), as one text."""
    report.write_report(con, path)
    return path.read_text(encoding="utf-8") + "".join(cell_pages(path).values())


def test_the_report_shows_each_flag_where_its_value_is(tmp_path):
    tables = _flagged_tables()
    ids = [r["run_id"] for r in tables["run_summary"]]
    page = _report(make_con(tables), tmp_path / "r.html")
    heads = re.findall(r"<th>(.*?)</th>", page[page.index('<table class="runs">'):].split("</tr>")[0])
    ns, sat = heads.index("non-stationary"), heads.index("H_eff saturated")
    assert heads[ns - 1] == "H_raw mean" and heads[sat - 1] == "H_eff mean"
    rows = _run_rows(page)
    first, second, third = (rows[run_anchor(i)] for i in ids[:3])
    assert first[ns].startswith('<span class="bad">yes</span>')
    assert f"4 of {EPOCHS} epochs with alpha &gt; 1" in first[ns]
    assert first[sat] == '<span class="bad">yes</span>' and first[ns - 1] == "1.31"
    assert second[ns].startswith("<span>no</span>") and second[sat] == '<span class="bad">yes</span>'
    assert third[ns] == third[sat] == MISSING  # unknown, not "no"
    assert page.count("alpha &gt; 1: the series drifts; DFA&#x27;s exponent then measures the drift, not "
                      "integration.") >= 2  # under the run table and the temporal table
    # the run's section: its flags in words, with its non-stationary epochs
    section = page[page.index(f'id="{run_anchor(ids[0])}"'):]
    section = section[:section.index("</section>")]
    assert ("<th>non-stationary</th><td>yes (4 of 6 end-of-epoch captures with alpha &gt; 1; epochs 2, 3, 5, 6;"
            in section)
    assert "<th>H_eff saturated</th><td>yes (H_opt 0.7 ± 3 sigma_H = 0.25 .. 1.15;" in section
    # the temporal section: counts of flagged runs and windows, crossed markers on the flagged windows
    temporal = page[page.index('id="temporal"'):page.index('id="hm"') if 'id="hm"' in page else None]
    assert "1 of 2 runs (1 unknown); 2 of 6 windows" in temporal
    fig = figures(temporal)[0]
    symbols = {t["legendgroup"]: t["marker"]["symbol"] for t in fig["data"] if t.get("mode") == "lines+markers"}
    assert symbols[ids[0]] == ["circle", "x", "x"] and symbols[ids[1]] == symbols[ids[2]] == ["circle"] * 3


def test_a_store_without_the_flag_columns_reports_them_unknown(tmp_path):
    """An analysis that predates the flags: its tables lack the columns; the report says unknown, never no."""
    tables = synthetic_tables()
    flags = {"nonstationary", "n_nonstationary", "h_eff_saturated", "temporal_nonstationary",
             "temporal_n_nonstationary", "temporal_h_eff_saturated"}
    con = duckdb.connect()
    for name, rows in tables.items():
        schema = pa.schema([f for f in TABLES[name] if f.name not in flags])
        con.register("_tmp", pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in rows],
                                                  schema=schema))
        con.execute(f"CREATE TABLE {name} AS SELECT * FROM _tmp")
        con.unregister("_tmp")
    page = _report(con, tmp_path / "r.html")
    heads = re.findall(r"<th>(.*?)</th>", page[page.index('<table class="runs">'):].split("</tr>")[0])
    ns, sat = heads.index("non-stationary"), heads.index("H_eff saturated")
    rows = _run_rows(page)
    assert rows and all(r[ns] == r[sat] == MISSING for r in rows.values())
    first = tables["run_summary"][0]["run_id"]
    section = page[page.index(f'id="{run_anchor(first)}"'):]
    assert f"<th>non-stationary</th><td>{MISSING} (" in section[:section.index("</section>")]


def test_flag_cells_sort_yes_before_no_and_unknown_last():
    assert flag_cell(True) == '<td data-v="1"><span class="bad">yes</span></td>'
    assert flag_cell(False, "0 of 3") == '<td data-v="0"><span>no</span> <span class=muted>0 of 3</span></td>'
    assert flag_cell(None) == f"<td>{MISSING}</td>"
    assert "drift" in NONSTATIONARY_TEXT and "tail" in SATURATED_TEXT
