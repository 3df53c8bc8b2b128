"""``dynstudy sql`` is read-only: which statements it runs, and on what connection.

Two layers, each enough for what it guards:

1. The statement check (:func:`read_only_statements`): DuckDB parses the
   input; every statement must be a query (``SELECT``, and what DuckDB parses
   as one: ``FROM``-first, ``VALUES``, ``DESCRIBE``, ``SUMMARIZE``, ``SHOW``)
   or an ``EXPLAIN`` / ``EXPLAIN ANALYZE`` of a query. Comments are ignored
   and each statement of a multi-statement input is checked before any runs.
   This is what keeps COPY, EXPORT, INSERT, CREATE, ATTACH, SET, PRAGMA, CALL,
   INSTALL and LOAD out, EXPLAIN ANALYZE of them included (EXPLAIN ANALYZE
   executes its statement). DuckDB types a query whose ``WITH`` clause holds
   a COPY, INSERT, UPDATE or DELETE as a SELECT, so each query's parse tree
   (``json_serialize_sql``) is walked too: only plain query nodes pass.
2. The connection (:func:`dynstudy.analysis.pipeline.catalog.lock_down`): DuckDB's external
   access is off except for the store's own folder, extensions are neither
   installed nor loaded automatically, and the configuration is locked, so a
   query cannot read ``/etc/passwd``, fetch a URL or change a setting.
"""
from __future__ import annotations

import json
import re

import duckdb

#: Statement types that run as they are.
QUERY = "SELECT"
#: The parse-tree nodes of a query that only reads (a COPY_QUERY_NODE, INSERT_QUERY_NODE, ... in a CTE writes).
READING_NODES = {"SELECT_NODE", "SET_OPERATION_NODE", "RECURSIVE_CTE_NODE", "CTE_NODE"}


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


def _query_nodes(tree, found: set) -> set:
    """Every query-node type (``..._NODE``) in a ``json_serialize_sql`` tree."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "type" and isinstance(value, str) and value.endswith("_NODE"):
                found.add(value)
            _query_nodes(value, found)
    elif isinstance(tree, list):
        for value in tree:
            _query_nodes(value, found)
    return found


def _check_query(con, text: str) -> None:
    """Refuse a SELECT-typed statement that writes: a CTE holding a COPY, INSERT, UPDATE or DELETE."""
    tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [text]).fetchall()[0][0])
    if tree.get("error"):
        raise RefusedStatement(f"dynstudy sql: cannot check the query: {_one_line(tree.get('error_message', ''))}")
    nodes = _query_nodes(tree, set()) - READING_NODES
    writes = sorted(n.removesuffix("_QUERY_NODE").removesuffix("_NODE") for n in nodes)
    if writes:
        raise RefusedStatement(f"dynstudy sql is read-only: {_a(', '.join(writes))} inside a WITH clause is not "
                               "allowed (only queries); to write elsewhere, open the store's Parquet files with DuckDB "
                               "directly")


def statement_text(statement) -> str:
    """The statement's text without a final ``;`` and what follows it (DuckDB keeps comments after it, which break
    the relation a result is read through)."""
    text = statement.query
    toks = [(pos, kind) for pos, kind in duckdb.tokenize(text) if kind != duckdb.token_type.comment]
    if toks and text[toks[-1][0]:].startswith(";"):
        return text[:toks[-1][0]]
    return text


def check_statement(con, statement) -> None:
    """Refuse ``statement`` (an extracted DuckDB statement) unless it only reads."""
    kind = statement.type.name
    if kind == QUERY:
        _check_query(con, statement_text(statement))
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
    raise RefusedStatement(f"dynstudy sql is read-only: {_a(kind)} statement is not allowed (only queries: SELECT, "
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


def _a(word: str) -> str:
    """``word`` with its indefinite article: "a COPY", "an INSERT"."""
    return f"{'an' if word[:1] in 'AEIOU' else 'a'} {word}"


def _one_line(err) -> str:
    return " ".join(str(err).split())
