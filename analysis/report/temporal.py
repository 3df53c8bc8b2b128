"""The report's temporal-protocol section: per cell, the metrics over training steps for every seed, with the
surrogates' levels, beside the pseudo-time values.

Reads the rows of ``temporal_metrics`` and ``temporal_controls``
(:mod:`dynstudy.analysis.kernels.temporal`); a store without every-N-step captures gets a
one-line note instead. Non-stationary windows (H_raw above 1: a drift) are drawn with crossed markers; a cell
of more than :data:`dynstudy.analysis.report.bands.MAX_TRACED_RUNS` runs is drawn as their distribution
(median, 50% and 90% bands per window), its non-stationary windows counted in the table. The table counts the
non-stationary and H_eff-saturated runs and windows
(:mod:`dynstudy.analysis.report.flags`).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dynstudy.analysis.kernels.dfa_fit import BEYOND_NULL_P, FIT_FLAGS, MIN_R2, MIN_SPAN
from dynstudy.analysis.kernels.dynamics import NONSTATIONARY_ALPHA
from dynstudy.analysis.kernels.temporal import CONTROLS, WHOLE_RUN
from dynstudy.analysis.report import data as rd
from dynstudy.analysis.report import plots
from dynstudy.analysis.report.bands import quantile_bands, traced
from dynstudy.analysis.report.flags import NONSTATIONARY_TEXT, legend_html
from dynstudy.analysis.report.html import MISSING, figure, mean_std, text

#: Panels of a cell's temporal figure: temporal_metrics column, title, y label, surrogates drawn.
PANELS = (("h_eff", "Integration H_eff per window", "H_eff (0..1)", True),
          ("metastability", "Metastability M per window", "M (std of R(t))", True),
          ("psi", "Psi per window", "Psi (z units)", False),
          ("volatility", "Psi volatility", "rolling std of Psi", False))
SURROGATE_STYLE = {"shuffled": ("time-shuffled surrogate", "dash"),
                   "phase_randomised": ("phase-randomised surrogate", "dot"),
                   "iaaft": ("IAAFT surrogate", "dashdot")}
NOTE = ("The temporal protocol: each metric channel's mean activation over the step probe, as a series over "
        "training time (one point per optimiser step captured), analysed with the same kernels as pseudo-time over "
        "sliding windows. Each window's point sits at its last step. Grey lines: the seeds' mean of the same "
        "metric on a time-shuffled surrogate (temporal order destroyed: H near 0.5), a phase-randomised one "
        "(each channel's spectrum kept) and an IAAFT one (each channel's values and, nearly, its spectrum kept); a "
        "metric that sits on its surrogate says nothing about temporal structure beyond the spectrum. Dashed "
        "vertical line: the run's temporal trigger; dashed horizontal line in the volatility panel: its threshold. "
        "Both follow each run's own settings, which every figure's caption states (in the temporal protocol the "
        "rule counts windows, not epochs). Crossed markers: non-stationary windows, "
        f"whose H_raw is above {NONSTATIONARY_ALPHA:g}; {NONSTATIONARY_TEXT}")
#: Marker of a window: (plotly symbol, words) for a stationary (or unknown) and a non-stationary one.
WINDOW_MARKERS = {False: ("circle", ""), True: ("x", f"<br>non-stationary: alpha > {NONSTATIONARY_ALPHA:g}, a drift")}


def _by_run(rows: list[dict]) -> dict:
    out = defaultdict(list)
    for r in rows:
        out[str(r["run_id"])].append(r)
    return {k: sorted(v, key=lambda r: r["window"]) for k, v in out.items()}


def _surrogate_levels(runs: list[dict], controls: dict, ends: dict) -> dict:
    """(control, metric) -> (end steps, seed mean per window) over the cell's runs, by window number."""
    out = {}
    for name in CONTROLS:
        for metric, *_ in (p for p in PANELS if p[3]):  # the panels that draw surrogates
            acc = defaultdict(list)
            for info in runs:
                for c in controls.get(info["run_id"], []):
                    v = rd.finite_or_none(c.get(metric))
                    if c["control"] == name and c["window"] != WHOLE_RUN and v is not None:
                        acc[c["window"]].append(v)
            windows = sorted(acc)
            out[(name, metric)] = ([ends.get(w) for w in windows], [float(np.mean(acc[w])) for w in windows])
    return out


