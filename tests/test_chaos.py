"""The standing chaos drill: studies under combined faults end with the store a clean run writes.

Each drill drives ``dynstudy run`` as an operator would (tests/chaos_drill.py), fires faults at points of
training drawn from a seeded generator (a driver SIGKILL followed by ``--resume``, a trial worker's SIGKILL, an
injected hard exit inside every run), and compares the store with a clean run's: every run finished, every row
exactly once, values bit-identical, the analysis's tables equal, no temporaries left, the retries counted in
``runs.attempts``. The 2-node cluster variant (a worker node lost, the job's driver killed and the job
resubmitted with ``--resume``) runs the same comparison.
"""
from __future__ import annotations

import io
import random
import subprocess
import time
from pathlib import Path

import duckdb
import pytest

from dynstudy.analysis.pipeline.analyze import analyze
from tests.chaos_drill import (
    BIN,
    drill_spec,
    epochs_by_run,
    epochs_in_store,
    finish,
    kill_driver,
    start_driver,
    store_differences,
    trial_workers,
    wait_for,
)
from tests.ray_cluster import LocalCluster, kill, pids_naming, process_table

ROOT = Path(__file__).resolve().parent.parent

#: Tables compared with the clean run's, each with the key it is ordered by.
WORKER_TABLES = {"runs": "run_id", "train_metrics": "run_id, epoch",
                 "activations": "run_id, capture, stage, rank, sample"}
ANALYSIS_TABLES = {"run_summary": "run_id", "capture_metrics": "ALL",
                   "cell_variability": "ALL"}


def clean_store(tmp_path, spec, name="clean"):
    """The store an undisturbed run of ``spec`` writes, analysed."""
    store = tmp_path / name
    store.mkdir()
    out = finish(start_driver(spec, store / "store", f"{tmp_path}/{name}", log=store / "log"), f"{tmp_path}/{name}")
    assert "4 finished" in out or "2 finished" in out, out[-3000:]
    analyze(str(store / "store"), out=io.StringIO())
    return store / "store"


def check_against_clean(store, clean, runs: int) -> int:
    """Assert that ``store`` holds what ``clean`` holds, analysed alike; return its runs' attempts in all."""
    con = duckdb.connect()
    status = con.execute(f"SELECT list(status ORDER BY run_id), sum(attempts) FROM "
                     f"read_parquet('{store}/runs/**/*.parquet')").fetchone()
    assert status[0] == ["finished"] * runs
    assert store_differences(store, clean, WORKER_TABLES) == []
    analyze(str(store), out=io.StringIO())
    assert store_differences(store, clean, ANALYSIS_TABLES) == []
    return status[1]


@pytest.mark.slow
def test_a_driver_killed_between_a_runs_end_and_tunes_next_save_leaves_no_stale_run(tmp_path):
    """The driver dies after a run wrote its last epoch and checkpoint but before Ray Tune saved its experiment
    state again (its period set beyond the study's length; Tune still saves it after every second checkpoint of a
    trial, so with two epochs the saved state holds the run's final checkpoint and the run still running).
    ``--resume`` trains only what the store lacks, and every run ends finished with a clean run's values."""
    spec = drill_spec(tmp_path, seeds=2, epochs=2, every_n_steps=None, concurrent=1)  # the other run not yet done
    clean = clean_store(tmp_path, spec)
    store, mark = tmp_path / "killed" / "store", f"{tmp_path}/killed"
    store.parent.mkdir()
    driver = start_driver(spec, store, mark, env={"TUNE_GLOBAL_CHECKPOINT_S": "100000"}, log=store.parent / "log1")
    wait_for(lambda: "complete after 2 epochs" in driver.output(), driver, what="a run's end")
    kill_driver(driver, mark)
    out = finish(start_driver(spec, store, mark, resume=True, log=store.parent / "log2"), mark)
    # the finished run is not trained again: the plan and the experiment Tune runs are one list
    assert "1 runs already finished" in out, out[-3000:]
    assert "1/1 runs done" in out, out[-3000:]
    assert "complete after 0 epochs" not in out and "Traceback" not in out
    check_against_clean(store, clean, runs=2)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_chaos_drill_local(tmp_path, seed):
    """Four runs of six epochs with step captures; a hard exit injected into every run, a trial worker killed and
    the driver killed twice (each followed by ``--resume``), at points of training drawn from ``seed``."""
    rng = random.Random(seed)
    spec = drill_spec(tmp_path, seeds=4, epochs=6, every_n_steps=8, max_failures=3)
    clean = clean_store(tmp_path, spec)
    store, mark = tmp_path / "drill" / "store", f"{tmp_path}/drill"
    store.parent.mkdir()
    total = 4 * 6
    worker_at, *driver_at = sorted(rng.sample(range(2, total - 2), 3))
    exit_epoch = rng.randint(2, 5)
    env = {"DYNSTUDY_INJECT_FAULT": f"epoch={exit_epoch},times=1,mode=exit"}
    schedule = [("worker", worker_at)] + [("driver", at) for at in driver_at]
    driver, logs = start_driver(spec, store, mark, env=env, log=store.parent / "log0"), 1
    for kind, at in schedule:
        wait_for(lambda at=at: epochs_in_store(store) >= at, driver, what=f"{at} epochs for the {kind} fault")
        if kind == "worker":
            wait_for(lambda: trial_workers(mark), driver, what="a trial worker")
            kill(trial_workers(mark)[:1])
        else:
            kill_driver(driver, mark)
            driver = start_driver(spec, store, mark, resume=True, env=env, log=store.parent / f"log{logs}")
            logs += 1
    out = finish(driver, mark)
    outputs = "".join((store.parent / f"log{i}").read_text() for i in range(logs))
    assert "retrying from its last checkpoint" in outputs, outputs[-3000:]
    assert "study drill: 4 finished" in out
    assert check_against_clean(store, clean, runs=4) > 4  # the retries and resumed starts are counted


