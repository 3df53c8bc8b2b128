"""The store's index: commands read what they need, and the index never changes what they see."""
from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dynstudy.analysis.pipeline.analyze import analyze
from dynstudy.analysis.pipeline.catalog import open_catalog, query_tables, unreadable_files
from dynstudy.store_contract import index, scan
from dynstudy.store_contract.schemas import TABLES, UNPARTITIONED
from dynstudy.study.cli import main
from tests.store_factory import make_store, write_epoch

COUNTED = ("runs", "activations", "train_metrics", "capture_metrics", "run_summary", "claims")


@pytest.fixture
def store(tmp_path, monkeypatch):
    path = tmp_path / "store"
    ids = make_store(path, seeds=(0, 1, 2), datasets=("digits",), epochs=3)
    (path / "activations" / "stray.parquet").write_bytes(b"not parquet")
    truncated = path / "train_metrics" / f"run_id={ids[1]}" / "epoch=000002.parquet"
    truncated.write_bytes(truncated.read_bytes()[:-20])
    analyze(str(path), out=io.StringIO())
    monkeypatch.setattr(index, "RACY_MARGIN_NS", 0)  # every entry trusted at once, so that a footer read counts
    return path, ids


def _seen(path) -> tuple:
    """What a catalog of every table shows: rows per table and the unreadable files."""
    con = open_catalog(str(path))
    return tuple(con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in COUNTED), unreadable_files(con)


def _footers_read(monkeypatch) -> list:
    read = []
    real = scan.read_footer

    def spy(fs, inner, size):
        read.append(inner)
        return real(fs, inner, size)

    monkeypatch.setattr(scan, "read_footer", spy)
    return read


def _index_files(path) -> list:
    return sorted((path / index.INDEX_DIR).glob("*.parquet"))


def test_a_warm_index_reads_no_footer_and_changes_nothing_seen(store, monkeypatch):
    path, _ = store
    cold = _seen(path)
    read = _footers_read(monkeypatch)
    assert _seen(path) == cold and read == []
    assert any("stray.parquet" in p for _, p, _ in cold[1]) and any("epoch=000002" in p for _, p, _ in cold[1])


@pytest.mark.parametrize("damage", ["delete", "corrupt", "hand_edit", "entries_for_other_files"])
def test_a_damaged_index_never_makes_a_file_missed_or_counted_twice(store, monkeypatch, damage):
    path, ids = store
    expected = _seen(path)
    for f in _index_files(path):
        if damage == "delete":
            f.unlink()
        elif damage == "corrupt":
            f.write_bytes(f.read_bytes()[:40])
        else:
            content = pq.read_table(f)
            if damage == "hand_edit" and "problem" in content.column_names:
                # every file marked foreign, every token changed: the edit does not match the file's digest
                n = content.num_rows
                content = content.set_column(content.column_names.index("problem"), "problem",
                                             pa.array(["edited"] * n)).set_column(
                    content.column_names.index("token"), "token", pa.array(["0" * 32] * n))
            elif damage == "entries_for_other_files" and index.ROW_PATH_COLUMN in content.column_names:
                content = pa.concat_tables([content, content])  # every file's entry or rows twice
            pq.write_table(content, f)
    assert _seen(path) == expected
    assert analyze(str(path), out=io.StringIO())["current"] == len(ids) - 1  # the damaged run stays skipped


def test_an_index_naming_a_file_twice_is_not_trusted_even_with_its_digest_right(store, monkeypatch):
    path, _ = store
    expected = _seen(path)
    for f in _index_files(path):
        content = pq.read_table(f)
        if "problem" in content.column_names:  # an entries index: every file's entry twice, the name's digest kept true
            buf = io.BytesIO()
            pq.write_table(pa.concat_tables([content, content]), buf)
            data = buf.getvalue()
            f.unlink()
            stem = f.name.split(".")[0]
            (f.parent / f"{stem}.{__import__('hashlib').sha256(data).hexdigest()}.parquet").write_bytes(data)
    read = _footers_read(monkeypatch)
    assert _seen(path) == expected
    assert read  # the index was not used: the footers were read again


