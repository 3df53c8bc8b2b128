"""The report's folder: a page per cell with its runs' table and a section per run, figures drawn on demand.

Beside ``<stem>.html`` the report writes ``<stem>_runs/``: ``plotly.min.js`` once, which every page of the
folder loads by a relative URL, and one page per cell (:func:`page_name`), so the main page and its folder
work wherever they are copied together. A cell page carries its runs' series as one JSON block (finite
values only, :data:`DIGITS` significant digits) and figure templates built once per page: the training
curves (:func:`dynstudy.analysis.report.plots.training_figure` of no run) and the cell's distribution
(:func:`dynstudy.analysis.report.plots.band_figure`) per epoch and, with a temporal series, per window. A run's
figures are drawn when its section comes into view, or at once when the page's address points at it: the
template filled with its curves, and each distribution with the run's own series, its trigger and its accuracy
plateau on top.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import quote

import numpy as np

from dynstudy.analysis.report import data as rd
from dynstudy.analysis.report import plots
from dynstudy.analysis.report.html import text
from dynstudy.analysis.report.page import page_html
from dynstudy.analysis.report.runs import run_details_section, run_section

#: The plotly.js file the folder's pages share.
PLOTLY_FILE = "plotly.min.js"
#: Significant digits of the values a page carries.
DIGITS = 6
#: Colour of the run drawn over its cell's distribution.
RUN_COLOUR = "#d62728"
#: Draws a run section's figures (its ``div.plot[data-figure]``) once: when the section comes into view, or at
#: once when the page's address points at it (a link from the run table or from elsewhere).
DRAW_JS = """
(function () {
  var D = JSON.parse(document.getElementById("report-data").textContent), RUN = "%s";
  function copy(o) { return JSON.parse(JSON.stringify(o)); }
  function training(run) {
    var f = copy(D.training);
    f.data.forEach(function (t) {
      var s = run.train[t.meta[1]] || [[], []];
      t.x = s[0]; t.y = s[1]; t.meta[0] = run.label;
      if (s[0].length > 30) t.mode = "lines";
    });
    return f;
  }
  function line(axes, props) {
    return Object.assign({mode: "lines", showlegend: false, legendgroup: "run"}, axes, props);
  }
  function overlay(kind, run) {
    var f = copy(D.bands[kind]), extra = [], trigger = run.triggers[kind], series = run.series[kind] || {};
    f.data.forEach(function (t) {
      if (!t.meta || t.meta[1] !== "median") return;
      var s = series[t.meta[0]];
      if (!s || !s[0].length) return;
      var axes = {xaxis: t.xaxis, yaxis: t.yaxis}, ys = s[1];
      var lo = Math.min.apply(null, ys), hi = Math.max.apply(null, ys);
      extra.push(line(axes, {x: s[0], y: ys, mode: "lines+markers", name: "run " + run.label,
        showlegend: !extra.length, line: {color: RUN, width: 2}, marker: {size: 5},
        hovertemplate: "run " + run.label + "<br>" + t.meta[2] + " %%{x}: %%{y:.4g}<extra></extra>"}));
      if (trigger !== null) extra.push(line(axes, {x: [trigger, trigger], y: [lo, hi],
        line: {color: RUN, dash: "dash", width: 1}, hovertemplate: D.words[kind] + " " + trigger + "<extra></extra>"}));
      if (t.meta[0] === "val_acc" && run.plateau !== null) {
        var note = "accuracy plateau at epoch " + run.plateau + "<extra></extra>", i = s[0].indexOf(run.plateau);
        extra.push(line(axes, {x: [run.plateau, run.plateau], y: [lo, hi], line: {color: RUN, dash: "dot", width: 1},
          hovertemplate: note}));
        if (i >= 0) extra.push(line(axes, {x: [run.plateau], y: [ys[i]], mode: "markers", hovertemplate: note,
          marker: {symbol: "star", size: 13, color: RUN, line: {color: "black", width: 0.5}}}));
      }
    });
    f.data = f.data.concat(extra);
    return f;
  }
  function fluctuation(run) {  // log F(s) of each end-of-epoch capture and its line; a slider picks the capture
    var F = run.fluct, data = [], steps = [], n = F.epochs.length;
    F.epochs.forEach(function (epoch, i) {
      var x = F.scales[i].map(Math.log), y = F.mean[i], sd = F.sd[i];
      var mx = x.reduce(function (a, b) { return a + b; }, 0) / x.length;
      var my = y.reduce(function (a, b) { return a + b; }, 0) / y.length, sxy = 0, sxx = 0;
      x.forEach(function (v, j) { sxy += (v - mx) * (y[j] - my); sxx += (v - mx) * (v - mx); });
      var slope = sxy / sxx, last = i === n - 1;
      data.push({x: x, y: y, mode: "markers", visible: last, name: "log F(s), channel mean",
        marker: {color: RUN, size: 7}, error_y: {type: "data", array: sd.map(function (v) { return v || 0; }),
        thickness: 1, width: 3}, hovertemplate: "s %%{customdata}<br>log F %%{y:.4g}<extra></extra>",
        customdata: F.scales[i]});
      data.push({x: [x[0], x[x.length - 1]], y: [my + slope * (x[0] - mx), my + slope * (x[x.length - 1] - mx)],
        mode: "lines", visible: last, name: "line, slope " + slope.toFixed(3), line: {color: "#333", dash: "dash"},
        hoverinfo: "skip"});
      var vis = []; for (var k = 0; k < n; k++) vis.push(k === i, k === i);
      steps.push({label: String(epoch), method: "update", args: [{visible: vis}, {title: {text: F.titles[i],
        font: {size: 13}}}]});
    });
    return {data: data, layout: {template: "none", height: 360, margin: {l: 60, r: 20, t: 60, b: 90},
      title: {text: F.titles[n - 1], font: {size: 13}}, xaxis: {title: {text: "log s (scale)"}},
      yaxis: {title: {text: "log F(s)"}}, showlegend: true, legend: {font: {size: 11}},
      sliders: [{active: n - 1, steps: steps, currentvalue: {prefix: "epoch "}, pad: {t: 40}}]}};
  }
  function figureOf(kind, run) {
    if (kind === "training") return training(run);
    return kind === "fluctuation" ? fluctuation(run) : overlay(kind, run);
  }
  function draw(section) {
    if (section.dataset.drawn) return;
    section.dataset.drawn = "1";
    var run = D.runs[section.dataset.run];
    section.querySelectorAll("div.plot[data-figure]").forEach(function (div) {
      var f = figureOf(div.dataset.figure, run);
      Plotly.newPlot(div, f.data, f.layout, D.config);
    });
  }
  function drawTarget() {  // the run a link points at, at once
    var target = location.hash && document.getElementById(decodeURIComponent(location.hash.slice(1)));
    if (target && target.dataset.run !== undefined) draw(target);
  }
  var seen = new IntersectionObserver(function (entries) {
    entries.forEach(function (e) { if (e.isIntersecting) draw(e.target); });
  }, {rootMargin: "300px"});
  document.querySelectorAll("section.run").forEach(function (s) { seen.observe(s); });
  window.addEventListener("hashchange", drawTarget);
  drawTarget();
})();
""" % RUN_COLOUR


def page_name(n: int, cell: tuple) -> str:
    """The file name of the ``n``-th cell's page: its number, then its cell with characters outside
    [A-Za-z0-9_.-] as _ (the number keeps two cells apart that differ only there)."""
    return f"cell-{n + 1:03d}-" + re.sub(r"[^A-Za-z0-9_.-]", "_", "_".join(cell)) + ".html"


def compact(x, y) -> list[list]:
    """[x, y] of a series as JSON-ready lists: the points whose x and y are finite, integral x as int, every
    other value to :data:`DIGITS` significant digits."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    return [[int(v) if v.is_integer() else float(f"{v:.{DIGITS}g}") for v in x[ok].tolist()],
            [float(f"{v:.{DIGITS}g}") for v in y[ok].tolist()]]


