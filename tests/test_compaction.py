"""run_summary's compaction on an object store: the same requests at any size, and never a stale row trusted."""
from __future__ import annotations

import io

import pytest

from dynstudy.analysis.pipeline.analyze import analyze
from dynstudy.analysis.pipeline.catalog import open_catalog, unreadable_files
from dynstudy.store_contract import compaction
from dynstudy.store_contract.files import filesystem, remove_run_files, write_rows
from dynstudy.store_contract.index import index_dir
from dynstudy.study.cli import main
from tests.moto_server import requests_logged, s3_bucket
from tests.store_factory import make_store

QUERY = "SELECT run_id, seed FROM run_summary ORDER BY run_id"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server logging its requests, and the AWS variables that point at it; stopped by pid."""
    log = tmp_path_factory.mktemp("moto") / "requests.log"
    with s3_bucket("dynstudy-compaction", log=log) as uri:
        yield uri, log


def _summaries(store: str, n: int, start: int = 0) -> list[str]:
    """``n`` run_summary files as analyze's workers write them (one row per run); their run ids."""
    ids = [f"run-{i:05d}" for i in range(start, start + n)]
    for i, rid in enumerate(ids):
        write_rows(store, "run_summary", rid, "part", {"run_id": [rid], "study": ["s"], "seed": [start + i]})
    return ids


def _rows(store: str, compacted: bool = True) -> list:
    return open_catalog(store, tables=("run_summary",), sandbox=True, compacted=compacted).execute(QUERY).fetchall()


def _requests(log, during) -> list[str]:
    before = len(requests_logged(log))
    during()
    return requests_logged(log)[before:]


def test_a_run_summary_query_costs_the_same_requests_at_two_store_sizes(s3):
    bucket, log = s3
    counts, listing = {}, {}
    for n in (3, 60):
        store = f"{bucket}/size{n}"
        _summaries(store, n)
        listing[n] = len(_requests(log, lambda: _rows(store)))  # no compaction yet: the listing path
        assert compaction.compact(store, "run_summary")
        seen = _requests(log, lambda: _rows(store))
        assert len(_rows(store)) == n and not any("run_summary" in r and "prefix" in r for r in seen)
        counts[n] = len(seen)
    assert counts[3] == counts[60] <= 4, counts
    assert listing[60] > listing[3]  # what the count would be without the compaction: it grows with the runs


def test_analyze_writes_a_compaction_that_sql_reads_and_a_reanalysis_renews(s3, capsys):
    bucket, log = s3
    store = f"{bucket}/analysed"
    ids = make_store(store, seeds=(0, 1), datasets=("digits",), epochs=3)
    analyze(store, out=io.StringIO())
    listing = compaction.list_index(store, "run_summary")
    assert listing.trusted() and not listing.marks
    assert _rows(store) == _rows(store, compacted=False) == [(i, s) for i, s in zip(sorted(ids), (0, 1))]
    seen = _requests(log, lambda: main(["sql", "--store", store, "SELECT count(*) FROM run_summary"]))
    assert "2" in capsys.readouterr().out and not any("prefix=analysed%2Frun_summary" in r for r in seen)
    # analysed again: the change is marked before the first file and cleared by the compaction at the end
    seen = _requests(log, lambda: analyze(store, force=True, out=io.StringIO()))
    opened = [i for i, r in enumerate(seen) if r.startswith("PUT") and "run_summary." in r and ".open" in r]
    written = [i for i, r in enumerate(seen) if r.startswith("PUT") and "run_summary/run_id=" in r]
    assert opened and written and opened[0] < written[0]
    again = compaction.list_index(store, "run_summary")
    assert again.trusted() and not again.marks and _rows(store) == _rows(store, compacted=False)


