"""The report's contrasts (at a glance), its tests-per-family header and its seed intervals, from synthetic tables."""
from __future__ import annotations

import csv
import re

import pyarrow as pa
import pytest

from dynstudy.analysis.report import build as report
from dynstudy.analysis.stats.contrasts import MIN_SEEDS, cell_contrasts
from dynstudy.analysis.stats.verdicts import MEASUREMENT
from tests.test_report import make_con, synthetic_tables


def _with_kinds(tables: dict) -> dict:
    """The synthetic tables with each capture's kind (epoch 0: the untrained network), as the pipeline writes them."""
    for name in ("capture_metrics", "controls"):
        tables[name] = [{**r, "kind": "init" if r["epoch"] == 0 else "epoch"} for r in tables[name]]
    return tables


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    tables = _with_kinds(synthetic_tables())
    con = make_con(tables)
    # a claims table with the multiplicity columns (family, n_tests, p_adjusted), whatever the store's schema holds
    claims = [{"claim": "state stable across seeds", "model": "m", "dataset": "d", "optimizer": "o",
               "verdict": "not supported", "family": "state stable across seeds", "n_tests": 4, "p_value": 0.3,
               "p_adjusted": 0.9}]
    con.register("_claims", pa.Table.from_pylist(claims))
    con.execute("CREATE TABLE claims AS SELECT * FROM _claims")
    out = tmp_path_factory.mktemp("rep") / "study.html"
    path = report.write_report(con, out)
    index = {r["run_id"]: {**r} for r in tables["runs"]}
    for r in tables["run_summary"]:
        index[r["run_id"]] = {**index.get(r["run_id"], {}), **r}
    rows = cell_contrasts(list(index.values()), tables["capture_metrics"], tables["controls"])
    return tables, rows, path, path.read_text(encoding="utf-8")


def _glance(page: str) -> str:
    return page[page.index('id="glance"'):page.index('id="claims"')]


def test_contrast_entries_show_p_adjusted_p_interval_and_dropped_runs(page):
    _, rows, _, html = page
    glance = _glance(html)
    tested = [r for r in rows if r["p_value"] is not None]
    assert tested and {r["n_tests"] for r in tested} == {len(tested)}
    for r in tested:
        assert f"p {r['p_value']:.3g} · p<sub>BH</sub> {r['p_adjusted']:.3g}" in glance
        assert f"[{r['ci_low']:.3g}, {r['ci_high']:.3g}]" in glance
    diverged = [r for r in rows if "diverged" in r["dropped"]]
    assert diverged and all(f"n {r['n_seeds']} of {r['n_runs']} runs (dropped: {r['dropped']})" in glance
                            for r in diverged)
    # the legend: test, null, minimum seeds, correction, what within means
    for words in ("one-sample t-test", "mean 0", f"insufficient seeds (needs {MIN_SEEDS})",
                  f"the {len(tested)} tests of this report are one Benjamini-Hochberg family",
                  "not evidence that they are equal"):
        assert words in glance


def test_order_is_a_neutral_measurement(page):
    _, rows, _, html = page
    order = [r for r in rows if r["control"] == "order"]
    assert order and all(r["verdict"] == MEASUREMENT and r["p_value"] is None for r in order)
    entries = re.findall(r'<td class="num ?([a-z]*)">([^<]*)', _glance(html))
    shares = [cls for cls, body in entries if "% of the signal" in body]
    assert len(shares) == len(order) and set(shares) == {""}  # not green, red or grey


def test_header_counts_the_tests_of_each_family(page):
    _, rows, _, html = page
    header = html[:html.index('id="glance"')]
    n = next(r["n_tests"] for r in rows if r["n_tests"])
    assert f"contrasts: one Benjamini-Hochberg family of {n} tests" in header
    assert "claims (Holm within each family): state stable across seeds: 4 tests" in header


def test_contrasts_csv_has_the_test_columns(page):
    tables, rows, path, _ = page
    with open(path.parent / "study_tables" / "control_contrasts.csv", newline="") as f:
        got = list(csv.DictReader(f))
    assert len(got) == len(rows)
    assert {"p_value", "p_adjusted", "n_tests", "ci_low", "ci_high", "d_z", "n_dropped", "dropped"} <= set(got[0])
    assert not any(k.startswith("boot") for k in got[0])


def test_clipped_bounds_are_marked(tmp_path):
    tables = synthetic_tables()
    row = next(r for r in tables["cell_variability"] if r["metric"] == "h_eff_mean")
    row.update(ci_low=0.5, ci_high=1.0, ci_clipped=True)
    html = report.write_report(make_con(tables), tmp_path / "r.html").read_text(encoding="utf-8")
    assert "[0.5, 1<span title=\"cut to the metric's range" in html
    assert "CV not defined (the metric can change sign)" in html  # r(Hz, Mz)
