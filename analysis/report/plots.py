"""Figures of the study report, as interactive plotly figures.

Every function returns a :class:`plotly.graph_objects.Figure` built from
plain Python structures prepared by :mod:`dynstudy.analysis.report.build`; nothing here
touches DuckDB. :func:`figure_html` turns a figure into a ``<div>`` and the
script that draws it with the plotly.js the report inlines once
(:func:`plotly_js`), so the page works offline.

Interaction, the same in every figure: hovering a point names its run, seed,
epoch and value; drag to zoom, double-click to reset; clicking a legend entry
hides or shows that seed (or state, or control) in every panel of the
figure, double-clicking isolates it.

Strings from the data are HTML-escaped by :func:`dynstudy.analysis.report.html.text`
before plotly sees them (plotly reads a small subset of HTML in labels).
"""
from __future__ import annotations

import json
import math

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dynstudy.analysis.report.bands import MAX_TRACED_RUNS, MEDIAN, QUANTILES, traced
from dynstudy.analysis.report.html import UNCLASSIFIED_COLOUR, text

#: Taxonomy states in rule order, each with a fixed colour.
STATE_COLOURS = {
    "Stable Convergent": "#1f77b4",
    "Rigidly Synchronised": "#d62728",
    "Metastable High-Integration": "#2ca02c",
    "Transitional": "#ff7f0e",
    "Partial Integration": "#9467bd",
}
#: Colours for state labels outside the taxonomy (a changed rule, a custom label).
OTHER_STATE_COLOURS = ("#8c564b", "#e377c2", "#bcbd22", "#17becf")
#: Seed colours (matplotlib's tab10); more seeds than this cycle through a viridis ramp.
SEED_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                "#bcbd22", "#17becf")
DATASET_SYMBOLS = ("circle", "square", "triangle-up", "diamond", "triangle-down", "cross", "x", "star",
                   "pentagon", "hexagon")
#: Series of the controls chart: key, label, colour.
CONTROL_BARS = (
    ("signal", "signal (trained)", "#1f77b4"),
    ("noise", "noise control", "#7f7f7f"),
    ("order", "order control", "#ff7f0e"),
    ("init", "init (epoch 0)", "#2ca02c"),
    ("channel_draw", "channel re-draw", "#9467bd"),
)
#: Trajectory panels: key, panel title, y label.
TRAJECTORY_PANELS = {
    "h_eff": ("Integration H_eff", "H_eff (0..1)"),
    "metastability": ("Metastability M", "M (std of R(t))"),
    "psi": ("Stability index Psi", "Psi (z units)"),
    "volatility": ("Psi volatility", "rolling std of Psi"),
    "val_acc": ("Validation accuracy", "val acc (%)"),
}
#: With a single panel (accuracy only) the cells wrap into a grid this many columns wide.
SINGLE_PANEL_COLUMNS = 4
#: Height in pixels of one row of panels.
ROW_HEIGHT = 270
#: Options of every figure: fills its container's width, no plotly logo, no link to plotly's website.
PLOT_CONFIG = {"responsive": True, "displaylogo": False, "showLink": False, "showSendToCloud": False}
HOVER_POINT = "run %{customdata[0]}<br>seed %{customdata[1]}<br>epoch %{x}<br>%{fullData.meta}: %{y:.4g}<extra></extra>"


def plotly_js() -> str:
    """The plotly.js bundle shipped with the plotly package (inlined once per report)."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs()


def figure_html(fig: go.Figure, div_id: str) -> str:
    """A ``<div class="plot">`` and the inline script that draws ``fig`` into it.

    The figure's JSON comes from plotly's encoder, which writes ``<`` and
    ``>`` as ``\\u003c`` and ``\\u003e``, so no string of the data can close
    the script element.
    """
    spec = fig.to_json()
    height = int(fig.layout.height or 450)
    return (f'<div class="plot" id="{div_id}" style="height:{height}px"></div>'
            f"<script>(function(){{var f={spec};Plotly.newPlot({json.dumps(div_id)},f.data,f.layout,"
            f"{json.dumps(PLOT_CONFIG)});}})();</script>")


def seed_colours(n: int) -> list[str]:
    """``n`` distinguishable colours: tab10, or a viridis ramp beyond ten."""
    if n <= len(SEED_COLOURS):
        return list(SEED_COLOURS[:n])
    from plotly.colors import sample_colorscale

    return sample_colorscale("Viridis", list(np.linspace(0, 0.95, n)))


def _finite(x, y) -> tuple:
    """``x`` and ``y`` as float arrays with the non-finite ``y`` points dropped."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def finish_layout(fig: go.Figure, height: int, title: str | None = None) -> go.Figure:
    """The report's common look: bare template, light grids, closest-point hover, ``height`` px, a title."""
    fig.update_layout(template="none", height=height, margin={"l": 60, "r": 20, "t": 70 if title else 50, "b": 50},
                      hovermode="closest", legend={"font": {"size": 11}}, font={"size": 11},
                      title={"text": title, "font": {"size": 13}} if title else None)
    fig.update_xaxes(showgrid=True, gridcolor="#eee", zeroline=False)
    fig.update_yaxes(showgrid=True, gridcolor="#eee", zeroline=False)
    return fig


