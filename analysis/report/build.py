"""The study report: a main page, a page per cell in a folder beside it, and CSV tables.

``write_report(con, out_path)`` reads whatever tables the DuckDB connection
holds (runs, train_metrics, capture_metrics, run_summary, cell_variability,
controls, ...), each once, and writes the main page, in reading order: a
header (studies, runs by status, cells, seeds), the contrasts and claims,
(1) per-cell metric means with their seed intervals, (2) trajectories per
cell, (3) the H-M plane, (4) each cell's H_raw beside its noise, order and
init controls, (5) the cells, each linking to its page, the sensitivity and
the tables, (6) links to the run sections. Each cell's page
(:mod:`dynstudy.analysis.report.cell_pages`) holds its run table and a section
per run. A cell of more than :data:`MAX_TRACED_RUNS` runs is drawn as their
distribution (:mod:`dynstudy.analysis.report.bands`). Figures are interactive
plotly figures (hover, zoom, legend toggles); the main page inlines
plotly.js, so it works offline; every table sorts by a click on a column
head (except the key-value ones); the CSS is inline and every string from
the data is HTML-escaped. A section whose tables are missing says so instead
of failing.
"""
from __future__ import annotations

import csv
import math
import os
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np

from dynstudy.analysis.report import data as rd
from dynstudy.analysis.report import plots
from dynstudy.analysis.report.bands import MAX_TRACED_RUNS, cell_bands, traced
from dynstudy.analysis.report.cell_pages import write_cell_pages
from dynstudy.analysis.report.conclusions import claims_section, contrasts_section, sensitivity_section
from dynstudy.analysis.report.flags import legend_html
from dynstudy.analysis.report.geometry import agreement_summary, agreement_tests, geometry_section
from dynstudy.analysis.report.html import MISSING, figure, missing, num, state, text
from dynstudy.analysis.report.page import page_html
from dynstudy.analysis.report.runs import nonstationary_epochs, run_table, training_curves
from dynstudy.analysis.report.stopping import section_html as stopping_section
from dynstudy.analysis.report.temporal import band_figures, temporal_section, temporal_series
from dynstudy.analysis.stats.contrasts import MEASURE, cell_contrasts
from dynstudy.analysis.stats.variability import HIGH_CV, METRIC_DOMAINS, can_change_sign
from dynstudy.analysis.stats.verdicts import BH, HOLM, is_insufficient

#: How the header names each multiplicity correction.
CORRECTION_NAMES = {BH: "Benjamini-Hochberg", HOLM: "Holm"}

#: At most this many trajectory figures; beyond it, several cells share a figure (one row each).
MAX_TRAJECTORY_FIGURES = 10
#: Cells side by side in one table of section 1.
CELLS_PER_TABLE = 3
CONTROLS_NOTE = (
    "The noise control runs i.i.d. Gaussian features, with the run's labels, probe size and preprocessing "
    "(label sort, per-class centring, rolling mean), through exactly the same pipeline: where its H_raw is close "
    "to the signal's, the metric reflects the preprocessing, not training."
)
METRIC_LABELS = {
    "h_eff_mean": "H_eff, mean over epochs",
    "h_raw_mean": "H_raw (DFA exponent), mean",
    "metastability_mean": "Metastability M, mean",
    "synchrony_mean": "Synchrony (mean R(t)), mean",
    "psi_std": "Psi, std over epochs",
    "r_hz_mz": "r(Hz, Mz)",
    "r_psi_acc": "r(Psi, val acc)",
    "trigger_epoch": "Volatility trigger epoch",
    "best_val_acc": "Best val accuracy",
    "noise_h_raw_mean": "H_raw, noise control",
    "order_h_raw_mean": "H_raw, order control",
    "init_h_raw": "H_raw, init (epoch 0)",
    "temporal_h_raw": "H_raw over training time (temporal)",
    "temporal_h_eff": "H_eff over training time (temporal)",
    "temporal_metastability": "Metastability over training time (temporal)",
    "temporal_trigger_step": "Temporal trigger step",
}


