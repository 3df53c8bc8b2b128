"""Benchmark: analyse a large generated store (default: the issue's 100 runs x 60
captures x 128 channels x 2048 samples = 1.6 G values), reporting wall time,
activation values per second per core, CPU time and peak memory (of the
driver and of the largest worker process) of ``dynstudy analyze``, run in a
fresh process.

The store is written in the worker's own format (dynstudy.store_contract.files.write_rows): each
run is an AR(1) process per channel whose persistence drifts over training, so
the metrics have something to find. Generation time is reported separately.

``--compare R`` first runs the fast path on one capture (compiling numba's
loops where their cache is stale), then analyses the store R times with each
capture path, the fast one and the reference (tests/reference_capture.py, the
per-capture analysis written plainly), interleaved (alternating which goes
first), each in a fresh process with the same worker count, and prints each
one's values/s per core by wall and by CPU time, its peak RSS and the median
of the R ratios fast / reference.

    .venv/bin/python bench/bench_scale.py --runs 100 --captures 60 --out /tmp/scale-store
    .venv/bin/python bench/bench_scale.py --runs 4 --captures 60 --compare 3
"""
from __future__ import annotations

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dynstudy.store_contract.files import write_rows  # noqa: E402
from dynstudy.study.grid import make_run_id  # noqa: E402

STAGES = ("layer1", "layer2", "layer3", "layer4")


def _repeat_str(value: str, n: int) -> pa.Array:
    return pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), pa.array([value])).cast(pa.string())


