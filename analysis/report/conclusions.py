"""The report's conclusions: signal against its controls at a glance, the paper's three claims (table
``claims``) and their sensitivity."""
from __future__ import annotations

from dynstudy.analysis.kernels.dynamics import SATURATION_SIGMAS
from dynstudy.analysis.report.html import MISSING, num, text, text_cell
from dynstudy.analysis.stats.claims import MIN_LEADS, MIN_SEEDS_PER_DATASET
from dynstudy.analysis.stats.contrasts import MIN_SEEDS, TESTED, detectable_effect
from dynstudy.analysis.stats.variability import finite_or_none
from dynstudy.analysis.stats.verdicts import (
    ALPHA,
    BEYOND,
    MEASUREMENT,
    NOT_SUPPORTED,
    SUPPORTED,
    UNTESTED,
    WITHIN,
    is_insufficient,
)

#: A contrast's colour: beyond green, within red, untested and insufficient grey; a measurement is no verdict and
#: is not coloured.
CONTRAST_CLASS = {BEYOND: "ok", WITHIN: "bad", UNTESTED: "muted", MEASUREMENT: ""}
CONTROL_NAMES = {"noise": "noise (i.i.d. features)", "order": "order (random sample order)",
                 "init": "untrained network", "channel_draw": "channel re-draw"}
METRIC_NAMES = {"h_raw": "H_raw (DFA exponent)", "metastability": "metastability M",
                "effective_rank": "effective rank (stages' mean)",
                "participation_ratio": "participation ratio (stages' mean)"}


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


def verdict_class(verdict) -> str:
    """The CSS class of a claim's verdict: supported ok, not supported bad, anything else (no test) muted."""
    return {SUPPORTED: "ok", NOT_SUPPORTED: "bad"}.get(verdict, "muted")


def interval(low, high) -> str:
    """" [low, high]" of a 95% interval, or "" when it has no ends."""
    if finite_or_none(low) is None or finite_or_none(high) is None:
        return ""
    return f" [{num(low)}, {num(high)}]"


def claims_legend(plateau_html: str, n_tests: int, n_families: int) -> str:
    """The claims section's legend: each test, its null, its minimum seeds and its correction, a sentence each."""
    return (
        f'<p class="note">The paper\'s three claims, tested across the seeds of each cell on its finished, whole '
        f"runs. This report holds <b>{n_tests} tests in {n_families} families</b>; each verdict is read from its "
        f"Holm-adjusted p (<b>supported</b> when p adj &lt; {ALPHA:g}).</p><ul class=\"note\">"
        "<li><b>Integration separates datasets</b>: Welch's two-sided t-test on the runs' mean H_eff, and on H_raw "
        "minus its noise control; null: the two datasets have equal means; it needs "
        f"{MIN_SEEDS_PER_DATASET} finished seeds per dataset; the effect is Hedges' g with its 95% noncentral-t "
        "interval, and the mean difference with Welch's 95% interval. Where most runs' H_raw lie beyond "
        f"H_opt ± {SATURATION_SIGMAS:g} sigma_H (each run's own settings) H_eff is a Gaussian's tail: the verdict is "
        "<b>H_eff saturated</b> and the same test on H_raw is the row below it (“on H_raw”).</li>"
        "<li><b>Volatility trigger precedes the accuracy plateau</b>: the one-sided sign-flip permutation test of the "
        "mean lead (plateau minus trigger epoch, exact over all sign flips); null: the leads are symmetric about 0; "
        f"it needs {MIN_LEADS} runs with a trigger (with fewer, no outcome reaches p &lt; {ALPHA:g}); the lead's "
        f"interval is a t-interval; patience-based stopping replayed on the same curves is beside it. A run's "
        f"plateau: its {plateau_html}.</li>"
        "<li><b>State stable across seeds</b>: the cell's largest state count against the permutation null that "
        "shuffles state labels across the study's finished runs (the study's state counts kept), exact; null: a "
        "cell's seeds agree no more than any runs of the study; the seeds it needs depend on the study's state "
        "counts and are given as “needs N”.</li>"
        "<li><b>Correction</b>: Holm within each family (one claim across the study's cells or dataset pairs; the "
        "temporal claims and the “on H_raw” rows are families of their own); raw and adjusted p are both shown; "
        "rows with insufficient seeds, untested or saturated are not tests of their family.</li>"
        "<li><b>not supported</b> is not evidence against the claim: the test did not reject its null with these "
        "seeds (docs/metrics.md states the effect each test detects with 80% power at 5 and 10 seeds).</li></ul>")