def _figure(fig, div_id: str, caption: str) -> str:
    return figure(plots.figure_html(fig, div_id), caption)


def _write_csv(path: Path, rows: list[dict]) -> None:
    cols = list(dict.fromkeys(k for r in rows for k in r))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=cols)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if v is None or (isinstance(v, float) and math.isnan(v)) else v
                             for k, v in r.items()})


#: (anchor, title) of every section, in page order.
CONTENTS = (("glance", "at a glance: signal vs controls"), ("claims", "claims"), ("cells", "1. cell metrics"),
            ("trajectories", "2. trajectories"), ("temporal", "2b. temporal protocol"),
            ("geometry", "2c. geometry"), ("hm", "3. H-M plane"),
            ("controls", "4. controls"), ("runs", "5. runs"), ("sensitivity", "sensitivity"),
            ("stopping", "stopping rules"), ("tables", "tables"),
            ("rundetails", "6. run details"))



def tests_note(contrasts: list[dict], claims: list[dict]) -> str:
    """The header's line on multiplicity: the number of tests in each family of verdicts of the report.

    Contrasts: their one Benjamini-Hochberg family (and the rows outside it). Claims: per ``family``, its
    ``n_tests``, where the claims table has those columns; otherwise nothing is said of them.
    """
    parts = []
    if contrasts:
        tested = [r for r in contrasts if r.get("n_tests")]
        n = tested[0]["n_tests"] if tested else 0
        few = sum(is_insufficient(r.get("verdict")) for r in contrasts)
        measured = sum(r.get("kind") == MEASURE for r in contrasts)
        parts.append(f"contrasts: one {CORRECTION_NAMES[BH]} family of {n} tests"
                     + (f" ({few} more rows with too few seeds, not tested)" if few else "")
                     + (f"; {measured} order measurements, not tests" if measured else ""))
    families = {}
    for r in claims:
        if r.get("family") is not None and r.get("n_tests") is not None:
            families.setdefault(str(r["family"]), int(r["n_tests"]))
    if families:
        parts.append(f"claims ({CORRECTION_NAMES[HOLM]} within each family): "
                     + "; ".join(f"{text(f)}: {n} tests" for f, n in families.items()))
    return f"Tests per family: {' · '.join(parts)}" if parts else ""


def _header(title: str, counts: dict, index: dict, cells: dict, tests: str = "") -> str:
    studies = sorted({str(r.get("study")) for r in index.values() if r.get("study") is not None})
    status = Counter(str(r.get("status")) for r in index.values())
    seeds_per_cell = [len({r.get("seed") for r in runs}) for runs in cells.values()]
    seeds = sorted({r.get("seed") for r in index.values() if r.get("seed") is not None})
    seed_range = (f"{min(seeds_per_cell)}" if seeds_per_cell and min(seeds_per_cell) == max(seeds_per_cell)
                  else f"{min(seeds_per_cell)}–{max(seeds_per_cell)}" if seeds_per_cell else "0")
    present = ", ".join(f"{text(t)} ({n} rows)" for t, n in counts.items() if n)
    absent = [t for t in rd.TABLES if t != "activations" and not counts.get(t)]
    return (
        f"<h1>{text(title)}</h1>"
        f'<p class="meta">Studies: {text(", ".join(studies)) or MISSING}<br>'
        f"Runs: {len(index)} ({text(', '.join(f'{k}: {v}' for k, v in sorted(status.items())) or 'none')})<br>"
        f"Cells (model × dataset × optimizer): {len(cells)}; seeds per cell: {seed_range}; "
        f"distinct seeds: {text(', '.join(str(s) for s in seeds)) or MISSING}<br>"
        f"Tables: {present or 'none'}"
        + (f"; missing or empty: {text(', '.join(absent))}" if absent else "")
        + (f"<br>{tests}" if tests else "") + "</p>"
        '<p class="meta">Contents: ' + " · ".join(f'<a href="#{a}">{t}</a>' for a, t in CONTENTS) + "</p>"
    )