def generate(out: Path, runs: int, captures: int, channels: int, samples: int, analysis: dict | None = None) -> int:
    """Write the runs not yet in ``out``; return how many were written. ``analysis``: the runs' analysis settings
    (their config's ``analysis`` section; default: none, so every setting at its default)."""
    written = 0
    per_stage = channels // len(STAGES)
    labels = np.repeat(np.arange(10), -(-samples // 10))[:samples].astype(np.int32)
    for r in range(runs):
        model, dataset, seed = f"m{r % 5}", ("cifar10", "cifar100")[r % 2], r // 10
        run_id = make_run_id("scale", model, dataset, "sgd", seed)
        if (out / "activations" / f"run_id={run_id}" / f"capture={captures - 1:06d}.parquet").exists():
            continue  # generation is resumable
        rng = np.random.default_rng(r)
        written += 1
        config = {"capture": {"channels_per_stage": per_stage}, "analysis": dict(analysis or {})}
        write_rows(str(out), "runs", run_id, "run", {
            "run_id": [run_id], "study": ["scale"], "model": [model], "dataset": [dataset], "optimizer": ["sgd"],
            "seed": [seed], "status": ["finished"], "epochs_completed": [captures - 1], "config": [json.dumps(config)]})
        for c in range(captures):
            phi = 0.2 + 0.7 * c / captures
            x = rng.standard_normal((samples, channels)).astype(np.float32)
            for t in range(1, 4):  # short AR smoothing along the probe order
                x[t:] += phi / t * x[:-t]
            n = samples * channels
            cols = {"run_id": _repeat_str(run_id, n),
                    "capture": np.full(n, c, np.int32),
                    "kind": _repeat_str("init" if c == 0 else "epoch", n),
                    "epoch": np.full(samples * channels, c, np.int32), "step": np.full(samples * channels, c * 98),
                    "stage": pa.DictionaryArray.from_arrays(
                        np.repeat(np.arange(len(STAGES), dtype=np.int32), per_stage * samples),
                        pa.array(STAGES)).cast(pa.string()),
                    "channel": np.repeat(np.tile(np.arange(per_stage, dtype=np.int32), 4), samples),
                    "rank": np.repeat(np.tile(np.arange(per_stage, dtype=np.int32), 4), samples),
                    "sample": np.tile(np.arange(samples, dtype=np.int32), channels),
                    "label": np.tile(labels, channels), "value": x.T.reshape(-1)}
            write_rows(str(out), "activations", run_id, f"capture={c:06d}", cols)
            if c:
                write_rows(str(out), "train_metrics", run_id, f"epoch={c:06d}", {
                    "run_id": [run_id], "epoch": [c], "step": [c * 98], "val_acc": [min(0.9, 0.3 + 0.02 * c)],
                    "val_loss": [1.0 / c]})
    return written


def _children_peak(parent: int) -> int:
    """Largest VmHWM (KiB) among the live child processes of ``parent`` (Linux's /proc; 0 elsewhere)."""
    peak = 0
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/status") as fh:
                    fields = dict(line.split(":", 1) for line in fh if ":" in line)
            except OSError:  # gone meanwhile
                continue
            if int(fields.get("PPid", "0")) == parent and "VmHWM" in fields:
                peak = max(peak, int(fields["VmHWM"].split()[0]))
    return peak


def analyse_here(store: str, workers: int | None, path: str) -> None:
    """Analyse ``store`` in this process and print [wall s, driver peak MiB, largest worker's peak MiB, runs
    analysed, runs failed] as JSON; :func:`timed_analysis` runs it in a fresh process.

    A worker's peak is its own high-water mark, sampled from /proc every 0.2 s while it lives: the
    ru_maxrss of finished children would also count the moment before a spawned worker's exec, when it
    still has the driver's memory.
    """
    import threading

    from dynstudy.analysis.pipeline.analyze import analyze
    from dynstudy.analysis.run.run_analysis import fast_source
    from tests.reference_capture import reference_source

    peak, done = [0], threading.Event()

    def sample():
        while not done.wait(0.2):
            peak[0] = max(peak[0], _children_peak(os.getpid()))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    source = {"fast": fast_source, "reference": reference_source}[path]
    r = analyze(store, force=True, workers=workers, open_source=source, out=io.StringIO())
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    driver = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps([wall, driver, peak[0] / 1024, r["analysed"], len(r["failed"])]))


def timed_analysis(out: str, workers: int | None, path: str) -> tuple[float, float, float, int, float]:
    """(wall s of the analysis alone, peak RSS MiB of the driver, of the largest worker process, runs analysed,
    CPU s of the driver and its workers, start-up and imports included), in a fresh process.

    The driver is a ``python -c`` process, so that its spawned workers import what a run's analysis needs and
    no more: a spawned worker re-imports its parent's main module when that has a file.
    """
    code = ("import json, sys; sys.path.insert(0, sys.argv[1]); import bench_scale; "
            "bench_scale.analyse_here(sys.argv[2], json.loads(sys.argv[3]), sys.argv[4])")
    bench = str(Path(__file__).resolve().parent)
    proc = subprocess.Popen([sys.executable, "-c", code, bench, out, json.dumps(workers), path], stdout=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall, driver, worker, analysed, failed = json.loads(proc.stdout.read())
    if status or failed:
        raise SystemExit(f"analysis ({path}) failed: status {status}, {failed} runs failed")
    return wall, driver, worker, analysed, usage.ru_utime + usage.ru_stime


def warm_compiled_loops(out: str) -> float:
    """Seconds to run the fast path on one capture of ``out`` in a fresh process: it compiles the numba loops
    where their cache (next to analysis/fast_loops.py) is missing or stale, as the first analysis after an
    install or an edit does, so that no timed repeat pays for it."""
    code = ("import sys, time; sys.path.insert(0, sys.argv[1]); t0 = time.perf_counter(); "
            "from dynstudy.analysis.run.capture_family import capture_rows; from dynstudy.analysis.run.capture_plan "
            "import DEFAULT_PARAMS; "
            "from dynstudy.analysis.run.capture_read import read_capture; from dynstudy.store_contract.scan import "
            "scan_store; "
            "f = scan_store(sys.argv[2]).files['activations'][0]; "
            "capture_rows(read_capture(f), f.run_id, dict(DEFAULT_PARAMS), None, {}); print(time.perf_counter() - t0)")
    root = str(Path(__file__).resolve().parent.parent)
    return float(subprocess.run([sys.executable, "-c", code, root, out], capture_output=True, text=True,
                                check=True).stdout)


def compare(out: str, workers: int | None, repeats: int, values: int) -> None:
    """Interleaved runs of both capture paths; per-core throughput (by wall time and by CPU time, which a
    loaded machine inflates less), peak RSS and the median ratios."""
    cores = min(workers or os.cpu_count() or 1, os.cpu_count() or 1)
    print(f"  compiled loops warmed (one capture in a fresh process) in {warm_compiled_loops(out):.1f} s", flush=True)
    got = {"fast": [], "reference": []}
    for r in range(repeats):
        for path in (("reference", "fast") if r % 2 == 0 else ("fast", "reference")):
            wall, driver, worker, _, cpu = timed_analysis(out, workers, path)
            peak = max(driver, worker)
            got[path].append((wall, peak, cpu))
            print(f"  repeat {r + 1} {path:9s}: {wall:6.1f} s, {values / wall / cores / 1e6:6.2f} M values/s per core, "
                  f"CPU {cpu:6.1f} s ({values / cpu / 1e6:5.2f} M values per CPU s), peak RSS {peak:4.0f} MiB "
                  f"(driver {driver:.0f}, largest worker {worker:.0f})",
                  flush=True)
    ratios = [ref[0] / fast[0] for ref, fast in zip(got["reference"], got["fast"])]
    cpu_ratios = [ref[2] / fast[2] for ref, fast in zip(got["reference"], got["fast"])]
    for path, rows in got.items():
        walls = [w for w, _, _ in rows]
        print(f"{path:9s}: median {np.median(walls):.1f} s, {values / np.median(walls) / cores / 1e6:.2f} M values/s "
              f"per core ({cores} cores), CPU median {np.median([c for _, _, c in rows]):.1f} s, "
              f"peak RSS {max(p for _, p, _ in rows):.0f} MiB")
    print(f"ratio fast / reference (throughput by wall time): median {np.median(ratios):.2f} "
          f"(each repeat: {', '.join(f'{x:.2f}' for x in ratios)})")
    print(f"ratio fast / reference (throughput by CPU time):  median {np.median(cpu_ratios):.2f} "
          f"(each repeat: {', '.join(f'{x:.2f}' for x in cpu_ratios)})")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--captures", type=int, default=60)
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--samples", type=int, default=2048)
    ap.add_argument("--out", default="/tmp/dynstudy-scale-store")
    ap.add_argument("--workers", type=int, default=None, help="analysis processes (default: one per CPU)")
    ap.add_argument("--compare", type=int, default=0, metavar="R",
                    help="R interleaved repeats of the fast and the reference capture path, side by side")
    args = ap.parse_args()
    out = Path(args.out)
    t0 = time.perf_counter()
    written = generate(out, args.runs, args.captures, args.channels, args.samples)
    print(f"store of {args.runs * args.captures * args.channels * args.samples / 1e9:.2f} G values at {out}: "
          f"{written} runs generated in {time.perf_counter() - t0:.0f} s", flush=True)
    values = args.runs * args.captures * args.channels * args.samples
    if args.compare:
        compare(str(out), args.workers, args.compare, values)
        return
    wall, driver, worker, analysed, cpu = timed_analysis(str(out), args.workers, "fast")
    cores = min(args.workers or os.cpu_count() or 1, os.cpu_count() or 1)
    print(f"analyze: {analysed} runs in {wall:.0f} s ({wall / max(analysed, 1):.1f} s per run), "
          f"{values / wall / cores / 1e6:.2f} M values/s per core ({cores} cores), CPU {cpu:.0f} s "
          f"({values / cpu / 1e6:.2f} M values per CPU s), peak RSS of the driver {driver:.0f} MiB, of the largest "
          f"worker process {worker:.0f} MiB")

if __name__ == "__main__":
    main()
