"""The report's two warnings about a value's meaning: a non-stationary series and a saturated H_eff.

A DFA exponent above :data:`dynstudy.analysis.kernels.dynamics.NONSTATIONARY_ALPHA` describes a drift;
an H_raw more than :data:`dynamics.SATURATION_SIGMAS` sigma_H from H_opt puts H_eff in a Gaussian's
tail. The analysis writes both as boolean columns (capture_metrics, temporal_metrics, run_summary); here
are their cells and the sentences that say what they mean. A flag that is missing (None: a store analysed
before the column existed, or no H_raw) renders as unknown, never as "no".

Examples
--------
>>> flag_text(True), flag_text(False), flag_text(None)
('yes', 'no', '–')
"""
from __future__ import annotations

from dynstudy.analysis.kernels.dynamics import NONSTATIONARY_ALPHA, SATURATION_SIGMAS
from dynstudy.analysis.report.html import MISSING, text

#: What a non-stationary flag means, in one sentence.
NONSTATIONARY_TEXT = (f"alpha > {NONSTATIONARY_ALPHA:g}: the series drifts; DFA's exponent then measures the drift, "
                      "not integration.")
#: What a saturated-H_eff flag means, in one sentence.
SATURATED_TEXT = (f"H_raw beyond H_opt ± {SATURATION_SIGMAS:g} sigma_H (the run's own settings): H_eff then lies in "
                  "a Gaussian's tail, near 0 whatever H_raw is; read H_raw instead.")


def flag_text(value) -> str:
    """"yes", "no", or :data:`MISSING` for an unknown flag (None)."""
    if value is None:
        return MISSING
    return "yes" if value else "no"


def flag_cell(value, detail: str = "") -> str:
    """A sortable table cell of a flag (yes marked in red, sort key 1; no 0; unknown last), ``detail`` after it."""
    extra = f" <span class=muted>{text(detail)}</span>" if detail else ""
    if value is None:
        return f"<td>{MISSING}{extra}</td>"
    cls = ' class="bad"' if value else ""
    return f'<td data-v="{int(bool(value))}"><span{cls}>{flag_text(value)}</span>{extra}</td>'


def count_text(count, total, unit: str) -> str:
    """"k of n <unit> above 1" for a count of non-stationary captures or windows; "" when unknown."""
    if count is None or total is None:
        return ""
    return f"{count} of {total} {unit} with alpha > {NONSTATIONARY_ALPHA:g}"


def saturation_band(h_opt: float, sigma_h: float) -> str:
    """The H_raw band inside which H_eff is a measurement, in words, for settings ``h_opt`` and ``sigma_h``."""
    half = SATURATION_SIGMAS * sigma_h
    return f"H_opt {h_opt:g} ± {SATURATION_SIGMAS:g} sigma_H = {h_opt - half:.4g} .. {h_opt + half:.4g}"


def legend_html() -> str:
    """The two sentences, as the tables that show the flags state them."""
    return (f'<p class="meta">Non-stationary: {text(NONSTATIONARY_TEXT)} H_eff saturated: {text(SATURATED_TEXT)} '
            f"{MISSING}: unknown (no H_raw, or a store analysed before these flags existed).</p>")
