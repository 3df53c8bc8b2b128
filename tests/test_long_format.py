"""The long-format decoder (dynstudy.analysis.run.long_format) on tables of many captures, and its errors."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dynstudy.analysis.run.long_format import decode_captures
from dynstudy.analysis.run.temporal_run import read_series, step_probe
from dynstudy.store_contract.scan import scan_store
from tests.store_factory import STAGES, STEP_PROBE, K, capture_columns, make_store


def captures_table(numbers=(3, 4, 5)) -> pa.Table:
    rng = np.random.default_rng(0)
    parts = [capture_columns("r", c, 1, rng, kind="step", step=10 + c) for c in numbers]
    return pa.table({k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in parts[0]})


def test_many_captures_in_any_order_decode_as_each_one_alone():
    t = captures_table()
    want = decode_captures(t, "ordered")
    assert want.captures.tolist() == [3, 4, 5] and want.values.shape == (3, len(STAGES) * K, 64)
    assert want.values.flags.c_contiguous and want.stages.tolist() == list(np.repeat(STAGES, K))
    assert t["step"].to_numpy()[want.heads].tolist() == [13, 14, 15]
    for i, c in enumerate((3, 4, 5)):
        alone = decode_captures(t.filter(pa.compute.equal(t["capture"], c)).drop_columns(["capture"]), "one")
        assert alone.captures is None and np.array_equal(alone.values[0], want.values[i])
        assert np.array_equal(alone.labels[0], want.labels[i])
    shuffled = t.take(np.random.default_rng(1).permutation(t.num_rows))
    got = decode_captures(shuffled, "shuffled")
    for a, b in zip((got.captures, got.values, got.labels, got.stages, got.ranks),
                    (want.captures, want.values, want.labels, want.stages, want.ranks)):
        assert np.array_equal(a, b)
    assert shuffled["step"].to_numpy()[got.heads].tolist() == [13, 14, 15]


def test_a_capture_without_a_channel_or_with_another_label_is_named():
    t = captures_table()
    stage, rank, capture = (t[c].to_numpy() for c in ("stage", "rank", "capture"))
    short = t.filter(pa.array(~((capture == 4) & (stage == STAGES[1]) & (rank == 2))))
    with pytest.raises(ValueError, match=r"^short: .* and the same channels in every capture \(of 3 captures: \[4\]\)"):
        decode_captures(short, "short")
    other = np.flatnonzero((capture == 5) & (stage == STAGES[2]) & (rank == 1))[7]
    label = t["label"].to_numpy().copy()
    label[other] += 1
    relabelled = t.set_column(t.schema.get_field_index("label"), "label", [label])
    with pytest.raises(ValueError, match=r"with one label per sample and the same channels .*captures: 5\)"):
        decode_captures(relabelled, "relabelled")
    with pytest.raises(ValueError, match="^empty: no rows"):
        decode_captures(t.slice(0, 0), "empty")


def test_a_step_capture_without_a_probe_sample_is_named_with_its_run(tmp_path):
    store = tmp_path / "store"
    (run_id,) = make_store(store, seeds=(0,), epochs=2, datasets=("digits",), every=5)
    files = scan_store(str(store)).files["activations"]
    assert step_probe(files) == (STEP_PROBE, K)
    assert read_series(files, run_id, STEP_PROBE, K).X.shape == (len(STAGES) * K, 5)  # steps 0, 5, 10, 15, 20
    with pytest.raises(ValueError, match=r"lack some of the 32 step-probe samples or rank < 5 channels"):
        read_series(files, run_id, STEP_PROBE, K + 1)
    path = store / "activations" / f"run_id={run_id}" / "steps=000004-000005.parquet"
    t = pq.read_table(path)
    drop = (t["capture"].to_numpy() == 5) & (t["sample"].to_numpy() == 3) & (t["rank"].to_numpy() == 0)
    pq.write_table(t.filter(pa.array(~drop)), path)
    files = scan_store(str(store)).files["activations"]
    with pytest.raises(ValueError, match=rf"^run {run_id}: the step probe .*captures: \[5\]\): the temporal series"):
        read_series(files, run_id, STEP_PROBE, K)
