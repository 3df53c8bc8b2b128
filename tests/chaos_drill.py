"""The chaos drill's parts: a study driven as an operator drives it, faults injected, and the store compared.

A drill runs ``dynstudy run SPEC`` as a subprocess (its own process session,
every Ray process it starts marked in its environment by :data:`MARK`), fires
faults when the store holds a given number of epochs (so a seeded schedule
lands at the same points of training on any machine), reruns with
``--resume`` after each driver kill, and then compares the store with a clean
run's: :func:`store_differences`.
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from tests.ray_cluster import is_zombie, kill, pids_marked, process_table

BIN = Path(sys.executable).parent
#: Marks every process a drill's driver starts (its value: the drill's folder).
MARK = "DYNSTUDY_CHAOS_DRILL"

#: Columns that differ between two runs of one study by design: times, hosts, attempts, digests of file tokens.
VOLATILE = {"epoch_time_s", "capture_time_s", "started_at", "updated_at", "hostname", "attempts", "input_digest",
            "versions", "device", "config"}


def drill_spec(folder: Path, *, seeds: int = 4, epochs: int = 6, every_n_steps: int | None = 8,
               max_failures: int = 3, concurrent: int | None = None) -> Path:
    """A small study spec for drills: tiny CNN on digits, ``seeds`` seeds, step captures, at most ``concurrent``
    trials at once (default: as many as fit)."""
    step = f"\n  every_n_steps: {every_n_steps}\n  step_probe_size: 64" if every_n_steps else ""
    limit = f"\n  max_concurrent_trials: {concurrent}" if concurrent else ""
    path = folder / "drill.yaml"
    path.write_text(f"""name: drill
models: [tiny_cnn]
datasets: [digits]
optimizers:
  - name: sgd
    lr: 0.05
seeds: {list(range(seeds))}
train:
  epochs: {epochs}
  batch_size: 64
capture:
  probe_size: 128
  channels_per_stage: 32{step}
analysis:
  null_k: 3                 # the drill compares stores, not nulls: a small K keeps its four analyses short
resources:
  cpus_per_trial: 1
  max_failures: {max_failures}{limit}
""")
    return path


def marked(value: str) -> list[int]:
    """Live processes whose environment holds ``MARK=value``."""
    return [p for p in pids_marked(value, MARK) if not is_zombie(p)]


def trial_workers(value: str) -> list[int]:
    """The drill's Ray worker processes that run a trial (Ray titles them ``ray::ImplicitFunc...``)."""
    procs = process_table()
    return [p for p in marked(value) if procs.get(p, (0, ""))[1].startswith("ray::ImplicitFunc")]


def kill_marked(value: str, timeout: float = 20) -> None:
    """SIGKILL every process marked ``value`` until none is left; raise if one survives ``timeout``."""
    deadline = time.monotonic() + timeout
    while (left := marked(value)) and time.monotonic() < deadline:
        kill(left)
        time.sleep(0.2)
    if left:
        raise RuntimeError(f"drill processes survived SIGKILL: {left}")


def epochs_in_store(store: Path) -> int:
    """How many ``train_metrics`` epoch files the store holds, over all runs."""
    return len(list(store.glob("train_metrics/run_id=*/epoch=*.parquet")))


def epochs_by_run(store: Path) -> dict[str, int]:
    """How many ``train_metrics`` epoch files the store holds for each run it has started."""
    return {run.name.removeprefix("run_id="): len(list(run.glob("epoch=*.parquet")))
            for run in store.glob("train_metrics/run_id=*")}


@dataclass
class Driver:
    """One ``dynstudy run`` invocation of a drill."""

    proc: subprocess.Popen
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_driver(spec: Path, store: Path, mark: str, *, resume: bool = False, env: dict | None = None,
                 log: Path) -> Driver:
    """Start ``dynstudy run spec --store store [--resume] --no-analyze`` in its own session, output to ``log``."""
    cmd = [str(BIN / "dynstudy"), "run", str(spec), "--store", str(store), "--no-analyze"] + (["--resume"] if resume
                                                                                              else [])
    full_env = {**os.environ, **(env or {}), MARK: mark}
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=full_env, start_new_session=True,
                                cwd=store.parent)
    return Driver(proc, log)


def wait_for(predicate, driver: Driver, timeout: float = 300, what: str = "") -> None:
    """Poll ``predicate()`` until true; raise (with the driver's output) if the driver ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if driver.proc.poll() is not None:
            raise AssertionError(f"the driver ended before {what}:\n{driver.output()[-4000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{driver.output()[-4000:]}")
        time.sleep(0.05)


def kill_driver(driver: Driver, mark: str) -> None:
    """SIGKILL the driver as an operator's ``kill -9`` would, then every process it left (Ray's local instance)."""
    driver.proc.send_signal(signal.SIGKILL)
    driver.proc.wait()
    kill_marked(mark)


def finish(driver: Driver, mark: str, timeout: float = 400) -> str:
    """Wait for the driver to end; return its output (raise if it fails or hangs). Its leftovers are killed."""
    try:
        driver.proc.wait(timeout=timeout)
    finally:
        if driver.proc.poll() is None:
            driver.proc.kill()
        kill_marked(mark)
    out = driver.output()
    assert driver.proc.returncode == 0, out[-4000:]
    return out


def _table(store: Path, table: str, order: str) -> list[tuple]:
    con = duckdb.connect()
    cols = [c for c, *_ in con.execute(f"DESCRIBE SELECT * FROM read_parquet('{store}/{table}/**/*.parquet', "
                                   "union_by_name = true)").fetchall() if c not in VOLATILE]
    sel = ", ".join(f'"{c}"' for c in cols)
    rows = con.execute(f"SELECT {sel} FROM read_parquet('{store}/{table}/**/*.parquet', union_by_name = true) "
                       f"ORDER BY {order}").fetchall()
    return [tuple("NaN" if isinstance(v, float) and math.isnan(v) else v for v in row) for row in rows]


def store_differences(store: Path, clean: Path, tables: dict[str, str]) -> list[str]:
    """What differs between ``store`` and the ``clean`` run's store, table by table (empty: nothing).

    Parameters
    ----------
    tables : table -> its ORDER BY key; every column but :data:`VOLATILE` is compared value for value (floats
        bit for bit), so a row lost, duplicated or changed is a difference.
    """
    problems = []
    for table, order in tables.items():
        got, want = _table(store, table, order), _table(clean, table, order)
        if got != want:
            extra = len(got) - len(want)
            first = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            problems.append(f"{table}: {len(got)} rows vs {len(want)} clean ({extra:+d}); first difference at row "
                            f"{first}: {got[first] if first < len(got) else None} vs "
                            f"{want[first] if first < len(want) else None}")
    temporaries = [str(p) for p in store.rglob(".*.tmp")]
    if temporaries:
        problems.append(f"temporaries left: {temporaries[:5]}")
    return problems