def seed_label(info: dict) -> str:
    """A run as the temporal figure's legend names it."""
    return f"seed {info.get('seed')}"


def trigger_rule(runs: list[dict]) -> str:
    """The temporal trigger's rule of ``runs`` (run infos), in words: one rule, or each with its seeds."""
    return rd.per_run_text(runs, lambda p: p.trigger_text("windows"), seed_label)


def temporal_figure(title: str, runs: list[dict], metrics: dict, controls: dict) -> go.Figure:
    """One cell's temporal figure: a panel per :data:`PANELS`, a line per seed over the windows' end steps.

    The volatility panel carries the runs' own threshold
    (:func:`dynstudy.analysis.report.data.params_of`), a line per threshold when they differ.
    """
    fig = make_subplots(rows=1, cols=len(PANELS), subplot_titles=[p[1] for p in PANELS], horizontal_spacing=0.06)
    ends = {}
    for info in runs:
        for r in metrics.get(info["run_id"], []):
            if r["window"] != WHOLE_RUN:
                ends.setdefault(r["window"], r["end_step"])
    levels = _surrogate_levels(runs, controls, ends)
    shown = set()
    for col, (metric, _, ylabel, surrogates) in enumerate(PANELS, start=1):
        for info, colour in zip(runs, plots.seed_colours(len(runs))):
            rows = [r for r in metrics.get(info["run_id"], []) if r["window"] != WHOLE_RUN]
            x = [r["end_step"] for r in rows]
            y = [np.nan if rd.finite_or_none(r.get(metric)) is None else r[metric] for r in rows]
            group = str(info["run_id"])
            marks = [WINDOW_MARKERS[bool(r.get("nonstationary"))] for r in rows]
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="lines+markers", name=f"seed {text(info.get('seed'))}", legendgroup=group,
                showlegend=group not in shown, line={"color": colour, "width": 1.5},
                marker={"size": 5, "symbol": [m[0] for m in marks]},
                customdata=[[text(group), text(info.get("seed")), r["start_step"],
                             r["end_epoch"], m[1]] for r, m in zip(rows, marks)],
                hovertemplate=("run %{customdata[0]}<br>seed %{customdata[1]}<br>steps %{customdata[2]}-%{x} "
                               f"(epoch %{{customdata[3]}})<br>{metric}: %{{y:.4g}}%{{customdata[4]}}<extra></extra>")),
                row=1, col=col)
            shown.add(group)
            trig = info.get("temporal_trigger_step")
            finite = [v for v in y if np.isfinite(v)]
            if trig is not None and finite:
                fig.add_trace(plots.vertical_line(trig, min(finite), max(finite), colour, "dash", group,
                                              f"run {text(group)}: temporal trigger at step {trig}"),
                              row=1, col=col)
        if surrogates:
            for name in CONTROLS:
                label, dash = SURROGATE_STYLE[name]
                x, y = levels[(name, metric)]
                fig.add_trace(go.Scatter(x=x, y=y, mode="lines", name=label, legendgroup=name,
                                         showlegend=name not in shown,
                                         line={"color": "#555", "dash": dash, "width": 1.2},
                                         hovertemplate=f"{label}, seed mean<br>step %{{x}}<br>{metric}: %{{y:.4g}}"
                                                       "<extra></extra>"), row=1, col=col)
                shown.add(name)
        if metric == "volatility":
            plots.reference_lines(fig, rd.by_setting(runs, "vol_threshold", seed_label), "threshold", 1, col)
        fig.update_xaxes(title_text="optimiser step", row=1, col=col)
        fig.update_yaxes(title_text=ylabel, row=1, col=col)
    fig.update_annotations(font_size=11)
    return plots.finish_layout(fig, 330, text(title))


def _share(flags) -> str:
    """"k of n runs" flagged among the runs whose flag is known, and how many are unknown; :data:`MISSING` when
    none is known."""
    flags = list(flags)
    known = [f for f in flags if f is not None]
    if not known:
        return MISSING
    unknown = len(flags) - len(known)
    return f"{sum(known)} of {len(known)} runs" + (f" ({unknown} unknown)" if unknown else "")


def _nonstationary(runs: list[dict], metrics: dict) -> str:
    """The cell's non-stationary runs (whole-run flag) and windows (the windows' flags in temporal_metrics)."""
    runs_text = _share(r.get("temporal_nonstationary") for r in runs)
    windows = [w.get("nonstationary") for r in runs for w in metrics.get(r["run_id"], []) if w["window"] != WHOLE_RUN]
    known = [w for w in windows if w is not None]
    if known:
        runs_text += f"; {sum(known)} of {len(known)} windows"
    return runs_text


