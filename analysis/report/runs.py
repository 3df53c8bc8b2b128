"""The report's run sections, on each cell's page: the table of the cell's runs and a section per run.

Each row of the run table links to its run's section, which holds what a
reader needs to trust or question that one run: its identity and status,
the stop reason, attempts and error, where and with which software it ran,
its full configuration, its training curves (loss, accuracy, learning
rate, epoch and capture time per epoch) and its metrics over its cell's
distribution. The table and the section both
show the run's mean H_raw with its flags (:mod:`dynstudy.analysis.report.flags`):
non-stationary (with its end-of-epoch captures whose alpha is above 1) and
H_eff saturated; a flag an older analysis did not write shows as unknown.
"""
from __future__ import annotations

import json
import re
from collections import defaultdict

import numpy as np

from dynstudy.analysis.kernels.dfa_fit import BEYOND_NULL_P, MIN_R2, MIN_SPAN
from dynstudy.analysis.report import data as rd
from dynstudy.analysis.report import plots
from dynstudy.analysis.report.flags import (
    NONSTATIONARY_TEXT,
    SATURATED_TEXT,
    count_text,
    flag_cell,
    flag_text,
    legend_html,
    saturation_band,
)
from dynstudy.analysis.report.html import MISSING, missing, num, num_cell, state, text, text_cell

RUN_COLUMNS = ("run_id", "study", "model", "dataset", "optimizer", "seed", "status", "stop_reason", "attempts",
               "n_epochs", "state", "trigger_epoch", "plateau_epoch", "best_val_acc_pct", "best_epoch", "h_raw_mean",
               "nonstationary", "n_nonstationary", "h_eff_mean", "h_eff_saturated", "metastability_mean", "psi_std",
               "r_hz_mz", "within_null", "n_h_raw_beyond_null", "n_m_beyond_null", "n_fit_flagged")
RUN_HEADS = dict(zip(RUN_COLUMNS, (
    "run", "study", "model", "dataset", "optimizer", "seed", "status", "stop reason", "attempts", "epochs", "state",
    "trigger epoch", "plateau epoch", "best val acc (%)", "best epoch", "H_raw mean", "non-stationary",
    "epochs with alpha > 1", "H_eff mean", "H_eff saturated", "M mean", "Psi std", "r(Hz, Mz)",
    "within its null (noise-like)", "H_raw beyond null", "M beyond null", "epochs with a DFA fit flag")))
TEXT_COLUMNS = {"study", "model", "dataset", "optimizer", "status", "stop_reason"}
#: Boolean columns, shown as yes / no / unknown (:mod:`dynstudy.analysis.report.flags`).
FLAG_COLUMNS = {"nonstationary", "h_eff_saturated", "within_null"}
#: Shown inside another column's cell (the count of non-stationary epochs in the non-stationary flag's, the counts
#: beyond the null in the within-null flag's), not alone.
INNER_COLUMNS = {"n_nonstationary", "n_h_raw_beyond_null", "n_m_beyond_null"}
#: Fields of a run's identity block, in order: key of the run info, label.
RUN_FIELDS = (("study", "study"), ("model", "model"), ("dataset", "dataset"), ("optimizer", "optimizer"),
              ("seed", "seed"), ("status", "status"), ("stop_reason", "stop reason"), ("attempts", "attempts"),
              ("n_epochs", "epochs completed"), ("state", "state"), ("reason", "analysis gap"),
              ("error", "error"), ("device", "device"), ("hostname", "host"), ("started_at", "started"),
              ("updated_at", "last update"))
CURVE_COLUMNS = ("train_loss", "val_loss", "train_acc", "val_acc", "lr", "epoch_time_s", "capture_time_s")


def run_anchor(run_id: str) -> str:
    """The id attribute of a run's section: ``run-`` and the run id with characters outside [A-Za-z0-9_.-] as _."""
    return "run-" + re.sub(r"[^A-Za-z0-9_.-]", "_", str(run_id))


def run_table(cells: dict, accuracy: dict, scale: float, plateaus: dict) -> list[dict]:
    """One row per run, in cell then seed order, with the plateau epoch (``plateaus``: run_id -> epoch, of
    :func:`dynstudy.analysis.report.data.plateau_epochs`) and best accuracy in %."""
    rows = []
    for runs in cells.values():
        for info in runs:
            rid = info["run_id"]
            best = rd.finite_or_none(info.get("best_val_acc"))
            best = best * scale if best is not None else None
            if best is None and rid in accuracy and len(accuracy[rid][1]):
                best = float(max(accuracy[rid][1]))
            row = {k: info.get(k) for k in RUN_COLUMNS}
            row["plateau_epoch"] = plateaus.get(rid)
            row["best_val_acc_pct"] = best
            rows.append(row)
    return rows