def claims_section(rows: list[dict], plateau_html: str) -> str:
    """HTML: one table row per claim test, verdicts coloured, with raw and adjusted p, the effect's interval, the
    runs used and the runs dropped; a note when there are none.

    ``plateau_html`` states the accuracy plateau's rule
    (:func:`dynstudy.analysis.report.build.plateau_note`).
    """
    families = {r.get("family") or r.get("claim"): r.get("n_tests") or 0 for r in rows}
    out = ["<h2 id=\"claims\">Claims over seeds</h2>",
           claims_legend(plateau_html, sum(families.values()), len(families))]
    if not rows:
        out.append('<p class="missing">No claims table: run <code>dynstudy analyze</code>.</p>')
        return "".join(out)
    head = ["claim", "model", "optimizer", "dataset", "n", "effect [95%]", "difference [95%]", "p", "p adj",
            "verdict", "dropped runs", "detail"]
    out.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>")
    for r in rows:
        verdict = r.get("verdict") or ""
        effect = num(r.get("effect_size"))
        if effect != MISSING:
            effect += interval(r.get("ci_low"), r.get("ci_high"))
            if r.get("effect_name"):
                effect += f" ({text(r['effect_name'])})"
        diff = num(r.get("mean_diff"))
        if diff != MISSING:
            diff += interval(r.get("diff_low"), r.get("diff_high"))
        n = text(r.get("n")) if r.get("n") is not None else MISSING
        if r.get("n_runs") is not None:
            n += f" of {text(r['n_runs'])}"
        adjusted = num(r.get("p_adjusted"))
        if adjusted != MISSING and r.get("n_tests"):
            adjusted += f" (Holm, {text(r['n_tests'])} tests)"
        tds = [text_cell(r.get(k)) for k in ("claim", "model", "optimizer", "dataset")]
        tds += [f"<td>{n}</td>", f"<td>{effect}</td>", f"<td>{diff}</td>", f"<td>{num(r.get('p_value'))}</td>",
                f"<td>{adjusted}</td>", f'<td><span class="{verdict_class(verdict)}">{text(verdict)}</span></td>',
                text_cell(r.get("dropped")), text_cell(r.get("detail"))]
        out.append("<tr>" + "".join(tds) + "</tr>")
    out.append("</table>")
    return "".join(out)


def verdict_with_p(verdict, p_adjusted) -> str:
    """"supported (p adj 0.012)"; the verdict alone when it is not a test's."""
    return f"{verdict} (p adj {num(p_adjusted)})" if finite_or_none(p_adjusted) is not None else str(verdict)


def sensitivity_section(rows: list[dict]) -> str:
    """HTML: for each parameter setting, the real flips, the other changes, the null study's flips and the runs
    changing state."""
    out = ["<h2 id=\"sensitivity\">Sensitivity</h2>",
           '<p class="note">Each free parameter of the protocol varied in turn (the others at the runs\' own '
           "values): H_opt, sigma_H, the smoothing window, w_H, the volatility threshold (0.40 and 0.20 are the "
           "thresholds behind the paper's published CIFAR-10 and CIFAR-100 trigger results; its script says 0.35) "
           "and the probe size (the first P samples of each run's stored probe; a run whose probe is smaller than "
           "P is left out of that row). Every claim is re-tested and Holm-adjusted as in the claims table. A "
           "conclusion <em>flips</em> when its verdict changes between supported and not supported; a change to or "
           "from insufficient seeds, untested or H_eff saturated is counted apart (a test that could or could not "
           "be made, not a different answer). The null study is this study with the dataset labels of its finished "
           "runs permuted within each model × optimizer (seeded), which destroys any dataset effect, through the "
           "same grid: its flips are what chance alone gives a study of this shape.</p>"]
    if not rows:
        out.append('<p class="missing">No sensitivity table: run <code>dynstudy analyze</code>.</p>')
        return "".join(out)
    settings: dict = {}
    for r in rows:
        s = settings.setdefault((r["parameter"], r["value"]),
                                {"flips": [], "other": 0, "n": 0, "states": r["states_changed"], "runs": r["n_runs"],
                                 "null": r.get("null_flips")})
        s["n"] += 1
        s["other"] += bool(r.get("changed"))
        if r.get("flipped"):
            s["flips"].append(f"{r['claim']} ({r['model']}, {r['dataset']}): "
                              f"{verdict_with_p(r['default_verdict'], r.get('default_p_adjusted'))} → "
                              f"{verdict_with_p(r['verdict'], r.get('p_adjusted'))}")
    real = sum(len(s["flips"]) for s in settings.values())
    nulls = [s["null"] for s in settings.values() if s["null"] is not None]
    if nulls:
        out.append(f'<p class="note"><b>This study shows {real} real flips over the grid; a null study of this shape '
                   f"shows {sum(nulls)} flips.</b></p>")
    out.append("<table><tr><th>parameter</th><th>value</th><th>real flips</th><th>other changes</th>"
               "<th>null study flips</th><th>runs changing state</th><th>which flipped (p adj)</th></tr>")
    for (param, value), s in settings.items():
        which = "<br>".join(text(f) for f in s["flips"]) or "none"
        null = text(s["null"]) if s["null"] is not None else MISSING
        out.append(f"<tr><td>{text(param)}</td><td>{num(value)}</td><td>{len(s['flips'])} / {s['n']}</td>"
                   f"<td>{s['other']}</td><td>{null}</td><td>{s['states']} / {s['runs']}</td><td>{which}</td></tr>")
    out.append("</table>")
    return "".join(out)
