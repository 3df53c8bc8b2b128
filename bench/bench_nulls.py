"""Benchmark: what the null distributions cost ``dynstudy analyze``, side by side with none.

Generates two stores with bench_scale.py's generator, identical but for the runs' ``analysis.null_k`` (``--k``,
default 19, and 0), warms the compiled loops, then analyses each ``--repeats`` times in a fresh process,
alternating which goes first, and prints each one's wall and CPU time, peak RSS, and the median ratio
with nulls / without. The null of a capture's shape is simulated once per shape and worker process (every capture
of these stores has the same shape), so the cost is K noise captures per worker plus a comparison per capture.

    .venv/bin/python bench/bench_nulls.py --runs 20 --captures 13 --channels 32 --samples 256
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_scale  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--captures", type=int, default=13)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--k", type=int, default=19, help="simulations per null (analysis.null_k) of the first store")
    ap.add_argument("--workers", type=int, default=None, help="analysis worker processes (default: one per core)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as root:
        stores = {}
        for k in (args.k, 0):
            stores[k] = str(Path(root) / f"k{k}")
            bench_scale.generate(Path(stores[k]), args.runs, args.captures, args.channels, args.samples,
                                 analysis={"null_k": k})
        print(f"{args.runs} runs x {args.captures} captures x {args.channels} channels x {args.samples} samples; "
              f"compiled loops warmed in {bench_scale.warm_compiled_loops(stores[0]):.1f} s", flush=True)
        got = {k: [] for k in stores}
        for r in range(args.repeats):
            for k in (list(stores) if r % 2 == 0 else list(reversed(stores))):
                wall, driver, worker, _, cpu = bench_scale.timed_analysis(stores[k], args.workers, "fast")
                got[k].append((wall, cpu, max(driver, worker)))
                print(f"  repeat {r + 1} K = {k:3d}: {wall:6.1f} s wall, {cpu:6.1f} s CPU, "
                      f"peak RSS {max(driver, worker):4.0f} MiB", flush=True)
        med = {k: (statistics.median(w for w, _, _ in v), statistics.median(c for _, c, _ in v),
                   max(m for _, _, m in v)) for k, v in got.items()}
        for k, (wall, cpu, peak) in med.items():
            print(f"K = {k:3d}: median {wall:.1f} s wall, {cpu:.1f} s CPU, peak RSS {peak:.0f} MiB")
        wall, cpu = med[args.k][0] / med[0][0], med[args.k][1] / med[0][1]
        print(f"ratio K = {args.k} / K = 0: wall {wall:.2f}, CPU {cpu:.2f}")


if __name__ == "__main__":
    main()