def _integrity_notes(index: dict, unreadable: list[tuple]) -> str:
    """Runs that were retried, runs with a gap in their files, and files the store holds that do not belong."""
    notes = []
    retried = sorted((r["run_id"], r["attempts"]) for r in index.values() if (r.get("attempts") or 1) > 1)
    if retried:
        notes.append(f"Retried or resumed runs ({len(retried)}): "
                     + ", ".join(f"{text(rid)} ({n} attempts)" for rid, n in retried))
    gaps = sorted((r["run_id"], r["reason"]) for r in index.values() if r.get("reason"))
    if gaps:
        notes.append(f"<b>Incomplete runs ({len(gaps)}), kept out of the cross-seed tables and claims</b>: "
                     + "; ".join(f"{text(rid)}: {text(why)}" for rid, why in gaps))
    if unreadable:
        notes.append(f"<b>Files in the store that do not belong ({len(unreadable)}), not read</b>: "
                     + "; ".join(f"{text(path)} ({text(why)})" for _, path, why in unreadable[:20])
                     + (" ..." if len(unreadable) > 20 else ""))
    return "".join(f'<p class="meta">{n}</p>' for n in notes)


#: How a bound of a seed interval cut to the metric's range is marked.
CLIPPED_MARK = '<span title="cut to the metric\'s range: the t-interval passes it">*</span>'


def seed_interval(r: dict, metric: str, k: float = 1.0) -> str:
    """A cell_variability row's t-interval as "[low, high]" (times ``k``), a bound cut to the domain marked.

    A row without ``ci_clipped`` (a store written before the column) shows no marks.
    """
    lo, hi = (rd.finite_or_none(r.get(c)) for c in ("ci_low", "ci_high"))
    if lo is None or hi is None:
        return ""
    low_edge, high_edge = METRIC_DOMAINS.get(metric, (None, None))
    clipped = bool(r.get("ci_clipped"))
    lo_txt = num(lo * k) + (CLIPPED_MARK if clipped and low_edge is not None and lo == low_edge else "")
    hi_txt = num(hi * k) + (CLIPPED_MARK if clipped and high_edge is not None and hi == high_edge else "")
    return f"[{lo_txt}, {hi_txt}]"


def _seed_cell(r: dict, metric: str, k: float) -> str:
    """One cell x metric entry: mean ± std, seeds, the t-interval (a cut bound marked), CV (flagged when high)."""
    mean, std = (rd.finite_or_none(r.get(c)) for c in ("mean", "std"))
    mean, std = (None if v is None else v * k for v in (mean, std))
    cv = rd.finite_or_none(r.get("cv"))
    n, runs = r.get("n_seeds") or 0, r.get("n_runs")
    seeds = f"fired in {n} of {runs} seeds" if metric == "trigger_epoch" and runs is not None else f"n={n}"
    interval = seed_interval(r, metric, k) or ("no interval: fewer than 2 seeds" if n < 2 else "no interval")
    if cv is None:
        cv_txt = "not defined (the metric can change sign)" if can_change_sign(METRIC_DOMAINS.get(metric)) else MISSING
    else:
        cv_txt = f"{cv * 100:.1f}%" + (" <b>high</b>" if abs(cv) > HIGH_CV else "")
    return f"{num(mean)} ± {num(std)}<br><small>{seeds} · {interval} · CV {cv_txt}</small>"


