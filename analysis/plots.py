"""Figures of the study report, rendered to PNG bytes.

Every function builds its own :class:`matplotlib.figure.Figure` with the Agg
canvas (no pyplot, so no global figure state survives a call) and returns the
encoded PNG. Inputs are plain Python structures prepared by
:mod:`analysis.report`; nothing here touches DuckDB.
"""
from __future__ import annotations

import io
import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

DPI = 100
#: Volatility below this for 3 consecutive epochs fires the convergence trigger.
VOLATILITY_THRESHOLD = 0.35
#: Taxonomy states in rule order, each with a fixed colour.
STATE_COLOURS = {
    "Stable Convergent": "#1f77b4",
    "Rigidly Synchronised": "#d62728",
    "Metastable High-Integration": "#2ca02c",
    "Transitional": "#ff7f0e",
    "Partial Integration": "#9467bd",
}
UNCLASSIFIED_COLOUR = "#7f7f7f"
#: Colours for state labels outside the taxonomy (a changed rule, a custom label).
OTHER_STATE_COLOURS = ("#8c564b", "#e377c2", "#bcbd22", "#17becf")
DATASET_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "<", ">")
#: Bars of the controls chart: key, label, colour.
CONTROL_BARS = (
    ("signal", "signal (trained)", "#1f77b4"),
    ("noise", "noise control", "#7f7f7f"),
    ("order", "order control", "#ff7f0e"),
    ("init", "init (epoch 0)", "#2ca02c"),
    ("channel_draw", "channel re-draw", "#9467bd"),
)
#: Trajectory panels: key, axes title, y label.
TRAJECTORY_PANELS = {
    "h_eff": ("Integration H_eff", "H_eff (0..1)"),
    "metastability": ("Metastability M", "M (std of R(t))"),
    "psi": ("Stability index Psi", "Psi (z units)"),
    "volatility": ("Psi volatility", "rolling std of Psi"),
    "val_acc": ("Validation accuracy", "val acc (%)"),
}


def render_png(fig: Figure) -> bytes:
    """Encode ``fig`` as PNG at :data:`DPI` (cropped to its artists, legends outside axes included).

    Parameters
    ----------
    fig : a Figure built with the object API.

    Returns
    -------
    bytes of the PNG file.
    """
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.1)
    fig.clf()
    return buf.getvalue()


def _seed_colours(n: int) -> list:
    """``n`` distinguishable colours (tab10, or viridis beyond ten)."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    return [colormaps["viridis"](x) for x in np.linspace(0, 0.95, n)]


def _finite(x, y) -> tuple:
    """``x`` and ``y`` as float arrays with the non-finite ``y`` points dropped."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


#: With a single panel (accuracy only) the cells wrap into a grid this many columns wide.
SINGLE_PANEL_COLUMNS = 4


def _trajectory_axes(ax, cell: dict, key: str, colours: list, title: str) -> None:
    """Draw one panel of one cell: every seed's series, triggers and plateaus."""
    xs = [np.asarray(x, dtype=float) for r in cell["runs"] for x, _ in r["series"].values() if len(x)]
    xmax = max([float(np.nanmax(x)) for x in xs] + [1.0])
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch", fontsize=9)
    ax.set_ylabel(TRAJECTORY_PANELS[key][1], fontsize=9)
    ax.tick_params(labelsize=8)
    ax.set_xlim(-0.3, xmax + 0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if key == "volatility":
        ax.axhline(VOLATILITY_THRESHOLD, color="black", lw=0.8, ls="--", alpha=0.7)
    for run, colour in zip(cell["runs"], colours):
        x, y = _finite(*run["series"].get(key, ([], [])))
        if len(x):
            ax.plot(x, y, color=colour, lw=1.2, marker="o" if len(x) <= 30 else None, ms=2.5, label=run["label"])
        if run.get("trigger") is not None:
            ax.axvline(run["trigger"], color=colour, ls="--", lw=1.0, alpha=0.8)
        if key == "val_acc" and run.get("plateau") is not None:
            ax.axvline(run["plateau"], color=colour, ls=":", lw=1.2)
            at = x == run["plateau"]
            if at.any():
                ax.plot(x[at], y[at], marker="*", ms=9, color=colour, mec="black", mew=0.5, ls="none")
    if key == "volatility":
        ax.set_ylim(0.0, max(ax.get_ylim()[1], VOLATILITY_THRESHOLD * 1.2))
    if not ax.lines:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="grey")


