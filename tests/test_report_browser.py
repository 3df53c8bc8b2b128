"""The report opened in a real headless browser: no console errors, every plot drawn, tables sort, no overflow.

Needs Chromium (Debian: ``apt-get install chromium``); skipped with that
message where it is missing. The page under test is the report as written,
with one probe script added at the top of <head> that records every error
(uncaught exceptions, rejected promises, console.error) and, once the page
has loaded, what the browser drew: the number of plot containers, how many
of them hold a plotly SVG with at least one trace, the page's width, and
the run table's seed column after a click on its head.
"""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from urllib.parse import unquote

import pytest

from dynstudy.analysis.report import build as report
from tests.test_report import SEEDS, make_con, synthetic_tables

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
WIDTH = 1400
PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) { window.__errors.push("error: " + e.message); });
window.addEventListener("unhandledrejection", function (e) { window.__errors.push("rejection: " + e.reason); });
(function () { var orig = console.error; console.error = function () {
  window.__errors.push("console.error: " + Array.prototype.join.call(arguments, " ")); orig.apply(console, arguments);
}; })();
window.addEventListener("load", function () { setTimeout(function () {
  var plots = document.querySelectorAll("div.plot");
  var drawn = Array.prototype.filter.call(plots, function (p) {
    return p.querySelector("svg.main-svg") && p.querySelectorAll("g.trace, g.hm").length > 0; }).length;
  var seeds = null, table = document.querySelector("table.runs");
  if (table) {
    var col = Array.prototype.findIndex.call(table.rows[0].cells, function (c) { return c.textContent === "seed"; });
    table.rows[0].cells[col].click();
    table.rows[0].cells[col].click();
    seeds = Array.prototype.slice.call(table.rows, 1).map(function (r) { return r.cells[col].textContent; });
  }
  var target = location.hash ? document.getElementById(decodeURIComponent(location.hash.slice(1))) : null;
  var targetDrawn = target ? Array.prototype.filter.call(target.querySelectorAll("div.plot"), function (p) {
    return p.querySelector("svg.main-svg") && p.querySelectorAll("g.trace, g.hm").length > 0; }).length : null;
  var out = {plots: plots.length, drawn: drawn, errors: window.__errors, seeds: seeds, target: targetDrawn,
             width: document.documentElement.scrollWidth, links: Array.prototype.filter.call(
               document.querySelectorAll('a[href^="#"]'), function (a) {
                 return !document.getElementById(decodeURIComponent(a.getAttribute("href").slice(1))); }).length};
  document.body.setAttribute("data-probe", JSON.stringify(out));
}, 500); });
</script>"""


@pytest.fixture(scope="module")
def browser():
    path = next((p for p in map(shutil.which, BROWSERS) if p), None)
    if path is None:
        pytest.skip("Chromium not found: install it (Debian: apt-get install chromium) to open the report "
                    "in a headless browser")
    return path


def open_in_browser(browser: str, page_path, tmp_path, anchor: str = "") -> tuple[dict, str]:
    """Load ``page_path`` (at ``anchor``, if given) with the probe in headless Chromium; the probe's findings and
    the browser's stderr. The probed copy sits beside the page, so its relative links and scripts resolve."""
    page = page_path.read_text(encoding="utf-8")
    probed = page_path.with_name(f"probed-{page_path.name}")
    probed.write_text(page.replace("<head>", "<head>" + PROBE, 1), encoding="utf-8")
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={tmp_path / 'profile'}", f"--window-size={WIDTH},900", "--enable-logging=stderr",
           "--virtual-time-budget=30000", "--dump-dom", probed.as_uri() + (f"#{anchor}" if anchor else "")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    probed.unlink()
    found = re.search(r'data-probe="([^"]*)"', proc.stdout)
    assert found, f"the probe did not report (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(html.unescape(found.group(1))), proc.stderr


def console_errors(stderr: str) -> list[str]:
    """Lines of Chromium's log that report a page-level JavaScript error."""
    return [line for line in stderr.splitlines() if "CONSOLE" in line and ("Uncaught" in line or "Error" in line)]


def local_links(page_path) -> list:
    """The files the page links to (``href`` and ``src`` that are neither in-page anchors nor URLs), each
    with the anchor it names ("" for none)."""
    page = page_path.read_text(encoding="utf-8")
    out = []
    for ref in re.findall(r'(?:href|src)="([^"#:]+)(?:#([^"]*))?"', page):
        out.append((page_path.parent / unquote(html.unescape(ref[0])), ref[1]))
    return out


def check_folder_links(main_path) -> None:
    """Every file the main page and its cell pages link to exists, and every anchor named in it exists there."""
    pages = [main_path, *sorted((main_path.parent / f"{main_path.stem}_runs").glob("cell-*.html"))]
    for page in pages:
        for target, anchor in local_links(page):
            assert target.is_file(), (page, target)
            if anchor and target.suffix == ".html":
                assert f'id="{anchor}"' in target.read_text(encoding="utf-8"), (page, target, anchor)


def first_cell_page(main_path):
    return sorted((main_path.parent / f"{main_path.stem}_runs").glob("cell-*.html"))[0]