def _cell_section(rows: list[dict], scale: float, colours: dict) -> str:
    out = ["<h2 id=\"cells\">1. Cell metrics across seeds</h2>"]
    if not rows:
        return out[0] + missing(["cell_variability"], "per-cell seed statistics")
    out.append('<p class="meta">Each entry: seed mean ± std, then n seeds, the 95% Student t-interval of the mean '
               "across seeds [low, high] (from 2 seeds on; its coverage is exact for normally distributed seed "
               "values and measured for skewed ones in docs/metrics.md; cut to the metric's range, a cut bound "
               "marked *, which never lowers its coverage) and CV = std / mean, only for metrics that cannot change "
               f"sign, flagged above {HIGH_CV * 100:.0f}%. The trigger epoch says in how many seeds the "
               "rule fired. Only finished runs count as seeds. Header: the state most seeds reach (ties: the "
               "taxonomy's order) and the share of seeds in it.</p>")
    order = list(METRIC_LABELS)
    by_cell = {}
    for r in rows:
        by_cell.setdefault(rd.cell_of(r), {})[str(r["metric"])] = r
    metrics = sorted({m for d in by_cell.values() for m in d}, key=lambda m: (order.index(m) if m in order else 99, m))
    keys = sorted(by_cell)
    for i in range(0, len(keys), CELLS_PER_TABLE):
        chunk = keys[i:i + CELLS_PER_TABLE]
        heads = []
        for cell in chunk:
            head = next(iter(by_cell[cell].values()))
            agree = rd.finite_or_none(head.get("state_agreement"))
            agree_txt = f"{agree * 100:.0f}% of seeds" if agree is not None else MISSING
            heads.append(f"<th>{text(rd.cell_label(cell))}<br><small>{state(head.get('modal_state'), colours)} "
                         f"({agree_txt})</small></th>")
        out.append('<div class="wide"><table class="nosort"><tr><th>metric</th>' + "".join(heads) + "</tr>")
        for metric in metrics:
            k = scale if metric == "best_val_acc" else 1.0
            label = METRIC_LABELS.get(metric, metric) + (" (%)" if k != 1.0 else "")
            tds = []
            for cell in chunk:
                r = by_cell[cell].get(metric)
                if r is None:
                    tds.append(f"<td>{MISSING}</td>")
                    continue
                tds.append(f"<td class=num>{_seed_cell(r, metric, k)}</td>")
            out.append(f"<tr><td>{text(label)}</td>{''.join(tds)}</tr>")
        out.append("</table></div>")
    return "".join(out)


def trajectory_groups(cells: dict, min_per_fig: int = 1) -> list[list]:
    """Cells split into figures of ``min_per_fig`` cells, more when that would exceed MAX_TRAJECTORY_FIGURES."""
    keys = list(cells)
    per_fig = max(min_per_fig, math.ceil(len(keys) / MAX_TRAJECTORY_FIGURES))
    return [keys[i:i + per_fig] for i in range(0, len(keys), per_fig)]


def plateau_note(points: float, recorded: bool) -> str:
    """The plateau rule in words, with where its points come from."""
    source = ("the points <code>dynstudy analyze</code> used, as its claims table records them" if recorded else
              "the default points: this store's claims table does not record those <code>dynstudy analyze</code> "
              "used")
    return f"first epoch within {num(points)} percentage points of its best val accuracy, {source}"


def trigger_rule(infos: list[dict]) -> str:
    """The volatility trigger's rule of the runs ``infos``, from their own settings (each run's where they differ)."""
    return rd.per_run_text(infos, lambda p: p.trigger_text())


def _band_cell(cell: tuple, runs: list[dict], series: dict, panels) -> dict:
    """One cell of :func:`dynstudy.analysis.report.plots.band_figure`: its runs' distribution per panel and
    the volatility threshold (a line per value, named with its number of runs)."""
    thresholds = {v: [f"{len(ids)} runs"] for v, ids in rd.by_setting(runs, "vol_threshold").items()}
    return {"title": rd.cell_label(cell), "bands": cell_bands(runs, series, panels),
            "thresholds": {"volatility": thresholds} if "volatility" in panels else {}}


def _epochs_text(values, what: str, n: int) -> str:
    """"<what> in k of n runs, median epoch m [5%, 95%: a, b]" of some runs' epochs (None: not reached)."""
    got = np.array([v for v in (rd.finite_or_none(x) for x in values) if v is not None])
    if not len(got):
        return f"{what} in none of the {n} runs"
    lo, mid, hi = np.quantile(got, (0.05, 0.5, 0.95))
    return f"{what} in {len(got)} of {n} runs, median epoch {num(mid)} (5% to 95% of them: {num(lo)} to {num(hi)})"


