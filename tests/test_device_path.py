"""The trainer's fast path on CPU: device batches, the background writer, divergence checks, train.compile."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from dynstudy.jobs.capture.async_writer import AsyncWriteError, AsyncWriter
from dynstudy.jobs.data.augment import augment_batch
from dynstudy.jobs.data.device_data import DeviceData
from dynstudy.jobs.data.in_memory import DatasetBundle, Split, iterate_batches, normalize
from dynstudy.jobs.trial import compile_cache, loop
from dynstudy.jobs.trial.session import LocalSession
from dynstudy.jobs.trial.trainer import run_trial
from dynstudy.study.spec import SpecError, parse_spec
from tests.test_trainer import ACT_ORDER, rows, trial

ROOT = Path(__file__).resolve().parent.parent


def _bundle(augment, n=70):
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, 256, (n, 3, 12, 12), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DatasetBundle("t", Split(x, y), Split(x[:20].clone(), y[:20].clone()), 10, 3, 12,
                         (0.4, 0.5, 0.6), (0.2, 0.25, 0.3), augment)


@pytest.mark.parametrize("augment", ["none", "flip", "flip_crop"])
def test_device_batches_are_the_host_path_bit_for_bit(augment):
    """Same seed: the same batches as iterate_batches + normalize + augment_batch, and the same generator state
    after."""
    bundle = _bundle(augment)
    data = DeviceData(bundle, torch.device("cpu"))
    g_host, g_dev = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _epoch in range(2):
        host = [(augment_batch(normalize(xb, bundle.mean, bundle.std), augment, g_host), yb)
                for xb, yb in iterate_batches(bundle.train, 32, shuffle=True, generator=g_host)]
        dev = list(data.train_batches(32, g_dev))
        assert [len(y) for _, y in dev] == [32, 32, 6]
        for (hx, hy), (dx, dy) in zip(host, dev, strict=True):
            assert torch.equal(hx, dx) and torch.equal(hy, dy)
        assert torch.equal(g_host.get_state(), g_dev.get_state())
    val = list(data.val_batches(8))
    assert torch.equal(torch.cat([x for x, _ in val]), normalize(bundle.val.x, bundle.mean, bundle.std))


def _gated_write(gate, log, fail=None):
    def write(store, table, run_id, name, columns):
        gate.wait()
        if name == fail:
            raise OSError(28, "No space left on device")
        log.append((table, name, columns() if callable(columns) else columns))
    return write


def test_writer_keeps_order_and_bounds_its_queue():
    gate, log = threading.Event(), []
    writer = AsyncWriter("s", max_queued=2, write=_gated_write(gate, log))
    for i in range(3):  # one being written (held at the gate) and two queued
        writer.submit("t", "r", f"f{i}", lambda i=i: {"i": [i]})
    blocked = threading.Thread(target=writer.submit, args=("t", "r", "f3", {"i": [3]}))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive() and writer.pending() == 3  # the fourth waits for room
    gate.set()
    blocked.join()
    writer.flush()
    assert [name for _, name, _ in log] == ["f0", "f1", "f2", "f3"] and writer.pending() == 0
    writer.close()
    with pytest.raises(RuntimeError, match="after close"):
        writer.submit("t", "r", "f4", {})


def test_writer_errors_surface_and_drop_what_follows():
    gate, log = threading.Event(), []
    gate.set()
    writer = AsyncWriter("s", write=_gated_write(gate, log, fail="f1"))
    for i in range(3):
        writer.submit("t", "r", f"f{i}", {"i": [i]})
    failed = r"writing t/run_id=r/f1\.parquet in the background failed: OSError"
    with pytest.raises(AsyncWriteError, match=failed) as err:
        writer.flush()
    assert isinstance(err.value.__cause__, OSError)
    assert [name for _, name, _ in log] == ["f0"]  # f2 came after the failure: dropped, the trial is failing
    with pytest.raises(AsyncWriteError):
        writer.submit("t", "r", "f3", {})
    writer.close(raise_errors=False)


def test_a_failed_background_write_fails_the_trial(tmp_path, monkeypatch):
    import dynstudy.jobs.capture.async_writer as aw

    real = aw.write_rows

    def write(store, table, run_id, name, columns, **kw):
        if name == "capture=000002":
            raise OSError(28, "No space left on device")
        return real(store, table, run_id, name, columns, **kw)

    monkeypatch.setattr(aw, "write_rows", write)
    session = LocalSession(tmp_path / "ck")
    with pytest.raises(AsyncWriteError, match="capture=000002.parquet"):
        run_trial(trial(tmp_path), session)
    assert [r["epoch"] for r in session.reports] == [1]  # epoch 2 never reached its checkpoint
    status = rows(tmp_path, "runs", "status")[0]
    assert "failed" in status and any("No space left" in str(v) for v in status)


KILL_SCRIPT = """
import json, os, sys, threading
import dynstudy.jobs.capture.async_writer as aw
from dynstudy.jobs.trial.session import LocalSession
from dynstudy.jobs.trial.trainer import run_trial

