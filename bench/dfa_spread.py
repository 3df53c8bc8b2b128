"""The DFA estimator's spread at the lengths dynstudy uses: mean, SD and 95% range of alpha over K simulated
fractional Gaussian noise series per (H, N), with the scales' span and count, and the median R^2 of the fit.

    .venv/bin/python bench/dfa_spread.py --k 2000

Numbers in docs/metrics.md ("How far an exponent can be trusted").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dynstudy.analysis.kernels.dfa_fit import fractional_gaussian_noise, loglog_fit  # noqa: E402
from dynstudy.analysis.kernels.dynamics import dfa_fluctuation  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=2000, help="series per (H, N)")
    ap.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256, 512, 2048])
    ap.add_argument("--hurst", type=float, nargs="+", default=[0.5, 0.7, 0.9])
    args = ap.parse_args()
    print("| H | N | scales (span) | mean alpha | SD | 95% range | median R^2 |")
    print("|---|---|---|---|---|---|---|")
    for hurst in args.hurst:
        for n in args.lengths:
            x = fractional_gaussian_noise(hurst, n, args.k, np.random.default_rng(n))
            scales, F, _ = dfa_fluctuation(x)
            fit = loglog_fit(scales, F)
            a = fit["alpha"]
            lo, hi = np.quantile(a, [0.025, 0.975])
            print(f"| {hurst} | {n} | {len(scales)}: {scales[0]}-{scales[-1]} ({fit['span']:.1f}x) | {a.mean():.3f} | "
                  f"{a.std(ddof=1):.3f} | {lo:.2f}-{hi:.2f} | {np.median(fit['r2']):.3f} |")


if __name__ == "__main__":
    main()