def _traced_figure(group: list, cells: dict, series: dict, panels: list, plateaus: dict):
    """A trajectory figure with a line per run of every cell of ``group``."""
    fig_cells = []
    for cell in group:
        runs = []
        for info in cells[cell]:
            rid = info["run_id"]
            status = info.get("status")
            label = f"seed {info.get('seed')}" + ("" if status in (None, "finished") else f" ({status})")
            runs.append({"run_id": rid, "seed": info.get("seed"), "label": label, "series": series.get(rid, {}),
                         "trigger": info.get("trigger_epoch"), "plateau": plateaus.get(rid),
                         "vol_threshold": rd.params_of(info).vol_threshold})
        fig_cells.append({"title": rd.cell_label(cell), "runs": runs})
    return plots.trajectory_figure(fig_cells, panels)


def _trajectory_section(cells: dict, series: dict, panels: list, plateaus: dict, plateau_text: str,
                        band_figures: dict) -> str:
    """Section 2: one figure per cell (or a grid of cells when only accuracy is known); a cell of more than
    :data:`MAX_TRACED_RUNS` runs as its runs' distribution (``band_figures``: cell -> that figure, made for its
    page)."""
    out = ["<h2 id=\"trajectories\">2. Trajectories per run</h2>"]
    if not panels:
        return out[0] + missing(["capture_metrics", "train_metrics"], "trajectories")
    captures = panels != ["val_acc"]
    if not captures:
        out.append(missing(["capture_metrics"], "metric trajectories (accuracy only below)"))
    out.append('<p class="meta">Seeds of a cell share one set of axes. Dashed vertical line: the run\'s volatility '
               "trigger, by the run's own settings (each figure's caption states the rule); dashed horizontal line in "
               "the volatility panel: the threshold (one per threshold, labelled with its seeds, where the runs "
               f"differ); dotted line and star: its accuracy plateau ({plateau_text}). "
               "Epoch 0 is the untrained network. Hover a point for its run, seed, epoch and value; drag to "
               "zoom (double-click resets); click a seed in the legend to hide or show it in every panel, "
               f"double-click to show it alone. A cell of more than {MAX_TRACED_RUNS} runs is drawn as its runs' "
               "distribution: at each epoch the median and the bands that hold the middle 50% and 90% of the runs; "
               "its caption gives the triggers and plateaus, and each run is drawn over the distribution on its "
               "cell's page.</p>")
    # accuracy alone fits many cells into one figure (a grid); with metric panels, one cell is one row
    per_fig = 1 if captures else plots.SINGLE_PANEL_COLUMNS * 3
    for n, group in enumerate(trajectory_groups(cells, per_fig)):
        names = "; ".join(rd.cell_label(c) for c in group)
        runs = [r for c in group for r in cells[c]]
        rule = trigger_rule(runs)
        if all(traced(len(cells[c])) for c in group):
            fig = _traced_figure(group, cells, series, panels, plateaus)
            ids = ", ".join(r["run_id"] for r in runs)
            caption = f"Trajectories: {names} (runs {ids}). Volatility trigger: {rule}."
        else:
            fig = band_figures[group[0]] if len(group) == 1 else plots.band_figure(
                [_band_cell(c, cells[c], series, panels) for c in group],
                {k: plots.TRAJECTORY_PANELS[k] for k in panels})
            caption = (f"Trajectories: {names} ({len(runs)} runs, as their distribution). Volatility trigger: {rule}; "
                       + _epochs_text([r.get("trigger_epoch") for r in runs], "it fired", len(runs)) + ". "
                       + _epochs_text([plateaus.get(r["run_id"]) for r in runs], "Accuracy plateau reached",
                                      len(runs)) + ".")
        out.append(_figure(fig, f"fig-trajectory-{n}", caption))
    return "".join(out)


