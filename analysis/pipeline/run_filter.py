"""Which runs a query can read: the run_id filters that let a catalog open some runs' files, not a whole table.

:func:`query_runs` reads a query's parse tree (DuckDB's ``json_serialize_sql``) and finds, for each per-run table,
the runs every reference to it is restricted to. A reference is restricted when it sits in the ``FROM`` of a
``SELECT`` whose ``WHERE`` is a conjunction (``AND`` at the top) holding ``run_id = '<literal>'`` or
``run_id IN ('<literal>', ...)`` on that reference (``alias.run_id``, or a bare ``run_id`` when the ``FROM`` holds
that one table), and reaches that ``FROM`` only through inner or cross joins. Rows of other runs then never reach
the result, so a view of only those runs' files gives exactly what the whole table gives. A table is opened whole
when any reference to it is not restricted: an ``OR``, a ``LEFT``/``FULL``/``ASOF``/``POSITIONAL``/``NATURAL``
join, a lateral or correlated use, ``TABLESAMPLE``, renamed columns (``t(a, b)``), a cast or a non-string literal,
a subquery or CTE over it without such a filter, a table function (``query_table('t')``), a run id that cannot
name a folder (``'a/b'``), a query naming ``unreadable_files``, or a statement the serializer does not take
(``DESCRIBE``, ``SHOW``, ``SUMMARIZE``, ``EXPLAIN``). Whatever the parser does not show plainly counts as not
restricted.
"""
from __future__ import annotations

import json
from typing import Iterator, Optional

import duckdb

from dynstudy.analysis.pipeline.catalog import NO_EXTENSIONS
from dynstudy.store_contract.files import run_folder_problem
from dynstudy.store_contract.schemas import PARTITIONED

#: Joins through which a WHERE conjunct on one side's run_id keeps other runs' rows out of the result.
_FILTERING_JOINS = {("INNER", "REGULAR"), ("INNER", "CROSS")}


def _nodes(tree) -> Iterator[dict]:
    """Every dict in a parsed tree, depth first."""
    if isinstance(tree, dict):
        yield tree
        for value in tree.values():
            yield from _nodes(value)
    elif isinstance(tree, list):
        for value in tree:
            yield from _nodes(value)


def _string(node: dict) -> Optional[str]:
    """The text of a plain string constant (None for anything else: a number, a cast, an expression)."""
    literal = node.get("literal") if node.get("class") == "CONSTANT" else None
    if isinstance(literal, dict) and literal.get("kind") == "STRING" and isinstance(literal.get("text"), str):
        return literal["text"]
    return None


def _is_run_id(node: dict, name: str, alone: bool) -> bool:
    """True when ``node`` is the column run_id of the reference called ``name`` (bare when it is ``alone``)."""
    if node.get("class") != "COLUMN_REF":
        return False
    parts = [str(p).lower() for p in node.get("column_names", [])]
    return parts == [name, "run_id"] or (alone and parts == ["run_id"])


def _conjunct_runs(cond: dict, name: str, alone: bool) -> Optional[set[str]]:
    """The runs one WHERE conjunct restricts the reference ``name`` to (None: it does not restrict it)."""
    if cond.get("type") == "COMPARE_EQUAL":
        for col, const in ((cond.get("left"), cond.get("right")), (cond.get("right"), cond.get("left"))):
            if isinstance(col, dict) and isinstance(const, dict) and _is_run_id(col, name, alone):
                value = _string(const)
                return {value} if value is not None else None
        return None
    if cond.get("type") == "COMPARE_IN" and cond.get("class") == "OPERATOR":
        col, *values = cond.get("children") or [None]
        found = [_string(v) for v in values]
        if isinstance(col, dict) and _is_run_id(col, name, alone) and found and None not in found:
            return set(found)
    return None


def _conjuncts(where) -> list[dict]:
    """The top-level AND-ed terms of a WHERE clause (none when there is no WHERE)."""
    if not isinstance(where, dict):
        return []
    if where.get("type") == "CONJUNCTION_AND":
        return [c for child in where.get("children", []) for c in _conjuncts(child)]
    return [where]


def _from_refs(table: dict) -> tuple[list[dict], bool]:
    """(the base-table references a FROM reaches through inner and cross joins alone, whether it reaches every
    reference in it so)."""
    if table.get("type") == "BASE_TABLE":
        return [table], True
    if table.get("type") == "JOIN":
        if (table.get("join_type"), table.get("ref_type")) not in _FILTERING_JOINS:
            return [], False
        left, whole_left = _from_refs(table.get("left") or {})
        right, whole_right = _from_refs(table.get("right") or {})
        return left + right, whole_left and whole_right
    return [], False


def _restricted(select: dict) -> dict[int, set[str]]:
    """id() of each base-table reference of a SELECT's FROM that its WHERE restricts -> those runs."""
    refs, _ = _from_refs(select.get("from_table") or {})
    alone = len(refs) == 1
    out = {}
    for ref in refs:
        if ref.get("sample") is not None or ref.get("column_name_alias") or ref.get("at_clause") is not None:
            continue
        name = str(ref.get("alias") or ref.get("table_name") or "").lower()
        runs = None
        for cond in _conjuncts(select.get("where_clause")):
            found = _conjunct_runs(cond, name, alone)
            if found is not None:
                runs = found if runs is None else runs & found
        if runs is not None:
            out[id(ref)] = runs
    return out


def query_runs(query: str) -> dict[str, tuple[str, ...]]:
    """Per-run table -> the runs (sorted) every reference of ``query`` to it is restricted to; a table not in the
    result (or a query the serializer does not take) is to be opened whole."""
    con = duckdb.connect(config=NO_EXTENSIONS)
    try:
        parsed = json.loads(con.execute("SELECT json_serialize_sql(?)", [query]).fetchone()[0])
    except (duckdb.Error, TypeError, ValueError):
        return {}
    finally:
        con.close()
    if not isinstance(parsed, dict) or parsed.get("error") is not False:
        return {}
    nodes = list(_nodes(parsed.get("statements")))
    if any(n.get("type") == "TABLE_FUNCTION" for n in nodes):
        return {}  # query_table('t'), query('...'): a table named in a string, out of the tree's sight
    if any(n.get("type") == "BASE_TABLE" and str(n.get("table_name")).lower() == "unreadable_files" for n in nodes):
        return {}  # it lists the foreign files of every table opened: each whole
    restricted = {}
    for node in nodes:
        if node.get("type") == "SELECT_NODE":
            restricted.update(_restricted(node))
    runs: dict[str, Optional[set[str]]] = {}
    for node in nodes:
        if node.get("type") != "BASE_TABLE":
            continue
        table = str(node.get("table_name") or "").lower()
        if table not in PARTITIONED:
            continue
        mine = None if node.get("schema_name") or node.get("catalog_name") else restricted.get(id(node))
        if mine is None or table in runs and runs[table] is None:
            runs[table] = None
        else:
            runs[table] = (runs.get(table) or set()) | mine
    return {t: tuple(sorted(r)) for t, r in runs.items()
            if r is not None and not any(run_folder_problem(x) for x in r)}
