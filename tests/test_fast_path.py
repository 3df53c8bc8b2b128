"""The fast analysis path (dynstudy.analysis.run.capture_family) against the plain reference implementation
(tests/reference_capture.py).

Every table ``dynstudy analyze`` writes must be the same, value for value within 1e-12 (relative above 1), on a
generated store that exercises every variant of a capture: channel re-draws (runs storing more channels than they use),
smaller probe sizes, the authors' aggregation, the order and noise controls. Also: the reader against DuckDB's ORDER BY,
the cached kernels against the literal implementation, and the analysis as Ray tasks against the local one.
"""
from __future__ import annotations

import io
import json
import math
import shutil
import sys
import tempfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dynstudy.analysis.kernels import dynamics
from dynstudy.analysis.kernels import fast_kernels as fk
from dynstudy.analysis.pipeline.analyze import analyze
from dynstudy.analysis.pipeline.catalog import open_catalog
from dynstudy.analysis.run.capture_read import read_capture
from dynstudy.store_contract.files import write_rows
from dynstudy.store_contract.scan import scan_store
from dynstudy.store_contract.schemas import ANALYSIS_TABLES
from tests import literal_dynamics as lit
from tests.reference_capture import capture_arrays, reference_source
from tests.store_factory import K, make_store

TOLERANCE = 1e-12


def _rows(store, table: str) -> list[dict]:
    rows = []
    for f in scan_store(str(store)).files.get(table, []):
        rows += [{k: v for k, v in r.items() if k != "input_digest"} for r in pq.read_table(f.path).to_pylist()]
    key = lambda r: repr([(k, v) for k, v in r.items() if not isinstance(v, (float, list))])  # noqa: E731
    return sorted(rows, key=key)