def _trajectory_slots(cells: list[dict], panels: list[str]) -> tuple[int, int, list]:
    """Grid shape and (row, col, cell index, panel) of every panel, 1-based rows and columns."""
    if len(panels) == 1:
        n_cols = min(SINGLE_PANEL_COLUMNS, len(cells))
        n_rows = math.ceil(len(cells) / n_cols)
        slots = [(i // n_cols + 1, i % n_cols + 1, i, panels[0]) for i in range(len(cells))]
    else:
        n_rows, n_cols = len(cells), len(panels)
        slots = [(i + 1, j + 1, i, key) for i in range(len(cells)) for j, key in enumerate(panels)]
    return n_rows, n_cols, slots


def vertical_line(x: float, lo: float, hi: float, colour: str, dash: str, group: str, hover: str) -> go.Scatter:
    """A vertical line from ``lo`` to ``hi`` at ``x``, in ``group`` (so it hides with its seed)."""
    return go.Scatter(x=[x, x], y=[lo, hi], mode="lines", line={"color": colour, "dash": dash, "width": 1},
                      legendgroup=group, showlegend=False, hovertemplate=f"{hover}<extra></extra>")


def reference_lines(fig: go.Figure, values: dict, name: str, row=None, col=None, annotate_one: bool = False) -> None:
    """Dashed horizontal lines at a setting's ``values`` ({value: labels of the runs with it}).

    One value: one line, annotated "``name`` = value" with ``annotate_one``
    (else the caption names it). Several: a line per value, each annotated
    with the value and the runs (or cells) that use it.
    """
    for value, labels in values.items():
        note = f"{name} = {value:g}" + (f": {', '.join(labels)}" if len(values) > 1 else "")
        # no annotation at all without a text: plotly.js would draw its placeholder, "new text"
        label = ({"annotation_text": text(note), "annotation_position": "top left", "annotation_font_size": 9}
                 if annotate_one or len(values) > 1 else {})
        fig.add_hline(y=value, line={"color": "black", "dash": "dash", "width": 1}, row=row, col=col,
                      exclude_empty_subplots=False, **label)


def trajectory_figure(cells: list[dict], panels: list[str]) -> go.Figure:
    """Small multiples of per-epoch series: one row per cell, one column per panel.

    Parameters
    ----------
    cells : one dict per cell, with ``title`` (str) and ``runs``: a list of
        dicts with ``run_id``, ``seed``, ``label`` (str), ``series`` ({panel
        key: (epochs, values)}), ``trigger`` (epoch of the volatility trigger
        or None), ``vol_threshold`` (the run's volatility threshold) and
        ``plateau`` (its accuracy plateau epoch, or None). The seeds of a
        cell share each panel's axes.
    panels : keys of :data:`TRAJECTORY_PANELS`, in column order. With a
        single panel the cells wrap into rows of :data:`SINGLE_PANEL_COLUMNS`.

    Returns
    -------
    The figure. Each run is one legend entry that shows or hides it in every
    panel; the volatility panel carries its runs' threshold (a line per
    threshold, labelled with its seeds, when they differ); a run's trigger
    is a dashed vertical line in every panel, its plateau a dotted line and
    a star on the accuracy panel.
    """
    n_rows, n_cols, slots = _trajectory_slots(cells, panels)
    titles = [""] * (n_rows * n_cols)
    for row, col, i, key in slots:
        name = TRAJECTORY_PANELS[key][0]
        first = len(panels) == 1 or col == 1
        titles[(row - 1) * n_cols + col - 1] = f"{text(cells[i]['title'])}<br>{name}" if first else name
    fig = make_subplots(rows=n_rows, cols=n_cols, subplot_titles=titles, horizontal_spacing=0.06,
                        vertical_spacing=min(0.3 / n_rows, 0.12) if n_rows > 1 else 0.1)
    several = len(cells) > 1 and len(panels) == 1
    shown = set()
    for row, col, i, key in slots:
        cell = cells[i]
        xs = [float(np.nanmax(np.asarray(x, dtype=float))) for r in cell["runs"]
              for x, _ in r["series"].values() if len(x)]
        ys = [_finite(*r["series"].get(key, ([], []))) for r in cell["runs"]]
        yall = np.concatenate([y for _, y in ys]) if ys else np.array([])
        lo, hi = (float(yall.min()), float(yall.max())) if len(yall) else (0.0, 1.0)
        if key == "volatility":
            thresholds = {}
            for run in cell["runs"]:
                thresholds.setdefault(float(run["vol_threshold"]), []).append(str(run["label"]))
            lo, hi = 0.0, max([hi] + [t * 1.2 for t in thresholds])
            reference_lines(fig, dict(sorted(thresholds.items())), "threshold", row, col)
            fig.update_yaxes(range=[0.0, hi * 1.05], row=row, col=col)
        fig.update_xaxes(title_text="epoch", range=[-0.3, max(xs + [1.0]) + 0.3], dtick=None, row=row, col=col)
        fig.update_yaxes(title_text=TRAJECTORY_PANELS[key][1], row=row, col=col)
        for run, colour, (x, y) in zip(cell["runs"], seed_colours(len(cell["runs"])), ys):
            group = str(run["run_id"])
            label = (f"{text(cell['title'])} · " if several else "") + text(run["label"])
            fig.add_trace(go.Scatter(
                x=x, y=y, mode="lines+markers" if len(x) <= 30 else "lines", name=label, legendgroup=group,
                showlegend=group not in shown, line={"color": colour, "width": 1.5}, marker={"size": 5},
                customdata=[[text(run["run_id"]), text(run.get("seed"))]] * len(x),
                meta=TRAJECTORY_PANELS[key][0],
                hovertemplate=HOVER_POINT), row=row, col=col)
            shown.add(group)
            if run.get("trigger") is not None:
                fig.add_trace(vertical_line(run["trigger"], lo, hi, colour, "dash", group,
                                        f"run {text(run['run_id'])}: volatility trigger at epoch "
                                        f"{run['trigger']}"),
                              row=row, col=col)
            if key == "val_acc" and run.get("plateau") is not None:
                hover = f"run {text(run['run_id'])}: accuracy plateau at epoch {run['plateau']}"
                fig.add_trace(vertical_line(run["plateau"], lo, hi, colour, "dot", group, hover), row=row, col=col)
                at = x == run["plateau"]
                if at.any():
                    fig.add_trace(go.Scatter(x=x[at], y=y[at], mode="markers", legendgroup=group, showlegend=False,
                                             marker={"symbol": "star", "size": 13, "color": colour,
                                                     "line": {"color": "black", "width": 0.5}},
                                             hovertemplate=f"{hover}<extra></extra>"), row=row, col=col)
        if not len(yall):
            fig.add_annotation(text="no data", showarrow=False, font={"color": "grey"}, xref="x domain",
                               yref="y domain", x=0.5, y=0.5, row=row, col=col)
    fig.update_annotations(font_size=11)
    return finish_layout(fig, ROW_HEIGHT * n_rows + 90)


#: Fill of the 90% and the 50% band, and the median's colour.
BAND_COLOURS = {"90% of runs": "rgba(31,119,180,0.15)", "50% of runs": "rgba(31,119,180,0.35)", "median": "#1f4e79"}
BAND_HOVER = ("%{fullData.meta[2]}: %{x}<br>median %{y:.4g}<br>50% of runs: %{customdata[1]:.4g} to "
              "%{customdata[2]:.4g}<br>90% of runs: %{customdata[3]:.4g} to %{customdata[4]:.4g}<br>"
              "runs with a value: %{customdata[0]}<extra></extra>")


def _band_traces(fig: go.Figure, key: str, band: tuple, x_title: str, row: int, col: int, legend: bool) -> None:
    """The 90% band, the 50% band and the median of one panel (``band``: (x, q, n) of
    :func:`dynstudy.analysis.report.bands.quantile_bands`)."""
    x, q, n = band
    for lo, hi, name in ((0, 4, "90% of runs"), (1, 3, "50% of runs")):
        fig.add_trace(go.Scatter(x=x, y=q[lo], mode="lines", line={"width": 0}, legendgroup=name, showlegend=False,
                                 hoverinfo="skip"), row=row, col=col)
        fig.add_trace(go.Scatter(x=x, y=q[hi], mode="lines", line={"width": 0}, fill="tonexty", name=name,
                                 fillcolor=BAND_COLOURS[name], legendgroup=name, showlegend=legend,
                                 hoverinfo="skip"), row=row, col=col)
    fig.add_trace(go.Scatter(x=x, y=q[MEDIAN], mode="lines+markers" if len(x) <= 30 else "lines", name="median",
                             legendgroup="median", showlegend=legend, marker={"size": 4},
                             line={"color": BAND_COLOURS["median"], "width": 2},
                             customdata=np.column_stack([n, q[1], q[3], q[0], q[4]]) if len(x) else None,
                             meta=[key, "median", x_title], hovertemplate=BAND_HOVER), row=row, col=col)


def band_figure(cells: list[dict], panels: dict, x_title: str = "epoch") -> go.Figure:
    """Small multiples of many runs' series as distributions: one row per cell, one column per panel.

    Parameters
    ----------
    cells : one dict per cell, with ``title`` (str), ``bands`` ({panel key: (x, q, n)} of
        :func:`dynstudy.analysis.report.bands.quantile_bands`), and optionally ``thresholds`` ({panel key:
        {value: labels of the runs with it}}, dashed reference lines) and ``lines`` (list of dicts with
        ``panel``, ``name``, ``x``, ``y``, ``dash``: a grey line each, e.g. a surrogate's level).
    panels : {key: (panel title, y label)}, in column order.
    x_title : the x axis' title.

    Returns
    -------
    The figure: per panel the 90% band (5% to 95% of the runs), the 50% band (25% to 75%) and the median,
    one legend entry each for the whole figure; hovering the median gives both bands and the runs counted.
    Each median trace's ``meta`` is [panel key, "median", x title].
    """
    keys = list(panels)
    titles = [(f"{text(c['title'])}<br>" if j == 0 else "") + panels[k][0] for c in cells for j, k in enumerate(keys)]
    n_rows = len(cells)
    fig = make_subplots(rows=n_rows, cols=len(keys), subplot_titles=titles, horizontal_spacing=0.06,
                        vertical_spacing=min(0.3 / n_rows, 0.12) if n_rows > 1 else 0.1)
    shown = set()
    for i, cell in enumerate(cells, start=1):
        for j, key in enumerate(keys, start=1):
            band = cell["bands"].get(key)
            if band is not None and len(band[0]):
                _band_traces(fig, key, band, x_title, i, j, "bands" not in shown)
                shown.add("bands")
            else:
                fig.add_annotation(text="no data", showarrow=False, font={"color": "grey"}, xref="x domain",
                                   yref="y domain", x=0.5, y=0.5, row=i, col=j)
            for line in (ln for ln in cell.get("lines", []) if ln["panel"] == key):
                fig.add_trace(go.Scatter(x=line["x"], y=line["y"], mode="lines", name=text(line["name"]),
                                         legendgroup=line["name"], showlegend=line["name"] not in shown,
                                         line={"color": "#555", "dash": line["dash"], "width": 1.2},
                                         hovertemplate=f"{text(line['name'])}<br>%{{x}}: %{{y:.4g}}<extra></extra>"),
                              row=i, col=j)
                shown.add(line["name"])
            if cell.get("thresholds", {}).get(key):
                reference_lines(fig, cell["thresholds"][key], "threshold", i, j)
            fig.update_xaxes(title_text=x_title, row=i, col=j)
            fig.update_yaxes(title_text=panels[key][1], row=i, col=j)
    fig.update_annotations(font_size=11)
    return finish_layout(fig, ROW_HEIGHT * n_rows + 90)


def state_colours(states) -> dict:
    """State label -> colour, in taxonomy order; None becomes "unclassified" (grey).

    Labels outside the taxonomy get colours of :data:`OTHER_STATE_COLOURS`,
    in sorted order, so a table and a figure built from the same states agree.
    """
    present = {s or "unclassified" for s in states}
    order = list(STATE_COLOURS)
    ranked = sorted(present, key=lambda s: (order.index(s) if s in order else 99, s == "unclassified", s))
    out, i = {}, 0
    for s in ranked:
        if s in STATE_COLOURS:
            out[s] = STATE_COLOURS[s]
        elif s == "unclassified":
            out[s] = UNCLASSIFIED_COLOUR
        else:
            out[s] = OTHER_STATE_COLOURS[i % len(OTHER_STATE_COLOURS)]
            i += 1
    return out


def hm_plane_figure(points: list[dict]) -> go.Figure:
    """Runs in the integration-metastability plane.

    Parameters
    ----------
    points : dicts with ``h_eff`` and ``m`` (finite floats), ``state`` (str or
        None), ``dataset`` (str), ``run_id``, ``seed`` and ``cell`` (str);
        colour encodes the state, the marker the dataset.

    Returns
    -------
    The figure: one legend entry per state and dataset.
    """
    datasets = sorted({p["dataset"] for p in points})
    symbols = {d: DATASET_SYMBOLS[i % len(DATASET_SYMBOLS)] for i, d in enumerate(datasets)}
    colours = state_colours(p["state"] for p in points)
    fig = go.Figure()
    for state in colours:
        for dataset in datasets:
            group = [p for p in points if (p["state"] or "unclassified") == state and p["dataset"] == dataset]
            if not group:
                continue
            fig.add_trace(go.Scatter(
                x=[p["h_eff"] for p in group], y=[p["m"] for p in group], mode="markers",
                name=f"{text(state)} · {text(dataset)}", legendgroup=state,
                marker={"symbol": symbols[dataset], "size": 10, "color": colours[state], "opacity": 0.85,
                        "line": {"color": "black", "width": 0.5}},
                customdata=[[text(p["run_id"]), text(p["seed"]), text(p["cell"]), text(state)]
                            for p in group],
                hovertemplate="run %{customdata[0]}<br>seed %{customdata[1]}<br>%{customdata[2]}<br>"
                              "state %{customdata[3]}<br>H_eff %{x:.4g}<br>M %{y:.4g}<extra></extra>"))
    fig.update_xaxes(title_text="H_eff, mean over epochs (integration, 0..1)")
    fig.update_yaxes(title_text="metastability M, mean over epochs")
    return finish_layout(fig, 480, "Runs in the H-M plane (colour: state, marker: dataset)")


def controls_figure(cells: list[dict], h_opts: dict) -> go.Figure:
    """H_raw of the signal beside its noise, order, init and channel re-draw controls, per cell.

    Parameters
    ----------
    cells : dicts with ``label`` (str) and ``values``: {control key of
        :data:`CONTROL_BARS`: list of (run_id, seed, value) with NaN allowed}.
    h_opts : the runs' H_eff optimum, {value: labels of the cells whose
        runs use it}: a reference line per value.

    Returns
    -------
    The figure: per cell and control a diamond at the seed mean with a
    whisker of one std, and a dot per seed (a cell of more than
    :data:`MAX_TRACED_RUNS` seeds: their median with a thick whisker over 50%
    and a thin one over 90% of them). The y axis spans the values, not
    zero, so gaps between signal and controls stay visible.
    """
    fig = go.Figure()
    labels = [text(c["label"]) for c in cells]
    spans = list(h_opts)
    for key, label, colour in CONTROL_BARS:
        means, stds, xs, dots, data = [], [], [], [], []
        spread = []  # (cell label, quantiles) of the cells drawn as a distribution
        for cell, name in zip(cells, labels):
            vals = [(rid, seed, float(v)) for rid, seed, v in cell["values"].get(key, []) if np.isfinite(v)]
            arr = np.array([v for _, _, v in vals])
            means.append(float(arr.mean()) if len(arr) else None)
            stds.append(float(arr.std(ddof=1)) if len(arr) > 1 else 0.0)
            if len(arr):
                spans += [float(arr.min()), float(arr.max()), means[-1] - stds[-1], means[-1] + stds[-1]]
            if not traced(len(vals)):
                spread.append((name, np.quantile(arr, QUANTILES)))
                continue
            for rid, seed, v in vals:
                xs.append(name)
                dots.append(v)
                data.append([text(rid), text(seed)])
        if not xs and not spread:
            continue
        for lo, hi, width, share in ((0, 4, 1.5, "90%"), (1, 3, 5, "50%")):
            if spread:
                q = np.array([qs for _, qs in spread])
                fig.add_trace(go.Scatter(
                    x=[n for n, _ in spread], y=q[:, MEDIAN], mode="markers", name=f"{label}: {share} of seeds",
                    legendgroup=key, offsetgroup=key, showlegend=False, marker={"size": 6, "color": colour},
                    error_y={"type": "data", "symmetric": False, "array": q[:, hi] - q[:, MEDIAN],
                             "arrayminus": q[:, MEDIAN] - q[:, lo], "color": colour, "thickness": width, "width": 0},
                    customdata=q[:, [lo, hi]],
                    hovertemplate=(f"{label}<br>%{{x}}<br>median of the seeds %{{y:.4g}}<br>{share} of the seeds: "
                                   "%{customdata[0]:.4g} to %{customdata[1]:.4g}<extra></extra>")))
        fig.add_trace(go.Scatter(x=labels, y=means, mode="markers", name=label, legendgroup=key, offsetgroup=key,
                                 marker={"symbol": "diamond-open", "size": 14, "color": colour,
                                         "line": {"width": 2}},
                                 error_y={"type": "data", "array": stds, "visible": True, "color": colour},
                                 hovertemplate=f"{label}<br>%{{x}}<br>seed mean %{{y:.4g}}<extra></extra>"))
        fig.add_trace(go.Scatter(x=xs, y=dots, mode="markers", name=f"{label}: seeds", legendgroup=key,
                                 offsetgroup=key, showlegend=False,
                                 marker={"size": 6, "color": colour, "line": {"color": "black", "width": 0.7}},
                                 customdata=data, hovertemplate=(f"{label}<br>run %{{customdata[0]}}<br>seed "
                                                                 "%{customdata[1]}<br>H_raw %{y:.4g}<extra></extra>")))
    reference_lines(fig, h_opts, "H_opt", annotate_one=True)
    # an explicit range: grouped scatter traces would otherwise pull the axis down to 0, as bars do
    spans = spans or [0.0]
    pad = 0.08 * (max(spans) - min(spans)) or 0.05
    fig.update_yaxes(title_text="H_raw (mean DFA exponent)", range=[min(spans) - pad, max(spans) + pad])
    fig.update_layout(scattermode="group", scattergap=0.3)
    spread_note = "" if all(traced(max((len(v) for v in c["values"].values()), default=0)) for c in cells) else (
        f"; a cell of more than {MAX_TRACED_RUNS} seeds: their median, thick and thin whiskers holding 50% and 90% "
        "of them")
    return finish_layout(fig, 460, "H_raw: trained signal vs noise / order / init / channel re-draw controls "
                             f"(diamond: seed mean ± std, dots: seeds{spread_note})")


#: Panels of a run's training curves: title, y label, ((column, legend label, dash), ...).
TRAINING_PANELS = (
    ("Loss", "loss", (("train_loss", "train loss", "solid"), ("val_loss", "val loss", "dash"))),
    ("Accuracy", "accuracy (%)", (("train_acc", "train acc", "solid"), ("val_acc", "val acc", "dash"))),
    ("Learning rate", "lr", (("lr", "lr", "solid"),)),
    ("Time per epoch", "seconds", (("epoch_time_s", "epoch time", "solid"),
                                   ("capture_time_s", "capture time", "dash"))),
)


def training_figure(run_id: str, curves: dict) -> go.Figure:
    """One run's training curves: loss, accuracy, learning rate, epoch and capture time.

    Parameters
    ----------
    run_id : shown in every hover label.
    curves : {column of train_metrics: (epochs, values)}, accuracy in %.

    Returns
    -------
    A one-row figure of :data:`TRAINING_PANELS`; each trace's ``meta`` is [run id (escaped), column], so a
    figure built from empty ``curves`` is the template a page fills with any run's curves.
    """
    fig = make_subplots(rows=1, cols=len(TRAINING_PANELS), subplot_titles=[p[0] for p in TRAINING_PANELS],
                        horizontal_spacing=0.07)
    for col, (_, ylabel, series) in enumerate(TRAINING_PANELS, start=1):
        for (column, label, dash), colour in zip(series, SEED_COLOURS):
            x, y = _finite(*curves.get(column, ([], [])))
            fig.add_trace(go.Scatter(x=x, y=y, mode="lines+markers" if len(x) <= 30 else "lines", name=label,
                                     line={"color": colour, "dash": dash, "width": 1.5}, marker={"size": 4},
                                     meta=[text(run_id), column],
                                     hovertemplate=f"run %{{meta[0]}}<br>epoch %{{x}}<br>{label}: %{{y:.4g}}"
                                                   "<extra></extra>"), row=1, col=col)
        fig.update_xaxes(title_text="epoch", row=1, col=col)
        fig.update_yaxes(title_text=ylabel, row=1, col=col)
    fig.update_annotations(font_size=11)
    return finish_layout(fig, 300)
