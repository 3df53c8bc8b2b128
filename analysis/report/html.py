"""The report's small HTML and number-format helpers: one function per job, used by every section.

A missing value (None, NaN, infinite, not a number) renders as :data:`MISSING` wherever it appears;
every string from the data goes through :func:`text`, in the page and in plotly's labels alike.

Examples
--------
>>> num(0.123456), num(12.0), num(float("nan")), num(None)
('0.123', '12', '–', '–')
>>> text("<b>")
'&lt;b&gt;'
"""
from __future__ import annotations

import html
import math

from dynstudy.analysis.report.data import finite_or_none

#: How a missing value renders, in tables, captions and figures' texts.
MISSING = "–"
#: Colour of the swatch of a run without a state.
UNCLASSIFIED_COLOUR = "#7f7f7f"


def text(value) -> str:
    """HTML-escaped text of any value from the data ("" for None)."""
    return html.escape("" if value is None else str(value))


def num(value, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (integers from 10 on in full), or :data:`MISSING`."""
    v = finite_or_none(value)
    if v is None:
        return MISSING
    if abs(v) < 1e-12:
        return "0"
    return f"{v:.0f}" if v == int(v) and abs(v) >= 10 else f"{v:.{digits}g}"


def mean_std(values, digits: int = 3) -> str:
    """"mean ± std" (ddof 1) of the finite ``values``; one value alone; :data:`MISSING` for none."""
    vals = [v for v in (finite_or_none(x) for x in values) if v is not None]
    if not vals:
        return MISSING
    if len(vals) == 1:
        return num(vals[0], digits)
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return f"{num(mean, digits)} ± {num(std, 2)}"


def num_cell(value, digits: int = 3) -> str:
    """A sortable numeric table cell: the number, its exact value in ``data-v``; :data:`MISSING` when missing."""
    v = finite_or_none(value)
    if v is None:
        return f"<td class=num>{MISSING}</td>"
    return f'<td class=num data-v="{v!r}">{num(v, digits)}</td>'


def text_cell(value) -> str:
    """A table cell of text from the data, :data:`MISSING` when it is None or empty."""
    return f"<td>{text(value) if value not in (None, '') else MISSING}</td>"


def figure(div_html: str, caption: str) -> str:
    """A ``<figure>``: a plot's markup (:func:`dynstudy.analysis.report.plots.figure_html`) and its caption (text)."""
    return f"<figure>{div_html}<figcaption>{text(caption)}</figcaption></figure>"


def missing(tables, what: str) -> str:
    """The notice of a section whose ``tables`` are missing or empty in the store."""
    names = ", ".join(tables)
    return (f'<p class="missing">Not analysed yet: no {text(what)} here; it comes from {text(names)}, missing or empty '
            "in this store. Run <code>dynstudy analyze</code> to compute the analysis tables.</p>")


def state(label, colours: dict) -> str:
    """A taxonomy state with its colour swatch (``colours``: state -> colour), or :data:`MISSING`."""
    if not label:
        return MISSING
    colour = colours.get(label, UNCLASSIFIED_COLOUR)
    return f'<span class="state" style="background:{colour}"></span>{text(label)}'
