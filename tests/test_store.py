"""The store: atomic, idempotent writes; readers never see half a file."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import store_contract.files as store_mod
from store_contract.files import check_store_uri, resolve_store, write_rows

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


def _imports(package: str) -> dict[str, set[str]]:
    """The top-level names each module of ``package`` imports (anywhere in it, function bodies included)."""
    found = {}
    for path in sorted((ROOT / package).glob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module != "__future__":
                names.add(node.module.split(".")[0])
        found[path.name] = names
    return found


def test_the_store_contract_is_pyarrow_only_and_shared():
    allowed = set(sys.stdlib_module_names) | {"pyarrow", "store_contract"}
    assert {m: sorted(n - allowed) for m, n in _imports("store_contract").items() if n - allowed} == {}
    assert {m: sorted(n & {"jobs", "study"}) for m, n in _imports("analysis").items() if n & {"jobs", "study"}} == {}
    uses = lambda pkg: {m for m, n in _imports(pkg).items() if "store_contract" in n}  # noqa: E731
    assert "trainer.py" in uses("jobs") and {"catalog.py", "pipeline.py"} <= uses("analysis")