def _hm_section(index: dict) -> str:
    out = ["<h2 id=\"hm\">3. The H-M plane</h2>"]
    points = []
    for info in index.values():
        h, m = rd.finite_or_none(info.get("h_eff_mean")), rd.finite_or_none(info.get("metastability_mean"))
        if h is not None and m is not None:
            points.append({"h_eff": h, "m": m, "state": info.get("state"), "dataset": str(info.get("dataset")),
                           "run_id": info["run_id"], "seed": info.get("seed"), "cell": rd.cell_label(rd.cell_of(info))})
    if not points:
        return out[0] + missing(["run_summary"], "H-M plane")
    left = len(index) - len(points)
    caption = (f"Each run at its mean H_eff and mean metastability ({len(points)} runs"
               + (f"; {left} without both values left out" if left else "") + ").")
    out.append(_figure(plots.hm_plane_figure(points), "fig-hm", caption))
    return "".join(out)


def _cell_name(info: dict) -> str:
    return rd.cell_label(rd.cell_of(info))


def _controls_section(cells: dict, per_run: dict, by_cell: list[dict]) -> str:
    out = ["<h2 id=\"controls\">4. Metrics beside their controls</h2>",
           f'<p class="note">{text(CONTROLS_NOTE)} The order control feeds the samples in random instead of label '
           "order; init is the untrained network (epoch 0).</p>"]
    if not per_run:
        return "".join(out) + missing(["run_summary", "controls", "capture_metrics"], "control comparison")
    if not any(v["noise"] is not None or v["order"] is not None for v in per_run.values()):
        out.append(missing(["controls"], "noise and order controls"))
    fig_cells, shown = [], []
    for cell, runs in cells.items():
        shown += [r for r in runs if r["run_id"] in per_run]
        values = {k: [(r["run_id"], r.get("seed"),
                       per_run[r["run_id"]][k] if per_run[r["run_id"]][k] is not None else math.nan)
                      for r in runs if r["run_id"] in per_run] for k in rd.CONTROL_KEYS}
        if any(values.values()):
            fig_cells.append({"label": rd.cell_label(cell), "values": values})
    h_opts = rd.by_setting(shown, "h_opt", _cell_name)
    h_opt_text = rd.per_run_text(shown, lambda p: f"H_opt = {p.h_opt:g}", _cell_name)
    out.append(_figure(plots.controls_figure(fig_cells, h_opts), "fig-controls", "H_raw per cell: signal vs noise, "
                       "order, init and channel re-draw controls, across seeds (hover a dot for its run). Dashed "
                       f"line: the H_eff optimum of the runs' own settings ({h_opt_text})."))
    stats = {(rd.cell_of(r), r["control"]): r for r in by_cell}
    out.append("<table><tr><th>cell</th><th>n seeds</th><th>signal</th><th>noise</th><th>order</th><th>init</th>"
               "<th>channel re-draw</th><th>signal − noise</th></tr>")
    for cell in cells:
        got = {k: stats.get((cell, k)) for k in rd.CONTROL_KEYS}
        if not any(got.values()):
            continue
        tds = "".join(f"<td class=num>{num(s['mean'])} ± {num(s['std'])}</td>" if s else f"<td>{MISSING}</td>"
                      for s in got.values())
        diff = got["signal"]["mean"] - got["noise"]["mean"] if got["signal"] and got["noise"] else None
        n = max(s["n_seeds"] for s in got.values() if s)
        out.append(f"<tr><td>{text(rd.cell_label(cell))}</td><td class=num>{n}</td>{tds}"
                   f"<td class=num>{num(diff)}</td></tr>")
    out.append("</table>")
    return "".join(out)