def job_drivers(store) -> list[int]:
    """The Python processes of a job's ``dynstudy run`` entrypoint writing to ``store`` (not ``ray job submit``)."""
    return [p for p in pids_naming(f"--store {store}", with_children=False)
            if "/dynstudy run" in process_table()[p][1] and "job submit" not in process_table()[p][1]]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0])
def test_chaos_drill_two_node_cluster(tmp_path, seed):
    """A study submitted as a job to a 2-node cluster: the worker node lost mid-run (all its processes killed)
    and the job's driver killed; the job, resubmitted with ``--resume``, ends with a clean run's store."""
    rng = random.Random(seed)
    spec = drill_spec(tmp_path, seeds=2, epochs=5, every_n_steps=8, max_failures=3)
    clean = clean_store(tmp_path, spec)
    store = tmp_path / "drill" / "store"
    node_at, driver_at = sorted(rng.sample(range(2, 2 * 5 - 1), 2))

    def submit(cluster, *extra):
        return subprocess.Popen(
            [str(BIN / "ray"), "job", "submit", "--address", cluster.dashboard, "--working-dir", str(ROOT), "--",
             "dynstudy", "run", str(spec), "--store", str(store), "--no-analyze", *extra],
            env=cluster.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def wait(job, predicate, what):
        deadline = time.monotonic() + 300
        while not predicate():
            if job.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"no moment for {what}:\n{job.communicate()[0][-4000:]}")
            time.sleep(0.05)

    def mid_run(epochs: dict[str, int]) -> bool:
        """Both runs started, and every run not yet finished has at least one epoch in the store (so its row
        counts a start that a lost trial's retry adds to)."""
        unfinished = [n for n in epochs.values() if n < 5]
        return len(epochs) == 2 and bool(unfinished) and min(unfinished) >= 1

    def worker_node_trial(cluster) -> bool:
        procs = process_table()
        return any(procs.get(p, (0, ""))[1].startswith("ray::ImplicitFunc") for p in cluster.worker_node_processes())

    with LocalCluster(workers=1) as cluster:
        job = submit(cluster)
        # the worker node runs one of the unfinished runs (one CPU per node, two runs): it is lost mid-run
        wait(job, lambda: epochs_in_store(store) >= node_at and mid_run(epochs_by_run(store))
             and worker_node_trial(cluster), "the worker node's loss")
        kill(cluster.worker_node_processes())  # the worker node is lost with its trial
        wait(job, lambda: epochs_in_store(store) >= driver_at and mid_run(epochs_by_run(store))
             and job_drivers(store), "the driver kill")
        kill(job_drivers(store))
        first, _ = job.communicate(timeout=120)
        assert job.returncode != 0, first[-3000:]
        assert "resubmit the job with `--resume` added to `dynstudy run`" in first, first[-3000:]
        job = submit(cluster, "--resume")
        second, _ = job.communicate(timeout=600)
        assert job.returncode == 0 and "succeeded" in second, second[-4000:]
    # no assertion on the job's summary line: `ray job submit` can end its log stream before the job's last lines;
    # the store says every run finished (check_against_clean)
    assert check_against_clean(store, clean, runs=2) > 2
