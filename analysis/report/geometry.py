"""The report's representation-geometry section: per cell, drift and effective rank over epochs for every seed,
how much the seeds agree (a heat map of epoch by stage), and when the drift settles beside the Psi trigger and
the accuracy plateau.

Reads the rows of ``geometry_metrics`` and ``seed_agreement`` (:mod:`dynstudy.analysis.kernels.geometry`,
:mod:`dynstudy.analysis.pipeline.seed_agreement`); a store without them gets a one-line note instead.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dynstudy.analysis.kernels.geometry import DRIFT_SETTLED
from dynstudy.analysis.report import data as rd
from dynstudy.analysis.report import plots
from dynstudy.analysis.report.bands import quantile_bands, traced
from dynstudy.analysis.report.html import MISSING, figure, num, text
from dynstudy.analysis.stats.agreement import agreement_test, agreement_verdicts, pair_mean_interval
from dynstudy.analysis.stats.variability import seed_stats

#: Rows of a cell's figure: geometry_metrics column, y label, the column of its noise control's level.
PANELS = (("cka_prev", "CKA with previous capture", "noise_cka"),
          ("effective_rank", "effective rank", "noise_effective_rank"))
NOTE = ("Each stage's representation is the matrix of its stored channels' pooled activations over the probe "
        "images. Drift: debiased linear CKA of each end-of-epoch capture with the one before (1: the "
        "representation did not move; near 0: unrelated). Effective rank: exp of the entropy of the normalised "
        "singular values (RankMe). Grey dashed lines: the same measures on i.i.d. Gaussian features of the stage's "
        "shape (for CKA, the stage against such noise: the estimator's floor, near 0). Click a seed in a legend to "
        "hide or show it in every panel. Seed agreement: CKA between two seeds' captures of the same stage at the "
        "same epoch, the mean over every pair of seeds with a jackknife-over-seeds 95% interval (3 seeds or more); "
        "the shuffled-probe control compares the seeds on different images.")


def rows_by_run(rows: list[dict]) -> dict:
    """run_id -> its geometry_metrics rows in (capture, stage) order."""
    out = defaultdict(list)
    for r in rows:
        out[str(r["run_id"])].append(r)
    return {k: sorted(v, key=lambda r: (r["capture"], r["stage"])) for k, v in out.items()}


def leads(runs: list[dict], plateaus: dict) -> dict:
    """The seeds' mean and 95% t-interval of a cell's drift settle epochs (``runs``: run_summary rows) and of
    their lead over the Psi trigger and the accuracy plateau (settle minus the other: negative = the drift
    settles first)."""
    settle = {r["run_id"]: r.get("drift_settle_epoch") for r in runs}
    out = {"settle": seed_stats([v for v in settle.values() if v is not None])}
    for name, other in (("trigger", {r["run_id"]: r.get("trigger_epoch") for r in runs}), ("plateau", plateaus)):
        out[name] = seed_stats([settle[k] - other[k] for k in settle
                                if settle[k] is not None and other.get(k) is not None])
    return out


def _lead_text(stats: dict) -> str:
    if not stats["n"]:
        return MISSING
    if stats["n"] < 2 or not np.isfinite(stats["ci_low"]):
        return f"{num(stats['mean'], 2)} epochs (n = {stats['n']}: no interval)"
    side = ("settles earlier" if stats["ci_high"] < 0 else "settles later" if stats["ci_low"] > 0
            else "not resolved")
    return (f"{num(stats['mean'], 2)} epochs [{num(stats['ci_low'], 2)}, {num(stats['ci_high'], 2)}], "
            f"n = {stats['n']}: {side}")


def _table(cells: dict, geometry: dict, plateaus: dict) -> str:
    out = ['<div class="scroll"><table><tr><th>cell</th><th>runs with geometry</th><th>final effective rank '
           "per stage (seeds' mean; noise)</th><th>drift settles (epoch)</th><th>settle − Psi trigger</th>"
           "<th>settle − accuracy plateau</th></tr>"]
    for cell, runs in cells.items():
        runs = [r for r in runs if r["run_id"] in geometry]
        if not runs:
            continue
        finals = defaultdict(list)
        for r in runs:
            rows = [g for g in geometry[r["run_id"]] if g["kind"] == "epoch"]
            last = max((g["capture"] for g in rows), default=None)
            for g in rows:
                if g["capture"] == last:
                    finals[g["stage"]].append((g["effective_rank"], g["noise_effective_rank"]))
        ranks = "; ".join(f"{text(s)} {num(np.mean([a for a, _ in v]), 3)} ({num(np.mean([b for _, b in v]), 3)})"
                          for s, v in sorted(finals.items()))
        lead = leads(runs, plateaus)
        settle = lead["settle"]
        out.append(f"<tr><td>{text(rd.cell_label(cell))}</td><td>{len(runs)}</td><td>{ranks or MISSING}</td>"
                   f"<td>{num(settle['mean'], 2) if settle['n'] else MISSING} (n = {settle['n']})</td>"
                   f"<td>{_lead_text(lead['trigger'])}</td><td>{_lead_text(lead['plateau'])}</td></tr>")
    return "".join(out) + "</table></div>"


def cell_figure(title: str, runs: list[dict], geometry: dict) -> go.Figure:
    """Drift and effective rank over epochs, a column per stage, a trace per seed (one legend entry per seed),
    the noise control's levels as grey dashed lines."""
    stages = sorted({g["stage"] for r in runs for g in geometry.get(r["run_id"], [])})
    fig = make_subplots(rows=len(PANELS), cols=max(1, len(stages)), shared_xaxes=True,
                        subplot_titles=list(stages) + [""] * len(stages) * (len(PANELS) - 1))
    colours = plots.seed_colours(len(runs))
    for i, run in enumerate(runs):
        rows = [g for g in geometry.get(run["run_id"], []) if g["kind"] in ("init", "epoch")]
        for p, (column, _, _) in enumerate(PANELS):
            for c, stage in enumerate(stages):
                mine = [g for g in rows if g["stage"] == stage]
                fig.add_trace(go.Scatter(
                    x=[g["epoch"] for g in mine], y=[rd.finite_or_none(g.get(column)) for g in mine],
                    mode="lines+markers", name=f"seed {run.get('seed')}", legendgroup=run["run_id"],
                    showlegend=p == 0 and c == 0, line={"color": colours[i]}, meta=column,
                    customdata=[[run["run_id"], run.get("seed")]] * len(mine), hovertemplate=plots.HOVER_POINT),
                    row=p + 1, col=c + 1)
    for c, stage in enumerate(stages):
        mine = [g for r in runs for g in geometry.get(r["run_id"], []) if g["stage"] == stage]
        for p, (_, _, noise) in enumerate(PANELS):
            level = [v for v in (rd.finite_or_none(g.get(noise)) for g in mine) if v is not None]
            epochs = [g["epoch"] for g in mine]
            if level and epochs:
                fig.add_trace(go.Scatter(x=[min(epochs), max(epochs)], y=[float(np.mean(level))] * 2, mode="lines",
                                         name="noise of the same shape", legendgroup="noise",
                                         showlegend=c == 0 and p == 0, line={"color": "#999", "dash": "dash"},
                                         hoverinfo="skip"), row=p + 1, col=c + 1)
    for c in range(len(stages)):
        fig.update_xaxes(title_text="epoch", dtick=1, row=len(PANELS), col=c + 1)
    for p, (_, label, _) in enumerate(PANELS):
        fig.update_yaxes(title_text=label, row=p + 1, col=1)
    return plots.finish_layout(fig, plots.ROW_HEIGHT * len(PANELS), title)