def _cells_index(cells: dict, pages: dict, colours: dict, folder: str) -> str:
    """Section 5 of the main page: a row per cell with its runs' statuses, states and flags, linking to the
    cell's page (its run table and a section per run; ``folder``: the pages' folder's name)."""
    out = ['<h2 id="runs">5. Runs</h2>']
    if not cells:
        return out[0] + missing(["runs", "run_summary"], "run table")
    out.append(f'<p class="meta">Each cell\'s page (in <code>{text(folder)}/</code>, beside this page) holds the '
               "table of its runs (click a column head to sort) and a section per run: its identity, settings, "
               "flags, training curves and metrics; every run is in runs.csv too (tables below).</p>"
               '<div class="wide"><table><tr><th>cell</th><th>runs</th><th>status</th><th>states</th>'
               "<th>non-stationary runs</th><th>H_eff saturated runs</th></tr>")
    for cell, runs in cells.items():
        status = Counter(str(r.get("status")) for r in runs)
        states = Counter(r.get("state") for r in runs)
        state_txt = "<br>".join(f"{state(s, colours) if s else MISSING} {n}" for s, n in states.most_common())
        flags = []
        for key in ("nonstationary", "h_eff_saturated"):
            known = [bool(r[key]) for r in runs if r.get(key) is not None]
            flags.append(f"{sum(known)} of {len(known)}" if known else MISSING)
        out.append(f'<tr><td><a href="{text(pages[cell])}">{text(rd.cell_label(cell))}</a></td>'
                   f"<td class=num data-v=\"{len(runs)}\">{len(runs)}</td>"
                   f"<td>{text(', '.join(f'{k}: {v}' for k, v in sorted(status.items())))}</td>"
                   f"<td>{state_txt}</td>" + "".join(f"<td>{f}</td>" for f in flags) + "</tr>")
    out.append("</table></div>" + legend_html())
    return "".join(out)


def _details_links(cells: dict, pages: dict) -> str:
    """Section 6 of the main page: where each cell's run sections are."""
    out = ['<h2 id="rundetails">6. Run details</h2>']
    if not cells:
        return out[0] + '<p class="muted">No runs in this store.</p>'
    return out[0] + ('<p class="meta">A section per run, on its cell\'s page: ' + " · ".join(
        f'<a href="{text(pages[c])}#rundetails">{text(rd.cell_label(c))}</a> ({len(r)} runs)'
        for c, r in cells.items()) + "</p>")


