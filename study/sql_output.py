"""How a ``dynstudy sql`` result leaves the program: an aligned table for people, CSV, JSON or Parquet for scripts.

``table`` (the default) rounds floats to 6 significant digits, cuts cells at
40 characters and prints at most ``--limit`` rows, saying so on stderr when
it cut. ``csv``, ``json`` and ``parquet`` keep every row at full precision
(floats as their shortest exact repr; NULL as an empty CSV field or JSON
``null``, NaN and infinities as JSON ``null`` too) and write to ``--output``
or stdout (Parquet only to a file).
"""
from __future__ import annotations

import csv
import datetime
import json
import math
import sys

FORMATS = ("table", "csv", "json", "parquet")


def _fmt(v) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, float):
        return "NaN" if math.isnan(v) else f"{v:.6g}"
    return str(v)


def format_table(columns: list[str], rows: list[tuple], max_width: int = 40) -> str:
    """Rows as an aligned text table, long cells cut to ``max_width``."""
    cells = [[_fmt(v) for v in row] for row in rows]
    cells = [[c if len(c) <= max_width else c[:max_width - 1] + "…" for c in row] for row in cells]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = lambda vals: "  ".join(v.ljust(w) for v, w in zip(vals, widths)).rstrip()  # noqa: E731
    return "\n".join([line(columns), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _json_value(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (datetime.date, datetime.datetime, datetime.time)):
        return v.isoformat()
    if isinstance(v, (bytes, bytearray)):
        return v.hex()
    return v


def _csv_value(v):
    if v is None:
        return ""
    if isinstance(v, (list, dict)):  # a list column (e.g. capture_metrics.log_f_mean): one JSON cell
        return json.dumps(v, default=_json_value)
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return v


def write_result(rel, fmt: str, output: str | None, limit: int) -> None:
    """Write the result of ``rel`` (a DuckDB relation) in ``fmt`` to ``output`` or stdout."""
    if fmt == "table":
        rows = rel.limit(limit + 1).fetchall()
        text = format_table(rel.columns, rows[:limit]) + "\n"
        if output:
            with open(output, "w", encoding="utf-8") as fh:
                fh.write(text)
        else:
            sys.stdout.write(text)
        if len(rows) > limit:
            print(f"dynstudy sql: more than {limit} rows; only {limit} shown (raise --limit, aggregate, or use "
                  "--format csv|json|parquet for all of them)", file=sys.stderr)
        return
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(rel.to_arrow_table(), output, compression="zstd")
        return
    columns, rows = rel.columns, rel.fetchall()
    fh = open(output, "w", encoding="utf-8", newline="") if output else sys.stdout
    try:
        if fmt == "csv":
            writer = csv.writer(fh)
            writer.writerow(columns)
            writer.writerows([_csv_value(v) for v in row] for row in rows)
        else:
            json.dump([{c: _json_value(v) for c, v in zip(columns, row)} for row in rows], fh, default=str)
            fh.write("\n")
    finally:
        if output:
            fh.close()