if sys.argv[3] == "kill":
    reached, seen, real_write, real_flush = threading.Event(), {}, aw.write_rows, aw.AsyncWriter.flush

    def flush(self):  # the trial waits here, before the checkpoint, for its queued files
        seen["writer"] = self
        reached.set()
        try:
            return real_flush(self)
        finally:
            reached.clear()

    def write(store, table, run_id, name, columns, **kw):
        if name == "capture=000004":  # epoch 2's capture: die while it and the files behind it are queued
            reached.wait(30)  # a trial that never flushes goes on without waiting for this file
            print("queued", seen["writer"].pending(), flush=True)
            os._exit(17)
        return real_write(store, table, run_id, name, columns, **kw)

    aw.write_rows, aw.AsyncWriter.flush = write, flush
run_trial(json.loads(sys.argv[1]), LocalSession(sys.argv[2]))
"""


def test_hard_exit_with_writes_queued_resumes_exactly(tmp_path):
    """Killed while epoch 2's files wait in the writer: no checkpoint of epoch 2, the resume rewrites them once."""
    cfg = trial(tmp_path / "killed", capture={"every_n_steps": 3, "step_probe_size": 16})
    run_trial({**cfg, "store": str(tmp_path / "clean")}, LocalSession(tmp_path / "ck_clean"))
    args = [sys.executable, "-c", KILL_SCRIPT, json.dumps(cfg), str(tmp_path / "ck")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.run(args + ["kill"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 17, first.stderr
    assert "queued 3" in first.stdout  # capture=000002 itself, train_metrics epoch 2, the runs row
    assert [r[0] for r in rows(tmp_path / "killed", "train_metrics", "epoch")] == [1]
    assert torch.load(tmp_path / "ck" / "state.pt", weights_only=False)["epoch"] == 1
    second = subprocess.run(args + ["resume"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    for table, order in (("activations", ACT_ORDER), ("train_metrics", "epoch")):
        assert rows(tmp_path / "killed", table, order) == rows(tmp_path / "clean", table, order), table
    names = sorted(p.name for p in (tmp_path / "killed" / "activations" / "run_id=r0").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "clean" / "activations" / "run_id=r0").iterdir())


def test_divergence_checked_every_k_steps_leaves_the_store_a_per_step_check_leaves(tmp_path, monkeypatch):
    cfg = dict(dataset={"name": "digits", "n_train": 310, "n_val": 64}, train={"batch_size": 50},
               optimizer={"lr": 1e4}, capture={"every_n_steps": 1, "step_probe_size": 16})
    stores = {}
    for every in (1, 100):  # 7 steps an epoch: 100 checks only at the epoch's end
        monkeypatch.setattr(loop, "DIVERGENCE_CHECK_STEPS", every)
        store = tmp_path / f"k{every}"
        final = run_trial(trial(store, **cfg), LocalSession(tmp_path / f"ck{every}"))
        assert (final["status"], final["stop_reason"]) == ("diverged", "diverged")
        files = sorted(p.name for p in (store / "activations" / "run_id=r0").iterdir())
        stores[every] = pickle.dumps((files, rows(store, "activations", ACT_ORDER)))  # bytes: NaN-safe
    assert stores[1] == stores[100]
    files = pickle.loads(stores[1])[0]
    assert files[0] == "capture=000000.parquet" and files[1].startswith("steps=000001-")  # stopped inside epoch 1


def test_compile_once_per_process_and_shape(tmp_path, monkeypatch):
    """train.compile: the second trial of a shape reuses the first one's graphs; values as without compile."""
    import torch._dynamo

    monkeypatch.setattr(compile_cache, "BACKEND", "eager")  # dynamo's tracing and caching, without a C++ build
    compile_cache.clear()
    calls = []
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda *a, **k: calls.append(1) or real(*a, **k))
    over = dict(train={"epochs": 2, "compile": True})
    run_trial(trial(tmp_path / "c0", seed=0, **over), LocalSession(tmp_path / "k0"))
    graphs = dict(torch._dynamo.utils.counters["stats"])
    run_trial(trial(tmp_path / "c1", seed=1, **over), LocalSession(tmp_path / "k1"))
    assert len(calls) == 1 and graphs.get("unique_graphs", 0) > 0
    assert dict(torch._dynamo.utils.counters["stats"]).get("unique_graphs") == graphs["unique_graphs"]
    run_trial(trial(tmp_path / "p1", seed=1, train={"epochs": 2}), LocalSession(tmp_path / "kp"))
    for table, order in (("activations", ACT_ORDER), ("train_metrics", "epoch")):
        assert rows(tmp_path / "c1", table, order) == rows(tmp_path / "p1", table, order), table
    compile_cache.clear()


def test_compile_is_a_validated_spec_field():
    base = {"name": "s", "models": ["tiny_cnn"], "datasets": ["digits"], "seeds": [0]}
    assert parse_spec({**base, "train": {"compile": True}}).train.compile is True
    assert parse_spec(base).train.compile is False
    with pytest.raises(SpecError, match="train.compile"):
        parse_spec({**base, "train": {"compile": "maybe"}})
