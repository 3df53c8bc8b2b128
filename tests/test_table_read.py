"""The batched reader of a per-run table's columns gives a plain pyarrow read's rows, on a local and an S3 store."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dynstudy.analysis.pipeline import table_read
from dynstudy.analysis.pipeline.table_read import read_batches, read_columns, runs_files, split_by_run
from dynstudy.store_contract.files import filesystem, inner_path, write_rows
from dynstudy.store_contract.scan import scan_store
from dynstudy.store_contract.schemas import TABLES
from tests.moto_server import s3_bucket

RUNS, EPOCHS = ("r-a", "r-b", "r-c"), (1, 2, 3)
#: An older file's columns: train_metrics without capture_time_s.
OLD_SCHEMA = pa.schema([f for f in TABLES["train_metrics"] if f.name != "capture_time_s"])
COLUMNS = ("run_id", "epoch", "val_acc", "capture_time_s", "step")


@pytest.fixture(scope="module")
def s3():
    with s3_bucket("dynstudy-table-read") as uri:
        yield uri


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path):
    """A store with a train_metrics file per run and epoch; run r-a's files lack capture_time_s (an older
    writer's), its epoch 2 has val_acc null."""
    root = str(tmp_path / "store") if request.param == "local" else f"{request.getfixturevalue('s3')}/t{id(tmp_path)}"
    for run in RUNS:
        for epoch in EPOCHS:
            acc = None if (run, epoch) == ("r-a", 2) else 0.1 * epoch + len(run)
            write_rows(root, "train_metrics", run, f"epoch={epoch:06d}",
                       {"run_id": [run], "epoch": [epoch], "step": [10 * epoch], "val_acc": [acc],
                        "capture_time_s": [0.5 * epoch]}, schema=OLD_SCHEMA if run == "r-a" else None)
    return root


def _plain(files, columns) -> list[dict]:
    """Every row of ``files`` read one by one with pyarrow, a column a file lacks as None."""
    rows = []
    fs, _ = filesystem(files[0].path)
    for f in files:
        t = pq.read_table(inner_path(f.path), filesystem=fs)
        rows += [{c: r.get(c) for c in columns} for r in t.to_pylist()]
    return rows


def _key(row: dict):
    return row["run_id"], row["epoch"]


def test_the_batched_read_is_a_plain_reads_rows(store, monkeypatch):
    monkeypatch.setattr(table_read, "FILES_PER_QUERY", 2)  # 9 files: several batches of each column set
    files = scan_store(store, ["train_metrics"]).files["train_metrics"]
    assert len(files) == 9 and len({f.columns for f in files}) == 2
    batches = list(read_batches(files, TABLES["train_metrics"], COLUMNS))
    assert len(batches) == 5 and all(b.num_rows <= 2 for b in batches)  # one row a file: 3 + 6 files by twos
    got = read_columns(files, TABLES["train_metrics"], COLUMNS)
    assert got.schema == pa.schema([TABLES["train_metrics"].field(c) for c in COLUMNS])
    want = _plain(files, COLUMNS)
    assert sorted(got.to_pylist(), key=_key) == sorted(want, key=_key)
    assert {r["capture_time_s"] for r in got.to_pylist() if r["run_id"] == "r-a"} == {None}


def test_a_filter_keeps_the_rows_it_names_and_the_runs_asked_for(store, monkeypatch):
    monkeypatch.setattr(table_read, "FILES_PER_QUERY", 2)
    files = scan_store(store, ["train_metrics"]).files["train_metrics"]
    some = runs_files(files, {"r-a", "r-c"})
    got = read_columns(some, TABLES["train_metrics"], ("run_id", "epoch"), where={"step": 20})
    assert sorted(got.to_pylist(), key=_key) == [{"run_id": "r-a", "epoch": 2}, {"run_id": "r-c", "epoch": 2}]
    # the older files lack capture_time_s: null there, which equals nothing
    got = read_columns(files, TABLES["train_metrics"], ("run_id",), where={"capture_time_s": 1.5})
    assert sorted(got.column("run_id").to_pylist()) == ["r-b", "r-c"]


def test_split_by_run_gives_each_runs_columns_in_order(store):
    files = scan_store(store, ["train_metrics"]).files["train_metrics"]
    by_run = split_by_run(read_columns(files, TABLES["train_metrics"], COLUMNS), ("epoch",))
    assert list(by_run) == list(RUNS)
    assert by_run["r-b"]["epoch"].tolist() == list(EPOCHS)
    assert np.isnan(by_run["r-a"]["val_acc"][1]) and by_run["r-a"]["val_acc"][0] == pytest.approx(3.1)
    assert np.isnan(by_run["r-a"]["capture_time_s"]).all() and by_run["r-c"]["step"].tolist() == [10, 20, 30]


def test_an_unknown_column_is_named():
    with pytest.raises(KeyError, match="val_accuracy"):
        read_columns([], TABLES["train_metrics"], ("run_id", "val_accuracy"))