def trajectory_png(cells: list[dict], panels: list[str]) -> bytes:
    """Small multiples of per-epoch series: one row per cell, one column per panel.

    Parameters
    ----------
    cells : one dict per cell, with ``title`` (str) and ``runs``: a list of
        dicts with ``label`` (str), ``series`` ({panel key: (epochs, values)}),
        ``trigger`` (epoch of the volatility trigger or None) and ``plateau``
        (first epoch within 0.5 points of the best val accuracy, or None).
        The seeds of a cell share each panel's axes.
    panels : keys of :data:`TRAJECTORY_PANELS`, in column order. With a
        single panel the cells wrap into rows of :data:`SINGLE_PANEL_COLUMNS`.

    Returns
    -------
    PNG bytes. The volatility panel carries the 0.35 threshold line; each
    run's trigger is a dashed vertical line in every panel and its plateau a
    dotted line and a star on the accuracy panel.
    """
    if len(panels) == 1:
        n_cols = min(SINGLE_PANEL_COLUMNS, len(cells))
        n_rows = math.ceil(len(cells) / n_cols)
        slots = [(i // n_cols, i % n_cols, cell, panels[0]) for i, cell in enumerate(cells)]
    else:
        n_rows, n_cols = len(cells), len(panels)
        slots = [(i, j, cell, key) for i, cell in enumerate(cells) for j, key in enumerate(panels)]
    fig = Figure(figsize=(2.9 * n_cols + 0.4, 2.8 * n_rows + 0.6), dpi=DPI)
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for row, col, cell, key in slots:
        colours = _seed_colours(len(cell["runs"]))
        first = len(panels) == 1 or col == 0
        name = TRAJECTORY_PANELS[key][0]
        _trajectory_axes(axes[row, col], cell, key, colours, f"{cell['title']}\n{name}" if first else f"\n{name}")
        if (len(panels) == 1 or col == n_cols - 1) and len(cell["runs"]) <= 10:
            handles = [Line2D([], [], color=c, lw=1.2, marker="o", ms=2.5, label=r["label"])
                       for r, c in zip(cell["runs"], colours)]
            axes[row, col].legend(handles=handles, fontsize=8, loc="best", framealpha=0.7)
    for row, col in np.ndindex(n_rows, n_cols):
        if not any(r == row and c == col for r, c, _, _ in slots):
            axes[row, col].set_visible(False)
    runs = [r for cell in cells for r in cell["runs"]]
    keys = []
    if any(r.get("trigger") is not None for r in runs):
        keys.append(Line2D([], [], color="black", ls="--", lw=1.0, label="volatility trigger (per run)"))
    if "val_acc" in panels:
        keys.append(Line2D([], [], color="black", ls=":", lw=1.2, marker="*", ms=8,
                           label="accuracy plateau (within 0.5 pt of best)"))
    if "volatility" in panels:
        keys.append(Line2D([], [], color="black", ls="--", lw=0.8, alpha=0.7,
                           label=f"volatility threshold {VOLATILITY_THRESHOLD}"))
    fig.tight_layout(rect=(0, 0.35 / fig.get_figheight() if keys else 0, 1, 1))
    if keys:
        fig.legend(handles=keys, loc="lower center", ncol=len(keys), fontsize=9, frameon=False)
    return render_png(fig)


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


def hm_plane_png(points: list[dict]) -> bytes:
    """Runs in the integration-metastability plane.

    Parameters
    ----------
    points : dicts with ``h_eff`` and ``m`` (finite floats), ``state`` (str or
        None) and ``dataset`` (str); colour encodes the state, the marker the
        dataset.

    Returns
    -------
    PNG bytes.
    """
    fig = Figure(figsize=(7.5, 5.2), dpi=DPI)
    ax = fig.add_subplot(1, 1, 1)
    datasets = sorted({p["dataset"] for p in points})
    markers = {d: DATASET_MARKERS[i % len(DATASET_MARKERS)] for i, d in enumerate(datasets)}
    colours = state_colours(p["state"] for p in points)
    states = list(colours)
    for p in points:
        ax.scatter(p["h_eff"], p["m"], marker=markers[p["dataset"]], s=46, alpha=0.85,
                   color=colours[p["state"] or "unclassified"], edgecolors="black", linewidths=0.5)
    ax.set_xlabel("H_eff, mean over epochs (integration, 0..1)")
    ax.set_ylabel("metastability M, mean over epochs")
    ax.set_title("Runs in the H-M plane (colour: state, marker: dataset)")
    ax.grid(alpha=0.3)
    state_handles = [Line2D([], [], ls="none", marker="o", ms=7, mec="black", mew=0.5,
                            color=colours[s], label=s) for s in states]
    data_handles = [Line2D([], [], ls="none", marker=markers[d], ms=7, color="white", mec="black", label=d)
                    for d in datasets]
    # figure legends (not ax.add_artist, which clips) so the tight crop keeps them whole
    fig.legend(handles=state_handles, title="state", fontsize=8, title_fontsize=8, loc="upper left",
               bbox_to_anchor=(1.01, 1.0), bbox_transform=ax.transAxes)
    fig.legend(handles=data_handles, title="dataset", fontsize=8, title_fontsize=8, loc="lower left",
               bbox_to_anchor=(1.01, 0.0), bbox_transform=ax.transAxes)
    fig.tight_layout()
    return render_png(fig)


def controls_png(cells: list[dict], h_opt: float = 0.7) -> bytes:
    """H_raw of the signal beside its noise, order and init controls, per cell.

    Parameters
    ----------
    cells : dicts with ``label`` (str) and ``values``: {control key of
        :data:`CONTROL_BARS`: list of per-seed floats (NaN allowed)}.
    h_opt : drawn as a reference line (the H_eff optimum).

    Returns
    -------
    PNG bytes: bars at the seed mean, whiskers one std, dots the seeds.
    """
    n = len(cells)
    width = 0.8 / len(CONTROL_BARS)
    fig = Figure(figsize=(min(14.0, max(7.0, 1.1 * n + 3.0)), 5.0), dpi=DPI)
    ax = fig.add_subplot(1, 1, 1)
    rng = np.random.default_rng(0)
    for k, (key, label, colour) in enumerate(CONTROL_BARS):
        offset = (k - (len(CONTROL_BARS) - 1) / 2) * width
        labelled = False
        for i, cell in enumerate(cells):
            vals = np.asarray(cell["values"].get(key, []), dtype=float)
            vals = vals[np.isfinite(vals)]
            if not len(vals):
                continue
            mean = float(vals.mean())
            std = float(vals.std(ddof=1)) if len(vals) > 1 else 0.0
            ax.bar(i + offset, mean, width * 0.9, color=colour, alpha=0.55, edgecolor=colour,
                   label=None if labelled else label)
            labelled = True
            ax.errorbar(i + offset, mean, yerr=std, color="black", lw=0.9, capsize=2)
            jitter = rng.uniform(-width * 0.25, width * 0.25, len(vals))
            ax.scatter(i + offset + jitter, vals, s=10, color="black", zorder=3)
    ax.axhline(h_opt, color="black", ls="--", lw=0.8, label=f"H_opt = {h_opt}")
    ax.set_xticks(range(n))
    ax.set_xticklabels([c["label"] for c in cells], fontsize=8)
    ax.set_ylabel("H_raw (mean DFA exponent)")
    ax.set_title("H_raw: trained signal vs noise / order / init / channel re-draw controls\n"
                 "(bars: seed mean, whiskers: std, dots: seeds)",
                 fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return render_png(fig)

