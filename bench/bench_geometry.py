"""Benchmark: what representation geometry costs, and what a random projection of a capture does to CKA.

Three measurements on synthetic captures of ResNet-18's stage widths (64, 128, 256, 512 channels) at a probe of
``--probe`` samples, in float32 as the store keeps activations:

1. one capture's geometry (effective rank, participation ratio, activation variance of its 4 stages) on one
   BLAS thread, at full width and at 32 channels per stage (the capture default);
2. seed agreement: debiased linear CKA between every pair of ``--seeds`` seeds at each of ``--epochs`` epochs and
   4 stages (each capture's features or Gram matrix made once, every pair from one product), on the BLAS threads
   the machine has;
3. the error of CKA between two captures projected to k dimensions (a fixed Gaussian map, the same for both)
   against CKA of the full captures, for captures whose spectrum decays as a power law (exponent ``--decay``)
   and a second capture that is the first plus isotropic noise at several levels.

    .venv/bin/python bench/bench_geometry.py
    .venv/bin/python bench/bench_geometry.py --probe 2048 --seeds 10 --epochs 60
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

import numpy as np

WIDTHS = (64, 128, 256, 512)


def synthetic_capture(rng, n: int, width: int, decay: float) -> np.ndarray:
    """[n, width] activations whose channel covariance has eigenvalues proportional to i^-decay."""
    scales = np.arange(1, width + 1) ** (-decay / 2)
    Q, _ = np.linalg.qr(rng.normal(size=(width, width)))
    return (rng.normal(size=(n, width)) * scales) @ Q.T


def one_capture(probe: int, repeats: int, widths=WIDTHS) -> list[float]:
    """Seconds for one capture's geometry over its stages of ``widths``, each repeat (run in a one-thread
    process)."""
    from dynstudy.analysis.kernels.geometry import stage_geometry

    rng = np.random.default_rng(0)
    caps = [rng.normal(size=(probe, w)).astype(np.float32) for w in widths]
    times = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        for X in caps:
            stage_geometry(X)
        times.append(time.perf_counter() - t)
    return times[1:]


def seed_agreement(probe: int, seeds: int, epochs: int) -> float:
    """Seconds for CKA between every pair of seeds at every (epoch, stage)."""
    from dynstudy.analysis.kernels.geometry import cka_matrix, features

    rng = np.random.default_rng(1)
    base = {w: rng.normal(size=(probe, w)).astype(np.float32) for w in WIDTHS}
    noise = {w: rng.normal(size=(seeds, probe, w)).astype(np.float32) for w in WIDTHS}
    total = 0.0
    for epoch in range(epochs):
        for w in WIDTHS:
            caps = base[w] + noise[w] * np.float32(1 + epoch % 3)  # fresh arrays, as if read for this epoch
            t = time.perf_counter()
            cka_matrix([features(c) for c in caps])
            total += time.perf_counter() - t
    return total


def projection_error(probe: int, decay: float, ks=(64, 128, 256, 384, 448)) -> list[tuple]:
    """(noise level, full CKA, k, mean |error| over 3 maps, max |error|) for a 512-wide stage."""
    from dynstudy.analysis.kernels.geometry import linear_cka, random_projection

    rng = np.random.default_rng(2)
    X = synthetic_capture(rng, probe, 512, decay)
    rows = []
    for level in (0.25, 1.0, 4.0):
        Y = X + level * X.std() * rng.normal(size=X.shape)
        full = linear_cka(X, Y)
        for k in ks:
            errs = [abs(linear_cka(X @ P, Y @ P) - full) for P in (random_projection(512, k, s) for s in range(3))]
            rows.append((level, full, k, float(np.mean(errs)), float(np.max(errs))))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probe", type=int, default=2048)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--decay", type=float, default=1.0, help="power-law exponent of the synthetic spectra")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--part", choices=("all", "one"), default="all", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.part == "one":
        print(" ".join(f"{t:.4f}" for t in one_capture(args.probe, args.repeats)))
        print(" ".join(f"{t:.4f}" for t in one_capture(args.probe, args.repeats, (32,) * len(WIDTHS))))
        return
    print(f"load average {os.getloadavg()[0]:.1f}; {os.cpu_count()} cores", flush=True)
    one_thread = {**os.environ, **{v: "1" for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}}
    out = subprocess.run([sys.executable, __file__, "--part", "one", "--probe", str(args.probe), "--repeats",
                          str(args.repeats)], env=one_thread, capture_output=True, text=True, check=True).stdout
    for line, widths in zip(out.splitlines(), (WIDTHS, (32,) * len(WIDTHS))):
        times = [float(t) for t in line.split()]
        print(f"one capture's geometry, 4 stages {widths} x {args.probe} samples, 1 thread: median "
              f"{1e3 * float(np.median(times)):.1f} ms (min {1e3 * min(times):.1f}, max {1e3 * max(times):.1f})")
    secs = seed_agreement(args.probe, args.seeds, args.epochs)
    pairs = args.seeds * (args.seeds - 1) // 2 * args.epochs * len(WIDTHS)
    print(f"seed agreement, {args.seeds} seeds x {args.epochs} epochs x {len(WIDTHS)} stages ({pairs} pairs): "
          f"{secs:.1f} s")
    print(f"projection of a 512-channel stage to k dimensions (spectrum ~ i^-{args.decay}), |CKA error|:")
    print("noise  full-CKA     k   mean-err   max-err")
    for level, full, k, mean, worst in projection_error(args.probe, args.decay):
        print(f"{level:5.2f}  {full:8.3f}  {k:4d}  {mean:9.4f}  {worst:8.4f}")


if __name__ == "__main__":
    main()