@pytest.mark.parametrize("block", [1, 3, 4096])
def test_a_runs_files_are_found_among_runs_whose_ids_share_a_prefix(monkeypatch, block):
    monkeypatch.setattr(scan, "BLOCK_FILES", block)  # a run's files across blocks, in one, or all in one
    rows = [{"rel": f"run_id={r}/{n}.parquet", "run_id": r, "name": n, "size": 1, "stamp_ns": 1, "token": f"{r}{n}",
             "columns": '["run_id"]', "metadata": "{}"}
            for r in ("a", "a-b", "a.b", "ab", "b") for n in ("epoch=000001", "epoch=000002")]
    listed = pa.Table.from_pylist(rows, schema=scan.FILE_COLUMNS).sort_by("rel")
    files = scan.TableFiles("train_metrics", "/s/train_metrics", listed)
    assert len(files) == 10 and [f.token for f in files] == listed.column("token").to_pylist()
    for r in ("a", "a-b", "a.b", "ab", "b", "a.b", "a"):  # in path order, then back
        assert [f.token for f in files.of_run(r)] == [f"{r}epoch=000001", f"{r}epoch=000002"]
        assert all(f.path == f"/s/train_metrics/run_id={r}/{f.name}.parquet" for f in files.of_run(r))
    assert files.of_run("c") == [] and files[-1].run_id == "b" and files[0].columns == ("run_id",)


def test_a_file_rewritten_after_its_check_is_checked_again(store, monkeypatch):
    path, ids = store
    _seen(path)
    write_epoch(path, ids[0], 1, __import__("numpy").random.default_rng(7))  # same name, same size, new write id
    read = _footers_read(monkeypatch)
    open_catalog(str(path), tables=("train_metrics",))
    assert [p for p in read if f"run_id={ids[0]}/epoch=000001" in p]
    assert analyze(str(path), out=io.StringIO())["analysed"] == 1


def test_entries_too_close_to_their_check_are_not_trusted(tmp_path, monkeypatch):
    path = tmp_path / "store"
    make_store(path, seeds=(0,), datasets=("digits",), epochs=2)
    monkeypatch.setattr(index, "RACY_MARGIN_NS", 3600 * 10**9)  # every file is "just written"
    scan.scan_store(str(path), ("train_metrics",))
    read = _footers_read(monkeypatch)
    scan.scan_store(str(path), ("train_metrics",))
    assert len(read) == 2


def test_a_query_over_small_tables_opens_no_activation_file(store, monkeypatch, capsys):
    path, ids = store
    for f in (path / "activations").rglob("capture=*.parquet"):
        f.write_bytes(b"x" * 100)  # any read of an activation file would now fail or list it
    read = _footers_read(monkeypatch)
    assert main(["sql", "--store", str(path), "--format", "csv", "SELECT count(*) AS n FROM run_summary"]) == 0
    assert capsys.readouterr().out.split() == ["n", str(len(ids) - 1)]  # the damaged run has none
    assert main(["status", "--store", str(path)]) == 0
    assert not [p for p in read if "/activations/" in p]
    joined = "SELECT * FROM run_summary, runs WHERE run_summary.run_id = runs.run_id"
    assert query_tables(joined) == ("runs", "run_summary")
    assert query_tables("SELECT * FROM unreadable_files") == tuple(TABLES)  # every table's foreign files
    assert query_tables("SHOW TABLES") == tuple(TABLES)


def test_a_filter_on_run_id_opens_only_that_runs_files(store):
    path, ids = store
    victim = path / "capture_metrics" / f"run_id={ids[2]}" / "part.parquet"
    data = victim.read_bytes()
    footer = int.from_bytes(data[-8:-4], "little") + 8
    victim.write_bytes(b"PAR1" + b"\xff" * (len(data) - footer - 4) + data[-footer:])  # footer intact, pages not
    con = open_catalog(str(path), tables=("capture_metrics",))
    assert con.execute("SELECT count(*) FROM capture_metrics WHERE run_id = ?", [ids[0]]).fetchone()[0] == 4
    with pytest.raises(Exception):
        con.execute("SELECT sum(h_raw) FROM capture_metrics").fetchall()


def test_sql_reads_the_index_and_never_writes_it(store):
    path, _ = store
    for f in _index_files(path):
        f.unlink()
    assert main(["sql", "--store", str(path), "SELECT count(*) FROM run_summary"]) == 0
    assert _index_files(path) == []


def test_analyze_with_every_run_current_leaves_the_cross_run_tables_as_they_are(store):
    path, ids = store
    before = {t: scan.scan_store(str(path), (t,)).files[t][0].token for t in UNPARTITIONED}
    out = io.StringIO()
    result = analyze(str(path), out=out)
    assert result["analysed"] == 0 and "are current" in out.getvalue()
    assert {t: scan.scan_store(str(path), (t,)).files[t][0].token for t in UNPARTITIONED} == before
    forced = analyze(str(path), force=True, plateau_points=1.0, out=io.StringIO())
    assert forced["analysed"] == len(ids) - 1
    assert all(scan.scan_store(str(path), (t,)).files[t][0].token != before[t] for t in UNPARTITIONED)