#: Positions (after cell and seeds) of the table's flag columns: text that wraps, not a number.
FLAG_COLUMNS = (4, 5)


def _table(cells: dict, metrics: dict, controls: dict) -> str:
    head = ("cell", "seeds", "H_raw over time", "shuffled", "phase-randomised", "H_raw pseudo-time",
            "non-stationary", "H_eff saturated", "M over time", "M shuffled", "temporal state", "trigger step")
    out = ['<div class="wide"><table><tr>' + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for cell, runs in cells.items():
        runs = [r for r in runs if r["run_id"] in metrics]
        if not runs:
            continue
        whole = {name: [c for r in runs for c in controls.get(r["run_id"], [])
                        if c["control"] == name and c["window"] == WHOLE_RUN] for name in CONTROLS}
        states = sorted({str(r.get("temporal_state")) for r in runs if r.get("temporal_state")})
        triggers = [r.get("temporal_trigger_step") for r in runs]
        fired = [t for t in triggers if t is not None]
        cols = (mean_std(r.get("temporal_h_raw") for r in runs), mean_std(c["h_raw"] for c in whole["shuffled"]),
                mean_std(c["h_raw"] for c in whole["phase_randomised"]), mean_std(r.get("h_raw_mean") for r in runs),
                _nonstationary(runs, metrics), _share(r.get("temporal_h_eff_saturated") for r in runs),
                mean_std(r.get("temporal_metastability") for r in runs),
                mean_std(c["metastability"] for c in whole["shuffled"]), text(", ".join(states)) or MISSING,
                f"fired in {len(fired)} of {len(runs)}" + (f": {', '.join(str(t) for t in fired)}" if fired else ""))
        out.append(f"<tr><td>{text(rd.cell_label(cell))}</td><td class=num>{len(runs)}</td>"
                   + "".join(f"<td>{c}</td>" if i in FLAG_COLUMNS else f"<td class=num>{c}</td>"
                             for i, c in enumerate(cols)) + "</tr>")
    out.append("</table></div>")
    return "".join(out)


def temporal_series(metric_rows: list[dict]) -> dict:
    """run_id -> {metric of :data:`PANELS`: (window end steps, values)} of its windows (the whole run left out)."""
    out = {}
    for rid, rows in _by_run(metric_rows).items():
        rows = [r for r in rows if r["window"] != WHOLE_RUN]
        out[rid] = {m: ([r["end_step"] for r in rows],
                        [np.nan if rd.finite_or_none(r.get(m)) is None else r[m] for r in rows]) for m, *_ in PANELS}
    return out


def band_figures(cells: dict, metric_rows: list[dict], control_rows: list[dict]) -> dict:
    """cell -> the distribution figure of its runs' temporal series (:func:`band_cell`), for each cell with one."""
    metrics, controls = _by_run(metric_rows), _by_run(control_rows)
    out = {}
    for cell, runs in cells.items():
        runs = [r for r in runs if r["run_id"] in metrics]
        if runs:
            out[cell] = plots.band_figure([band_cell(rd.cell_label(cell), runs, metrics, controls)],
                                          {p[0]: (p[1], p[2]) for p in PANELS}, "optimiser step")
    return out


def fit_flag_note(metric_rows: list[dict], control_rows: list[dict]) -> str:
    """A paragraph: how many windows carry each DFA fit flag, and how many windows' H_raw and M lie beyond their
    phase-randomised and IAAFT nulls ("" for an analysis without these columns)."""
    windows = [r for r in metric_rows if r.get("window") != WHOLE_RUN and "fit_flags" in r]
    if not windows:
        return ""
    counts = {flag: sum(flag in (r.get("fit_flags") or "").split(";") for r in windows) for flag in FIT_FLAGS}
    parts = [f"{flag} in {n} of {len(windows)} windows" for flag, n in counts.items()]
    beyond = []
    for control in ("phase_randomised", "iaaft"):
        rows = [c for c in control_rows if c.get("control") == control and c.get("window") != WHOLE_RUN
                and c.get("h_raw_p") is not None]
        if rows:
            n_h = sum(c["h_raw_p"] <= BEYOND_NULL_P for c in rows)
            n_m = sum(c.get("m_p") is not None and c["m_p"] <= BEYOND_NULL_P for c in rows)
            beyond.append(f"{control}: H_raw {n_h}, M {n_m} of {len(rows)} windows beyond the null of "
                          f"{rows[0].get('null_k')} surrogates")
    return (f'<p class="meta">DFA fit flags of the windows: {text("; ".join(parts))} (narrow_span: scales spanning '
            f"less than {MIN_SPAN:g}x, so each window's exponent is wide: docs/metrics.md gives its spread; "
            f"poor_fit: R² below {MIN_R2:g}). Against their own surrogates at p ≤ {BEYOND_NULL_P:g}: "
            f"{text('; '.join(beyond)) or 'no nulls (analysis.null_k = 0)'}.</p>")


def temporal_section(cells: dict, metric_rows: list[dict], control_rows: list[dict], bands: dict | None = None) -> str:
    """HTML of the temporal section: the whole-run table, then a figure per cell with a temporal series (a cell of
    many runs: its distribution, from ``bands`` of :func:`band_figures` where given)."""
    out = ['<h2 id="temporal">2b. The temporal protocol: dynamics over training steps</h2>']
    if not metric_rows:
        return out[0] + ('<p class="muted">No temporal series in this store: a study needs '
                         "<code>capture.every_n_steps</code> (the demo preset sets it).</p>")
    metrics, controls = _by_run(metric_rows), _by_run(control_rows)
    out.append(f'<p class="note">{text(NOTE)}</p>')
    out.append('<p class="meta">Whole run, seeds\' mean ± std: the temporal H_raw beside its surrogates and the '
               "pseudo-time H_raw of the same runs; the runs whose whole series is non-stationary or whose temporal "
               "H_eff is saturated, and the non-stationary windows.</p>" + _table(cells, metrics, controls)
               + legend_html() + fit_flag_note(metric_rows, control_rows))
    for n, (cell, runs) in enumerate(cells.items()):
        runs = [r for r in runs if r["run_id"] in metrics]
        if runs and traced(len(runs)):
            fig = temporal_figure(rd.cell_label(cell), runs, metrics, controls)
            caption = (f"Temporal metrics: {rd.cell_label(cell)} (runs {', '.join(r['run_id'] for r in runs)}). "
                       f"Temporal trigger: {trigger_rule(runs)}.")
        elif runs:
            fig = (bands or {}).get(cell) or band_figures({cell: runs}, metric_rows, control_rows)[cell]
            fired = [r.get("temporal_trigger_step") for r in runs if r.get("temporal_trigger_step") is not None]
            caption = (f"Temporal metrics: {rd.cell_label(cell)} ({len(runs)} runs, as their distribution: the "
                       "median and the bands holding 50% and 90% of the runs at each window). Temporal trigger: "
                       f"{trigger_rule(runs)}; it fired in {len(fired)} of {len(runs)} runs.")
        else:
            continue
        out.append(figure(plots.figure_html(fig, f"fig-temporal-{n}"), caption))
    return "".join(out)


def band_cell(title: str, runs: list[dict], metrics: dict, controls: dict) -> dict:
    """A cell of :func:`dynstudy.analysis.report.plots.band_figure`: per panel the distribution of its runs'
    windows (at their end steps), the surrogates' seed means as grey lines, the volatility threshold."""
    ends = {}
    for info in runs:
        for r in metrics.get(info["run_id"], []):
            if r["window"] != WHOLE_RUN:
                ends.setdefault(r["window"], r["end_step"])
    bands = {}
    for metric, *_ in PANELS:
        per_run = []
        for info in runs:
            rows = [r for r in metrics.get(info["run_id"], []) if r["window"] != WHOLE_RUN]
            per_run.append(([r["end_step"] for r in rows],
                            [np.nan if rd.finite_or_none(r.get(metric)) is None else r[metric] for r in rows]))
        bands[metric] = quantile_bands(per_run)
    lines = [{"panel": metric, "name": f"{SURROGATE_STYLE[name][0]}, seed mean", "x": x, "y": y,
              "dash": SURROGATE_STYLE[name][1]}
             for (name, metric), (x, y) in _surrogate_levels(runs, controls, ends).items()]
    thresholds = {v: [f"{len(ids)} runs"] for v, ids in rd.by_setting(runs, "vol_threshold").items()}
    return {"title": title, "bands": bands, "lines": lines, "thresholds": {"volatility": thresholds}}
