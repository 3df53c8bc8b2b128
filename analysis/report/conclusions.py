"""The report's conclusions: signal against its controls at a glance, the paper's three claims (table
``claims``) and their sensitivity."""
from __future__ import annotations

from dynstudy.analysis.report.html import MISSING, num, text, text_cell
from dynstudy.analysis.stats.claims import ALPHA
from dynstudy.analysis.stats.contrasts import MIN_SEEDS

VERDICT_CLASS = {"supported": "ok", "not supported": "bad", "untested": "muted"}
CONTRAST_CLASS = {"beyond": "ok", "within": "bad", "untested": "muted"}
CONTROL_NAMES = {"noise": "noise (i.i.d. features)", "order": "order (random sample order)",
                 "init": "untrained network", "channel_draw": "channel re-draw"}
METRIC_NAMES = {"h_raw": "H_raw (DFA exponent)", "metastability": "metastability M"}


def contrasts_section(rows: list[dict]) -> str:
    """HTML: per metric, a row per cell and a column per control: signal minus control, interval, verdict."""
    out = ["<h2 id=\"glance\">At a glance: does the signal beat its controls?</h2>",
           '<p class="note">Each entry: the seeds\' mean of (signal minus control), its 95% bootstrap interval '
           "across seeds, and the verdict: <b>beyond</b> the control when the interval excludes 0, <b>within</b> "
           f"it when it does not (the metric cannot tell the network from the control), <b>untested</b> with "
           f"fewer than {MIN_SEEDS} seeds. The untrained-network column says what training changed. Finished, "
           "whole runs only.</p>"]
    if not rows:
        out.append('<p class="missing">No controls to compare with yet: run <code>dynstudy analyze</code>.</p>')
        return "".join(out)
    for metric in dict.fromkeys(r["metric"] for r in rows):
        sub = [r for r in rows if r["metric"] == metric]
        controls = [c for c in CONTROL_NAMES if any(r["control"] == c for r in sub)]
        cells = list(dict.fromkeys((r["model"], r["dataset"], r["optimizer"]) for r in sub))
        out.append(f"<h3>{text(METRIC_NAMES.get(metric, metric))}</h3><table><tr><th>cell</th>"
                   + "".join(f"<th>signal − {text(CONTROL_NAMES[c])}</th>" for c in controls) + "</tr>")
        for cell in cells:
            tds = []
            for c in controls:
                r = next((x for x in sub if (x["model"], x["dataset"], x["optimizer"]) == cell and x["control"] == c),
                         None)
                if r is None:
                    tds.append(f"<td>{MISSING}</td>")
                    continue
                interval = (f" [{num(r['boot_low'])}, {num(r['boot_high'])}]" if r["verdict"] != "untested"
                            else f" ({r['n_seeds']} seed{'s' if r['n_seeds'] != 1 else ''})")
                mean = r["mean"]
                sign = "+" if mean is not None and mean > 0 else ""
                tds.append(f'<td class="num {CONTRAST_CLASS[r["verdict"]]}">{sign}{num(mean)}{interval} '
                           f"<b>{r['verdict']}</b></td>")
            out.append(f"<tr><td>{text(' · '.join(cell))}</td>{''.join(tds)}</tr>")
        out.append("</table>")
    return "".join(out)


def claims_section(rows: list[dict], plateau_html: str) -> str:
    """HTML: one table row per claim test, verdicts coloured; a note when there are none.

    ``plateau_html`` states the accuracy plateau's rule
    (:func:`dynstudy.analysis.report.build.plateau_note`).
    """
    out = ["<h2 id=\"claims\">Claims over seeds</h2>",
           f'<p class="note">The paper\'s three claims, tested across seeds (p &lt; {ALPHA:g}): integration separates '
           "datasets (Welch t-test, Hedges' g; also on H_raw minus its noise control), the volatility trigger "
           "precedes the accuracy plateau (one-sided Wilcoxon on plateau - trigger epochs, next to patience-based "
           f"stopping; a run's plateau: its {plateau_html}), and the state is stable across seeds (share in the "
           "modal state; binomial test against random states).</p>"]
    if not rows:
        out.append('<p class="missing">No claims table: run <code>dynstudy analyze</code>.</p>')
        return "".join(out)
    head = ["claim", "model", "optimizer", "dataset", "n", "effect", "p", "verdict", "detail"]
    out.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>")
    for r in rows:
        verdict = r.get("verdict") or ""
        effect = num(r.get("effect_size"))
        if effect != MISSING and r.get("effect_name"):
            effect += f" ({text(r['effect_name'])})"
        tds = [text_cell(r.get(k)) for k in ("claim", "model", "optimizer", "dataset", "n")]
        tds += [f"<td>{effect}</td>", f"<td>{num(r.get('p_value'))}</td>",
                f'<td><span class="{VERDICT_CLASS.get(verdict, "")}">{text(verdict)}</span></td>',
                text_cell(r.get("detail"))]
        out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("</table>")
    return "".join(out)


def sensitivity_section(rows: list[dict]) -> str:
    """HTML: for each parameter setting, how many conclusions flip and how many runs change state."""
    out = ["<h2 id=\"sensitivity\">Sensitivity</h2>",
           '<p class="note">Each free parameter of the protocol varied in turn (the others at the runs\' own '
           "values): H_opt, sigma_H, the smoothing window, w_H, the volatility threshold (0.40 and 0.20 are the "
           "thresholds behind the paper's published CIFAR-10 and CIFAR-100 trigger results; its script says 0.35) "
           "and the probe size (the first P samples of each run's stored probe; a run whose probe is smaller than "
           "P is left out of that row). "
           "A conclusion <em>flips</em> when its verdict differs from the one at the runs' own settings.</p>"]
    if not rows:
        out.append('<p class="missing">No sensitivity table: run <code>dynstudy analyze</code>.</p>')
        return "".join(out)
    settings: dict = {}
    for r in rows:
        s = settings.setdefault((r["parameter"], r["value"]), {"flips": [], "n": 0, "states": r["states_changed"],
                                                               "runs": r["n_runs"]})
        s["n"] += 1
        if r.get("flipped"):
            s["flips"].append(f"{r['claim']} ({r['model']}, {r['dataset']}): {r['default_verdict']} → {r['verdict']}")
    out.append("<table><tr><th>parameter</th><th>value</th><th>conclusions flipped</th><th>runs changing state</th>"
               "<th>which</th></tr>")
    for (param, value), s in settings.items():
        which = "<br>".join(text(f) for f in s["flips"]) or "none"
        out.append(f"<tr><td>{text(param)}</td><td>{num(value)}</td><td>{len(s['flips'])} / {s['n']}</td>"
                   f"<td>{s['states']} / {s['runs']}</td><td>{which}</td></tr>")
    out.append("</table>")
    return "".join(out)
