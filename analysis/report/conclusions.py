"""The report's conclusions: signal against its controls at a glance, the paper's three claims (table
``claims``) and their sensitivity."""
from __future__ import annotations

from dynstudy.analysis.report.html import MISSING, num, text, text_cell
from dynstudy.analysis.stats.claims import ALPHA
from dynstudy.analysis.stats.contrasts import MIN_SEEDS, TESTED, detectable_effect
from dynstudy.analysis.stats.verdicts import BEYOND, MEASUREMENT, UNTESTED, WITHIN, is_insufficient

VERDICT_CLASS = {"supported": "ok", "not supported": "bad", "untested": "muted"}
#: A contrast's colour: beyond green, within red, untested and insufficient grey; a measurement is no verdict and
#: is not coloured.
CONTRAST_CLASS = {BEYOND: "ok", WITHIN: "bad", UNTESTED: "muted", MEASUREMENT: ""}
CONTROL_NAMES = {"noise": "noise (i.i.d. features)", "order": "order (random sample order)",
                 "init": "untrained network", "channel_draw": "channel re-draw"}
METRIC_NAMES = {"h_raw": "H_raw (DFA exponent)", "metastability": "metastability M"}


def contrasts_legend(rows: list[dict]) -> str:
    """The contrasts' legend: test, null, minimum seeds, correction, effect, dropped runs, what "within" means."""
    family = next((r["n_tests"] for r in rows if r.get("n_tests")), 0)
    tested = ", ".join(CONTROL_NAMES[c] for c in TESTED)
    return (
        '<p class="note">'
        f"<b>Test</b>: for each cell, metric and control that is a null ({text(tested)}), a two-sided one-sample "
        "t-test on the per-seed differences signal − control. "
        "<b>Null</b>: the differences have mean 0 across seeds (the metric does not tell the network from the "
        "control). "
        f"<b>Minimum seeds</b>: {MIN_SEEDS}; with fewer the verdict is <i>insufficient seeds (needs {MIN_SEEDS})</i> "
        "and the row is not tested. "
        f"<b>Correction</b>: the {family} tests of this report are one Benjamini-Hochberg family (false-discovery "
        f"rate {ALPHA:g}); the verdict reads the adjusted p: <b>beyond</b> the control when p<sub>BH</sub> &lt; "
        f"{ALPHA:g}, else <b>within</b>. "
        "<b>Within</b> means the seeds cannot tell signal from control at this level; it is not evidence that they "
        f"are equal (one test alone detects d<sub>z</sub> ≥ {detectable_effect(5):.2f} with 80% power at 5 seeds, "
        f"≥ {detectable_effect(10):.2f} at 10; the family's correction asks for more). "
        "<b>Effect</b>: the mean difference with its 95% t-interval (one test's, not adjusted for the family: it "
        "can exclude 0 where the adjusted p says within), and d<sub>z</sub> = mean / std of the differences. "
        "<b>n</b>: the seeds used of the cell's runs; the others are listed with why they were dropped "
        "(not finished, incomplete: a gap in its files, or no value for that control). "
        "<b>Order</b> (label order minus random order) is not a null: on features with no structure it is −0.04 to "
        "−0.29 H_raw by construction (class centring of label-sorted blocks), so it is shown, uncoloured, as a "
        "<i>measurement</i>: the part of the metric that label ordering makes and its share of the signal, with "
        "its interval, no p-value and no verdict. The untrained-network column says what training changed.</p>")


def contrast_entry(r: dict) -> str:
    """One table cell: mean difference [interval], effect, p and adjusted p, seeds used and dropped, verdict."""
    verdict = r.get("verdict") or ""
    mean = r.get("mean_diff")
    sign = "+" if mean is not None and mean > 0 else ""
    interval = f" [{num(r.get('ci_low'))}, {num(r.get('ci_high'))}]" if r.get("ci_low") is not None else ""
    if r.get("kind") == "measurement":
        effect = f"{num(r['share'] * 100 if r.get('share') is not None else None)}% of the signal"
        tested = ""
    else:
        effect = f"d<sub>z</sub> {num(r.get('d_z'))}"
        tested = (f"p {num(r.get('p_value'))} · p<sub>BH</sub> {num(r.get('p_adjusted'))} · "
                  if r.get("p_value") is not None else "")
    seeds = f"n {r.get('n_seeds')} of {r.get('n_runs')} runs"
    if r.get("dropped"):
        seeds += f" (dropped: {text(r['dropped'])})"
    why = f" <small>({text(r['detail'])})</small>" if r.get("detail") and verdict != MEASUREMENT else ""
    cls = ("num " + ("muted" if is_insufficient(verdict) else CONTRAST_CLASS.get(verdict, ""))).strip()
    return (f'<td class="{cls}">{sign}{num(mean)}{interval} · {effect}<br>'
            f"<small>{tested}{seeds}</small><br><b>{text(verdict)}</b>{why}</td>")


def contrasts_section(rows: list[dict]) -> str:
    """HTML: per metric, a row per cell and a column per control: signal minus control, interval, test, verdict."""
    out = ["<h2 id=\"glance\">At a glance: does the signal beat its controls?</h2>"]
    if not rows:
        out.append('<p class="missing">No controls to compare with yet: run <code>dynstudy analyze</code>.</p>')
        return "".join(out)
    out.append(contrasts_legend(rows))
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
                tds.append(f"<td>{MISSING}</td>" if r is None else contrast_entry(r))
            out.append(f"<tr><td>{text(' · '.join(str(k) for k in cell))}</td>{''.join(tds)}</tr>")
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