#: The figures of a run over its cell's distribution: kind -> (the run info's trigger column, its words).
OVERLAYS = {"trajectory": ("trigger_epoch", "volatility trigger at epoch"),
            "temporal": ("temporal_trigger_step", "temporal trigger at step")}


def run_data(info: dict, curves: dict | None, series: dict, plateau, fluct: dict | None = None) -> dict:
    """What a cell page carries of one run: its id as the figures show it, its training ``curves``, its
    ``series`` per kind of :data:`OVERLAYS` ({kind: {name: (x, y)}}, each :func:`compact`), its triggers, its
    accuracy plateau epoch and its captures' fluctuation functions (``fluct``:
    :func:`dynstudy.analysis.report.data.fluctuation_data`, or None)."""
    return {"label": text(info["run_id"]), "fluct": fluct,
            "train": {k: compact(*xy) for k, xy in (curves or {}).items()},
            "series": {kind: {k: compact(*xy) for k, xy in got.items()} for kind, got in series.items()},
            "triggers": {kind: rd.finite_or_none(info.get(col)) for kind, (col, _) in OVERLAYS.items()},
            "plateau": plateau}


def data_block(runs: dict, bands: dict, training: str) -> str:
    """The page's JSON block: the plot options, the figure templates (``training``: the training figure's JSON;
    ``bands``: kind -> the cell's distribution figure) and every run's data; no ``<`` in it, so no string of the
    data can close the script element."""
    band_json = ", ".join(f'"{kind}": {fig.to_json()}' for kind, fig in bands.items())
    body = (f'{{"config": {json.dumps(plots.PLOT_CONFIG)}, "training": {training}, "bands": {{{band_json}}}, '
            f'"words": {json.dumps({k: w for k, (_, w) in OVERLAYS.items()})}, "runs": {json.dumps(runs)}}}')
    return f'<script type="application/json" id="report-data">{body.replace("<", chr(92) + "u003c")}</script>'


