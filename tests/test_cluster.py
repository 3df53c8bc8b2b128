"""The cluster user's path: `ray job submit` to a fresh 2-node cluster, and a node lost mid-trial.

Each test starts its own cluster (tests/ray_cluster.py: a head and a worker
node on this host, token authentication on) and stops it by pid.
"""
from __future__ import annotations

import io
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dynstudy.analysis.pipeline.catalog import open_catalog
from dynstudy.study.orchestrate import run_study
from dynstudy.study.spec import load_spec
from tests.ray_cluster import LocalCluster, kill
from tests.store_factory import SMOKE_CHANNELS

ROOT = Path(__file__).resolve().parent.parent
KEYS = "r.seed, a.capture, a.stage, a.rank, a.sample"


def _rows(store) -> tuple[list, bool]:
    con = open_catalog(str(store))
    src = "activations a JOIN runs r USING (run_id)"
    rows = con.execute(f"SELECT {KEYS}, a.value FROM {src} ORDER BY {KEYS}").fetchall()
    unique = con.execute(f"SELECT count(*) = count(DISTINCT ({KEYS})) FROM {src}").fetchone()[0]
    return rows, unique


@pytest.mark.slow
def test_first_job_on_a_fresh_two_node_cluster_trains_analyses_and_reports(tmp_path):
    """Both nodes share one --temp-dir, as when the getcwd failure was seen: the job still ends in a report."""
    store = tmp_path / "store"
    with LocalCluster(workers=1, shared_temp=True) as cluster:
        job = cluster.ray("job", "submit", "--address", cluster.dashboard, "--working-dir", str(ROOT), "--",
                          "dynstudy", "run", "smoke", "--store", str(store), cwd=ROOT, timeout=600, check=False)
    text = job.stdout + job.stderr
    assert job.returncode == 0 and "succeeded" in text, text[-4000:]
    assert "2 Ray nodes on host" in text and "start each node with its own `ray start --temp-dir`" in text
    assert "analyze: 2 runs analysed" in text and f"report: {store}/report.html" in text
    assert (store / "report.html").stat().st_size > 10_000
    rows, unique = _rows(store)
    assert unique and len(rows) == 2 * 4 * SMOKE_CHANNELS * 128


NODE_LOSS_SPEC = """\
name: nodeloss
models: [tiny_cnn]
datasets: [{name: synthetic, n_train: 3000, n_val: 128}]
optimizers: [{name: sgd, lr: 0.05}]
seeds: [0, 1]
train: {epochs: 6, batch_size: 64, early_stopping_patience: null}
capture: {probe_size: 128, channels_per_stage: 32}
resources: {cpus_per_trial: 1, max_failures: 2}
"""


def _epochs_written(store: Path) -> dict[str, int]:
    return {d.name.removeprefix("run_id="): len(list(d.glob("epoch=*.parquet")))
            for d in (store / "train_metrics").glob("run_id=*")}


@pytest.mark.slow
def test_losing_a_worker_node_mid_trial_recovers_exactly_once(tmp_path):
    spec_file = tmp_path / "nodeloss.yaml"
    spec_file.write_text(NODE_LOSS_SPEC)
    clean = tmp_path / "clean"
    assert run_study(load_spec(str(spec_file)), store=str(clean), num_cpus=2, out=io.StringIO())["finished"] == 2
    store = tmp_path / "store"
    with LocalCluster(workers=1) as cluster:
        job = subprocess.Popen(
            [str(Path(cluster.env["PATH"].split(":")[0]) / "ray"), "job", "submit", "--address", cluster.dashboard,
             "--working-dir", str(ROOT), "--",
             "dynstudy", "run", str(spec_file), "--store", str(store), "--no-analyze"],
            env=cluster.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + 300
        while True:  # both trials (one per node) are past epoch 2 and neither has finished
            done = _epochs_written(store)
            if len(done) == 2 and min(done.values()) >= 2 and max(done.values()) < 6:
                break
            if job.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no mid-trial moment: {done}\n{job.communicate()[0][-4000:]}")
            time.sleep(0.1)
        raylets = cluster.worker_raylet_pids()
        assert len(raylets) == 1
        kill(raylets)  # the worker node is lost with its trial
        out, _ = job.communicate(timeout=600)
    assert job.returncode == 0 and "succeeded" in out, out[-4000:]
    assert "retrying from its last checkpoint" in out
    rows, unique = _rows(store)
    assert unique and rows == _rows(clean)[0]  # exactly once, values identical to a clean run
    attempts = sorted(pq.read_table(p).column("attempts")[0].as_py() for p in store.glob("runs/run_id=*/run.parquet"))
    assert attempts == [1, 2]
