"""Benchmark: capture_metrics (vectorised) against the literal loop implementation.

One capture of the paper protocol: 128 channels x 4096 probe samples, 10
classes, window 5. Prints the time of each, the speed-up, the throughput in
activation values per second, and checks that both give the same numbers
(within 1e-9). Also times the pieces of the vectorised path.

    .venv/bin/python bench/bench_dynamics.py [--samples 4096] [--channels 128] [--repeats 20] [--literal-repeats 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dynstudy.analysis.kernels import dynamics  # noqa: E402
from tests import literal_dynamics  # noqa: E402


def best_of(fn, repeats: int) -> tuple[float, object]:
    """Shortest wall time of ``repeats`` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--samples", type=int, default=4096)
    ap.add_argument("--channels", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--literal-repeats", type=int, default=2)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    acts = rng.standard_normal((args.samples, args.channels))
    labels = np.repeat(np.arange(10), -(-args.samples // 10))[:args.samples]

    fast_t, fast = best_of(lambda: dynamics.capture_metrics(acts, labels, smooth_window=5), args.repeats)
    slow_t, slow = best_of(lambda: literal_dynamics.capture_metrics(acts, labels, 5), args.literal_repeats)
    worst = max(abs(fast[k] - slow[k]) for k in slow)
    X = dynamics.pseudo_time(acts, labels, 5)
    parts = {"pseudo_time": lambda: dynamics.pseudo_time(acts, labels, 5),
             "dfa_exponents": lambda: dynamics.dfa_exponents(X), "kuramoto": lambda: dynamics.kuramoto(X)}
    values = args.samples * args.channels
    print(f"capture: {args.channels} channels x {args.samples} samples ({values:,} values), 10 classes, window 5")
    print(f"literal loops : {slow_t * 1e3:9.1f} ms  (best of {args.literal_repeats})")
    print(f"vectorised    : {fast_t * 1e3:9.1f} ms  (best of {args.repeats})")
    for name, fn in parts.items():
        print(f"  {name:<14}: {best_of(fn, args.repeats)[0] * 1e3:7.1f} ms")
    print(f"speed-up      : {slow_t / fast_t:9.0f}x")
    print(f"throughput    : {values / fast_t / 1e6:9.1f} M values/s (literal {values / slow_t / 1e6:.2f} M values/s)")
    print(f"max |difference| over h_raw, h_eff, metastability, synchrony: {worst:.2e}")
    if not worst <= 1e-9:
        raise SystemExit("outputs differ by more than 1e-9")


if __name__ == "__main__":
    main()