def band_geometry_figure(title: str, runs: list[dict], geometry: dict) -> go.Figure:
    """:func:`cell_figure` for a cell of many runs: per stage and measure, the runs' median over epochs with the
    bands holding 50% and 90% of them (:func:`dynstudy.analysis.report.plots.band_figure`), the noise level grey."""
    stages = sorted({g["stage"] for r in runs for g in geometry.get(r["run_id"], [])})
    rows = []
    for column, label, noise in PANELS:
        bands, lines = {}, []
        for stage in stages:
            per_run, level, epochs = [], [], []
            for r in runs:
                mine = [g for g in geometry.get(r["run_id"], [])
                        if g["stage"] == stage and g["kind"] in ("init", "epoch")]
                per_run.append(([g["epoch"] for g in mine],
                                [np.nan if rd.finite_or_none(g.get(column)) is None else g[column] for g in mine]))
                level += [v for v in (rd.finite_or_none(g.get(noise)) for g in mine) if v is not None]
                epochs += [g["epoch"] for g in mine]
            bands[stage] = quantile_bands(per_run)
            if level:
                lines.append({"panel": stage, "name": "noise of the same shape", "x": [min(epochs), max(epochs)],
                              "y": [float(np.mean(level))] * 2, "dash": "dash"})
        rows.append({"title": f"{title}: {label}", "bands": bands, "lines": lines})
    return plots.band_figure(rows, {s: (s, "") for s in stages})


