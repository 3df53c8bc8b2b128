"""The store: atomic, idempotent writes; readers never see half a file."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

import dynstudy.store_contract.files as store_mod
from dynstudy.store_contract.files import check_store_uri, resolve_store, write_rows

ROOT = Path(__file__).resolve().parent.parent


def _row(value):
    return {"run_id": ["r1"], "epoch": [1], "step": [10], "train_loss": [value], "val_acc": [0.5]}


def test_rewrite_replaces_never_duplicates(tmp_path):
    p1 = write_rows(str(tmp_path), "train_metrics", "r1", "epoch=000001", _row(1.0))
    p2 = write_rows(str(tmp_path), "train_metrics", "r1", "epoch=000001", _row(2.0))
    assert p1 == p2
    files = list((tmp_path / "train_metrics" / "run_id=r1").iterdir())
    assert [f.name for f in files] == ["epoch=000001.parquet"]
    t = pq.read_table(p1)
    assert t.num_rows == 1 and t.column("train_loss").to_pylist() == [2.0]
    assert t.column("val_loss").to_pylist() == [None]  # absent optional column -> null, typed
    assert str(t.schema.field("epoch").type) == "int32"


def test_failed_write_leaves_old_file_and_no_debris(tmp_path, monkeypatch):
    path = write_rows(str(tmp_path), "train_metrics", "r1", "epoch=000001", _row(1.0))

    def broken(table, sink, **kw):
        sink.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(store_mod.pq, "write_table", broken)
    with pytest.raises(OSError, match="disk full"):
        write_rows(str(tmp_path), "train_metrics", "r1", "epoch=000001", _row(9.0))
    assert sorted(f.name for f in (tmp_path / "train_metrics" / "run_id=r1").iterdir()) == ["epoch=000001.parquet"]
    assert pq.read_table(path).column("train_loss").to_pylist() == [1.0]


def test_store_uris(tmp_path):
    assert check_store_uri("s3://bucket/prefix") == "s3://bucket/prefix"
    assert resolve_store("gs://b/p/") == "gs://b/p"
    assert resolve_store(str(tmp_path / "x")) == str((tmp_path / "x").resolve())
    for bad in ("", "http://host/x", "ftp://a"):
        with pytest.raises(ValueError, match="store"):
            check_store_uri(bad)
