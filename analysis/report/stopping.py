"""The report's stopping-rule section: every rule and setting on one Pareto plane, and the per-cell verdicts.

Reads the tables ``stopping`` (aggregated in DuckDB: one point per rule and setting over every run, whatever
the store's size) and ``stopping_summary`` (:mod:`dynstudy.analysis.stats.stopping`). The figure puts each rule
and setting at its mean accuracy given up against the run's best (x, points) and mean epochs saved (y), with the
t-intervals over runs as error bars; the settings chosen on held-out cells are ringed. The table lists each
cell's held-out choice per rule with its interval, its in-sample choice for contrast, and the verdict against
patience.
"""
from __future__ import annotations

import duckdb
import plotly.graph_objects as go

from dynstudy.analysis.report import plots
from dynstudy.analysis.report.html import figure, missing, num, text
from dynstudy.analysis.stats.variability import t_quantile

#: One marker colour per rule, in :data:`dynstudy.analysis.kernels.stopping_rules.RULES` order.
RULE_COLOURS = {"volatility": "#d62728", "patience_loss": "#1f77b4", "patience_acc": "#2ca02c",
                "plateau_loss": "#9467bd", "budget": "#7f7f7f"}
POINTS_SQL = ("SELECT rule, setting, count(*) AS n, avg(epochs_saved) AS saved, stddev_samp(epochs_saved) AS "
              "saved_sd, avg(given_up_best) AS given, stddev_samp(given_up_best) AS given_sd, "
              "count(stop_epoch) AS fired FROM stopping GROUP BY rule, setting ORDER BY rule, setting")


def pareto_points(con) -> list[dict]:
    """One dict per rule and setting: n runs, how many it stopped early, mean and 95% half-width of the epochs
    saved and of the points given up."""
    cols = ("rule", "setting", "n", "saved", "saved_sd", "given", "given_sd", "fired")
    out = []
    for row in con.execute(POINTS_SQL).fetchall():
        p = dict(zip(cols, row))
        q = t_quantile(0.975, p["n"] - 1) if p["n"] > 1 else None
        for key in ("saved", "given"):
            sd = p.pop(f"{key}_sd")
            p[f"{key}_half"] = q * sd / p["n"] ** 0.5 if q is not None and sd is not None else None
        out.append(p)
    return out


def pareto_figure(points: list[dict], chosen: set[tuple[str, str]]) -> go.Figure:
    """Epochs saved against points given up, one marker per rule and setting (``chosen``: (rule, setting) pairs
    some held-out cell chose, ringed)."""
    fig = go.Figure()
    for rule, colour in RULE_COLOURS.items():
        pts = [p for p in points if p["rule"] == rule and p["given"] is not None]
        if not pts:
            continue
        fig.add_trace(go.Scatter(
            x=[p["given"] for p in pts], y=[p["saved"] for p in pts], mode="markers", name=rule,
            marker={"color": colour, "size": [12 if (rule, p["setting"]) in chosen else 7 for p in pts],
                    "line": {"width": [2 if (rule, p["setting"]) in chosen else 0 for p in pts], "color": "#000"}},
            error_x={"type": "data", "array": [p["given_half"] or 0 for p in pts], "thickness": 1, "width": 0},
            error_y={"type": "data", "array": [p["saved_half"] or 0 for p in pts], "thickness": 1, "width": 0},
            customdata=[[p["setting"], p["n"], p["fired"]] for p in pts],
            hovertemplate=(f"{rule} %{{customdata[0]}}<br>%{{y:.3g}} epochs saved, %{{x:.3g}} points given up"
                           "<br>stopped early in %{customdata[2]} of %{customdata[1]} runs<extra></extra>")))
    fig.update_xaxes(title="accuracy given up against the run's best (points)")
    fig.update_yaxes(title="epochs saved")
    return plots.finish_layout(fig, 420, "Stopping rules: epochs saved against accuracy given up, every setting")


def section_html(con, summary: list[dict]) -> str:
    """The section (``<h2 id="stopping">``): the Pareto figure and the per-cell table, or a note that the store
    has no comparison yet."""
    head2 = ('<h2 id="stopping">Stopping rules</h2><p class="note">Does the Psi-volatility trigger stop training '
             "earlier than patience at the same accuracy? Every rule replayed on every finished run's own curves, "
             "each setting chosen on the other cells (held out) before it is judged on a cell, against patience on "
             "validation loss chosen the same way: a sign-flip test that it saves more epochs and one that it gives "
             "up no more than the margin of accuracy, Holm over rules and cells (docs/metrics.md). "
             "<code>dynstudy stopping</code> recomputes it with another tolerance or margin.</p>")
    try:
        points = pareto_points(con)
    except duckdb.Error:  # no stopping table in this store (not analysed, or analysed before it existed)
        points = []
    if not points:
        return head2 + missing(["stopping", "stopping_summary"], "stopping-rule comparison")
    chosen = {(r["rule"], r["setting"]) for r in summary if r["selection"] == "held_out" and r["setting"]}
    caption = ("Each marker is one rule with one setting, at its mean over every finished run (bars: 95% "
               "t-intervals over the runs); ringed: a setting chosen for some cell on the other cells. Up and left "
               "is better. Every rule sees only the results up to the epoch it decides at.")
    rows = []
    held = {(r["model"], r["dataset"], r["optimizer"], r["rule"]): r for r in summary if r["selection"] == "held_out"}
    inside = {(r["model"], r["dataset"], r["optimizer"], r["rule"]): r for r in summary
              if r["selection"] == "in_sample"}
    for key in sorted(held):
        h, i = held[key], inside.get(key, {})
        rows.append("<tr>" + "".join(f"<td>{text(v)}</td>" for v in (*key[:3], key[3], h["setting"] or "–"))
                    + f"<td>{_interval(h, 'epochs_saved')}</td><td>{_interval(h, 'given_up')}</td>"
                    + f"<td>{text(i.get('setting'))}: {num(i.get('epochs_saved_mean'), 3)} saved, "
                    + f"{num(i.get('given_up_mean'), 3)} given up</td>"
                    + f"<td>{text(h['verdict'])}</td><td class=muted>{text(h['detail'])}</td></tr>")
    head = ("<tr><th>model</th><th>dataset</th><th>optimizer</th><th>rule</th><th>setting chosen on the other "
            "cells</th><th>epochs saved</th><th>points given up</th><th>chosen in sample (peeking)</th>"
            "<th>against patience</th><th>detail</th></tr>")
    return (head2 + figure(plots.figure_html(pareto_figure(points, chosen), "stopping-pareto"), caption)
            + f'<table class="sortable">{head}{"".join(rows)}</table>')


def _interval(row: dict, key: str) -> str:
    mean, low, high = row.get(f"{key}_mean"), row.get(f"{key}_low"), row.get(f"{key}_high")
    if mean is None:
        return "–"
    return f"{num(mean, 3)}" + (f" [{num(low, 3)}, {num(high, 3)}]" if low is not None else "")