def agreement_summary(rows: list[dict]) -> list[dict]:
    """Per (cell, stage, epoch): the mean CKA over seed pairs with its seed-level interval, and the shuffled-probe
    control's mean."""
    groups = defaultdict(list)
    for r in rows:
        groups[(r["model"], r["dataset"], r["optimizer"], r["stage"], r["epoch"])].append(r)
    out = []
    for (model, dataset, optimizer, stage, epoch), pairs in sorted(groups.items()):
        s = pair_mean_interval({(p["seed_a"], p["seed_b"]): p["cka"] for p in pairs})
        control = [v for v in (rd.finite_or_none(p.get("shuffled_cka")) for p in pairs) if v is not None]
        out.append({"model": model, "dataset": dataset, "optimizer": optimizer, "stage": stage, "epoch": epoch,
                    **s, "shuffled_mean": float(np.mean(control)) if control else None})
    return out


def agreement_tests(rows: list[dict]) -> list[dict]:
    """Per (cell, stage) at the cell's last epoch with pairs: do its seeds agree beyond the shuffled-probe control?
    (:func:`dynstudy.analysis.stats.agreement.agreement_test`, the report's tests as one BH family)."""
    last = {}
    for r in rows:
        cell = (r["model"], r["dataset"], r["optimizer"])
        last[cell] = max(last.get(cell, r["epoch"]), r["epoch"])
    groups = defaultdict(list)
    for r in rows:
        cell = (r["model"], r["dataset"], r["optimizer"])
        if r["epoch"] == last[cell]:
            groups[(*cell, r["stage"])].append(r)
    out = []
    for (model, dataset, optimizer, stage), pairs in sorted(groups.items()):
        cka = {(p["seed_a"], p["seed_b"]): p["cka"] for p in pairs}
        control = {(p["seed_a"], p["seed_b"]): p["shuffled_cka"] for p in pairs}
        out.append({"model": model, "dataset": dataset, "optimizer": optimizer, "stage": stage,
                    "epoch": last[(model, dataset, optimizer)], "cka_mean": pair_mean_interval(cka)["mean"],
                    **agreement_test(cka, control)})
    return agreement_verdicts(out)


def _tests_table(tests: list[dict]) -> str:
    out = ['<div class="scroll"><table><tr><th>cell</th><th>stage</th><th>epoch</th><th>seeds (pairs)</th>'
           "<th>CKA, pairs' mean</th><th>CKA − shuffled probe [95%]</th><th>p · p<sub>BH</sub></th>"
           "<th>verdict</th></tr>"]
    for r in tests:
        interval = (f" [{num(r['ci_low'], 3)}, {num(r['ci_high'], 3)}]" if r["ci_low"] is not None else "")
        p = (f"{num(r['p_value'], 3)} · {num(r['p_adjusted'], 3)}" if r["p_value"] is not None else MISSING)
        detail = f" <small>({text(r['detail'])})</small>" if r.get("detail") else ""
        out.append(f"<tr><td>{text(rd.cell_label((r['model'], r['dataset'], r['optimizer'])))}</td>"
                   f"<td>{text(r['stage'])}</td><td>{r['epoch']}</td><td>{r['n_seeds']} ({r['n_pairs']})</td>"
                   f"<td>{num(r['cka_mean'], 3)}</td><td>{num(r['mean_diff'], 3)}{interval}</td><td>{p}</td>"
                   f"<td><b>{text(r['verdict'])}</b>{detail}</td></tr>")
    return "".join(out) + "</table></div>"