def run_section(rows: list[dict], analysed: bool, colours: dict, plateau_html: str) -> str:
    """HTML of section 5: the run table, each run id linking to its section; ``plateau_html`` states the
    plateau rule (:func:`dynstudy.analysis.report.build.plateau_note`)."""
    out = ['<h2 id="runs">5. Runs</h2>']
    if not rows:
        return out[0] + missing(["runs", "run_summary"], "run table")
    if not analysed:
        out.append(missing(["run_summary"], "states or metric columns"))
    columns = [k for k in RUN_COLUMNS if k not in INNER_COLUMNS]
    if len({r["study"] for r in rows}) == 1:
        columns.remove("study")  # named in the header
    out.append('<p class="meta">Click a column head to sort; a run id opens that run\'s section. Plateau epoch: '
               f"the {plateau_html}.</p>"
               '<div class="wide"><table class="runs"><tr>'
               + "".join(f"<th>{RUN_HEADS[k]}</th>" for k in columns) + "</tr>")
    for r in rows:
        tds = []
        for k in columns:
            if k == "state":
                tds.append(f"<td>{state(r[k], colours)}</td>")
            elif k == "nonstationary":
                tds.append(flag_cell(r[k], count_text(r["n_nonstationary"], r["n_epochs"], "epochs")))
            elif k == "within_null":
                tds.append(flag_cell(r[k], beyond_text(r["n_h_raw_beyond_null"], r["n_m_beyond_null"], r["n_epochs"])))
            elif k in FLAG_COLUMNS:
                tds.append(flag_cell(r[k]))
            elif k == "run_id":
                tds.append(f'<td class="rid"><a href="#{run_anchor(r[k])}">{text(r[k])}</a></td>')
            elif k in TEXT_COLUMNS:
                tds.append(text_cell(r[k]))
            else:
                tds.append(num_cell(r[k]))
        out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("</table></div>" + legend_html())
    return "".join(out)


def training_curves(train_rows: list[dict], scale: float) -> dict:
    """run_id -> {column: (epochs, values)}, one value per epoch (its last step), accuracies in %."""
    last = {}
    for r in train_rows:
        if r.get("epoch") is None:
            continue
        key = (str(r["run_id"]), int(r["epoch"]))
        step = r.get("step") if r.get("step") is not None else -1
        if key not in last or step >= last[key][0]:
            last[key] = (step, r)
    per_run = defaultdict(list)
    for (rid, epoch), (_, r) in sorted(last.items()):
        per_run[rid].append((epoch, r))
    out = {}
    for rid, items in per_run.items():
        epochs = np.array([e for e, _ in items], dtype=float)
        curves = {}
        for col in CURVE_COLUMNS:
            k = scale if col in ("train_acc", "val_acc") else 1.0
            vals = [rd.finite_or_none(r.get(col)) for _, r in items]
            curves[col] = (epochs, np.array([np.nan if v is None else v * k for v in vals], dtype=float))
        out[rid] = curves
    return out


def _json_block(raw, label: str) -> str:
    """A collapsed block with a JSON field pretty-printed (or shown as stored when it is not JSON)."""
    if raw in (None, ""):
        return f'<p class="muted">{text(label)}: not recorded</p>'
    try:
        body = json.dumps(json.loads(raw), indent=2, sort_keys=True)
    except (TypeError, ValueError):
        body = str(raw)
    return f"<details><summary>{text(label)}</summary><pre>{text(body)}</pre></details>"


def _versions(raw) -> str:
    try:
        versions = json.loads(raw) if raw else {}
    except (TypeError, ValueError):
        versions = None
    if not isinstance(versions, dict):
        return _json_block(raw, "software versions")
    if not versions:
        return '<p class="muted">software versions: not recorded</p>'
    return "<p class=meta>Software: " + ", ".join(f"{text(k)} {text(v)}"
                                                   for k, v in sorted(versions.items())) + "</p>"


def _timing(curves: dict | None) -> str:
    if not curves:
        return ""
    parts = []
    for col, label in (("epoch_time_s", "epoch time"), ("capture_time_s", "capture time")):
        vals = curves[col][1][np.isfinite(curves[col][1])]
        if len(vals):
            parts.append(f"{label} {vals.mean():.3g} s mean per epoch, {vals.sum():.4g} s in all")
    return f"<p class=meta>{'; '.join(parts)}</p>" if parts else ""


def nonstationary_epochs(capture_rows: list[dict]) -> dict:
    """run_id -> the epochs of its end-of-epoch captures flagged non-stationary (capture_metrics'
    ``nonstationary``), ascending; a run whose captures carry no flag (an older analysis) is left out."""
    out: dict[str, list[int]] = {}
    for r in capture_rows:
        if r.get("kind") == "epoch" and r.get("nonstationary") is not None and r.get("epoch") is not None:
            flagged = out.setdefault(str(r["run_id"]), [])
            if r["nonstationary"]:
                flagged.append(int(r["epoch"]))
    return {rid: sorted(epochs) for rid, epochs in out.items()}