def _same(a, b) -> bool:
    """Equal, or floats within 1e-12 (relative to the larger where it exceeds 1: a coefficient of variation of
    70, a std over a mean near 0, carries 16 significant digits, not 28)."""
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= TOLERANCE * max(1.0, abs(a), abs(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def assert_same_tables(store_a, store_b, empty_ok=()) -> int:
    """Every analysis table of the two stores holds the same rows (floats within 1e-12); returns values compared.

    Each table must have rows, but those of ``empty_ok``.
    """
    compared = 0
    for table in ANALYSIS_TABLES:
        a, b = _rows(store_a, table), _rows(store_b, table)
        assert len(a) == len(b) and (a or table in empty_ok), table
        for ra, rb in zip(a, b):
            assert ra.keys() == rb.keys(), table
            bad = {k: (ra[k], rb[k]) for k in ra if not _same(ra[k], rb[k])}
            assert not bad, (table, bad)
            compared += len(ra)
    return compared


def _set_analysis(store, run_id: str, **settings) -> None:
    row = pq.read_table(f"{store}/runs/run_id={run_id}/run.parquet").to_pylist()[0]
    cfg = json.loads(row["config"])
    cfg["analysis"] = {**cfg.get("analysis", {}), **settings}
    row["config"] = json.dumps(cfg, sort_keys=True)
    write_rows(str(store), "runs", run_id, "run", {k: [v] for k, v in row.items()})


#: the end-of-epoch capture of the re-drawn runs with dead (constant) channels.
DEAD_CAPTURE = 2


def _kill_channels(store, run_id: str, capture: int, channels) -> None:
    """Make each (stage, rank) of ``channels`` constant in one capture file (a dead ReLU channel)."""
    path = f"{store}/activations/run_id={run_id}/capture={capture:06d}.parquet"
    table = pq.read_table(path)
    stage, rank = np.asarray(table["stage"].to_pylist()), table["rank"].to_numpy()
    value = table["value"].to_numpy().copy()
    for s, r in channels:
        value[(stage == s) & (rank == r)] = 0.25
    pq.write_table(table.set_column(table.schema.get_field_index("value"), "value",
                                    pa.array(value, type=table.schema.field("value").type)), path)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    """(reference store, fast store): one generated store analysed by each path."""
    root = tmp_path_factory.mktemp("fast")
    ref = root / "reference"
    redrawn = make_store(ref, seeds=(0, 1), datasets=("digits",), epochs=4, probe=512, stored=2 * K)  # probe 256 too
    ids = make_store(ref, seeds=(0, 1, 2), datasets=("synthetic",), epochs=4, every=1,  # the temporal protocol
                     analysis={"temporal_window": 36, "temporal_stride": 4})
    _set_analysis(ref, ids[0], compat="authors", smooth_window=4)
    _set_analysis(ref, redrawn[0], compat="authors")
    for run_id in redrawn:  # a dead metric channel and a dead stored one: in H_raw, the Kuramoto order, the re-draws
        _kill_channels(ref, run_id, DEAD_CAPTURE, [("stage2", 1), ("stage3", K + 1)])
    _set_analysis(ref, ids[1], smooth_window=15, n_scales=6)
    fast = root / "fast"
    shutil.copytree(ref, fast)
    assert not analyze(str(ref), open_source=reference_source, out=io.StringIO())["failed"]
    assert not analyze(str(fast), out=io.StringIO())["failed"]
    return ref, fast


def test_the_fast_path_writes_the_reference_tables(stores):
    ref, fast = stores
    assert assert_same_tables(ref, fast) > 1000
    con = open_catalog(str(fast))  # the variants were there to compare
    assert con.execute("SELECT count(*) FROM controls WHERE control = 'channel_draw'").fetchone()[0] == 8
    assert con.execute("SELECT count(DISTINCT probe_size) FROM window_sensitivity").fetchone()[0] == 3


def test_authors_compat_in_the_analysed_tables(stores):
    """A capture with one dead metric channel: under analysis.compat: authors its H_raw is missing, with the reason,
    and the dead channel counts in the Kuramoto order at phase 0; the run at the default keeps the valid-channel mean.
    """
    for store in stores:
        con = open_catalog(str(store))
        got = {}
        for seed, compat in ((0, "authors"), (1, "dynstudy")):
            run_id = f"tiny_cnn-digits-sgd-s{seed}-made"
            acts, labels, _, ranks = capture_arrays(con, run_id, DEAD_CAPTURE)
            want = lit.capture_metrics(acts[:, ranks < K], labels, compat=compat)
            got[compat] = con.execute("SELECT h_raw, metastability, synchrony, n_valid, reason FROM capture_metrics "
                                      "WHERE run_id = ? AND capture = ?", [run_id, DEAD_CAPTURE]).fetchone()
            h_raw = math.nan if got[compat][0] is None else got[compat][0]
            assert (h_raw, *got[compat][1:3]) == pytest.approx(
                (want["h_raw"], want["metastability"], want["synchrony"]), abs=1e-9, nan_ok=True)
            assert got[compat][3] == 4 * K - 1
        assert got["authors"][0] is None and "averages all 16 channels and 1 have no DFA exponent" in got["authors"][4]
        assert math.isfinite(got["dynstudy"][0]) and got["dynstudy"][4] is None


def test_the_comparison_can_fail(stores, tmp_path):
    """One value changed by 1e-9 in one table is found."""
    ref, fast = stores
    changed = tmp_path / "changed"
    shutil.copytree(fast, changed)
    path = next((changed / "capture_metrics").rglob("part.parquet"))
    table = pq.read_table(path)
    h = table["h_raw"].to_pylist()
    h[1] += 1e-9
    pq.write_table(table.set_column(table.schema.get_field_index("h_raw"), "h_raw", [h]), path)
    with pytest.raises(AssertionError, match="h_raw"):
        assert_same_tables(ref, changed)


def test_the_reader_orders_rows_as_duckdb_does(tmp_path):
    """A capture file whose rows are in another order reads the same as through ORDER BY stage, rank, sample."""
    store = tmp_path / "s"
    ids = make_store(store, seeds=(0,), datasets=("digits",), epochs=1, stored=2 * K)
    path = store / "activations" / f"run_id={ids[0]}" / "capture=000001.parquet"
    table = pq.read_table(path)
    pq.write_table(table.take(np.random.default_rng(0).permutation(table.num_rows)), path)
    scan = scan_store(str(store))
    got = read_capture(next(f for f in scan.files["activations"] if f.name == "capture=000001"))
    want = capture_arrays(open_catalog(str(store), scan=scan), ids[0], 1)
    for a, b in zip((got.acts, got.labels, got.stages, got.ranks), want):
        assert np.array_equal(a, b)
    assert (got.capture, got.kind, got.epoch, got.step) == (1, "epoch", 1, 10)


def test_a_capture_file_without_statistics_reads_its_capture_number_from_the_rows(tmp_path):
    """The capture's number, kind, epoch and step come from the footer's statistics; a file written without
    them reads the same, and one that holds two captures is named."""
    store = tmp_path / "s"
    ids = make_store(store, seeds=(0,), datasets=("digits",), epochs=2)
    run = store / "activations" / f"run_id={ids[0]}"
    scan = scan_store(str(store))
    want = read_capture(next(f for f in scan.files["activations"] if f.name == "capture=000001"))
    table = pq.read_table(run / "capture=000001.parquet")
    pq.write_table(table, run / "capture=000001.parquet", write_statistics=False)
    assert pq.ParquetFile(run / "capture=000001.parquet").metadata.row_group(0).column(0).statistics is None
    got = read_capture(next(f for f in scan_store(str(store)).files["activations"] if f.name == "capture=000001"))
    assert (got.capture, got.kind, got.epoch, got.step) == (want.capture, want.kind, want.epoch, want.step)
    assert np.array_equal(got.acts, want.acts)
    two = pa.concat_tables([table, pq.read_table(run / "capture=000002.parquet")])
    pq.write_table(two, run / "capture=000001.parquet", write_statistics=False)
    with pytest.raises(ValueError, match="column capture holds 2 values"):
        read_capture(next(f for f in scan_store(str(store)).files["activations"] if f.name == "capture=000001"))


def test_a_capture_file_holding_another_capture_is_named(tmp_path):
    store = tmp_path / "s"
    ids = make_store(store, seeds=(0, 1), datasets=("digits",), epochs=2)
    run = store / "activations" / f"run_id={ids[0]}"
    shutil.copy(run / "capture=000002.parquet", run / "capture=000001.parquet")
    result = analyze(str(store), out=io.StringIO())
    assert list(result["failed"]) == [ids[0]] and result["analysed"] == 1
    assert "holds capture 2, not the one its name says" in result["failed"][ids[0]]


@pytest.mark.parametrize("n, window, classes", [(257, 4, 10), (1000, 15, 7), (2048, 1, 10)])
def test_fast_kernels_agree_with_the_literal_implementation(n, window, classes):
    rng = np.random.default_rng(n)
    acts = rng.standard_normal((n, 5)) * rng.uniform(0.1, 10, 5)
    X = lit.pseudo_time(acts, rng.integers(0, classes, n), window)
    alpha, reasons = fk.dfa_exponents(X)
    np.testing.assert_allclose(alpha, [lit.dfa(row) for row in X], rtol=0, atol=1e-9)
    assert reasons == [None] * 5
    np.testing.assert_allclose(fk.kuramoto(X), lit.kuramoto(X), rtol=0, atol=1e-9)


@pytest.mark.parametrize("window, order", [(1, "label"), (4, "label"), (5, "random"), (15, "random"), (40, "label")])
def test_compiled_pseudo_time_agrees_with_the_literal_implementation(window, order):
    """Stable label sort, per-class centring (a channel without within-class variation exactly zero), the
    permutation of the order control and pandas' rolling mean, in the compiled loops."""
    rng = np.random.default_rng(window)
    labels = rng.integers(0, 7, 301)
    acts = rng.standard_normal((301, 6)) * rng.uniform(0.1, 10, 6)
    acts[:, 2] = 3.0 * labels  # constant within each class
    want = lit.pseudo_time(acts, labels, window, order, seed=3)
    x = fk.class_centred(acts, labels)
    got = fk.smoothed(x, window, np.random.default_rng(3).permutation(301) if order == "random" else None)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert (x[2] == 0).all()


def test_compiled_dfa_gives_the_reference_reasons():
    """Rows with NaN, an infinity, one value throughout, or exactly linear segments have no exponent, for the
    reference's reason; the others match it."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((7, 256))
    X[1, 17] = np.nan
    X[2, 3] = -np.inf
    X[3] = 2.5
    X[4] = 1.0  # a constant series: its profile is exactly zero
    X[4, :128] = -1.0  # two flat halves: piecewise-linear profile, zero fluctuation at the smallest scales
    alpha, reasons = fk.dfa_exponents(X)
    want_alpha, want_reasons = dynamics.dfa_exponents(X, return_reasons=True)
    assert reasons == want_reasons
    assert [r is None for r in reasons] == [True, False, False, False, False, True, True]
    np.testing.assert_allclose(alpha, want_alpha, rtol=0, atol=1e-12)


@pytest.mark.parametrize("rows", [1, 3, 4, 5, 9])
def test_compiled_dfa_of_each_row_is_independent_of_its_neighbours(rows):
    """The compiled DFA runs four rows side by side; every row count, with rows that have no exponent
    anywhere among them, gives each row the exponent and reason it has alone in the reference."""
    rng = np.random.default_rng(rows)
    X = np.cumsum(rng.standard_normal((rows, 300)), axis=1) * rng.uniform(0.1, 3, (rows, 1))
    X += rng.standard_normal((rows, 300))
    bad = rng.permutation(rows)[:rows // 2]
    for i, r in enumerate(bad):  # a NaN, a constant row, an infinity, in turn
        if i % 3 == 1:
            X[r] = 4.0
        else:
            X[r, 7 * i] = np.nan if i % 3 == 0 else np.inf
    alpha, reasons = fk.dfa_exponents(X)
    for r in range(rows):
        want_alpha, want_reasons = dynamics.dfa_exponents(X[r:r + 1], return_reasons=True)
        assert reasons[r] == want_reasons[0]
        np.testing.assert_allclose(alpha[r], want_alpha[0], rtol=0, atol=1e-12)
    assert sum(r is None for r in reasons) == rows - len(bad)


@pytest.mark.parametrize("n", [1, 2, 3, 6, 20])
@pytest.mark.parametrize("window", [2, 3, 5, 8])
def test_compiled_rolling_mean_at_the_edges_and_windows_longer_than_the_series(n, window):
    x = np.random.default_rng(n * window).standard_normal((3, n))
    want = np.array([pd.Series(row).rolling(window, center=True, min_periods=1).mean().to_numpy() for row in x])
    np.testing.assert_allclose(fk.smoothed(x, window), want, rtol=0, atol=1e-12)


def test_a_capture_file_that_is_not_one_value_per_channel_and_sample_is_named(tmp_path):
    """A repeated sample (another one missing) in one channel would shift every later value by a place: the
    run is named, with the file, and nothing of it is analysed."""
    store = tmp_path / "s"
    ids = make_store(store, seeds=(0, 1), datasets=("digits",), epochs=2)
    path = store / "activations" / f"run_id={ids[0]}" / "capture=000001.parquet"
    table = pq.read_table(path)
    sample = table["sample"].to_numpy().copy()
    sample[5] = sample[4]
    pq.write_table(table.set_column(table.schema.get_field_index("sample"), "sample", [sample]), path)
    result = analyze(str(store), out=io.StringIO())
    assert list(result["failed"]) == [ids[0]] and result["analysed"] == 1
    assert "capture=000001.parquet" in result["failed"][ids[0]]
    assert "not one value per (stage, rank, sample)" in result["failed"][ids[0]]


def test_a_cluster_without_ray_names_the_extra(tmp_path, monkeypatch):
    store = tmp_path / "s"
    make_store(store, seeds=(0,), datasets=("digits",), epochs=2)
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as in an analysis-only install
    with pytest.raises(ValueError, match=r"needs ray, which this install lacks: pip install 'dynstudy\[train\]'"):
        analyze(str(store), address="auto", out=io.StringIO())


@pytest.mark.slow
def test_ray_tasks_write_the_local_tables(tmp_path):
    """analyze on a local Ray instance: the same tables as local processes, incremental, a broken run named."""
    import ray

    local, remote = tmp_path / "local", tmp_path / "remote"
    ids = make_store(local, seeds=(0, 1), datasets=("digits", "synthetic"), epochs=3, stored=2 * K)
    shutil.copytree(local, remote)
    analyze(str(local), out=io.StringIO())
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=tempfile.mkdtemp(prefix="dynray-"))
    try:
        out = io.StringIO()
        result = analyze(str(remote), address="auto", out=out)
        assert result["analysed"] == len(ids) and not result["failed"], out.getvalue()
        assert_same_tables(local, remote, empty_ok=("temporal_metrics", "temporal_controls"))  # no step captures
        assert analyze(str(remote), address="auto", out=io.StringIO())["current"] == len(ids)
        run = remote / "activations" / f"run_id={ids[0]}"
        shutil.copy(run / "capture=000002.parquet", run / "capture=000001.parquet")
        result = analyze(str(remote), address="auto", out=io.StringIO())
        assert list(result["failed"]) == [ids[0]] and result["analysed"] == 0
        assert not (remote / "run_summary" / f"run_id={ids[0]}").exists()  # no stale outputs of the broken run
    finally:
        ray.shutdown()