def cell_page(title: str, cell: tuple, runs: list[dict], context: dict) -> str:
    """The HTML of one cell's page (``context``: what :func:`write_cell_pages` passes on)."""
    ids = {i["run_id"] for i in runs}
    rows = [r for r in context["rows"] if r["run_id"] in ids]
    bands = {kind: context["bands"][kind][cell] for kind in OVERLAYS if cell in context["bands"][kind]}
    series = {i["run_id"]: {kind: context["series"][kind][i["run_id"]] for kind in bands
                            if i["run_id"] in context["series"][kind]} for i in runs}
    fluct = context.get("fluct", {})
    data = {i["run_id"]: run_data(i, context["curves"].get(i["run_id"]), series[i["run_id"]],
                                  context["plateaus"].get(i["run_id"]), fluct.get(i["run_id"])) for i in runs}
    figures = {rid: list(got) + (["fluctuation"] if rid in fluct else []) for rid, got in series.items()}
    body = (f"<h1>{text(title)}: {text(rd.cell_label(cell))}</h1>"
            f'<p class="meta"><a href="../{text(quote(context["main"]))}#runs">back to the report</a> · '
            f"{len(runs)} runs. "
            "A run's figures are drawn when its section comes into view: its training curves, then its metrics "
            "per epoch and, with a temporal series, per window (red; dashed: its trigger, dotted and star: its "
            "accuracy plateau) over its cell's median and 50% and 90% bands.</p>"
            + run_section(rows, context["analysed"], context["colours"], context["plateau_html"])
            + run_details_section({cell: runs}, context["curves"], context["colours"], context["drift"],
                                  figures)
            + data_block(data, bands, context["training"]))
    return page_html(text(f"{title}: {rd.cell_label(cell)}"), body, plotly_src=PLOTLY_FILE, script=DRAW_JS)


def write_cell_pages(folder: Path, title: str, cells: dict, context: dict) -> dict:
    """Write ``folder`` (emptied of earlier pages first): plotly.js and a page per cell.

    Parameters
    ----------
    folder : the report's folder, ``<stem>_runs`` beside the main page.
    title : the report's title.
    cells : cell -> its run infos (:func:`dynstudy.analysis.report.data.runs_by_cell`).
    context : ``main`` (the main page's file name), ``rows`` (the run table's rows), ``curves`` (training
        curves per run), ``series`` (kind of :data:`OVERLAYS` -> run_id -> its series), ``bands`` (kind -> cell
        -> its distribution figure),
        ``plateaus``, ``colours``, ``drift`` (non-stationary epochs per run), ``analysed`` (whether
        run_summary exists) and ``plateau_html``.

    Returns
    -------
    cell -> the URL of its page relative to the main page's folder (percent-encoded).
    """
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("cell-*.html"):
        old.unlink()  # no page of a cell the store no longer has
    (folder / PLOTLY_FILE).write_text(plots.plotly_js(), encoding="utf-8")
    context = {**context, "training": plots.training_figure("", {}).to_json()}
    out = {}
    for n, (cell, runs) in enumerate(cells.items()):
        name = page_name(n, cell)
        (folder / name).write_text(cell_page(title, cell, runs, context), encoding="utf-8")
        out[cell] = quote(f"{folder.name}/{name}")
    return out