def agreement_figure(title: str, summary: list[dict]) -> go.Figure:
    """Heat map of a cell's seed agreement: epoch by stage, the mean CKA over pairs (hover: interval, control)."""
    stages = sorted({r["stage"] for r in summary})
    epochs = sorted({r["epoch"] for r in summary})
    at = {(r["stage"], r["epoch"]): r for r in summary}
    z = [[rd.finite_or_none(at.get((s, e), {}).get("mean")) for e in epochs] for s in stages]
    hover = [[_hover(at.get((s, e))) for e in epochs] for s in stages]
    fig = go.Figure(go.Heatmap(x=epochs, y=stages, z=z, zmin=0, zmax=1, colorscale="Viridis", text=hover,
                               hovertemplate="epoch %{x}<br>%{y}<br>%{text}<extra></extra>",
                               colorbar={"title": "CKA"}))
    fig.update_xaxes(title_text="epoch", dtick=1)
    return plots.finish_layout(fig, plots.ROW_HEIGHT, title)


def _hover(r: dict | None) -> str:
    if r is None or r["mean"] is None:
        return "no pair"
    interval = (f"[{num(r['ci_low'], 3)}, {num(r['ci_high'], 3)}]" if r["ci_low"] is not None
                else "(no interval: fewer than 3 seeds)")
    return (f"CKA {num(r['mean'], 3)} {interval}, {r['n_pairs']} pairs of {r['n_seeds']} seeds; "
            f"shuffled probe {num(r['shuffled_mean'], 3)}")


def geometry_section(cells: dict, geometry_rows: list[dict], agreement_rows: list[dict], plateaus: dict) -> str:
    """HTML of the geometry section: the per-cell table, then per cell its drift and rank figure and its
    seed-agreement heat map."""
    out = ['<h2 id="geometry">2c. Representation geometry: drift, rank and seed agreement</h2>']
    if not geometry_rows:
        return out[0] + ('<p class="muted">No geometry in this store: run <code>dynstudy analyze</code> (it '
                         "computes the geometry of every stored stage).</p>")
    geometry = rows_by_run(geometry_rows)
    summary = defaultdict(list)
    for r in agreement_summary(agreement_rows):
        summary[(r["model"], r["dataset"], r["optimizer"])].append(r)
    out.append(f'<p class="note">{text(NOTE)}</p>')
    out.append(f'<p class="meta">The drift settles at the first epoch from which the stages\' mean CKA with the '
               f"previous capture stays at or above {DRIFT_SETTLED:g} to the run's end; its lead over the Psi "
               "trigger and the accuracy plateau is settle minus the other, in epochs (negative: the drift settles "
               "first), with the seeds' 95% t-interval. A settle epoch says when the representation stops "
               "moving, not that it is good.</p>" + _table(cells, geometry, plateaus))
    tests = agreement_tests(agreement_rows)
    if tests:
        out.append('<p class="meta">Do the seeds agree beyond the shuffled-probe control? At each cell\'s last '
                   "epoch, per stage: the pairs' CKA minus the same pairs' CKA on different images, its "
                   "jackknife-over-seeds 95% interval and t-test (3 seeds or more), the tests of this report "
                   f"adjusted as one Benjamini-Hochberg family ({sum(t['p_value'] is not None for t in tests)} "
                   "tests). \"within\": the seeds cannot tell their agreement from the control's, not evidence "
                   "that they disagree.</p>" + _tests_table(tests))
    for n, (cell, runs) in enumerate(cells.items()):
        runs = [r for r in runs if r["run_id"] in geometry]
        if not runs:
            continue
        label = rd.cell_label(cell)
        if traced(len(runs)):
            fig, how = cell_figure(f"Geometry: {label}", runs, geometry), ""
        else:
            fig = band_geometry_figure(label, runs, geometry)
            how = (f" ({len(runs)} runs, as their distribution: the median and the bands holding 50% and 90% of "
                   "the runs at each epoch)")
        out.append(figure(plots.figure_html(fig, f"fig-geometry-{n}"),
                          f"Drift and effective rank per stage: {label}{how}."))
        if summary.get(cell):
            out.append(figure(plots.figure_html(agreement_figure(f"Seed agreement: {label}", summary[cell]),
                                                f"fig-agreement-{n}"),
                              f"Seed agreement: {label}, the mean CKA over every pair of seeds at each epoch "
                              "and stage (hover: its interval and the shuffled-probe control)."))
    return "".join(out)
