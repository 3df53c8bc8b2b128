"""``dynstudy sql`` is read-only: which statements it runs, and on what connection.

Two layers, each enough for what it guards:

1. The statement check (:func:`read_only_statements`): DuckDB parses the
   input; every statement must be a query (``SELECT``, and what DuckDB parses
   as one: ``FROM``-first, ``VALUES``, ``DESCRIBE``, ``SUMMARIZE``, ``SHOW``)
   or an ``EXPLAIN`` / ``EXPLAIN ANALYZE`` of a query. Comments are ignored
   and each statement of a multi-statement input is checked before any runs.
   This is what keeps COPY, EXPORT, INSERT, CREATE, ATTACH, SET, PRAGMA, CALL,
   INSTALL and LOAD out, EXPLAIN ANALYZE of them included (EXPLAIN ANALYZE
   executes its statement).
2. The connection (:func:`analysis.catalog.lock_down`): DuckDB's external
   access is off except for the store's own folder, extensions are neither
   installed nor loaded automatically, and the configuration is locked, so a
   query cannot read ``/etc/passwd``, fetch a URL or change a setting.
"""
from __future__ import annotations

import re

import duckdb

#: Statement types that run as they are.
QUERY = "SELECT"


class RefusedStatement(ValueError):
    """A statement ``dynstudy sql`` does not run; the message says which and why."""


def _explained(text: str) -> str:
    """The statement an ``EXPLAIN [ANALYZE] [(options)] <statement>`` explains (comments skipped)."""
    toks = duckdb.tokenize(text)
    ends = [pos for pos, _ in toks[1:]] + [len(text)]
    words = [(pos, text[pos:end].strip().upper()) for (pos, kind), end in zip(toks, ends)
             if kind != duckdb.token_type.comment]
    i = 1  # words[0] is EXPLAIN
    if i < len(words) and words[i][1] == "ANALYZE":
        i += 1
    if i < len(words) and words[i][1] == "(":  # EXPLAIN (FORMAT json) ...
        depth = 0
        while i < len(words):
            depth += (words[i][1] == "(") - (words[i][1] == ")")
            i += 1
            if depth == 0:
                break
    if i >= len(words):
        raise RefusedStatement("dynstudy sql: EXPLAIN of nothing")
    return text[words[i][0]:]


def check_statement(con, statement) -> None:
    """Refuse ``statement`` (an extracted DuckDB statement) unless it only reads."""
    kind = statement.type.name
    if kind == QUERY:
        return
    if kind == "EXPLAIN":
        inner = con.extract_statements(_explained(statement.query))
        if len(inner) != 1:
            raise RefusedStatement("dynstudy sql is read-only: EXPLAIN of more than one statement")
        try:
            check_statement(con, inner[0])
        except RefusedStatement as err:
            raise RefusedStatement(f"{err} (inside EXPLAIN)") from None
        return
    raise RefusedStatement(f"dynstudy sql is read-only: a {kind} statement is not allowed (only queries: SELECT, "
                           "FROM, VALUES, DESCRIBE, SUMMARIZE, SHOW, and EXPLAIN of them); to write elsewhere, "
                           "open the store's Parquet files with DuckDB directly")


#: Column names of the store that are SQL keywords, and must be quoted in a query.
KEYWORD_COLUMNS = ("window",)


def _keyword_hint(sql: str) -> str:
    """A hint for a query that uses a keyword column unquoted (``window`` of temporal_metrics), else ''."""
    bare = [c for c in KEYWORD_COLUMNS if re.search(rf'(?<!["\w]){c}(?!["\w])', sql, flags=re.IGNORECASE)]
    return "".join(f'; {c} is an SQL keyword: quote the column, "{c}"' for c in bare)


def read_only_statements(con, sql: str) -> list:
    """Parse ``sql`` and return its statements, refusing the whole input if any one would write."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as err:
        raise RefusedStatement(f"dynstudy sql: cannot parse the query: {_one_line(err)}{_keyword_hint(sql)}") from None
    if not statements:
        raise RefusedStatement("dynstudy sql: no statement given")
    for st in statements:
        try:
            check_statement(con, st)
        except duckdb.Error as err:
            raise RefusedStatement(f"dynstudy sql: cannot parse the query: {_one_line(err)}") from None
    return statements


def _one_line(err) -> str:
    return " ".join(str(err).split())