def test_full_report_in_browser(browser, tmp_path):
    tables = synthetic_tables()
    path = report.write_report(make_con(tables), tmp_path / "study.html", title="browser check")
    probe, stderr = open_in_browser(browser, path, tmp_path)
    assert probe["errors"] == [] and console_errors(stderr) == []
    # 4 trajectory figures, the H-M plane, the controls chart and the stopping rules' plane; the runs' figures are
    # on the cell pages
    assert probe["plots"] == 4 + 2 + 1
    assert probe["drawn"] == probe["plots"]
    assert probe["width"] <= WIDTH  # nothing overflows the window sideways
    assert probe["links"] == 0  # every in-page link has its target
    check_folder_links(path)
    # a cell page, opened at its second run: no errors, that run's two figures drawn, its run table sorts
    page = first_cell_page(path)
    run = re.findall(r'<section class="run" id="([^"]+)"', page.read_text(encoding="utf-8"))[1]
    probe, stderr = open_in_browser(browser, page, tmp_path, run)
    assert probe["errors"] == [] and console_errors(stderr) == []
    assert probe["plots"] == 2 * len(SEEDS) and probe["target"] == 2
    assert probe["width"] <= WIDTH and probe["links"] == 0
    # two clicks on "seed": descending
    assert probe["seeds"] == sorted(probe["seeds"], key=int, reverse=True)
    assert probe["seeds"] != sorted(probe["seeds"], key=int)


def test_unanalysed_report_in_browser(browser, tmp_path):
    tables = synthetic_tables()
    con = make_con({k: tables[k] for k in ("runs", "train_metrics")})
    path = report.write_report(con, tmp_path / "my report.html")  # a space in the names the links hold
    probe, stderr = open_in_browser(browser, path, tmp_path)
    assert probe["errors"] == [] and console_errors(stderr) == []
    assert probe["plots"] == 1 and probe["drawn"] == probe["plots"]
    assert probe["links"] == 0
    check_folder_links(path)
    page = first_cell_page(path)
    run = re.findall(r'<section class="run" id="([^"]+)"', page.read_text(encoding="utf-8"))[0]
    probe, stderr = open_in_browser(browser, page, tmp_path, run)
    assert probe["errors"] == [] and console_errors(stderr) == [] and probe["target"] == 2


def test_analysed_store_report_in_browser(browser, tmp_path):
    """A store through the real pipeline (analyze, then report): contrasts, claims and sensitivity included."""
    from dynstudy.study.cli import main
    from tests.store_factory import make_store

    store = tmp_path / "store"
    make_store(store, every=1, analysis={"temporal_window": 36, "temporal_stride": 6})  # a temporal series
    assert main(["analyze", "--store", str(store)]) == 0
    assert main(["report", "--store", str(store)]) == 0
    page = (store / "report.html").read_text(encoding="utf-8")
    assert 'id="fig-temporal-0"' in page and 'id="fig-temporal-1"' in page
    for anchor in ("glance", "claims", "sensitivity", "temporal", "stopping"):
        assert f'id="{anchor}"' in page
    assert "DFA fit flags of the windows: narrow_span in" in page and "beyond the null of 19 surrogates" in page
    probe, stderr = open_in_browser(browser, store / "report.html", tmp_path)
    assert probe["errors"] == [] and console_errors(stderr) == []
    # 2 cells: 2 trajectory figures, 2 temporal ones, 2 geometry ones and 2 seed-agreement heat maps (plotly's
    # g.hm); the H-M plane, the controls, the stopping rules' plane
    assert probe["plots"] == 2 + 2 + 2 + 2 + 2 + 1 and probe["drawn"] == probe["plots"]
    assert probe["width"] <= WIDTH and probe["links"] == 0
    check_folder_links(store / "report.html")
    # a run's section: its training curves, its metrics per epoch and per window over its cell's distribution, and
    # its captures' fluctuation functions
    page = first_cell_page(store / "report.html")
    text = page.read_text(encoding="utf-8")
    run = re.findall(r'<section class="run" id="([^"]+)"', text)[0]
    probe, stderr = open_in_browser(browser, page, tmp_path, run)
    assert probe["errors"] == [] and console_errors(stderr) == [] and probe["target"] == 4
    # the windows and the fluctuation functions it draws are the store's
    from dynstudy.analysis.kernels.temporal import WHOLE_RUN
    from dynstudy.analysis.pipeline.catalog import open_catalog
    from tests.test_report import page_data

    data = page_data(text)["runs"]
    con = open_catalog(str(store))
    for rid in data:
        rows = con.execute("SELECT end_step, metastability FROM temporal_metrics WHERE run_id = ? AND \"window\" != ? "
                           "ORDER BY \"window\"", [rid, WHOLE_RUN]).fetchall()
        assert rows and data[rid]["series"]["temporal"]["metastability"] == [
            [r[0] for r in rows], pytest.approx([r[1] for r in rows], rel=1e-5)]
        caps = con.execute("SELECT epoch, dfa_scales, log_f_mean FROM capture_metrics WHERE run_id = ? AND "
                           "kind = 'epoch' ORDER BY epoch", [rid]).fetchall()
        fluct = data[rid]["fluct"]
        assert fluct["epochs"] == [c[0] for c in caps] and fluct["scales"] == [c[1] for c in caps]
        assert fluct["mean"] == [pytest.approx(c[2], rel=1e-5) for c in caps]
