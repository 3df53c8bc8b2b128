"""The page around the report's sections: its CSS, plotly.js and the table-sorting script.

The main page inlines plotly.js, so it opens offline and can be mailed or
archived as one file; the cell pages of its folder share one copy of it.
"""
from __future__ import annotations

from dynstudy.analysis.report.plots import plotly_js

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1360px;
color:#222;line-height:1.4;padding:0 16px}
h1{margin-bottom:4px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;font-size:13px;margin:8px 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 10px;margin:8px 0}
.missing{background:#fdecea;border-left:4px solid #d93025;padding:6px 10px;margin:8px 0}
.ok{color:#137333;font-weight:600}.bad{color:#b3261e;font-weight:600}.muted{color:#777}
.state{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:4px}
figure{margin:12px 0}.plot{width:100%;border:1px solid #eee}.wide{overflow-x:auto;max-width:100%}
table.runs{font-size:12px}table.runs td,table.runs th{padding:2px 5px}
th.sortable{cursor:pointer;user-select:none}th.sortable:hover{background:#e6e6e6}
th[data-dir="asc"]::after{content:" \25B2"}th[data-dir="desc"]::after{content:" \25BC"}
.runinfo{display:flex;gap:28px;flex-wrap:wrap;align-items:flex-start}.runinfo>div{flex:1;min-width:320px}
section.run{border-top:1px solid #eee;margin-top:18px}pre{background:#f7f7f7;padding:8px;overflow-x:auto;font-size:12px}
figcaption{font-size:13px;color:#555}td.rid{white-space:nowrap;font-family:monospace;font-size:12px}.meta{color:#555;font-size:14px}
"""
#: Sorts every table whose first row holds <th> cells (not those of class "nosort") on a click on a head:
#: numerically by each cell's data-v, else its leading number, else as text; blanks last; a second click reverses.
SORT_JS = """
document.querySelectorAll("table:not(.nosort)").forEach(function (table) {
  var head = table.rows[0];
  if (!head || !head.cells.length || head.cells[0].tagName !== "TH") return;
  Array.prototype.forEach.call(head.cells, function (th, col) {
    th.classList.add("sortable");
    th.title = "sort by this column";
    th.addEventListener("click", function () {
      var dir = th.dataset.dir === "asc" ? "desc" : "asc";
      Array.prototype.forEach.call(head.cells, function (h) { delete h.dataset.dir; });
      th.dataset.dir = dir;
      var rows = Array.prototype.slice.call(table.rows, 1);
      function key(row) {
        var c = row.cells[col];
        if (!c) return [2, ""];
        var v = c.dataset.v !== undefined ? parseFloat(c.dataset.v) : parseFloat(c.textContent);
        if (!isNaN(v)) return [0, v];
        var t = c.textContent.trim();
        return t === "" || t === "\u2013" ? [2, ""] : [1, t.toLowerCase()];
      }
      rows.sort(function (a, b) {
        var ka = key(a), kb = key(b);
        if (ka[0] !== kb[0]) return ka[0] - kb[0];
        var d = ka[1] < kb[1] ? -1 : ka[1] > kb[1] ? 1 : 0;
        return dir === "asc" ? d : -d;
      });
      rows.forEach(function (r) { r.parentNode.appendChild(r); });
    });
  });
});
"""


def page_html(title_html: str, body_html: str, plotly_src: str | None = None, script: str = "") -> str:
    """The whole HTML document: ``title_html`` (already escaped) as <title>, ``body_html`` as the body.

    plotly.js is inlined once in the head (the figures' scripts in the body
    call it), or, with ``plotly_src``, loaded from that relative URL (a file
    shared by the pages of a folder); the sorting script and ``script``
    (JavaScript) run at the end of the body, once every table exists.
    """
    library = f'<script src="{plotly_src}"></script>' if plotly_src else f"<script>{plotly_js()}</script>"
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title_html}</title>'
            f"<style>{CSS}</style>{library}</head><body>{body_html}"
            f"<script>{SORT_JS}{script}</script></body></html>")