def _flag_rows(info: dict, epochs: list[int] | None) -> list[str]:
    """The run section's rows of its mean H_raw and its two flags, each flag with what it means; none for a run
    without an analysed H_raw."""
    if info.get("h_raw_mean") is None and info.get("nonstationary") is None:
        return []
    p = rd.params_of(info)
    drift = [count_text(info.get("n_nonstationary"), info.get("n_epochs"), "end-of-epoch captures")]
    if epochs:
        drift.append("epochs " + ", ".join(map(str, epochs)))
    tail = saturation_band(p.h_opt, p.sigma_h)
    rows = (("H_raw mean", num(info.get("h_raw_mean"))),
            ("against its null", null_text(info)),
            ("DFA fit", fit_text(info)),
            ("non-stationary", f"{flag_text(info.get('nonstationary'))} ({'; '.join(d for d in drift if d)}"
                               f"{'; ' if any(drift) else ''}{NONSTATIONARY_TEXT})"),
            ("H_eff saturated", f"{flag_text(info.get('h_eff_saturated'))} ({tail}; {SATURATED_TEXT})"))
    return [f"<tr><th>{text(label)}</th><td>{text(value)}</td></tr>" for label, value in rows]


def beyond_text(n_h, n_m, n_epochs) -> str:
    """"H_raw 3, M 1 of 12 beyond" for a run's captures beyond their nulls; "" when unknown."""
    if n_h is None or n_m is None or n_epochs is None:
        return ""
    return f"H_raw {n_h}, M {n_m} of {n_epochs} beyond"


def null_text(info: dict) -> str:
    """A run's end-of-epoch captures against the null of their shape, in words (:data:`MISSING` without nulls)."""
    if info.get("within_null") is None:
        return MISSING + " (no null: analysis.null_k = 0, or an analysis before nulls existed)"
    verdict = ("within its null: its captures differ from i.i.d. noise of their shape no more often than chance"
               if info["within_null"] else "beyond its null: its captures differ from i.i.d. noise of their shape "
               "more often than chance")
    counts = beyond_text(info.get("n_h_raw_beyond_null"), info.get("n_m_beyond_null"), info.get("n_epochs"))
    z = f"H_raw {num(info.get('h_raw_z_mean'))}, M {num(info.get('m_z_mean'))}"
    return f"{verdict} ({counts} at p <= {BEYOND_NULL_P:g}; mean z: {z})"


def fit_text(info: dict) -> str:
    """How many of a run's end-of-epoch captures carry a DFA fit flag, and what the flags mean."""
    n = info.get("n_fit_flagged")
    if n is None:
        return MISSING
    return (f"{n} of {info.get('n_epochs')} end-of-epoch captures flagged: narrow_span (scales spanning less than "
            f"{MIN_SPAN:g}x) or poor_fit (R² of the log-log line below {MIN_R2:g}); the figure below shows each "
            "capture's fluctuation function")


def run_details_section(cells: dict, curves: dict, colours: dict, drift_epochs: dict | None = None,
                        overlays: dict | None = None) -> str:
    """HTML of section 6: one section per run, in the run table's order; ``drift_epochs``: run_id -> its
    non-stationary epochs (:func:`nonstationary_epochs`).

    A run's figures are empty ``<div class="plot">`` whose ``data-figure`` says which (``training``: its
    training curves, for a run in ``curves``; then each kind ``overlays`` lists for it, run_id -> kinds:
    ``trajectory``, its metrics per epoch, ``temporal``, per window, over its cell's distribution); the page
    draws them from the data it carries when the section comes into view
    (:mod:`dynstudy.analysis.report.cell_pages`). Each section's ``data-run`` is its run id.
    """
    out = ['<h2 id="rundetails">6. Run details</h2>']
    runs = [info for group in cells.values() for info in group]
    if not runs:
        return out[0] + '<p class="muted">No runs in this store.</p>'
    for n, info in enumerate(runs):
        rid = info["run_id"]
        fields = []
        for key, label in RUN_FIELDS:
            value = info.get(key)
            if value is None or value == "":
                continue
            shown = state(value, colours) if key == "state" else text(value)
            fields.append(f"<tr><th>{text(label)}</th><td>{shown}</td></tr>")
        fields += _flag_rows(info, (drift_epochs or {}).get(rid))
        out.append(f'<section class="run" id="{run_anchor(rid)}" data-run="{text(rid)}"><h3>Run {text(rid)}</h3>'
                   f'<p class=meta><a href="#runs">back to the run table</a></p>'
                   f'<div class="runinfo"><table class="nosort">{"".join(fields)}</table><div>'
                   + _versions(info.get("versions")) + _timing(curves.get(rid))
                   + _json_block(info.get("config"), "configuration (JSON)") + "</div></div>")
        if rid in curves:
            out.append(f'<div class="plot" id="fig-run-{n}" data-figure="training" style="height:300px"></div>')
        else:
            out.append('<p class="muted">No training metrics recorded for this run.</p>')
        for kind in (overlays or {}).get(rid, []):
            out.append(f'<div class="plot" id="fig-run-{n}-{kind}" data-figure="{kind}" '
                       f'style="height:{plots.ROW_HEIGHT + 90}px"></div>')
        out.append("</section>")
    return "".join(out)