@pytest.mark.parametrize("damage", ["delete", "truncate", "hand_edit", "second_compaction", "open_mark"])
def test_a_damaged_compaction_is_not_trusted_and_the_listing_path_answers(s3, damage):
    bucket, _ = s3
    store = f"{bucket}/damaged-{damage}"
    _summaries(store, 4)
    compaction.compact(store, "run_summary")
    fs, inner = filesystem(index_dir(store))
    path = compaction.list_index(store, "run_summary").compactions[0].path
    with fs.open_input_stream(path) as fh:
        data = fh.read()
    if damage == "delete":
        fs.delete_file(path)
    elif damage == "truncate":
        with fs.open_output_stream(path) as sink:
            sink.write(data[:len(data) // 2])
    elif damage == "hand_edit":  # same name, other bytes: one run's row dropped
        import pyarrow as pa
        import pyarrow.parquet as pq

        edited = pq.read_table(pa.BufferReader(data))
        buf = pa.BufferOutputStream()
        pq.write_table(edited.slice(1), buf)
        with fs.open_output_stream(path) as sink:
            sink.write(buf.getvalue())
    elif damage == "second_compaction":  # a second, well-named compaction (two compactors that raced)
        twin = f"{inner}/run_summary.compact.{'0' * 64}.parquet"
        with fs.open_output_stream(twin) as sink:
            sink.write(data)
    else:  # a writer that began and never finished (at work, or died)
        with fs.open_output_stream(f"{inner}/{compaction.CHANGES_DIR}/run_summary.{'a' * 32}.open") as sink:
            sink.write(b"{}")
    _summaries(store, 1, start=4)  # written without a mark (by hand): seen only on the listing path
    assert compaction.compacted_rows(store, "run_summary") is None
    assert _rows(store) == _rows(store, compacted=False) and len(_rows(store)) == 5


def test_a_change_that_begins_during_a_compaction_keeps_its_mark(s3, monkeypatch):
    bucket, _ = s3
    store = f"{bucket}/racing-writer"
    _summaries(store, 3)
    real = compaction.scan_store

    def read_then_change(*args, **kwargs):
        scanned = real(*args, **kwargs)  # the compactor has read the table; a writer now adds a run
        change = compaction.begin_change(store, "run_summary")
        _summaries(store, 1, start=3)
        compaction.end_change(store, "run_summary", change)
        return scanned

    monkeypatch.setattr(compaction, "scan_store", read_then_change)
    assert compaction.compact(store, "run_summary")
    monkeypatch.undo()
    assert not compaction.list_index(store, "run_summary").trusted()  # the new run's mark stays
    assert len(_rows(store)) == 4
    assert compaction.compact(store, "run_summary") and compaction.list_index(store, "run_summary").trusted()
    assert len(_rows(store)) == 4 and compaction.list_index(store, "run_summary").marks == {}


def test_two_compactors_racing_leave_no_stale_compaction_trusted(s3, monkeypatch):
    bucket, _ = s3
    store = f"{bucket}/racing-compactors"
    _summaries(store, 3)
    real = compaction.scan_store
    calls = []

    def other_compactor_runs_meanwhile(*args, **kwargs):
        scanned = real(*args, **kwargs)  # this compactor has read 3 runs
        if not calls:
            calls.append(1)
            change = compaction.begin_change(store, "run_summary")
            _summaries(store, 1, start=3)
            compaction.end_change(store, "run_summary", change)
            assert compaction.compact(store, "run_summary")  # the other one reads 4 runs and finishes first
        return scanned

    monkeypatch.setattr(compaction, "scan_store", other_compactor_runs_meanwhile)
    assert compaction.compact(store, "run_summary")
    monkeypatch.undo()
    assert len(compaction.list_index(store, "run_summary").compactions) == 2
    assert compaction.compacted_rows(store, "run_summary") is None and len(_rows(store)) == 4


def test_removing_a_runs_files_marks_the_change(s3):
    bucket, _ = s3
    store = f"{bucket}/removed"
    ids = _summaries(store, 3)
    compaction.compact(store, "run_summary")
    assert remove_run_files(store, ids[0]) == 1
    assert not compaction.list_index(store, "run_summary").trusted()
    assert [r[0] for r in _rows(store)] == ids[1:]
    compaction.compact(store, "run_summary")
    assert [r[0] for r in _rows(store)] == ids[1:] and compaction.list_index(store, "run_summary").trusted()


def test_a_stray_file_is_in_unreadable_files_whatever_the_compaction(s3, capsys):
    bucket, _ = s3
    store = f"{bucket}/stray"
    _summaries(store, 2)
    compaction.compact(store, "run_summary")
    fs, inner = filesystem(store)
    with fs.open_output_stream(f"{inner}/run_summary/run_id=run-00000/notes.parquet") as sink:
        sink.write(b"not parquet")
    assert any("notes.parquet" in p for _, p, _ in unreadable_files(open_catalog(store, sandbox=True)))
    assert main(["sql", "--store", store, "--format", "csv", "SELECT path FROM unreadable_files"]) == 0
    assert "notes.parquet" in capsys.readouterr().out
    assert len(_rows(store)) == 2  # the compaction holds the rows of the files that belong


def test_a_change_marked_done_is_cleared_even_with_its_open_mark_left_behind(s3):
    """A writer that wrote .done but stopped before removing .open had every file in place: the next compaction
    reads it and clears both marks; an .open alone (a writer at work) stays."""
    bucket, _ = s3
    store = f"{bucket}/leftover-open"
    _summaries(store, 2)
    fs, inner = filesystem(index_dir(store))
    for name in (f"run_summary.{'b' * 32}.open", f"run_summary.{'b' * 32}.done", f"run_summary.{'c' * 32}.open"):
        with fs.open_output_stream(f"{inner}/{compaction.CHANGES_DIR}/{name}") as sink:
            sink.write(b"{}")
    assert compaction.compact(store, "run_summary")
    assert compaction.list_index(store, "run_summary").marks == {"c" * 32: {"open"}}
    fs.delete_file(f"{inner}/{compaction.CHANGES_DIR}/run_summary.{'c' * 32}.open")  # that writer is gone
    assert compaction.list_index(store, "run_summary").trusted() and len(_rows(store)) == 2