def write_report(con: duckdb.DuckDBPyConnection, out_path, *, title: str = "dynstudy report",
                 csv_dir=None) -> Path:
    """Write the study report: a main page, a folder with a page per cell, and its tables as CSV.

    Parameters
    ----------
    con : DuckDB connection in which each existing table of the store is
        queryable by its name (views or tables); absent or empty tables are
        reported as missing.
    out_path : path of the HTML file (parent folders are created). Beside it,
        ``<stem>_runs/`` (:mod:`dynstudy.analysis.report.cell_pages`) holds a page
        per cell, linked from it by relative links.
    title : heading and <title> of the page.
    csv_dir : folder for the CSV tables; default ``<out stem>_tables/``
        beside the HTML. Written: cell_variability.csv, runs.csv,
        controls_by_run.csv, controls_by_cell.csv, each only when it has rows.

    Returns
    -------
    pathlib.Path of the HTML file.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    csv_dir = Path(csv_dir) if csv_dir is not None else out_path.parent / f"{out_path.stem}_tables"
    read = rd.read_tables(con)
    counts = {t: a.num_rows for t, a in read.items()}
    runs, summary = rd.rows_of(read, "runs"), rd.rows_of(read, "run_summary")
    train = rd.rows_of(read, "train_metrics")
    capture_rows = rd.rows_of(read, "capture_metrics")
    variability = rd.rows_of(read, "cell_variability")
    claims = rd.rows_of(read, "claims")
    sens = rd.rows_of(read, "sensitivity")
    stop_summary = rd.rows_of(read, "stopping_summary")
    index = rd.run_index(runs, summary)
    cells = rd.runs_by_cell(index)
    scale = rd.accuracy_scale(train)
    stored_acc = rd.val_acc_series(train)
    accuracy = rd.accuracy_series(stored_acc, scale)
    points, recorded = rd.plateau_points(claims)
    plateaus = rd.plateau_epochs(stored_acc, scale, points)
    captures = rd.capture_series(capture_rows)
    series = rd.run_series(index, captures, accuracy)
    panels = (list(rd.TRAJECTORY_METRICS) if captures else []) + (["val_acc"] if accuracy else [])
    control_rows = rd.rows_of(read, "controls")
    per_run = rd.control_values(index, capture_rows, control_rows)
    by_cell = rd.controls_by_cell(cells, per_run)
    runs_rows = run_table(cells, accuracy, scale, plateaus)
    curves = training_curves(train, scale)
    contrasts = cell_contrasts(list(index.values()), capture_rows, control_rows, rd.rows_of(read, "geometry_metrics"))
    colours = plots.state_colours([r.get("state") for r in index.values()]
                                  + [r.get("modal_state") for r in variability])

    tables = {
        "cell_variability.csv": sorted(variability, key=lambda r: (rd.cell_of(r), str(r.get("metric")))),
        "runs.csv": runs_rows,
        "controls_by_run.csv": [{"run_id": rid, **{f"{k}_h_raw": v for k, v in vals.items()}}
                                for rid, vals in sorted(per_run.items())],
        "controls_by_cell.csv": by_cell,
        "claims.csv": claims,
        "control_contrasts.csv": contrasts,
        "sensitivity.csv": sens,
        "stopping_summary.csv": stop_summary,
        "seed_agreement_by_epoch.csv": agreement_summary(rd.rows_of(read, "seed_agreement")),
        "seed_agreement_tests.csv": agreement_tests(rd.rows_of(read, "seed_agreement")),
    }
    csv_dir.mkdir(parents=True, exist_ok=True)
    links = []
    for name, rows in tables.items():
        (csv_dir / name).unlink(missing_ok=True)  # no stale table from an earlier report
        if rows:
            _write_csv(csv_dir / name, rows)
            href = Path(os.path.relpath(csv_dir / name, out_path.parent)).as_posix()
            links.append(f'<a href="{text(href)}">{text(name)}</a> ({len(rows)} rows)')

    bands = {c: plots.band_figure([_band_cell(c, r, series, panels)], {k: plots.TRAJECTORY_PANELS[k] for k in panels})
             for c, r in cells.items()} if panels else {}
    folder = out_path.parent / f"{out_path.stem}_runs"
    temporal_rows, temporal_controls = rd.rows_of(read, "temporal_metrics"), rd.rows_of(read, "temporal_controls")
    temporal_bands = band_figures(cells, temporal_rows, temporal_controls)
    pages = write_cell_pages(folder, title, cells, {
        "main": out_path.name, "rows": runs_rows, "curves": curves,
        "series": {"trajectory": series, "temporal": temporal_series(temporal_rows)},
        "bands": {"trajectory": bands, "temporal": temporal_bands},
        "plateaus": plateaus, "colours": colours, "drift": nonstationary_epochs(capture_rows),
        "fluct": rd.fluctuation_data(capture_rows),
        "analysed": bool(summary), "plateau_html": plateau_note(points, recorded)})
    body = [
        _header(title, counts, index, cells, tests_note(contrasts, claims)),
        _integrity_notes(index, rd.unreadable(con)),
        contrasts_section(contrasts),
        claims_section(claims, plateau_note(points, recorded)),
        _cell_section(variability, scale, colours),
        _trajectory_section(cells, series, panels, plateaus, plateau_note(points, recorded), bands),
        temporal_section(cells, temporal_rows, temporal_controls, temporal_bands),
        geometry_section(cells, rd.rows_of(read, "geometry_metrics"), rd.rows_of(read, "seed_agreement"), plateaus),
        _hm_section(index),
        _controls_section(cells, per_run, by_cell),
        _cells_index(cells, pages, colours, folder.name),
        sensitivity_section(sens),
        stopping_section(con, stop_summary),
        f'<h2 id="tables">Tables</h2><p class="meta">CSV: {" · ".join(links) or "none"}</p>',
        _details_links(cells, pages),
    ]
    out_path.write_text(page_html(text(title), "".join(body)), encoding="utf-8")
    return out_path
