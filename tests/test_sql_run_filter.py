"""A query filtered on run_id opens only those runs' files, and returns exactly what the whole tables return."""
from __future__ import annotations

import io

import pytest

from dynstudy.analysis.pipeline.analyze import analyze
from dynstudy.analysis.pipeline.catalog import open_catalog, query_tables, unreadable_files
from dynstudy.analysis.pipeline.run_filter import query_runs
from dynstudy.study.cli import main
from tests.store_factory import make_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "store"
    ids = make_store(path, seeds=(0, 1, 2), datasets=("digits",), epochs=3)
    truncated = path / "train_metrics" / f"run_id={ids[1]}" / "epoch=000002.parquet"
    truncated.write_bytes(truncated.read_bytes()[:-20])
    analyze(str(path), out=io.StringIO())
    return str(path), ids


# (query with {a}, {b} for two run ids, the tables it prunes to which of a/b: None = opened whole)
QUERIES = [
    ("SELECT * FROM capture_metrics WHERE run_id = '{a}' ORDER BY ALL", {"capture_metrics": "a"}),
    ("SELECT count(*), count(DISTINCT run_id) FROM activations WHERE run_id IN ('{a}', '{b}') AND capture > 0",
     {"activations": "ab"}),
    ("SELECT c.capture, t.epoch, t.val_acc FROM capture_metrics c JOIN train_metrics t "
     "ON c.run_id = t.run_id AND c.epoch = t.epoch WHERE c.run_id = '{a}' AND t.run_id = '{a}' ORDER BY ALL",
     {"capture_metrics": "a", "train_metrics": "a"}),
    ("SELECT count(*) FROM capture_metrics c, runs r WHERE c.run_id = r.run_id AND c.run_id = '{b}'",
     {"capture_metrics": "b"}),
    ("SELECT status FROM runs WHERE '{a}' = run_id", {"runs": "a"}),
    ("SELECT count(*) FROM capture_metrics WHERE run_id = '{a}' AND capture IN "
     "(SELECT capture FROM capture_metrics WHERE run_id = '{b}')", {"capture_metrics": "ab"}),
    ("WITH one AS (SELECT * FROM run_summary WHERE run_id = '{a}') SELECT run_id, state FROM one",
     {"run_summary": "a"}),
    ("SELECT count(*) FROM capture_metrics WHERE run_id = 'no-such-run'", {"capture_metrics": "-"}),
    ("SELECT count(*) FROM capture_metrics WHERE run_id = '{a}' AND capture_metrics.run_id = '{b}'",
     {"capture_metrics": ""}),
    # never pruned: the rows of other runs can reach the result
    ("SELECT count(*) FROM capture_metrics WHERE run_id = '{a}' OR capture = 1", {}),
    ("SELECT count(*) FROM capture_metrics WHERE NOT (run_id = '{a}')", {}),
    ("SELECT count(*) FROM runs r LEFT JOIN capture_metrics c ON c.run_id = r.run_id WHERE c.run_id = '{a}'", {}),
    ("SELECT count(*) FROM runs r LEFT JOIN capture_metrics c ON c.run_id = r.run_id AND c.run_id = '{a}'", {}),
    ("SELECT count(*) FROM capture_metrics WHERE run_id = '{a}' AND capture IN "
     "(SELECT max(capture) FROM capture_metrics)", {}),
    ("SELECT run_id FROM run_summary WHERE run_id = '{a}' UNION ALL SELECT run_id FROM run_summary ORDER BY 1", {}),
    ("SELECT count(*) FROM capture_metrics c JOIN capture_metrics d ON c.capture = d.capture WHERE c.run_id = '{a}'",
     {}),
    ("SELECT count(*) FROM capture_metrics WHERE run_id > '{a}'", {}),
    ("SELECT count(*) FROM capture_metrics WHERE run_id = lower('{a}')", {}),
    ("SELECT count(*) FROM query_table('capture_metrics') WHERE run_id = '{a}'", {}),
    ("SELECT (SELECT count(*) FROM unreadable_files), count(*) FROM train_metrics WHERE run_id = '{b}'", {}),
]


def _rows(con, query):
    return con.execute(query).fetchall()


@pytest.mark.parametrize("template,pruned", QUERIES)
def test_a_pruned_query_returns_exactly_what_the_whole_tables_return(store, template, pruned):
    path, ids = store
    names = {"a": ids[0], "b": ids[1]}
    query = template.format(**names)
    expected = {t: tuple(sorted(names[c] for c in which)) if which != "-" else ("no-such-run",)
                for t, which in pruned.items()}
    assert query_runs(query) == expected
    tables = query_tables(query)
    whole = open_catalog(path, tables=tables)
    some = open_catalog(path, tables=tables, runs=query_runs(query))
    assert _rows(some, query) == _rows(whole, query)


def test_a_pruned_view_lists_only_its_runs_files(store):
    path, ids = store
    con = open_catalog(path, tables=("capture_metrics", "runs", "claims"),
                       runs={"capture_metrics": [ids[2]], "runs": [ids[0], ids[2]]})
    assert con.execute("SELECT DISTINCT run_id FROM capture_metrics").fetchall() == [(ids[2],)]
    assert sorted(con.execute("SELECT run_id FROM runs").fetchall()) == [(ids[0],), (ids[2],)]
    assert con.execute("SELECT count(*) FROM claims").fetchone()[0] > 0  # a cross-run table is whole


def _sql(capsys, *args) -> tuple[int, str, str]:
    code = main(["sql", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_sql_run_opens_only_the_runs_named(store, capsys):
    path, ids = store
    query = "SELECT count(DISTINCT run_id) FROM activations"
    code, out, _ = _sql(capsys, "--store", path, "--format", "csv", "--run", ids[0], query)
    assert code == 0 and out.splitlines()[-1] == "1"
    code, out, _ = _sql(capsys, "--store", path, "--format", "csv", "--run", ids[0], "--run", ids[2], query)
    assert code == 0 and out.splitlines()[-1] == "2"
    # unreadable_files then lists those runs' foreign files (and the cross-run tables')
    listed = "SELECT path FROM unreadable_files"
    assert "epoch=000002" in _sql(capsys, "--store", path, "--format", "csv", "--run", ids[1], listed)[1]
    assert "epoch=000002" not in _sql(capsys, "--store", path, "--format", "csv", "--run", ids[0], listed)[1]
    whole = unreadable_files(open_catalog(path))
    assert any("epoch=000002" in p for _, p, _ in whole)


def test_sql_run_refuses_a_run_id_that_is_not_a_folder_name(store, capsys):
    path, _ = store
    code, _, err = _sql(capsys, "--store", path, "--run", "../elsewhere", "SELECT count(*) FROM runs")
    assert code == 2 and "--run" in err and "cannot name a run's folder" in err


def test_pruning_a_query_that_must_not_be_pruned_would_change_its_result(store):
    """The comparison above can fail: forced onto one run, an OR query and a LEFT JOIN answer differently."""
    path, ids = store
    for query in (f"SELECT count(*) FROM capture_metrics WHERE run_id = '{ids[0]}' OR capture = 1",
                  "SELECT count(*) FROM runs r LEFT JOIN capture_metrics c ON c.run_id = r.run_id "
                  f"WHERE c.run_id IS NULL OR c.run_id = '{ids[0]}'"):
        tables = query_tables(query)
        forced = open_catalog(path, tables=tables, runs={"capture_metrics": [ids[0]]})
        assert _rows(forced, query) != _rows(open_catalog(path, tables=tables), query)
